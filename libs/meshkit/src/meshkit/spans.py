"""meshkit.spans: the RPC span fast path and the span queue that exports every span, or counts it.

Measured (scripts/bench_tracing.py, py-spy and per-thread CPU in the server): the SDK's
``Tracer.start_span`` + ``Span.end`` cost a meshkit server ~70 µs of CPU per RPC on this class
of machine (22 µs in a hot loop; the rest is a cold cache between grpc's C core and 30 threads),
a quarter of what the whole untraced RPC costs. Most of it is generality an RPC edge does not
use: the attributes re-validated per span (they are the same four for every call of a method),
a sampler call that returns ParentBased's foregone answer, a lock per span, an internal metrics
hook, a ReadableSpan copy at ``end`` and two loops over the span processors.

``RpcSpans`` starts spans with the same outcome the SDK's ``Tracer.start_span`` would have
(ids from the provider's generator, the sampler's decision, its trace flags and trace state,
the provider's resource and scope, the span limits) for the configuration a mesh runs with:
a ``ParentBased`` sampler with its default delegates (any root sampler), the default id
generator, no SDK self-metrics. Anything else (``OTEL_TRACES_SAMPLER=traceidratio``, a custom
sampler or generator, ``OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED``) takes the SDK's own path.
Its ``RpcSpan`` is both an ``opentelemetry.trace.Span`` (a handler may set attributes, add
events or record exceptions on the current span, with the SDK's limits) and an SDK
``ReadableSpan`` (every span processor and exporter takes it as is).

``SpanQueue`` replaces the SDK's ``BatchSpanProcessor``: the same batching (``OTEL_BSP_*``:
queue size, batch size, schedule delay) with a cheaper ``on_end``, and nothing lost silently:
a span refused because the queue is full, and a batch the exporter gave up on, are counted
(``stats()``) and logged at WARNING at most once per ``LOG_EVERY_S`` with the totals.

Thread safety: ``RpcSpans.start`` and ``SpanQueue.on_end`` may be called from any thread; a
span's own methods as the API allows (end once, from any thread).
"""

from __future__ import annotations

import collections
import logging
import os
import random
import threading
import time
import traceback
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from time import time_ns
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import (
    Event,
    ReadableSpan,
    SpanLimits,
    SpanProcessor,
    SynchronousMultiSpanProcessor,
    Tracer,
)
from opentelemetry.sdk.trace._tracer_metrics import NoOpTracerMetrics
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

log = logging.getLogger("meshkit.telemetry")

MAX_QUEUE_SIZE = 8192
MAX_EXPORT_BATCH_SIZE = 2048
LOG_EVERY_S = 10.0
"""At most one WARNING per this many seconds about dropped or unexported spans."""

_EMPTY_STATE = trace.TraceState()
_UNSET = Status(StatusCode.UNSET)
# Trace flags by their low two bits (SAMPLED 0x01, RANDOM_TRACE_ID 0x02): the only ones the SDK
# carries from a parent to its child.
_FLAGS = tuple(trace.TraceFlags(bits) for bits in range(4))
_SAMPLED_ROOT = _FLAGS[trace.TraceFlags.SAMPLED | trace.TraceFlags.RANDOM_TRACE_ID]
_END_LOCK = threading.Lock()


class RpcSpan(trace.Span, ReadableSpan):
    """A recording span started by ``RpcSpans.start``: the SDK span's behaviour (limits,
    events, status rules, one ``end``), without its per-span validation of the attributes it was
    started with (they come cleaned from ``RpcSpans.attributes``)."""

    def __init__(
        self,
        name: str,
        context: trace.SpanContext,
        parent: trace.SpanContext | None,
        *,
        kind: SpanKind,
        attributes: dict[str, AttributeValue],
        spans: RpcSpans,
    ) -> None:
        # ReadableSpan's fields, set directly: its __init__ would build a Resource per span.
        self._name = name
        self._context = context
        self._parent = parent
        self._kind = kind
        self._attributes: Any = attributes
        self._events: Any = ()
        self._links: Any = ()
        self._status = _UNSET
        self._resource = spans.resource
        self._instrumentation_scope = spans.scope
        self._instrumentation_info = spans.info
        self._spans = spans
        self._end_time = None
        self._start_time = time_ns()

    def __repr__(self) -> str:
        return f'RpcSpan(name="{self._name}", context={self._context})'

    # -- the API's Span ----------------------------------------------------------------------

    def get_span_context(self) -> trace.SpanContext:
        """This span's context."""
        context: trace.SpanContext = self._context  # type: ignore[assignment] # set in __init__
        return context

    def is_recording(self) -> bool:
        """True until the span ends."""
        return self._end_time is None

    def _mutable_attributes(self) -> BoundedAttributes | None:
        """The attributes as the SDK keeps them (limits applied to what is set from now on), or
        None once the span ended (with the SDK's warning)."""
        if self._end_time is not None:
            log.warning("Setting attribute on ended span.")
            return None
        attributes = self._attributes
        if type(attributes) is dict:
            limits = self._spans.limits
            attributes = self._attributes = BoundedAttributes(
                limits.max_span_attributes,
                attributes,
                immutable=False,
                max_value_len=limits.max_span_attribute_length,
            )
        return attributes  # type: ignore[no-any-return]

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        """Set one attribute (the SDK's validation and limits)."""
        with _END_LOCK:
            attributes = self._mutable_attributes()
            if attributes is not None:
                attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        """Set several attributes (the SDK's validation and limits)."""
        with _END_LOCK:
            current = self._mutable_attributes()
            if current is not None:
                for key, value in attributes.items():
                    current[key] = value

    def add_event(
        self,
        name: str,
        attributes: Mapping[str, AttributeValue] | None = None,
        timestamp: int | None = None,
    ) -> None:
        """Add an event (the SDK's limits)."""
        limits = self._spans.limits
        frozen = _frozen(limits.max_event_attributes, attributes, limits)
        self._append("_events", Event(name, frozen, timestamp), limits.max_events)

    def add_link(
        self, context: trace.SpanContext, attributes: Mapping[str, AttributeValue] | None = None
    ) -> None:
        """Add a link to a valid span context (the SDK's limits)."""
        if context.is_valid:
            limits = self._spans.limits
            frozen = _frozen(limits.max_link_attributes, attributes, limits)
            self._append("_links", trace.Link(context, frozen), limits.max_links)

    def _append(self, field: str, item: Any, limit: int | None) -> None:
        """Append ``item`` to the bounded list ``field`` (``_events``, ``_links``) while the span
        records."""
        with _END_LOCK:
            if self._end_time is not None:
                log.warning("Adding to %s of an ended span.", field[1:])
                return
            items = getattr(self, field)
            if type(items) is tuple:
                items = BoundedList(limit)
                setattr(self, field, items)
            items.append(item)

    def update_name(self, name: str) -> None:
        """Rename the span while it records."""
        if self._end_time is None:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        """Set the status as the SDK does: OK is final, UNSET is ignored."""
        if self._end_time is not None:
            log.warning("Calling set_status on an ended span.")
            return
        if self._status.status_code is StatusCode.OK:
            return
        if isinstance(status, Status):
            if status.status_code is not StatusCode.UNSET:
                self._status = status
        elif status is not StatusCode.UNSET:
            self._status = Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: Mapping[str, AttributeValue] | None = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        """Record ``exception`` as an ``exception`` event (the SDK's attributes)."""
        kind = type(exception)
        module = kind.__module__
        event: dict[str, AttributeValue] = {
            "exception.type": f"{module}.{kind.__qualname__}"
            if module and module != "builtins"
            else kind.__qualname__,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        if attributes:
            event.update(attributes)
        self.add_event("exception", event, timestamp)

    def end(self, end_time: int | None = None) -> None:
        """End the span (once; a second call warns) and hand it to the span processors."""
        with _END_LOCK:
            if self._end_time is not None:
                log.warning("Calling end() on an ended span.")
                return
            self._end_time = end_time if end_time is not None else time_ns()
            if type(self._attributes) is not dict:
                self._attributes._immutable = True
        spans = self._spans
        processor = spans.processor
        if processor is spans._multi:
            processor._on_ending(self)  # type: ignore[arg-type]
        processor.on_end(self)

    def end_rpc(self, code: str) -> None:
        """Set ``rpc.status_code`` to ``code`` and end (the OK path of ``end_rpc_span``)."""
        attributes = self._attributes
        if self._end_time is None and type(attributes) is dict:
            attributes["rpc.status_code"] = code
        else:
            self.set_attribute("rpc.status_code", code)
        self.end()


def _frozen(
    limit: int | None, attributes: Mapping[str, AttributeValue] | None, limits: SpanLimits
) -> BoundedAttributes:
    """An event's or link's attributes, as the SDK keeps them."""
    return BoundedAttributes(
        limit, attributes, immutable=True, max_value_len=limits.max_attribute_length
    )


class RpcSpans:
    """Starts RPC spans for one SDK tracer, the SDK's way or the fast way (see the module doc).

    ``start`` returns a recording ``RpcSpan``, a ``NonRecordingSpan`` when the sampler says
    no (its context still goes downstream, unsampled), or the SDK's own span when this tracer's
    configuration is not one the fast path reproduces.
    """

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer
        self.resource = tracer.resource
        self.scope = tracer._instrumentation_scope
        self.info = tracer.instrumentation_info
        self.limits: SpanLimits = tracer._span_limits
        sampler = tracer.sampler
        self.fast = (
            isinstance(sampler, ParentBased)
            and getattr(sampler, "_remote_parent_sampled", None) is ALWAYS_ON
            and getattr(sampler, "_local_parent_sampled", None) is ALWAYS_ON
            and getattr(sampler, "_remote_parent_not_sampled", None) is ALWAYS_OFF
            and getattr(sampler, "_local_parent_not_sampled", None) is ALWAYS_OFF
            and type(tracer.id_generator) is RandomIdGenerator
            and type(getattr(tracer, "_tracer_metrics", None)) is NoOpTracerMetrics
            and tracer._is_enabled()
        )
        # Roots: ParentBased asks its root sampler; ALWAYS_ON (the default) needs no call.
        self._root_always_on = getattr(sampler, "_root", None) is ALWAYS_ON
        self._multi = tracer.span_processor
        self._processors: tuple[SpanProcessor, ...] = ()
        self.processor: SpanProcessor = tracer.span_processor

    def attributes(self, attributes: Mapping[str, AttributeValue]) -> dict[str, AttributeValue]:
        """``attributes`` validated and truncated as the SDK would at span start (do it once per
        method, then pass the result to ``start``)."""
        limits = self.limits
        return dict(
            BoundedAttributes(
                limits.max_span_attributes,
                attributes,
                immutable=True,
                max_value_len=limits.max_span_attribute_length,
            )
        )

    def _end_processor(self) -> SpanProcessor:
        """The processor spans are handed to at ``end``: the only one registered when there is
        one without ``on_start`` or ``_on_ending`` work (SpanQueue), else the SDK's
        multi-processor (which also gets ``on_start`` then)."""
        multi = self._multi
        processors = getattr(multi, "_span_processors", None)
        if processors is not self._processors:
            self._processors = processors or ()
            only = processors[0] if processors and len(processors) == 1 else None
            self.processor = (
                only
                if type(multi) is SynchronousMultiSpanProcessor and type(only) is SpanQueue
                else multi
            )
        return self.processor

    def start(
        self,
        name: str,
        parent: trace.SpanContext | None,
        kind: SpanKind,
        attributes: dict[str, AttributeValue],
    ) -> trace.Span:
        """A started span named ``name``, child of ``parent`` (None or invalid: a root), with a
        copy of ``attributes`` (from ``self.attributes``)."""
        if parent is not None and not parent.is_valid:
            parent = None
        if not self.fast or (parent is None and not self._root_always_on):
            context = trace.set_span_in_context(trace.NonRecordingSpan(parent)) if parent else None
            return self.tracer.start_span(name, context, kind=kind, attributes=attributes)
        span_id = random.getrandbits(64) or 1
        if parent is None:
            span_context = trace.SpanContext(
                random.getrandbits(128) or 1, span_id, False, _SAMPLED_ROOT, _EMPTY_STATE
            )
        else:
            span_context = trace.SpanContext(
                parent.trace_id,
                span_id,
                False,
                _FLAGS[parent.trace_flags & 3],
                parent.trace_state,
            )
            if not parent.trace_flags & 1:
                return trace.NonRecordingSpan(span_context)
        processor = self._end_processor()
        span = RpcSpan(
            name, span_context, parent, kind=kind, attributes=dict(attributes), spans=self
        )
        if processor is self._multi:
            processor.on_start(span, parent_context=None)  # type: ignore[arg-type]
        return span


# -- the queue -----------------------------------------------------------------------------


def _env_int(name: str, default: int) -> int:
    try:
        value = int(os.environ.get(name, ""))
    except ValueError:
        return default
    return value if value > 0 else default


@dataclass(frozen=True)
class SpanStats:
    """What a SpanQueue did with the spans it was given, since it started."""

    exported: int
    """Spans the exporter accepted."""
    dropped: int
    """Spans refused because the queue was full (the exporter could not keep up)."""
    failed: int
    """Spans in batches the exporter failed to deliver (after its own retries)."""
    queued: int
    """Spans waiting for export now."""

    @property
    def lost(self) -> int:
        """Spans that will never reach the backend: dropped + failed."""
        return self.dropped + self.failed


class SpanQueue(SpanProcessor):
    """Batches ended, sampled spans and exports them from one thread (the SDK's
    BatchSpanProcessor, ``OTEL_BSP_*`` included), counting what it cannot deliver.

    ``max_queue_size`` (``OTEL_BSP_MAX_QUEUE_SIZE``, default 8192): spans held at most; past it,
    new spans are dropped and counted. ``max_export_batch_size``
    (``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``, 2048): spans per export; a full batch wakes the export
    thread. ``schedule_delay_s`` (``OTEL_BSP_SCHEDULE_DELAY`` ms, 5 s): the longest a span waits
    for a batch to fill.

    Both sizes are four times the SDK's defaults, decided by measurement (bench_tracing,
    concurrency 16, ~5 000 spans/s): the local receiver's CPU per RPC fell from ~77 µs with
    batches of 512 to ~55 µs with 2048 (one SQLite transaction per batch; the store's random
    trace-id keys dirty fewer pages per span in a larger one), and the export thread wakes a
    quarter as often. The queue holds four batches, ~1.5 s of that load, ~12 MB at the most.
    At low rates nothing changes: the schedule delay sends a partial batch.
    """

    def __init__(
        self,
        exporter: SpanExporter,
        *,
        max_queue_size: int | None = None,
        max_export_batch_size: int | None = None,
        schedule_delay_s: float | None = None,
    ) -> None:
        self._exporter = exporter
        self._max_queue = max_queue_size or _env_int("OTEL_BSP_MAX_QUEUE_SIZE", MAX_QUEUE_SIZE)
        batch = max_export_batch_size or _env_int(
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", MAX_EXPORT_BATCH_SIZE
        )
        self._batch = min(batch, self._max_queue)
        self._delay_s = (
            schedule_delay_s
            if schedule_delay_s is not None
            else _env_int("OTEL_BSP_SCHEDULE_DELAY", 5000) / 1000
        )
        self._exported = 0
        self._dropped = 0
        self._failed = 0
        self._logged = (0, 0)  # (dropped, failed) as of the last warning
        self._last_log = 0.0
        self._shutdown = False
        self._start()
        if hasattr(os, "register_at_fork"):
            # A forked child (a server's worker processes) gets an empty queue and its own
            # export thread; the parent's thread does not exist there.
            me = weakref.ref(self)

            def after_in_child() -> None:
                queue = me()
                if queue is not None and not queue._shutdown:
                    queue._start()

            os.register_at_fork(after_in_child=after_in_child)

    def _start(self) -> None:
        self._queue: collections.deque[ReadableSpan] = collections.deque()
        self._wake = threading.Event()
        self._export_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="meshkit-span-export", daemon=True)
        self._thread.start()

    # -- SpanProcessor ---------------------------------------------------------------------

    def on_start(self, span: Any, parent_context: otel_context.Context | None = None) -> None:
        """Nothing to do when a span starts."""

    def on_end(self, span: ReadableSpan) -> None:
        """Queue ``span`` if sampled; count it as dropped when the queue is full."""
        if not span._context.trace_flags & 1:  # type: ignore[union-attr]
            return
        queue = self._queue
        if self._shutdown:
            self._dropped += 1  # ended after shutdown: nothing will export it
            return
        if len(queue) >= self._max_queue:
            self._dropped += 1
            self._warn()
            return
        queue.append(span)
        if len(queue) >= self._batch and not self._wake.is_set():
            self._wake.set()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Export everything queued now (on the calling thread); True unless shut down."""
        if self._shutdown:
            return False
        self._export(everything=True)
        return True

    def shutdown(self) -> None:
        """Export what is queued, stop the thread, shut the exporter down."""
        if self._shutdown:
            return
        self._shutdown = True
        self._wake.set()
        self._thread.join(30)
        self._exporter.shutdown()
        if self._dropped + self._failed > sum(self._logged):
            self._last_log = 0.0
            self._warn()  # what happened since the last report is not left unsaid

    def stats(self) -> SpanStats:
        """The counts so far (see ``SpanStats``)."""
        return SpanStats(self._exported, self._dropped, self._failed, len(self._queue))

    # -- the export thread -----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            woken = self._wake.wait(self._delay_s)
            self._wake.clear()
            if self._shutdown:
                break
            # Woken: full batches only (a partial one waits for its delay); timed out: all.
            self._export(everything=not woken)
        self._export(everything=True)

    def _export(self, everything: bool) -> None:
        queue = self._queue
        with self._export_lock:
            while queue and (everything or len(queue) >= self._batch):
                count = min(self._batch, len(queue))
                batch = [queue.popleft() for _ in range(count)]
                token = otel_context.attach(
                    otel_context.set_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY, True)
                )
                try:
                    result = self._exporter.export(batch)
                except Exception:  # an exporter bug must not stop the thread
                    log.exception("span exporter failed")
                    result = SpanExportResult.FAILURE
                finally:
                    otel_context.detach(token)
                if result is SpanExportResult.SUCCESS:
                    self._exported += count
                else:
                    self._failed += count
                    self._warn()

    def _warn(self) -> None:
        """One WARNING per LOG_EVERY_S with the counts since the last one and the totals."""
        now = time.monotonic()
        if now - self._last_log < LOG_EVERY_S and self._last_log:
            return
        self._last_log = now
        dropped, failed = self._dropped, self._failed
        log.warning(
            "tracing lost %d spans since the last report (%d dropped: export queue of %d full;"
            " %d not delivered by the exporter); %d lost in all",
            dropped + failed - sum(self._logged),
            dropped - self._logged[0],
            self._max_queue,
            failed - self._logged[1],
            dropped + failed,
        )
        self._logged = (dropped, failed)
