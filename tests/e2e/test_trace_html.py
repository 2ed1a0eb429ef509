"""End to end: a real order's trace as the waterfall page of `mesh trace ID --html`, looked at in
a real headless Chromium.

A mesh of the components an order needs (trace receiver, registry, identity, inventory,
payments, shipping, orders) on free ports. One outside caller (as the demo and grpcurl are: it
sends a traceparent and exports no span of its own) places two orders in one trace: one is
confirmed, one's payment is declined. `mesh trace ID --html` writes the page; Chromium opens it
with every network request refused (the page must need none), and the test checks a row per
span, nesting, colours by service, both entries marked as calls from outside the mesh, the
declined step as a red row with its reason, and the details a click opens (a link to the parent
span opens that row). The screen is saved to ``test-artifacts/trace-waterfall.png``, pass or
fail, for a person to look at.

The browser is Debian's chromium driven by Playwright, as in test_shop_page.py: without
/usr/bin/chromium the module is skipped, except under CI, where that is a failure.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from playwright.sync_api import Browser, Page, Request, Route, expect
from support.browser import chromium, require_chromium
from support.mesh import (
    REPO,
    mesh_cli,
    mesh_tokens,
    mesh_up,
    place_order_request,
    write_moved_mesh_toml,
)
from support.tracing import poll

from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.orders.v1 import orders_pb2, orders_pb2_grpc

pytestmark = pytest.mark.kafka

ARTIFACT = REPO / "test-artifacts" / "trace-waterfall.png"
NAMES = (
    "trace-receiver",
    "schema-registry",
    "identity",
    "inventory",
    "payments",
    "shipping",
    "orders",
)
CUSTOMER = "cust-waterfall"
DECLINED = "tok_chargeDeclined"  # payments declines it: generic_decline

require_chromium("the trace page's browser test")


@dataclass(frozen=True)
class OrderMesh:
    root: Path
    ports: dict[str, int]


@pytest.fixture(scope="module")
def order_mesh(
    tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str
) -> Iterator[OrderMesh]:
    """`mesh up -d` of what an order needs, on free ports, tracing to its own receiver."""
    root = tmp_path_factory.mktemp("waterfall-mesh")
    ports = write_moved_mesh_toml(root, NAMES)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MESH_TLS"))}
    for key in ("MESH_KAFKA_BOOTSTRAP", "SCHEMA_REGISTRY_URL"):
        env.pop(key, None)
    with mesh_up(root, kafka_bootstrap, env):
        yield OrderMesh(root, ports)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """A headless Chromium (Debian's), module-scoped as in test_shop_page.py."""
    with chromium() as browser:
        yield browser


def place_two_orders(mesh: OrderMesh, trace_id: str) -> None:
    """Stock for one mug each, then two PlaceOrder calls sharing the caller's trace id: one
    paid with tok_visa, one declined."""
    sku = f"mug-{uuid.uuid4().hex[:8]}"
    tokens = mesh_tokens(mesh.root)
    with grpc.insecure_channel(f"127.0.0.1:{mesh.ports['inventory']}") as channel:
        inventory_pb2_grpc.InventoryServiceStub(channel).SetStock(
            inventory_pb2.SetStockRequest(sku=sku, quantity=5),
            timeout=10,
            metadata=tokens.metadata("admin"),
        )
    with grpc.insecure_channel(f"127.0.0.1:{mesh.ports['orders']}") as channel:
        orders = orders_pb2_grpc.OrdersServiceStub(channel)
        for payment_token in ("tok_visa", DECLINED):
            request = json_format.ParseDict(
                place_order_request(CUSTOMER, sku, units=12, payment_token=payment_token),
                orders_pb2.PlaceOrderRequest(),
            )
            traceparent = f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"
            orders.PlaceOrder(
                request,
                timeout=10,
                metadata=(
                    *tokens.metadata("customer", CUSTOMER),
                    ("traceparent", traceparent),
                ),
            )


def both_sagas_ended(spans: Any) -> bool:
    """The confirmed order's last step and the declined one's release of stock are in, and
    every non-entry span's parent too (each service exports in batches of its own)."""
    names = [s["name"] for s in spans]
    ids = {s["span_id"] for s in spans}
    declined = [
        s for s in spans if s["name"] == "saga authorize_payment" and s["status"]["code"] == "ERROR"
    ]
    return (
        "saga commit_stock" in names
        and "saga release_stock" in names
        and bool(declined)
        and all(s["parent_span_id"] in ids for s in spans if s["kind"] != "SERVER")
    )


def read_spans(root: Path, trace_id: str) -> Any:
    result = mesh_cli(root, "trace", trace_id, "--json")
    return json.loads(result.stdout) if result.returncode == 0 else None


def test_a_real_orders_trace_as_a_waterfall_in_chromium(
    order_mesh: OrderMesh, browser: Browser, tmp_path: Path
) -> None:
    ARTIFACT.unlink(missing_ok=True)  # this run's, not an earlier run's
    trace_id = uuid.uuid4().hex
    place_two_orders(order_mesh, trace_id)
    root = order_mesh.root
    spans = poll(
        lambda: (s := read_spans(root, trace_id)) and both_sagas_ended(s) and s,
        30,
        f"trace {trace_id}: both sagas ended",
    )
    written = mesh_cli(root, "trace", trace_id, "--open")
    assert written.returncode == 0, written.stderr
    path_line, url = written.stdout.splitlines()
    page_path = root / ".mesh" / "traces" / f"{trace_id}.html"
    assert (Path(path_line), url) == (page_path, page_path.as_uri())
    spans = read_spans(root, trace_id)  # as the page was written (late spans may come)
    by_id = {s["span_id"]: s for s in spans}

    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    fetched: list[str] = []

    def refuse_the_network(route: Route, request: Request) -> None:
        if request.url.startswith("file://"):
            route.continue_()
        else:
            fetched.append(request.url)
            route.abort()

    context.route("**/*", refuse_the_network)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(url)
        check_the_page(page, spans, by_id)
    finally:
        ARTIFACT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACT), full_page=True)
        page.screenshot(path=str(tmp_path / "trace-waterfall.png"), full_page=True)
        context.close()
    assert fetched == [], "the page fetched from the network"
    assert errors == [], errors


def check_the_page(page: Page, spans: list[dict[str, Any]], by_id: dict[str, Any]) -> None:
    rows = page.locator("details.span")
    expect(rows).to_have_count(len(spans))
    # Nesting: a row's depth is its parent's + 1; the two PlaceOrder entries are roots, marked.
    depths = {
        str(row.get_attribute("id")).removeprefix("span-"): int(
            row.get_attribute("data-depth") or 0
        )
        for row in rows.all()
    }
    for span in spans:
        parent = span["parent_span_id"]
        assert depths[span["span_id"]] == (depths[parent] + 1 if parent in by_id else 0)
    entries = page.locator("details.span[data-depth='0']")
    expect(entries).to_have_count(2)
    for index in range(2):
        expect(entries.nth(index).locator("summary")).to_contain_text(
            "orders: shop.orders.v1.OrdersService/PlaceOrder"
        )
        expect(entries.nth(index).locator("summary")).to_contain_text("(from outside the mesh)")
    expect(page.locator("summary")).not_to_contain_text(["(parent missing)"])

    # Colours: one per service, the same on every row of it, in the legend too.
    colour = {
        service: {
            page.locator(f"details.span[data-service='{service}']:not(.error) .bar")
            .nth(i)
            .evaluate("e => getComputedStyle(e).backgroundColor")
            for i in range(2)
        }
        for service in ("orders", "payments")
    }
    assert all(len(c) == 1 for c in colour.values()), colour
    assert colour["orders"] != colour["payments"]
    expect(page.locator(".legend .service-key")).to_have_count(len({s["service"] for s in spans}))

    # The declined payment's step: red, with its reason.
    declined = page.locator("details.error", has_text="saga authorize_payment")
    expect(declined).to_have_count(1)
    summary = declined.locator("summary")
    expect(summary).to_contain_text("ERROR rejected: payment declined: generic_decline")
    red = declined.locator(".bar").evaluate("e => getComputedStyle(e).backgroundColor")
    assert red == "rgb(211, 47, 47)", red

    # A click shows its details; the parent's link opens the parent's row.
    info = declined.locator(".info")
    expect(info).to_be_hidden()
    summary.click()
    expect(info).to_be_visible()
    expect(info).to_contain_text("saga.rejected_reason")
    expect(info).to_contain_text("order.id")
    parent_id = by_id[str(declined.get_attribute("id")).removeprefix("span-")]["parent_span_id"]
    info.locator(f"a[href='#span-{parent_id}']").click()
    expect(page.locator(f"#span-{parent_id} .info")).to_be_visible()
