"""Build and run a mesh gRPC server: health, reflection, error mapping, access log, graceful stop.

One call, ``create_server(...)``, gives a ``MeshServer`` with:

- grpc.health.v1 with a status per service (and the overall ``""`` service),
- server reflection (grpcurl works with no .proto files at hand),
- MeshError -> gRPC status mapping done once, here, at the edge, with google.rpc details
  (BadRequest field violations, PreconditionFailure, ErrorInfo), bounded to a few KiB whatever
  the error says, so it always fits the caller's metadata limit; any other exception becomes
  INTERNAL with the traceback in the log and nothing of it on the wire; a request body that does
  not parse as the method's request type (bad UTF-8, truncated, wrong wire type) is the caller's
  fault: INVALID_ARGUMENT (reason UNDECODABLE_REQUEST) and one access line, not grpcio's INTERNAL
  "Exception deserializing request!" with a traceback,
- a JSON access log: every error, every slow call (>= ``MESH_ACCESS_SLOW_MS``, default 100) one
  line at INFO; a routine call (OK and fast) one line at DEBUG and a count in a
  per-method summary written at INFO once a minute and at stop (``<method> OK xN ...``: count,
  mean and max duration). A line per routine RPC cost a tenth of a participant's CPU under the
  saga bench (JSON formatting and a write per call) and says nothing the summary does not; set
  ``meshkit.access`` (or the service) to DEBUG to see every call,
- W3C trace context per RPC: an incoming ``traceparent`` is honoured. With tracing on
  (``meshkit.telemetry``) every RPC gets a SERVER span, child of the caller's context, in this
  same interceptor (one wrapper per RPC, not two); health and reflection calls get none. With
  tracing off an unsampled context with fresh ids (or the caller's) is made current, so the log
  lines and the events of one request share a trace id even when nothing is recorded,
- the caller's deadline as the handler's budget: every handler (every step of a streaming one)
  runs inside ``meshkit.deadlines.bound(context.time_remaining())``, so the calls it makes never
  outlive the request,
- load shedding: at most ``<PREFIX>_MAX_CONCURRENT_RPCS`` RPCs in flight (default 4 x
  max_workers); grpcio answers the excess RESOURCE_EXHAUSTED at once, before any handler, and
  the edge counts them: a WARNING ``<name> shed N RPCs (in-flight cap M)`` at most every 10 s,
- grpc.health.v1 ``Watch`` served without holding a worker (every client-side health check
  keeps one open), and ``List`` (``MeshHealthServicer``): every status by name,
- fault injection (``meshkit.faults``, off by default): delay, abort or drop per method, from
  ``$MESH_FAULTS``, ``$MESH_FAULTS_FILE`` or ``<mesh root>/.mesh/faults/<name>.json``,
- background workers (outbox relay, consumers, saga runner) started with the server and stopped
  after it has drained,
- graceful SIGTERM/SIGINT: health NOT_SERVING, stop accepting, let in-flight RPCs finish within
  the grace period, stop the workers, then run the ``on_stop`` closers (close the database),
- with ``$MESH_TLS_DIR`` set (``mesh up --tls``), mutual TLS only: client certificates from the
  mesh's CA required, certificate files reloaded when they change, and the caller's SPIFFE ID
  current for the handler (``meshkit.tls.current_peer_identity()``).

The server is grpcio's thread-pool server: services do blocking SQLite and Kafka client work, and
per-thread connections keep that simple and safe. ``grpc.so_reuseport`` is off, so a second
server on a busy port fails loudly instead of silently sharing it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent import futures
from contextvars import Token
from dataclasses import dataclass
from typing import Any, NoReturn, ParamSpec, TypeVar

import grpc
from google.protobuf import any_pb2, message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

from meshkit import authz, deadlines, reflection, telemetry, tls
from meshkit.errors import FailedPrecondition, InvalidArgument, MeshError
from meshkit.faults import FaultInjector
from meshkit.logs import configure_logging
from meshkit.settings import ServerSettings, SettingsError, describe_settings, load_settings
from meshkit.spans import RpcSpans

log = logging.getLogger("meshkit.server")
access_log = logging.getLogger("meshkit.access")

_QUIET_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
# A routine call: OK and quicker than this; logged at DEBUG and counted into the summary.
ACCESS_SLOW_S = float(os.environ.get("MESH_ACCESS_SLOW_MS", "100")) / 1000
# How often the summary of routine calls is written (by the first call after the window).
ACCESS_SUMMARY_S = 60.0
# At most one WARNING this often about the RPCs shed at the in-flight cap.
SHED_SUMMARY_S = 10.0
# grpc_health's Watch sends by callbacks when grpcio calls it directly ("non-blocking"): no
# worker thread is held while the stream is open. Wrapped, it would block a worker for the
# stream's whole life (every client-side health check of every channel holds one), and two
# watchers would starve a two-worker server. It is therefore passed through unwrapped.
_HEALTH_WATCH = "/grpc.health.v1.Health/Watch"


class _AccessTally:
    """Routine calls per method since the last summary: count, total and max duration (s)."""

    def __init__(self, window: float = ACCESS_SUMMARY_S) -> None:
        self.window = window
        self._lock = threading.Lock()
        self._calls: dict[str, list[float]] = {}
        self._since = time.monotonic()

    def add(self, method: str, duration: float) -> None:
        """Count one routine call; write the summary when its window has passed."""
        with self._lock:
            calls = self._calls.get(method)
            if calls is None:
                self._calls[method] = [1, duration, duration]
            else:
                calls[0] += 1
                calls[1] += duration
                calls[2] = max(calls[2], duration)
            now = time.monotonic()
            if now - self._since < self.window:
                return
            tally, self._calls, since, self._since = self._calls, {}, self._since, now
        self._write(tally, now - since)

    def flush(self) -> None:
        """Write the summary of the calls counted so far (at stop)."""
        with self._lock:
            tally, self._calls = self._calls, {}
            now, since, self._since = time.monotonic(), self._since, time.monotonic()
        self._write(tally, now - since)

    @staticmethod
    def _write(tally: dict[str, list[float]], seconds: float) -> None:
        if not access_log.isEnabledFor(logging.INFO):
            return
        for method, (count, total, longest) in tally.items():
            mean_ms, max_ms = round(total / count * 1000, 3), round(longest * 1000, 3)
            access_log.info(
                "%s OK x%d in %.0fs: mean %.1fms, max %.1fms",
                method,
                count,
                seconds,
                mean_ms,
                max_ms,
                extra={
                    "rpc.method": method,
                    "rpc.code": "OK",
                    "count": int(count),
                    "duration_ms_mean": mean_ms,
                    "duration_ms_max": max_ms,
                },
            )


class _ShedTally:
    """RPCs shed at the in-flight cap, per method: a WARNING with the count when the first one
    after a quiet ``window`` comes, then at most one per window (and at stop)."""

    def __init__(self, name: str, cap: int, window: float = SHED_SUMMARY_S) -> None:
        self.name = name
        self.cap = cap
        self.window = window
        self.total = 0
        self._lock = threading.Lock()
        self._shed: dict[str, int] = {}
        self._since = time.monotonic() - window

    def add(self, method: str) -> None:
        """Count one shed RPC; write the summary when its window has passed."""
        with self._lock:
            self.total += 1
            self._shed[method] = self._shed.get(method, 0) + 1
            if time.monotonic() - self._since < self.window:
                return
        self.flush()

    def flush(self) -> None:
        """Write the summary of the RPCs shed since the last one, if any."""
        with self._lock:
            shed, self._shed = self._shed, {}
            self._since = time.monotonic()
        if shed:
            log.warning(
                "%s shed %d RPCs (in-flight cap %d): %s",
                self.name,
                sum(shed.values()),
                self.cap,
                ", ".join(f"{method} x{count}" for method, count in sorted(shed.items())),
                extra={"rpc.shed": shed, "rpc.cap": self.cap},
            )


_P = ParamSpec("_P")
_T = TypeVar("_T")


class _InFlightPool(futures.ThreadPoolExecutor):
    """The RPC worker pool, counting the jobs submitted and not yet finished.

    grpcio submits exactly one job per admitted RPC and caps exactly that count
    (``maximum_concurrent_rpcs``): it sheds a call in its polling thread, after asking the
    interceptors for the handler, and no handler then runs, so neither the access log nor a
    span sees it. The edge reads ``in_flight`` when asked for the handler to know that the call
    is about to be shed, and counts it. The count may lag grpcio's by a call that is finishing
    at that instant (ours drops first), so a shed call may go uncounted, never the reverse.
    """

    def __init__(self, max_workers: int, thread_name_prefix: str) -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix=thread_name_prefix)
        self.in_flight = 0
        self._count_lock = threading.Lock()

    def submit(
        self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> futures.Future[_T]:
        with self._count_lock:
            self.in_flight += 1
        try:
            future = super().submit(fn, *args, **kwargs)
        except BaseException:
            self._finished(None)
            raise
        future.add_done_callback(self._finished)
        return future

    def _finished(self, _future: object) -> None:
        with self._count_lock:
            self.in_flight -= 1


_Status = health_pb2.HealthCheckResponse.ServingStatus
_Send = Callable[[health_pb2.HealthCheckResponse | None], None]


class MeshHealthServicer(health_pb2_grpc.HealthServicer):
    """grpc.health.v1.Health: Check, Watch and ``List`` (every status by name: the overall
    ``""``, each service, and whatever else the server reports, e.g. ``meshkit.breaker/<peer>``).

    Check and Watch answer as grpc_health's servicer does (NOT_FOUND, SERVICE_UNKNOWN), and Watch
    is non-blocking, like its ``experimental_non_blocking``: grpcio hands it a send callback, so
    an open Watch (every client-side health check keeps one) holds no worker thread. It is not
    grpc_health's class: that one sends to the watchers while holding the lock its close
    callbacks take on grpcio's completion-queue thread, and a send waits on that thread, so a
    ``set`` while a watcher leaves hangs the server for good (grpc/grpc PR #43403; it hung the
    kit's stop here). Here sends happen outside that lock: ``_lock`` guards the tables only,
    briefly; ``_send_lock`` orders the sends, so a watcher never sees an older status last, and
    is never taken on grpcio's thread.

    Thread safety: every method may be called from any thread. After ``enter_graceful_shutdown``
    every status is NOT_SERVING and ``set`` changes nothing.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._statuses: dict[str, _Status] = {"": health_pb2.HealthCheckResponse.SERVING}
        self._watchers: dict[str, set[_Send]] = {}
        self._closing = False

    def Check(  # noqa: N802 - the RPC's name
        self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        """The status of ``request.service``; NOT_FOUND for a name never set."""
        with self._lock:
            status = self._statuses.get(request.service)
        if status is None:
            context.set_code(grpc.StatusCode.NOT_FOUND)
            return health_pb2.HealthCheckResponse()
        return health_pb2.HealthCheckResponse(status=status)

    def Watch(  # noqa: N802 - the RPC's name
        self,
        request: health_pb2.HealthCheckRequest,
        context: grpc.ServicerContext,
        send_response_callback: _Send | None = None,
    ) -> None:
        """Send the status of ``request.service`` now (SERVICE_UNKNOWN for a name never set)
        and at every change, until the caller leaves."""
        if send_response_callback is None:  # grpcio always passes it (non-blocking below)
            context.abort(grpc.StatusCode.INTERNAL, "Watch needs a non-blocking server")
        send, service = send_response_callback, request.service

        def leave() -> None:  # on grpcio's completion-queue thread: never send or wait here
            with self._lock:
                self._watchers.get(service, set()).discard(send)
            send(None)  # ends the stream (nothing is sent to a caller that left)

        with self._send_lock:
            with self._lock:
                status = self._statuses.get(service, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)
                self._watchers.setdefault(service, set()).add(send)
            send(health_pb2.HealthCheckResponse(status=status))
        if not context.add_callback(leave):
            leave()

    Watch.experimental_non_blocking = True  # type: ignore[attr-defined]

    def List(  # noqa: N802 - the RPC's name
        self, request: health_pb2.HealthListRequest, context: grpc.ServicerContext
    ) -> health_pb2.HealthListResponse:
        """Every status this server holds, by name (a snapshot)."""
        with self._lock:
            statuses = dict(self._statuses)
        return health_pb2.HealthListResponse(
            statuses={
                name: health_pb2.HealthCheckResponse(status=status)
                for name, status in statuses.items()
            }
        )

    def set(self, service: str, status: _Status) -> None:
        """Report ``service``'s status to Check, List and its watchers (ignored once the
        graceful shutdown has begun)."""
        self._change({service: status})

    def enter_graceful_shutdown(self) -> None:
        """Every status NOT_SERVING, for good (the server is stopping)."""
        with self._lock:
            every = dict.fromkeys(self._statuses, health_pb2.HealthCheckResponse.NOT_SERVING)
        self._change(every, closing=True)

    def _change(self, statuses: Mapping[str, _Status], closing: bool = False) -> None:
        with self._send_lock:
            with self._lock:
                if self._closing:
                    return
                if closing:
                    self._closing = True
                self._statuses.update(statuses)
                sends = [
                    (send, status)
                    for service, status in statuses.items()
                    for send in self._watchers.get(service, ())
                ]
            for send, status in sends:
                # Waits until grpcio has sent it (or the caller has left), outside _lock.
                send(health_pb2.HealthCheckResponse(status=status))


@dataclass(frozen=True)
class ServiceBinding:
    """A servicer, its generated ``add_XServicer_to_server`` function, its full service name."""

    servicer: object
    add_to_server: Callable[[Any, grpc.Server], None]
    full_name: str


# A status travels in the response trailers: grpc-message percent-encoded, and the google.rpc.Status
# (the message again, plus the details) base64-encoded in grpc-status-details-bin. A grpcio client
# refuses trailers above 16 KiB, and may above its 8 KiB soft limit, and then sees
# RESOURCE_EXHAUSTED instead of the real code (a saga would take that for a transient failure and
# retry forever). Errors may quote a client's values, so the edge bounds what a status carries.
MESSAGE_LIMIT = 1024  # bytes of grpc-message as sent
DETAIL_ITEMS_LIMIT = 10  # violations of one BadRequest or PreconditionFailure
DETAIL_TEXT_LIMIT = 160  # UTF-8 bytes of a field path, description, subject, reason, key, value
METADATA_LIMIT = 8  # ErrorInfo metadata entries
STATUS_LIMIT = 6 * 1024  # both trailers together; the last violations go first beyond it


def status_for(error: MeshError) -> grpc.Status:
    """The gRPC status (code, message, google.rpc details) that represents ``error`` on the wire,
    bounded to ``STATUS_LIMIT`` bytes of trailers whatever the error says: every text is cut (with
    an ellipsis) to its limit, at most ``DETAIL_ITEMS_LIMIT`` violations are detailed (the
    message says how many there are), and the last ones are dropped if the whole is still too
    large."""
    message = _clip(error.message, MESSAGE_LIMIT, _encoded_size)
    field_violations: list[Any] = []
    if isinstance(error, InvalidArgument):
        field_violations = [
            error_details_pb2.BadRequest.FieldViolation(
                field=_clip(v.field), description=_clip(v.description)
            )
            for v in error.violations[:DETAIL_ITEMS_LIMIT]
        ]
    precondition_violations: list[Any] = []
    if isinstance(error, FailedPrecondition):
        precondition_violations = [
            error_details_pb2.PreconditionFailure.Violation(
                type=_clip(v.type), subject=_clip(v.subject), description=_clip(v.description)
            )
            for v in error.violations[:DETAIL_ITEMS_LIMIT]
        ]
    metadata = {
        _clip(key): _clip(value) for key, value in list(error.metadata.items())[:METADATA_LIMIT]
    }
    code = getattr(code_pb2, error.status)
    while True:
        details: list[any_pb2.Any] = []
        if field_violations:
            details.append(_pack(error_details_pb2.BadRequest(field_violations=field_violations)))
        if precondition_violations:
            details.append(
                _pack(error_details_pb2.PreconditionFailure(violations=precondition_violations))
            )
        if error.reason:
            info = error_details_pb2.ErrorInfo(
                reason=_clip(error.reason), domain="meshkit", metadata=metadata
            )
            details.append(_pack(info))
        proto = status_pb2.Status(code=code, message=message, details=details)
        size = _encoded_size(message) + (proto.ByteSize() + 2) // 3 * 4
        # Keep the first violation of each kind: a detail with none would say nothing.
        if size <= STATUS_LIMIT or not (
            len(field_violations) > 1 or len(precondition_violations) > 1 or metadata
        ):
            break
        if len(field_violations) > 1:
            field_violations.pop()
        elif len(precondition_violations) > 1:
            precondition_violations.pop()
        else:
            metadata.popitem()
    status: grpc.Status = rpc_status.to_status(proto)
    return status


def _utf8_size(text: str) -> int:
    return len(text.encode())


def _encoded_size(text: str) -> int:
    """Bytes of ``text`` as grpc-message: UTF-8, every byte outside printable ASCII (and ``%``)
    percent-encoded as three."""
    return sum(1 if 0x20 <= b <= 0x7E and b != 0x25 else 3 for b in text.encode())


def _clip(
    text: str, limit: int = DETAIL_TEXT_LIMIT, size: Callable[[str], int] = _utf8_size
) -> str:
    """``text``, or its longest prefix that fits ``limit`` bytes (by ``size``) with an ellipsis."""
    if size(text) <= limit:
        return text
    low, high = 0, min(len(text), limit)
    while low < high:  # the longest prefix that fits, by bisection
        middle = (low + high + 1) // 2
        if size(text[:middle] + "…") <= limit:
            low = middle
        else:
            high = middle - 1
    return text[:low] + "…"


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")


class _EdgeInterceptor(grpc.ServerInterceptor):
    """Maps errors to statuses once, writes the access log and (tracing on) the SERVER span, for
    all four RPC shapes; makes the caller's deadline the handler's budget (meshkit.deadlines);
    counts the RPCs grpcio sheds at the in-flight cap (``pool``, ``shed``)."""

    def __init__(
        self,
        authorizer: authz.Authorizer | None = None,
        pool: _InFlightPool | None = None,
        shed: _ShedTally | None = None,
    ) -> None:
        # server.address/port of this server's SERVER spans; MeshServer.start() sets it once the
        # port is bound (RPCs arrive only after that).
        self.address: tuple[str, int] | None = None
        # Who may call what (meshkit.authz); None: no checks (a bare server of the kit's tests).
        self.authorizer = authorizer
        # method -> (the RpcSpans it was prepared for, span name, span attributes)
        self._attributes: dict[str, tuple[RpcSpans, str, dict[str, AttributeValue]]] = {}
        self.tally = _AccessTally()
        self.pool = pool
        self.shed = shed

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        pool, shed = self.pool, self.shed
        if pool is not None and shed is not None and pool.in_flight >= shed.cap:
            # grpcio answers RESOURCE_EXHAUSTED ("Concurrent RPC limit exceeded!") as soon as
            # this returns; no handler runs, so this is the only place that sees the call.
            shed.add(method)
            _access(logging.DEBUG, method, "RESOURCE_EXHAUSTED", time.perf_counter())
            return handler
        decode = _tolerant(handler.request_deserializer)
        if method == _HEALTH_WATCH:
            return _non_blocking_watch(handler, decode)
        quiet = method.startswith(_QUIET_SERVICES)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, method, quiet),
                request_deserializer=decode,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(handler.unary_stream, method, quiet),
                request_deserializer=decode,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(handler.stream_unary, method, quiet, streamed=True),
                request_deserializer=decode,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is None:
            return handler
        return grpc.stream_stream_rpc_method_handler(
            self._streaming(handler.stream_stream, method, quiet, streamed=True),
            request_deserializer=decode,
            response_serializer=handler.response_serializer,
        )

    def _begin(
        self, context: grpc.ServicerContext, method: str, quiet: bool
    ) -> tuple[trace.Span | None, Token[otel_context.Context]]:
        """Make the RPC's trace context current: a SERVER span (tracing on) or the fallback.
        Returns the span (None when not recording one) and the token to detach."""
        rpc = telemetry._state.rpc
        # The caller's TLS identity rides in the same context (meshkit.tls.current_peer_identity).
        if rpc is None or quiet:
            return None, otel_context.attach(tls.with_peer(context, _trace_context(context)))
        entry = self._attributes.get(method)
        if entry is None or entry[0] is not rpc:
            entry = self._attributes[method] = self._span_attributes(rpc, method)
        span = rpc.start(entry[1], _incoming(context), trace.SpanKind.SERVER, entry[2])
        return span, otel_context.attach(tls.with_peer(context, trace.set_span_in_context(span)))

    def _span_attributes(
        self, rpc: RpcSpans, method: str
    ) -> tuple[RpcSpans, str, dict[str, AttributeValue]]:
        """(rpc, span name, span attributes) of ``method``'s SERVER spans."""
        name = telemetry.rpc_method(method)
        attributes: dict[str, AttributeValue] = {"rpc.system.name": "grpc", "rpc.method": name}
        if self.address is not None:
            attributes["server.address"], attributes["server.port"] = self.address
        return rpc, name, rpc.attributes(attributes)

    def _unary(
        self,
        behaviour: Callable[[Any, grpc.ServicerContext], Any],
        method: str,
        quiet: bool,
        streamed: bool = False,
    ) -> Callable[[Any, grpc.ServicerContext], Any]:
        def wrapper(request: Any, context: grpc.ServicerContext) -> Any:
            start = time.perf_counter()
            span, token = self._begin(context, method, quiet)
            try:
                request = _checked(request, streamed)
                # What is left of the caller's deadline is the handler's budget for its own
                # calls (gRPC Python does not propagate deadlines).
                with (
                    deadlines.bound(context.time_remaining()),
                    self._authorized(method, quiet, request, context),
                ):
                    response = behaviour(request, context)
            except Exception as exc:  # noqa: BLE001 - this is the one place errors are mapped
                _fail(exc, context, method, start, span)
            else:
                # Logged while the span is current, so the access line carries its ids.
                self._log_ok(context, method, start, quiet, span)
                return response
            finally:
                otel_context.detach(token)

        return wrapper

    def _streaming(
        self,
        behaviour: Callable[[Any, grpc.ServicerContext], Iterator[Any]],
        method: str,
        quiet: bool,
        streamed: bool = False,
    ) -> Callable[[Any, grpc.ServicerContext], Iterator[Any]]:
        # The generator must be re-wrapped: exceptions surface while grpc iterates it, not when
        # the behaviour is called. Context is attached around each step rather than across the
        # yields: grpc may resume the generator on another thread, and a context token must be
        # detached on the thread that attached it.
        def wrapper(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            start = time.perf_counter()
            span, token = self._begin(context, method, quiet)
            current = otel_context.get_current()
            otel_context.detach(token)
            try:
                token = otel_context.attach(current)
                try:
                    request = _checked(request, streamed)
                    # The budget too is made current per step, like the trace context.
                    with deadlines.bound(context.time_remaining()):
                        caller = self._caller(method, quiet, request, context)
                        with authz.bound(caller, context.peer()):
                            responses = iter(behaviour(request, context))
                except Exception as exc:  # noqa: BLE001 - this is the one place errors are mapped
                    _fail(exc, context, method, start, span)
                finally:
                    otel_context.detach(token)
                while True:
                    token = otel_context.attach(current)
                    try:
                        with (
                            deadlines.bound(context.time_remaining()),
                            authz.bound(caller, context.peer()),
                        ):
                            response = next(responses)
                    except StopIteration:
                        self._log_ok(context, method, start, quiet, span)
                        return
                    except Exception as exc:  # noqa: BLE001 - the one place errors are mapped
                        _fail(exc, context, method, start, span)
                    finally:
                        otel_context.detach(token)
                    yield response
            except GeneratorExit:  # the client cancelled or went away mid-stream
                _access(logging.INFO, method, "CANCELLED", start)
                if span is not None and span.is_recording():
                    telemetry.end_rpc_span(span, "CANCELLED", client=False)
                raise

        return wrapper

    def _caller(
        self, method: str, quiet: bool, request: Any, context: grpc.ServicerContext
    ) -> authz.Principal | None:
        """The verified caller, once the contract's permission check passed (raises
        Unauthenticated / PermissionDenied otherwise). Health and reflection are not checked."""
        authorizer = self.authorizer
        if authorizer is None or quiet:
            return None
        caller = authorizer.authenticate(context.invocation_metadata())
        with authz.bound(caller, context.peer()):
            authorizer.authorize(authorizer.rule(method), caller, request, context.time_remaining())
        return caller

    def _authorized(
        self, method: str, quiet: bool, request: Any, context: grpc.ServicerContext
    ) -> contextlib.AbstractContextManager[None]:
        """Checks the caller (see ``_caller``), then makes it current for the handler."""
        if self.authorizer is None or quiet:
            return contextlib.nullcontext()
        return authz.bound(self._caller(method, quiet, request, context), context.peer())

    def _log_ok(
        self,
        context: grpc.ServicerContext,
        method: str,
        start: float,
        quiet: bool,
        span: trace.Span | None,
    ) -> None:
        # A handler may set a code without raising (context.set_code); that is the RPC's status.
        code = _code_of(context)
        name = "OK" if code is None else code.name
        if quiet:
            _access(logging.DEBUG, method, name, start)
        elif name != "OK":
            _access(logging.INFO, method, name, start)
        else:
            duration = time.perf_counter() - start
            if duration >= ACCESS_SLOW_S:
                _access(logging.INFO, method, name, start)
            else:
                self.tally.add(method, duration)
                _access(logging.DEBUG, method, name, start)
        if span is not None:
            telemetry.end_rpc_span(span, name, client=False)


_PROBLEM_LIMIT = 100


@dataclass(frozen=True)
class _Undecodable:
    """Stands in for a request body that did not parse, so the handler wrapper (not grpcio) answers
    it: grpcio would log a traceback and send INTERNAL "Exception deserializing request!"."""

    type_name: str
    problem: str

    def error(self) -> InvalidArgument:
        return InvalidArgument(
            f"the request body could not be decoded as {self.type_name}: {self.problem}",
            reason="UNDECODABLE_REQUEST",
        )


def _tolerant(
    deserializer: Callable[[bytes], Any] | None,
) -> Callable[[bytes], Any] | None:
    """``deserializer`` that returns an ``_Undecodable`` instead of raising on a malformed body
    (bad UTF-8 in a string, a truncated message, a wrong wire type, nesting too deep).

    grpcio calls the deserializer outside any handler and treats an exception as a server fault;
    a body that does not parse is the caller's fault, so ``_checked`` turns it into
    INVALID_ARGUMENT inside the wrapper, where the access log and the span see it.
    """
    if deserializer is None:
        return None
    owner = getattr(deserializer, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    type_name = str(getattr(descriptor, "full_name", "the request type"))

    def deserialize(body: bytes) -> Any:
        try:
            return deserializer(body)
        except (message.DecodeError, UnicodeDecodeError) as exc:
            # upb says "Error parsing message with type 'T': <problem>"; keep the problem only,
            # never the body.
            problem = str(exc).rpartition(": ")[2] or type(exc).__name__
            return _Undecodable(type_name, problem[:_PROBLEM_LIMIT])

    return deserialize


def _non_blocking_watch(
    handler: grpc.RpcMethodHandler[Any, Any], decode: Callable[[bytes], Any] | None
) -> grpc.RpcMethodHandler[Any, Any]:
    """Health Watch as grpcio runs it non-blocking (no worker held; see MeshHealthServicer),
    with the kit's tolerant decoding: an undecodable request is INVALID_ARGUMENT, as for every
    other RPC, not grpcio's INTERNAL "Exception deserializing request!"."""
    watch = handler.unary_stream
    assert watch is not None

    def checked(
        request: Any, context: grpc.ServicerContext, send_response_callback: Any = None
    ) -> Any:
        if isinstance(request, _Undecodable):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.error().message)
        return watch(request, context, send_response_callback=send_response_callback)  # type: ignore[call-arg]

    checked.experimental_non_blocking = True  # type: ignore[attr-defined]
    return grpc.unary_stream_rpc_method_handler(
        checked, request_deserializer=decode, response_serializer=handler.response_serializer
    )


def _checked(request: Any, streamed: bool) -> Any:
    """The request, or raise InvalidArgument for an undecodable one (lazily, per message, in a
    request stream)."""
    if streamed:
        return _checked_stream(request)
    if isinstance(request, _Undecodable):
        raise request.error()
    return request


def _checked_stream(requests: Iterator[Any]) -> Iterator[Any]:
    for request in requests:
        if isinstance(request, _Undecodable):
            raise request.error()
        yield request


_TRACE_KEYS = (telemetry.TRACEPARENT, telemetry.TRACESTATE)


def _incoming(context: grpc.ServicerContext) -> trace.SpanContext | None:
    """The caller's span context from the call's metadata, or None (the span is a root)."""
    traceparent = tracestate = None
    for key, value in context.invocation_metadata():
        if key == "traceparent":
            traceparent = value
        elif key == "tracestate":
            tracestate = value
    return telemetry.parse_traceparent(
        traceparent if isinstance(traceparent, str) else None,
        tracestate if isinstance(tracestate, str) else None,
    )


def _trace_context(context: grpc.ServicerContext) -> otel_context.Context:
    """The caller's W3C trace context, or a fresh unsampled one when there is none."""
    incoming = _incoming(context)
    if incoming is not None:
        return trace.set_span_in_context(trace.NonRecordingSpan(incoming))
    fresh = trace.SpanContext(
        trace_id=random.getrandbits(128) or 1,
        span_id=random.getrandbits(64) or 1,
        is_remote=False,
        trace_flags=trace.TraceFlags(trace.TraceFlags.DEFAULT),
    )
    return trace.set_span_in_context(trace.NonRecordingSpan(fresh))


def _access(level: int, method: str, code: str, start: float) -> None:
    if not access_log.isEnabledFor(level):
        return
    duration_ms = round((time.perf_counter() - start) * 1000, 3)
    access_log.log(
        level,
        "%s %s %.1fms",
        method,
        code,
        duration_ms,
        extra={"rpc.method": method, "rpc.code": code, "duration_ms": duration_ms},
    )


def _code_of(context: grpc.ServicerContext) -> grpc.StatusCode | None:
    """The status code a handler set on ``context`` (grpcio has ``code()``; the stubs lack it)."""
    code: grpc.StatusCode | None = context.code()  # type: ignore[attr-defined]
    return code


def _details_of(context: grpc.ServicerContext) -> str:
    """The status message a handler set on ``context`` (grpcio has ``details()``, as bytes)."""
    details: bytes | str | None = context.details()  # type: ignore[attr-defined]
    if isinstance(details, bytes):
        return details.decode(errors="replace")
    return details or ""


def _fail(
    exc: Exception,
    context: grpc.ServicerContext,
    method: str,
    start: float,
    span: trace.Span | None = None,
) -> NoReturn:
    """Abort the RPC with the status that represents ``exc``; always raises. Ends ``span`` with
    that status first (the abort raises out of the wrapper)."""
    if isinstance(exc, MeshError):
        status = status_for(exc)
        _access(logging.INFO, method, status.code.name, start)
        if span is not None:
            telemetry.end_rpc_span(span, status.code.name, client=False)
        context.abort_with_status(status)
    code = _code_of(context)
    if code not in (None, grpc.StatusCode.OK):
        # The handler aborted by itself (context.abort), or set a status and raised (generated
        # servicer bases do, for an unimplemented method: UNIMPLEMENTED, NotImplementedError).
        # Either way that status is the answer; aborting with it (again) keeps grpcio from
        # logging the exception as a crash of the application.
        _access(logging.INFO, method, code.name, start)
        if span is not None:
            telemetry.end_rpc_span(span, code.name, client=False)
        context.abort(code, _details_of(context))
    if not context.is_active():
        # The client cancelled or went away, typically while the handler read its request
        # stream: grpcio then ends that iterator with an RpcError, or (a race) a bare
        # StopIteration that a generator turns into RuntimeError. Nobody is there to answer.
        log.info(
            "%s: the client left; the handler ended with %s",
            method,
            type(exc).__name__,
            extra={"rpc.method": method},
        )
        _access(logging.INFO, method, "CANCELLED", start)
        if span is not None:
            telemetry.end_rpc_span(span, "CANCELLED", client=False)
        raise exc
    log.exception("unhandled error in %s", method, extra={"rpc.method": method})
    _access(logging.ERROR, method, "INTERNAL", start)
    if span is not None:
        telemetry.end_rpc_span(span, "INTERNAL", client=False, exc=exc)
    context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}; see the service log")


class MeshServer:
    """A gRPC server built by ``create_server``. Start it, then ``wait()`` or ``run()``.

    Thread safety: ``stop()`` may be called from any thread, any number of times.
    """

    def __init__(  # noqa: PLR0917 - built by create_server
        self,
        name: str,
        settings: ServerSettings,
        services: Sequence[ServiceBinding],
        on_stop: Sequence[Callable[[], None]] = (),
        interceptors: Sequence[grpc.ServerInterceptor] = (),
        authorizer: authz.Authorizer | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self._services = tuple(services)
        self._on_stop = list(on_stop)
        # In flight: running or queued for a worker. Beyond the cap grpcio sheds at once.
        self.rpc_cap = settings.rpc_cap
        pool = _InFlightPool(settings.max_workers, f"{name}-rpc")
        self._edge = _EdgeInterceptor(authorizer, pool, _ShedTally(name, self.rpc_cap))
        # Off unless $MESH_FAULTS, $MESH_FAULTS_FILE or .mesh/faults/<name>.json says otherwise.
        self.faults = FaultInjector(name)
        self._grpc = grpc.server(
            pool,
            interceptors=[self._edge, self.faults, *interceptors],
            options=[("grpc.so_reuseport", 0)],
            maximum_concurrent_rpcs=self.rpc_cap,
        )
        self.health = MeshHealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._grpc)
        for binding in self._services:
            binding.add_to_server(binding.servicer, self._grpc)
        reflection.enable_server_reflection(
            [
                *(b.full_name for b in self._services),
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            self._grpc,
        )
        self.port = 0
        # The faults file is re-checked every 0.5 s, by a worker like any other.
        self._workers: list[tuple[str, Callable[[threading.Event], None]]] = [
            ("faults", self.faults.run_forever)
        ]
        self._threads: list[threading.Thread] = []
        self._workers_stop = threading.Event()
        self._stop_lock = threading.Lock()
        self._stopped = threading.Event()
        self._stopping = False

    def on_stop(self, closer: Callable[[], None]) -> None:
        """Run ``closer`` after the server has drained (closers run in the order added)."""
        self._on_stop.append(closer)

    def add_worker(self, name: str, run_forever: Callable[[threading.Event], None]) -> None:
        """Run ``run_forever(stop)`` in a thread of its own from ``start()``; on stop, after the
        RPCs have drained, ``stop`` is set and the thread joined before the closers run.

        ``run_forever`` must return soon after ``stop`` is set; an exception escaping it is
        logged and marks the server NOT_SERVING (a dead worker is an unhealthy service).
        """
        self._workers.append((name, run_forever))

    def start(self) -> int:
        """Bind, start serving, mark every service SERVING; returns the bound port."""
        address = f"{self.settings.host}:{self.settings.port}"
        # MESH_TLS_DIR (mesh up --tls): mTLS only, client certificates required (meshkit.tls).
        directory = tls.tls_dir()
        try:
            if directory is None:
                self.port = self._grpc.add_insecure_port(address)
            else:
                credentials = tls.server_credentials(tls.tls_name(self.name), directory)
                self.port = self._grpc.add_secure_port(address, credentials)
        except RuntimeError as exc:
            raise OSError(f"{self.name}: cannot listen on {address}: {exc}") from None
        if not self.port:
            raise OSError(f"{self.name}: cannot listen on {address}")
        self._edge.address = (self.settings.host, self.port)
        self._grpc.start()
        for service in ["", *(b.full_name for b in self._services)]:
            self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        for name, run_forever in self._workers:
            thread = threading.Thread(
                target=self._run_worker, args=(name, run_forever), name=f"{self.name}-{name}"
            )
            thread.start()
            self._threads.append(thread)
        log.info(
            "%s serving on %s:%d%s",
            self.name,
            self.settings.host,
            self.port,
            "" if directory is None else " (mTLS only)",
            extra={"port": self.port, "services": [b.full_name for b in self._services]},
        )
        return self.port

    def _run_worker(self, name: str, run_forever: Callable[[threading.Event], None]) -> None:
        try:
            run_forever(self._workers_stop)
        except Exception:  # reported, and the service reports itself unhealthy
            log.exception("%s: worker %s died", self.name, name)
            if not self._workers_stop.is_set():
                self.set_serving("", False)

    def set_serving(self, service: str, serving: bool) -> None:
        """Report one service (or ``""``, the whole server) SERVING or NOT_SERVING in health."""
        status = health_pb2.HealthCheckResponse
        self.health.set(service, status.SERVING if serving else status.NOT_SERVING)

    def stop(self, grace: float | None = None) -> None:
        """NOT_SERVING, stop accepting, drain in-flight RPCs for ``grace`` seconds, run closers."""
        with self._stop_lock:
            if self._stopping:
                self._stopped.wait()
                return
            self._stopping = True
        grace = self.settings.grace_seconds if grace is None else grace
        log.info("%s stopping: draining for up to %.1fs", self.name, grace)
        self.health.enter_graceful_shutdown()
        self._grpc.stop(grace).wait()
        self._edge.tally.flush()
        if self._edge.shed is not None:
            self._edge.shed.flush()
        self._workers_stop.set()
        for thread in self._threads:
            thread.join(timeout=max(grace, 5.0))
            if thread.is_alive():
                log.error("%s: worker %s did not stop in time", self.name, thread.name)
        for closer in self._on_stop:
            try:
                closer()
            except Exception:
                log.exception("error while stopping %s", self.name)
        # After the workers and closers: the relay's and consumers' last spans go out too.
        telemetry.force_flush()
        log.info("%s stopped", self.name)
        self._stopped.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until ``stop()`` has completed; returns False on timeout."""
        return self._stopped.wait(timeout)

    def run(self) -> None:
        """Start, stop gracefully on SIGTERM or SIGINT, and return once stopped."""

        def on_signal(signum: int, _frame: object) -> None:
            log.info("%s received %s", self.name, signal.Signals(signum).name)
            threading.Thread(target=self.stop, name=f"{self.name}-stop", daemon=True).start()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.start()
        # Wait in short slices so the main thread keeps running Python signal handlers.
        while not self.wait(0.5):
            pass


def create_server(
    name: str,
    settings: ServerSettings,
    services: Sequence[ServiceBinding],
    *,
    on_stop: Sequence[Callable[[], None]] = (),
    interceptors: Sequence[grpc.ServerInterceptor] = (),
    authorizer: authz.Authorizer | None = None,
) -> MeshServer:
    """Build the server of service ``name``; nothing listens until ``start()`` or ``run()``.

    ``authorizer`` checks every RPC's declared permission before its handler runs (see
    meshkit.authz; the kit's ``Service`` always passes one); None serves without checks."""
    return MeshServer(name, settings, services, on_stop, interceptors, authorizer)


_S = TypeVar("_S", bound=ServerSettings)


def run_service(
    name: str,
    prefix: str,
    settings_type: type[_S],
    build: Callable[[_S], MeshServer],
    *,
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    description: str = "",
    defaults: Mapping[str, Any] | None = None,
    unused: Collection[str] = (),
) -> int:
    """The whole ``python -m <service>`` entry point: settings, logging, build, serve.
    ``unused``: settings ``--help`` leaves out because this service never reads them.

    ``--help`` lists every setting; a bad setting exits 2 naming the key; SIGTERM exits 0.
    ``defaults`` overrides settings defaults known only at run time (see ``load_settings``).
    """
    import os

    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        sys.stdout.write(
            f"usage: python -m {name}\n\n{description}\n\n"
            "Settings (environment variables):\n"
            f"{describe_settings(settings_type, prefix, defaults, unused)}\n"
        )
        return 0
    if args:
        sys.stderr.write(
            f"{name}: unexpected arguments {args}; settings come from the environment\n"
        )
        return 2
    try:
        settings = load_settings(
            settings_type, prefix, os.environ if env is None else env, defaults
        )
    except SettingsError as exc:
        sys.stderr.write(f"{name}: bad setting: {exc}\n")
        return 2
    configure_logging(name, settings.log_level)
    telemetry.configure(name)
    try:
        server = build(settings)
    except MeshError as exc:
        # E.g. an event schema that is not registered: refuse to start, saying which.
        log.error("%s refuses to start: %s", name, exc.message)
        telemetry.shutdown()
        return 1
    try:
        server.run()
    except OSError as exc:
        log.error("%s", exc)
        server.stop(0)
        return 1
    finally:
        telemetry.shutdown()
    return 0
