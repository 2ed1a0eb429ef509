"""The waterfall page of `mesh trace ID --html` (mesh_runner.tracehtml), read back with an HTML
parser: a row per span nested under its parent, colours per service, error rows, details
(attributes, events, links), no injection from span data, nothing fetched from the network.

Spans come from the real SDK through the trace store (as `mesh trace` reads them), plus hand
made ones where a test needs hostile names.
"""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, set_span_in_context

from mesh_runner.tracehtml import PALETTE, render_html, service_colors
from mesh_runner.tracestore import Span, TraceStore

HOSTILE = '<script>alert("x")</script><img src=https://evil.example/x.png onerror=alert(1)>'


class Page(HTMLParser):
    """Every element with its attributes, and the text under each span row."""

    def __init__(self, document: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.rows: list[dict[str, str]] = []  # the <details> rows' attributes, in page order
        self.text: dict[str, list[str]] = {}  # row id -> its text pieces
        self._row: str | None = None
        self.scripts = 0
        self.feed(document)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {k: v or "" for k, v in attrs}
        self.elements.append((tag, attributes))
        self.scripts += tag == "script"
        if tag == "details":
            self.rows.append(attributes)
            self._row = attributes["id"]
            self.text[self._row] = []

    def handle_data(self, data: str) -> None:
        if self._row is not None:
            self.text[self._row].append(data)

    def row_text(self, span_id: str) -> str:
        return " ".join(" ".join(self.text[f"span-{span_id}"]).split())


def make_trace() -> list[Span]:
    """``sdk_trace()`` as `mesh trace` reads it from the store."""
    request = encode_spans(sdk_trace())
    store = TraceStore(":memory:")
    try:
        store.add(request)
        return store.trace(request.resource_spans[0].scope_spans[0].spans[0].trace_id.hex())
    finally:
        store.close()


def sdk_trace() -> list[ReadableSpan]:
    """An order-shaped trace over three services made by the real SDK: a SERVER entry called
    from outside (its parent never exported), CLIENT -> SERVER failing with out of stock (an
    exception event), PRODUCER -> CONSUMER (child and link)."""
    memory = InMemorySpanExporter()

    def tracer(service: str) -> Any:
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(SimpleSpanProcessor(memory))
        return provider.get_tracer("t")

    orders, inventory, views = tracer("orders"), tracer("inventory"), tracer("order_views")
    outside = tracer("grpcurl").start_span("outside caller")  # never ended: never exported
    with orders.start_as_current_span(
        "shop.orders.v1.OrdersService/PlaceOrder",
        context=set_span_in_context(outside),
        kind=SpanKind.SERVER,
        attributes={"rpc.status_code": "OK"},
    ):
        with (
            orders.start_as_current_span("saga reserve_stock"),
            orders.start_as_current_span(
                "shop.inventory.v1.InventoryService/Reserve", kind=SpanKind.CLIENT
            ) as client,
            inventory.start_as_current_span(
                "shop.inventory.v1.InventoryService/Reserve",
                context=set_span_in_context(client),
                kind=SpanKind.SERVER,
                attributes={"rpc.status_code": "FAILED_PRECONDITION", "sku": "mug"},
            ) as failing,
        ):
            failing.record_exception(ValueError("only 0 of mug left"))
            failing.set_status(Status(StatusCode.ERROR, "out of stock"))
        with orders.start_as_current_span("send orders.events.v1", kind=SpanKind.PRODUCER) as sent:
            pass
    with views.start_as_current_span(
        "process orders.events.v1",
        context=set_span_in_context(sent),
        kind=SpanKind.CONSUMER,
        links=[Link(sent.get_span_context(), {"messaging.kafka.offset": 7})],
    ):
        pass
    return list(memory.get_finished_spans())


def by_name(spans: list[Span], service: str, name: str) -> Span:
    return next(s for s in spans if s["service"] == service and s["name"] == name)


def test_one_row_per_span_nested_under_its_parent() -> None:
    spans = make_trace()
    page = Page(render_html(spans))
    assert len(page.rows) == len(spans) == 6
    depth = {row["id"].removeprefix("span-"): int(row["data-depth"]) for row in page.rows}
    for span in spans:
        parent = span["parent_span_id"]
        expected = depth[parent] + 1 if parent in depth else 0
        assert depth[span["span_id"]] == expected, span["name"]
    # Page order is the tree's: every child comes after its parent.
    order = [row["id"].removeprefix("span-") for row in page.rows]
    for span in spans:
        if span["parent_span_id"] in depth:
            assert order.index(span["parent_span_id"]) < order.index(span["span_id"])
    entry = by_name(spans, "orders", "shop.orders.v1.OrdersService/PlaceOrder")
    assert "(from outside the mesh)" in page.row_text(entry["span_id"])
    assert depth[entry["span_id"]] == 0


def test_rows_are_coloured_by_service_with_a_legend() -> None:
    spans = make_trace()
    document = render_html(spans)
    page = Page(document)
    legend = {a["data-service"] for tag, a in page.elements if "service-key" in a.get("class", "")}
    assert legend == {"orders", "inventory", "order_views"}
    bars = [a["style"] for tag, a in page.elements if a.get("class") == "bar"]
    assert len(bars) == 6
    colors = service_colors(["orders", "inventory", "order_views"])
    assert sum(colors["orders"] in bar for bar in bars) == 4
    assert sum(colors["inventory"] in bar for bar in bars) == 1


def test_a_service_keeps_its_colour_and_no_two_of_a_page_share_one() -> None:
    mesh = ["orders", "inventory", "payments", "shipping", "order_views", "gateway", "identity"]
    mesh += ["audit", "control", "schema-registry", "e2e-client", "grpcurl"]
    colors = service_colors(mesh)
    assert len(set(colors.values())) == len(mesh) == len(PALETTE)
    assert "#d32f2f" not in colors.values()
    # Across pages: the same colour for a service whatever else the trace holds (unless
    # another service of that page took its slot first).
    assert service_colors(["orders"])["orders"] == service_colors(["orders", "zeta"])["orders"]
    assert service_colors(["orders", "payments"]) == {
        s: c for s, c in service_colors(["payments", "orders"]).items()
    }


def test_an_error_row_is_red_with_its_status_code_and_message() -> None:
    spans = make_trace()
    page = Page(render_html(spans))
    failing = by_name(spans, "inventory", "shop.inventory.v1.InventoryService/Reserve")
    (row,) = [r for r in page.rows if "error" in r["class"].split()]
    assert row["id"] == f"span-{failing['span_id']}"
    text = page.row_text(failing["span_id"])
    assert "ERROR FAILED_PRECONDITION: out of stock" in text
    # Its details: the attributes, the exception event, and the ids.
    assert "sku mug" in text and "exception" in text and "only 0 of mug left" in text
    assert failing["span_id"] in text


def test_a_link_to_a_span_of_the_trace_is_an_anchor_to_its_row() -> None:
    spans = make_trace()
    page = Page(render_html(spans))
    sent = by_name(spans, "orders", "send orders.events.v1")
    consumer = by_name(spans, "order_views", "process orders.events.v1")
    links = [a["href"] for tag, a in page.elements if tag == "a" and a.get("class") == "link"]
    assert links == [f"#span-{sent['span_id']}"]
    assert "messaging.kafka.offset 7" in page.row_text(consumer["span_id"])
    assert f"span-{sent['span_id']}" in {row["id"] for row in page.rows}


def hostile_trace() -> list[Span]:
    base = {
        "trace_id": "ab" * 16,
        "kind": "SERVER",
        "start_time": "2026-01-01T00:00:00.000001Z",
        "end_time": "2026-01-01T00:00:00.002001Z",
        "links": [{"trace_id": "cd" * 16, "span_id": "12" * 8, "attributes": {"a": HOSTILE}}],
    }
    return [
        {
            **base,
            "span_id": "a1" * 8,
            "parent_span_id": None,
            "name": HOSTILE,
            "service": "</style><script>alert(2)</script>",
            "status": {"code": "ERROR", "message": HOSTILE},
            "attributes": {HOSTILE: HOSTILE, "url": "https://evil.example/a.js"},
            "events": [{"name": HOSTILE, "time": base["start_time"], "attributes": {}}],
        },
        {
            **base,
            "span_id": "b2" * 8,
            "parent_span_id": "a1" * 8,
            "name": '" onmouseover="alert(3)',
            "service": "x\" style='background:url(https://evil.example/b)'",
            "status": {"code": "OK", "message": ""},
            "attributes": {},
            "events": [],
        },
    ]


def test_span_data_cannot_inject_markup_or_script() -> None:
    spans = hostile_trace()
    document = render_html(spans)
    page = Page(document)
    assert page.scripts == 1  # the page's own
    assert "<script>alert" not in document and "<img" not in document
    for tag, attributes in page.elements:
        assert not any(name.startswith("on") for name in attributes), (tag, attributes)
        assert tag not in ("img", "iframe", "object", "embed", "link")
    # The text reads as it was given.
    assert HOSTILE in page.row_text("a1" * 8)
    assert '" onmouseover="alert(3)' in page.row_text("b2" * 8)
    assert len(page.rows) == 2


def test_the_page_fetches_nothing_from_the_network() -> None:
    for spans in (hostile_trace(), make_trace()):
        document = render_html(spans)
        page = Page(document)
        for tag, attributes in page.elements:
            for name, value in attributes.items():
                if name in ("src", "href", "action", "data", "poster", "srcset"):
                    assert not value or value.startswith("#"), (tag, name, value)
                elif not name.startswith("data-") and name not in ("content", "title"):
                    # URLs from the spans are text, or inert data-* and title attributes.
                    assert "http" not in value and "url(" not in value, (tag, name, value)
        assert "@import" not in document and "@font-face" not in document
        # And the browser is told so: no source but the page itself.
        csp = next(a["content"] for tag, a in page.elements if a.get("http-equiv"))
        assert "default-src 'none'" in csp


def test_a_trace_from_jaeger_renders_the_same_page() -> None:
    """`mesh trace ID --jaeger URL --html`: Jaeger's API v3 answers OTLP JSON, which reads into
    the same spans (events included), so the page is the same."""
    from google.protobuf import json_format

    from mesh_runner.tracestore import spans_from_otlp_json

    request = encode_spans(sdk_trace())
    store = TraceStore(":memory:")
    try:
        store.add(request)
        trace_id = request.resource_spans[0].scope_spans[0].spans[0].trace_id.hex()
        stored = store.trace(trace_id)
    finally:
        store.close()
    from_jaeger = spans_from_otlp_json({"result": json_format.MessageToDict(request)})
    assert any(s["events"] for s in from_jaeger)
    assert len(stored) == 6
    assert render_html(from_jaeger) == render_html(stored)
