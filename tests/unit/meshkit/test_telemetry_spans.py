"""meshkit.spans through meshkit.telemetry: RPC spans as the SDK would make them, the sampling
decision taken once at the edge, and an export queue that never loses a span silently.

In process: a meshkit server and a ``connect()`` channel; spans go through the configured
processor to an in-memory exporter, or to a test exporter that blocks or fails on purpose.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, Tracer
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from meshkit import MeshServer, ServerSettings, ServiceBinding, connect, create_server, telemetry
from meshkit.spans import RpcSpan, RpcSpans

SERVICE = "test.v1.Spans"
TRACE = "0af7651916cd43dd8448eb211c80319c"
SAMPLED = f"00-{TRACE}-b7ad6b7169203331-01"
UNSAMPLED = f"00-{TRACE}-b7ad6b7169203331-00"


class Annotating:
    """Echo; ``nested`` calls Echo again; ``annotate`` decorates the current (SERVER) span."""

    def __init__(self) -> None:
        self.channel: grpc.Channel | None = None
        self.seen: list[str] = []

    def echo(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self.seen.append(dict(context.invocation_metadata()).get("traceparent", ""))
        if request == b"nested":
            assert self.channel is not None
            inner: bytes = self.channel.unary_unary(f"/{SERVICE}/Echo")(b"inner", timeout=5)
            return inner
        if request == b"annotate":
            span = trace.get_current_span()
            span.set_attribute("app.order", "o-1")
            span.set_attributes({"app.lines": 3, "app.tags": ["a", "b"]})
            span.add_event("reserved", {"sku": "mug"})
            span.record_exception(ValueError("handled"))
            span.set_status(StatusCode.OK)
        return request

    def add_to(self, servicer: object, server: grpc.Server) -> None:
        handler = grpc.unary_unary_rpc_method_handler(self.echo)
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(SERVICE, {"Echo": handler})]
        )


@pytest.fixture
def mesh() -> Iterator[tuple[Annotating, MeshServer, grpc.Channel]]:
    service = Annotating()
    server = create_server(
        "spans", ServerSettings(port=0), [ServiceBinding(service, service.add_to, SERVICE)]
    )
    port = server.start()
    channel = connect(f"127.0.0.1:{port}", retry=False)
    service.channel = channel
    yield service, server, channel
    channel.close()
    server.stop(0)
    telemetry.shutdown()


def call(channel: grpc.Channel, payload: bytes, traceparent: str | None = None) -> bytes:
    metadata = (("traceparent", traceparent),) if traceparent else ()
    out: bytes = channel.unary_unary(f"/{SERVICE}/Echo")(payload, timeout=5, metadata=metadata)
    return out


def configure_memory() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    assert telemetry.configure("spans", exporter=exporter, processor="simple")
    return exporter


# -- the fast path is the SDK's outcome ------------------------------------------------------


def test_rpc_spans_start_what_the_sdk_tracer_would() -> None:
    memory = configure_memory()
    sdk = telemetry.tracer()
    assert isinstance(sdk, Tracer)
    rpc = RpcSpans(sdk)
    assert rpc.fast  # the default configuration: ParentBased(ALWAYS_ON), random ids
    attributes = rpc.attributes({"rpc.method": "a.B/C", "server.port": 1})
    parent = telemetry.parse_traceparent(f"00-{TRACE}-b7ad6b7169203331-03", "k=v")
    assert parent is not None
    for parent_context in (parent, None):
        ours = rpc.start("a.B/C", parent_context, SpanKind.SERVER, attributes)
        theirs = sdk.start_span(
            "a.B/C",
            telemetry.context_from(parent_context),
            kind=SpanKind.SERVER,
            attributes=attributes,
        )
        assert isinstance(ours, RpcSpan)
        for span in (ours, theirs):
            span.set_attribute("rpc.status_code", "OK")
            span.end()
        mine, sdks = memory.get_finished_spans()[-2:]
        assert mine.context is not None and sdks.context is not None
        if parent_context is not None:
            assert mine.context.trace_id == sdks.context.trace_id == parent_context.trace_id
        assert mine.context.span_id != sdks.context.span_id
        for field in ("trace_flags", "trace_state", "is_remote"):
            assert getattr(mine.context, field) == getattr(sdks.context, field), field
        for field in ("name", "kind", "parent", "resource", "instrumentation_scope"):
            assert getattr(mine, field) == getattr(sdks, field), field
        assert mine.status.status_code is sdks.status.status_code is StatusCode.UNSET
        assert dict(mine.attributes or {}) == dict(sdks.attributes or {})
        assert mine.start_time and mine.end_time and mine.end_time >= mine.start_time


def test_a_handler_annotates_the_server_span_within_the_sdk_limits(
    mesh: tuple[Annotating, MeshServer, grpc.Channel], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "6")
    memory = configure_memory()
    assert call(mesh[2], b"annotate") == b"annotate"
    (server,) = [s for s in memory.get_finished_spans() if s.kind is SpanKind.SERVER]
    attributes = dict(server.attributes or {})
    assert attributes["app.order"] == "o-1" and attributes["app.tags"] == ("a", "b")
    assert len(attributes) == 6 and server.dropped_attributes > 0  # 4 RPC ones + 4 + status
    assert [e.name for e in server.events] == ["reserved", "exception"]
    assert server.events[1].attributes and server.events[1].attributes["exception.type"] == (
        "ValueError"
    )
    assert server.status.status_code is StatusCode.OK
    # Ended spans refuse changes, as the SDK's do.
    span = memory.get_finished_spans()[0]
    assert isinstance(span, trace.Span) and not span.is_recording()


# -- sampled at the edge ---------------------------------------------------------------------


def test_an_unsampled_caller_is_honoured_and_passed_on(
    mesh: tuple[Annotating, MeshServer, grpc.Channel],
) -> None:
    memory = configure_memory()
    service, _, channel = mesh
    raw = grpc.insecure_channel(f"127.0.0.1:{mesh[1].port}")
    try:
        raw.unary_unary(f"/{SERVICE}/Echo")(
            b"nested", timeout=5, metadata=(("traceparent", UNSAMPLED),)
        )
    finally:
        raw.close()
    assert memory.get_finished_spans() == ()  # nothing recorded anywhere downstream
    outer, inner = service.seen[-2:]
    assert outer == UNSAMPLED
    _, trace_id, _, flags = inner.split("-")
    assert trace_id == TRACE and int(flags, 16) & 1 == 0  # the decision travels on

    assert call(channel, b"nested", SAMPLED) == b"inner"
    spans = memory.get_finished_spans()
    assert len(spans) == 4  # client, server, client, server: one trace
    assert {format(s.context.trace_id, "032x") for s in spans if s.context} == {TRACE}


def test_a_root_sampler_decides_once_at_the_edge(
    mesh: tuple[Annotating, MeshServer, grpc.Channel], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0")
    memory = configure_memory()
    _, _, channel = mesh
    assert call(channel, b"nested") == b"inner"
    assert memory.get_finished_spans() == ()  # the root said no: no hop records anything
    assert call(channel, b"nested", SAMPLED) == b"inner"
    assert len(memory.get_finished_spans()) == 4  # a sampled caller is followed everywhere


# -- never silently dropped ------------------------------------------------------------------


class Gate(SpanExporter):
    """Blocks in its first export until ``release``; then accepts, or fails when ``fail``."""

    def __init__(self, fail: bool = False) -> None:
        self.exporting = threading.Event()
        self.released = threading.Event()
        self.fail = fail
        self.received = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exporting.set()
        self.released.wait(10)
        self.received += len(spans)
        return SpanExportResult.FAILURE if self.fail else SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.released.set()


def make_spans(count: int) -> None:
    for _ in range(count):
        with telemetry.span("work"):
            pass


def test_a_full_queue_drops_counts_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "4")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "2")
    gate = Gate()
    caplog.set_level(logging.WARNING, logger="meshkit.telemetry")
    assert telemetry.configure("spans", exporter=gate)
    try:
        make_spans(2)  # a full batch: the export thread takes it and blocks in the exporter
        assert gate.exporting.wait(10)
        make_spans(10)  # 4 fit in the queue, 6 do not
        stats = telemetry.export_stats()
        assert stats is not None and (stats.dropped, stats.queued, stats.lost) == (6, 4, 6)
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, warnings  # rate-limited: one line for the burst
        assert "lost 1 spans" in warnings[0] and "queue of 4 full" in warnings[0]
        gate.released.set()
        assert telemetry.force_flush()
        stats = telemetry.export_stats()
        assert stats is not None and (stats.exported, stats.dropped, stats.queued) == (6, 6, 0)
        assert stats.exported + stats.dropped == 12  # every span accounted for
    finally:
        telemetry.shutdown()
    # What the rate limit held back is reported at shutdown.
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "lost 5 spans" in warnings[1] and "6 lost in all" in warnings[1]
    assert telemetry.export_stats() == stats  # still readable after shutdown


def test_batches_the_exporter_gives_up_on_are_counted(caplog: pytest.LogCaptureFixture) -> None:
    gate = Gate(fail=True)
    gate.released.set()
    caplog.set_level(logging.WARNING, logger="meshkit.telemetry")
    assert telemetry.configure("spans", exporter=gate)
    try:
        make_spans(3)
        assert telemetry.force_flush()
        stats = telemetry.export_stats()
        assert stats is not None and (stats.exported, stats.failed, stats.lost) == (0, 3, 3)
        assert any("3 not delivered" in r.getMessage() for r in caplog.records)
    finally:
        telemetry.shutdown()
