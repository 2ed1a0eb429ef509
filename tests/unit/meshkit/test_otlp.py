"""meshkit.otlp: the hand-written span encoder gives exactly the SDK encoder's bytes, and the
exporter built on it delivers spans a real OTLP receiver reads back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, Tracer, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)
from opentelemetry.util.types import AttributeValue

from mesh_runner import receiver
from mesh_runner.tracestore import TraceStore
from meshkit import otlp
from meshkit.spans import RpcSpans


def spans_of_every_shape() -> list[ReadableSpan]:
    """Spans over two resources and three scopes: every kind, remote and local parents, a
    tracestate, events, links with attributes, statuses with and without text, attribute
    values of every type (negative and huge ints, empty strings, False, 0.0, tuples) and
    dropped attributes, events and links."""
    memory = InMemorySpanExporter()
    limits = SpanLimits(max_span_attributes=12, max_events=2, max_links=2)

    def provider(attributes: dict[str, object], schema_url: str = "") -> TracerProvider:
        p = TracerProvider(
            resource=Resource(attributes, schema_url=schema_url),  # type: ignore[arg-type]
            span_limits=limits,
        )
        p.add_span_processor(SimpleSpanProcessor(memory))
        return p

    orders = provider({"service.name": "orders", "service.instance.id": "i-1", "n": 3})
    views = provider({"service.name": "order_views"}, schema_url="https://opentelemetry.io/s/1")
    plain = orders.get_tracer("meshkit")
    versioned = orders.get_tracer("other", "1.2.3", schema_url="https://x/s", attributes={"a": 1})
    remote = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0x00F067AA0BA902B7,
        is_remote=True,
        trace_flags=TraceFlags(1),
        trace_state=TraceState([("vendor", "v1"), ("other", "x")]),
    )
    every_value: dict[str, AttributeValue] = {
        "s": "text",
        "empty": "",
        "unicode": "Grüße ✓",
        "t": True,
        "f": False,
        "i": 42,
        "zero": 0,
        "neg": -7,
        "big": 2**62,
        "d": 1.5,
        "dz": 0.0,
        "strings": ("a", "", "c"),
        "ints": (1, -2),
        "more": "over the limit",  # the 13th: dropped
        "dropped": "too",
    }
    with plain.start_as_current_span(
        "shop.orders.v1.OrdersService/PlaceOrder",
        context=set_span_in_context(NonRecordingSpan(remote)),
        kind=SpanKind.SERVER,
        attributes=every_value,
    ) as root:
        root.add_event("first", {"k": "v"})
        root.add_event("second")
        root.add_event("third: dropped")
        with plain.start_as_current_span("send orders.events.v1", kind=SpanKind.PRODUCER) as out:
            out.set_status(Status(StatusCode.ERROR, "broker down"))
        with versioned.start_as_current_span("step", kind=SpanKind.INTERNAL) as step:
            step.set_status(Status(StatusCode.OK))
        with plain.start_as_current_span("call", kind=SpanKind.CLIENT) as call:
            call.set_status(Status(StatusCode.ERROR))
    views.get_tracer("meshkit").start_span(
        "process orders.events.v1",
        context=set_span_in_context(out),
        kind=SpanKind.CONSUMER,
        links=[
            Link(out.get_span_context(), {"messaging.kind": "producer", "n": 2}),
            Link(remote),
            Link(remote, {"dropped": True}),
        ],
    ).end()
    unnamed = TracerProvider(resource=Resource({}))  # an empty resource, the span keeps
    unnamed.add_span_processor(SimpleSpanProcessor(memory))
    unnamed.get_tracer("").start_span("").end()  # empty name, empty scope name
    return list(memory.get_finished_spans())


def test_encoding_is_byte_for_byte_the_sdks() -> None:
    spans = spans_of_every_shape()
    ours = otlp.encode_request(spans)
    assert ours == encode_spans(spans).SerializeToString(deterministic=True)
    decoded = ExportTraceServiceRequest.FromString(ours)
    assert sum(len(s.spans) for r in decoded.resource_spans for s in r.scope_spans) == len(spans)


def test_each_span_alone_and_the_cache_do_not_change_bytes() -> None:
    spans = spans_of_every_shape()
    for _ in range(2):  # the second round reads every attribute pair from the cache
        for one in spans:
            assert otlp.encode_request([one]) == encode_spans([one]).SerializeToString()
    assert otlp.encode_request([]) == b""


def fast_spans(service: str) -> tuple[RpcSpans, InMemorySpanExporter]:
    """meshkit.spans over an SDK tracer of ``service`` whose ended spans land in memory."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("meshkit")
    assert isinstance(tracer, Tracer)
    return RpcSpans(tracer), memory


def test_rpc_spans_encode_to_the_sdks_bytes_too() -> None:
    """meshkit's RPC spans (meshkit.spans) through the cached-shape path: roots and remote
    children, OK and error statuses, a handler's extra attributes, an event, a repeat."""
    rpc, memory = fast_spans("rpc")
    attributes = rpc.attributes({"rpc.method": "a.B/C", "server.port": 50051})
    remote = SpanContext(
        0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, True, TraceFlags(1)
    )
    for _ in range(2):
        for parent in (None, remote):
            rpc.start("a.B/C", parent, SpanKind.CLIENT, attributes).end()
            span = rpc.start("a.B/C", parent, SpanKind.SERVER, attributes)
            span.set_attribute("rpc.status_code", "INTERNAL")
            span.set_status(Status(StatusCode.ERROR, "INTERNAL"))
            span.record_exception(ValueError("bad"))
            span.end()
            span = rpc.start("a.B/C", parent, SpanKind.SERVER, attributes)
            span.set_attributes({"app.tags": ["a", "b"], "app.n": 1})
            span.end()
    spans = list(memory.get_finished_spans())
    assert otlp.encode_request(spans) == encode_spans(spans).SerializeToString()
    for one in spans:
        assert otlp.encode_request([one]) == encode_spans([one]).SerializeToString()


def test_consumer_and_relay_spans_encode_to_the_sdks_bytes() -> None:
    """meshkit.spans spans as the relay and the consumer make them: per-record attribute values
    (offsets, ids) set at start and by set_attribute, links to a producer without attributes
    (local and remote), and the same key=value pair as a span attribute and as an event's and a
    link's attribute in one request (each field tag encodes its own bytes)."""
    rpc, memory = fast_spans("events")
    fixed = rpc.attributes({"messaging.system": "kafka", "messaging.destination.name": "t"})
    remote = SpanContext(
        0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, True, TraceFlags(1)
    )
    local = SpanContext(
        0x1AF7651916CD43DD8448EB211C80319C, 0xC7AD6B7169203331, False, TraceFlags(1)
    )
    for offset in range(3):
        for producer in (remote, local):
            span = rpc.start(
                "process t",
                producer,
                SpanKind.CONSUMER,
                {**fixed, "messaging.kafka.offset": offset},
            )
            span.add_link(producer)
            span.end()
            span = rpc.start("send t", producer, SpanKind.PRODUCER, {**fixed, "id": f"e-{offset}"})
            span.set_attribute("messaging.kafka.offset", offset)
            span.end()
    span = rpc.start("shared", None, SpanKind.INTERNAL, {"k": "v"})
    span.add_event("e", {"k": "v"})
    span.add_link(remote, {"k": "v"})
    span.end()
    rpc.start("shared", None, SpanKind.INTERNAL, {"k": "v"}).end()
    spans = list(memory.get_finished_spans())
    for _ in range(2):  # the second round from the caches
        assert otlp.encode_request(spans) == encode_spans(spans).SerializeToString()
        for one in spans:
            assert otlp.encode_request([one]) == encode_spans([one]).SerializeToString()


def test_an_attribute_value_of_no_otlp_type_is_refused() -> None:
    with pytest.raises(TypeError, match="object"):
        otlp._any_value(object())


@pytest.fixture
def receiver_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    db = tmp_path / "traces.db"
    server = receiver.build("127.0.0.1", 0, db, 3600.0)
    server.start()
    yield f"http://127.0.0.1:{server.port}", db
    server.stop(0)


def test_the_exporter_delivers_to_a_real_receiver(receiver_server: tuple[str, Path]) -> None:
    endpoint, db = receiver_server
    spans = spans_of_every_shape()
    exporter = otlp.SpanExporter(endpoint=endpoint, insecure=True)
    try:
        assert exporter.export(spans).name == "SUCCESS"
    finally:
        exporter.shutdown()
    store = TraceStore(db)
    root = next(s for s in spans if s.name.endswith("PlaceOrder"))
    assert root.context is not None
    stored = store.trace(f"{root.context.trace_id:032x}")
    assert {s["name"] for s in stored} >= {
        "shop.orders.v1.OrdersService/PlaceOrder",
        "send orders.events.v1",
        "process orders.events.v1",
    }
    by_name = {s["name"]: s for s in stored}
    placed = by_name["shop.orders.v1.OrdersService/PlaceOrder"]
    assert placed["service"] == "orders"
    assert placed["attributes"]["i"] == 42 and placed["attributes"]["f"] is False
    assert by_name["send orders.events.v1"]["status"]["code"] == "ERROR"


def test_the_exporter_fails_cleanly_when_nothing_listens() -> None:
    exporter = otlp.SpanExporter(endpoint="http://127.0.0.1:9", insecure=True, timeout=1)
    try:
        assert exporter.export(spans_of_every_shape()[:1]).name == "FAILURE"
    finally:
        exporter.shutdown()
