"""meshkit.telemetry: SERVER/CLIENT spans of the edge and client interceptors, W3C context in and
out, status on errors, the span() helper and the tracing-off fallback.

In process: a meshkit server and a ``connect()`` channel, spans collected by an
InMemorySpanExporter through a SimpleSpanProcessor (exported as each span ends).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from meshkit import (
    MeshServer,
    NotFound,
    ServerSettings,
    ServiceBinding,
    connect,
    create_server,
    telemetry,
)

SERVICE = "test.v1.Traced"
CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
CALLER = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"


class Traced:
    """Echo, errors, a nested call to itself (server -> client -> server) and a stream."""

    def __init__(self) -> None:
        self.channel: grpc.Channel | None = None
        self.seen_metadata: list[dict[str, str]] = []
        self.lock = threading.Lock()

    def echo(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        with self.lock:
            self.seen_metadata.append({k: str(v) for k, v in context.invocation_metadata()})
        if request == b"missing":
            raise NotFound("no such thing")
        if request == b"bug":
            raise ZeroDivisionError("boom")
        if request == b"nested":
            assert self.channel is not None
            with telemetry.span("step", attributes={"step": "one"}):
                inner: bytes = self.channel.unary_unary(f"/{SERVICE}/Echo")(b"inner", timeout=5)
            return inner
        return request

    def stream(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        yield b"a"
        yield b"b"

    def add_to(self, servicer: object, server: grpc.Server) -> None:
        handlers = {
            "Echo": grpc.unary_unary_rpc_method_handler(self.echo),
            "Stream": grpc.unary_stream_rpc_method_handler(self.stream),
        }
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    assert telemetry.configure("traced", exporter=exporter, processor="simple")
    yield exporter
    telemetry.shutdown()


@pytest.fixture
def traced() -> Iterator[tuple[Traced, MeshServer, grpc.Channel]]:
    service = Traced()
    server = create_server(
        "traced", ServerSettings(port=0), [ServiceBinding(service, service.add_to, SERVICE)]
    )
    port = server.start()
    channel = connect(f"127.0.0.1:{port}", retry=False)
    service.channel = channel
    yield service, server, channel
    channel.close()
    server.stop(0)


def echo(
    channel: grpc.Channel, payload: bytes, metadata: tuple[tuple[str, str], ...] = ()
) -> bytes:
    result: bytes = channel.unary_unary(f"/{SERVICE}/Echo")(payload, timeout=5, metadata=metadata)
    return result


def by_kind(exporter: InMemorySpanExporter) -> dict[SpanKind, list[ReadableSpan]]:
    out: dict[SpanKind, list[ReadableSpan]] = {}
    for span in exporter.get_finished_spans():
        out.setdefault(span.kind, []).append(span)
    return out


def test_client_and_server_spans_follow_current_rpc_conventions(
    spans: InMemorySpanExporter, traced: tuple[Traced, MeshServer, grpc.Channel]
) -> None:
    _, server, channel = traced
    assert echo(channel, b"hi") == b"hi"
    kinds = by_kind(spans)
    (client,) = kinds[SpanKind.CLIENT]
    (srv,) = kinds[SpanKind.SERVER]
    assert client.name == srv.name == f"{SERVICE}/Echo"
    assert dict(client.attributes or {}) == {
        "rpc.system.name": "grpc",
        "rpc.method": f"{SERVICE}/Echo",
        "rpc.status_code": "OK",
        "server.address": "127.0.0.1",
        "server.port": server.port,
    }
    assert dict(srv.attributes or {}) == {
        "rpc.system.name": "grpc",
        "rpc.method": f"{SERVICE}/Echo",
        "rpc.status_code": "OK",
        "server.address": "127.0.0.1",
        "server.port": server.port,
    }
    # The server span is the client span's child, across the wire.
    assert client.context is not None and srv.context is not None and srv.parent is not None
    assert srv.context.trace_id == client.context.trace_id
    assert srv.parent.span_id == client.context.span_id
    assert srv.parent.is_remote
    assert srv.resource.attributes["service.name"] == "traced"


def test_incoming_traceparent_is_honoured(
    spans: InMemorySpanExporter, traced: tuple[Traced, MeshServer, grpc.Channel]
) -> None:
    raw = grpc.insecure_channel(f"127.0.0.1:{traced[1].port}")
    try:
        raw.unary_unary(f"/{SERVICE}/Echo")(b"x", timeout=5, metadata=(("traceparent", CALLER),))
    finally:
        raw.close()
    (srv,) = spans.get_finished_spans()
    assert srv.kind is SpanKind.SERVER and srv.parent is not None and srv.context is not None
    assert format(srv.context.trace_id, "032x") == CALLER_TRACE
    assert format(srv.parent.span_id, "016x") == CALLER_SPAN


def test_parent_child_across_a_nested_call(
    spans: InMemorySpanExporter, traced: tuple[Traced, MeshServer, grpc.Channel]
) -> None:
    service, _, channel = traced
    assert echo(channel, b"nested", (("traceparent", CALLER),)) == b"inner"
    finished = spans.get_finished_spans()
    assert {format(s.context.trace_id, "032x") for s in finished if s.context} == {CALLER_TRACE}
    ids = {s.context.span_id for s in finished if s.context}
    names = [(s.kind, s.name) for s in finished]
    assert len(finished) == 5, names  # client, server, step, client, server
    for span in finished:
        assert span.parent is not None
        assert span.parent.span_id in ids or format(span.parent.span_id, "016x") == CALLER_SPAN
    (step,) = [s for s in finished if s.name == "step"]
    inner_client = next(
        s
        for s in finished
        if s.kind is SpanKind.CLIENT
        and s.parent
        and s.parent.span_id == (step.context.span_id if step.context else 0)
    )
    assert step.kind is SpanKind.INTERNAL and dict(step.attributes or {}) == {"step": "one"}
    # The nested call carried the inner CLIENT span's context on the wire.
    assert inner_client.context is not None
    sent = service.seen_metadata[-1]["traceparent"]
    assert sent == telemetry.format_traceparent(inner_client.context)


def test_not_found_is_an_error_for_the_client_only(
    spans: InMemorySpanExporter, traced: tuple[Traced, MeshServer, grpc.Channel]
) -> None:
    with pytest.raises(grpc.RpcError):
        echo(traced[2], b"missing")
    kinds = by_kind(spans)
    (client,), (srv,) = kinds[SpanKind.CLIENT], kinds[SpanKind.SERVER]
    assert client.attributes and client.attributes["rpc.status_code"] == "NOT_FOUND"
    assert client.attributes["error.type"] == "NOT_FOUND"
    assert client.status.status_code is StatusCode.ERROR
    assert srv.attributes and srv.attributes["rpc.status_code"] == "NOT_FOUND"
    assert "error.type" not in srv.attributes
    assert srv.status.status_code is StatusCode.UNSET


def test_unhandled_error_is_internal_with_the_exception_recorded(
    spans: InMemorySpanExporter, traced: tuple[Traced, MeshServer, grpc.Channel]
) -> None:
    with pytest.raises(grpc.RpcError):
        echo(traced[2], b"bug")
    (srv,) = by_kind(spans)[SpanKind.SERVER]
    assert srv.attributes and srv.attributes["error.type"] == "INTERNAL"
    assert srv.status.status_code is StatusCode.ERROR
    assert [e.name for e in srv.events] == ["exception"]


def test_server_stream_span_ends_with_the_stream(
    spans: InMemorySpanExporter, traced: tuple[Traced, MeshServer, grpc.Channel]
) -> None:
    got = list(traced[2].unary_stream(f"/{SERVICE}/Stream")(b"", timeout=5))
    assert got == [b"a", b"b"]
    kinds = by_kind(spans)
    assert [s.attributes["rpc.status_code"] for s in kinds[SpanKind.SERVER] if s.attributes] == [
        "OK"
    ]
    assert [s.attributes["rpc.status_code"] for s in kinds[SpanKind.CLIENT] if s.attributes] == [
        "OK"
    ]


def test_health_checks_make_no_spans(
    spans: InMemorySpanExporter, traced: tuple[Traced, MeshServer, grpc.Channel]
) -> None:
    from meshkit import check_health

    assert check_health(traced[2])
    assert [s.kind for s in spans.get_finished_spans()] == [SpanKind.CLIENT]


def test_span_helper_continues_a_stored_traceparent_and_records_errors(
    spans: InMemorySpanExporter,
) -> None:
    with pytest.raises(ValueError), telemetry.span("saga step", parent=CALLER) as current:
        assert telemetry.current_traceparent() == telemetry.format_traceparent(
            current.get_span_context()
        )
        raise ValueError("declined")
    (step,) = spans.get_finished_spans()
    assert step.context and format(step.context.trace_id, "032x") == CALLER_TRACE
    assert step.parent and format(step.parent.span_id, "016x") == CALLER_SPAN
    assert step.status.status_code is StatusCode.ERROR
    assert step.attributes and step.attributes["error.type"] == "ValueError"


def test_tracing_off_still_passes_one_trace_id_along(
    traced: tuple[Traced, MeshServer, grpc.Channel],
) -> None:
    telemetry.shutdown()
    service, _, channel = traced
    assert echo(channel, b"nested", (("traceparent", CALLER),)) == b"inner"
    # The inner call carries the caller's trace id (unrecorded), so both services log it.
    outer, inner = service.seen_metadata[-2:]
    assert outer["traceparent"] == CALLER
    assert inner["traceparent"].split("-")[1] == CALLER_TRACE


def test_configure_needs_an_endpoint_and_honours_sdk_disabled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    assert not telemetry.configure("svc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not telemetry.configure("svc")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "false")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "renamed")
    try:
        assert telemetry.configure("svc")
        assert telemetry.enabled()
        # No span here: it would be exported to nowhere, with retries, at shutdown.
        provider = telemetry._state.provider
        assert provider is not None
        assert provider.resource.attributes["service.name"] == "renamed"
    finally:
        telemetry.shutdown(timeout_s=0.1)
    assert not telemetry.enabled()


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        (CALLER, True),
        ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03", True),
        ("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-future", True),
        ("00-00000000000000000000000000000000-b7ad6b7169203331-01", False),
        ("ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", False),
        ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01", False),
        ("00-zzf7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", False),
        ("", False),
    ],
)
def test_parse_traceparent(value: str, valid: bool) -> None:
    parsed = telemetry.parse_traceparent(value)
    assert (parsed is not None) is valid
    if parsed is not None:
        assert parsed.is_remote and parsed.is_valid
