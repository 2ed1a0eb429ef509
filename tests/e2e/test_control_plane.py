"""End to end: the control plane in the shop, on the session's shop mesh (``shop_mesh``: every
component on free ports, control's ``after_start`` having loaded the shop's flag set and
experiments from proto/shop/config/).

- orders' line limit is the config namespace ``orders``: ``mesh config set orders
  max_lines_per_order=1`` changes PlaceOrder's answer (INVALID_ARGUMENT on ``lines`` naming the
  namespace and version) with no restart, and setting it back restores it;
- a version the schema lets through but orders' own parse refuses (``3.0``: an integer to JSON
  Schema, not a whole number to orders) is NACKed (``mesh config status``) and the previous
  limit stays;
- the shop page's checkout experiment: the gateway's assignment route records an exposure, the
  same customer's confirmed order a conversion, both in ``mesh experiments report checkout-cta
  --json``; and the page itself, in headless Chromium, labels its button with that variant;
- shipping's express decision for a few customers and countries is what ``mesh flags eval
  checkout.express-shipping --context ... --json`` says.

Tokens come from the mesh's identity (``mesh_tokens``): admin to change configuration and set
stock, support to read reports and client status, customers with chosen subjects to order.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
import requests
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from support.gateway import Shop
from support.mesh import mesh_cli, mesh_ps, mesh_tokens

from meshkit.control.flags import MeshFlagProvider, static_source
from shop.common.v1 import common_pb2
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.orders.v1 import orders_pb2, orders_pb2_grpc
from shop.shipping.v1 import shipping_pb2, shipping_pb2_grpc

# The first test here may be the one that starts the session's shop mesh, whose order_views
# first catches up with the shared broker's history: minutes, counted in that test's time.
pytestmark = [pytest.mark.kafka, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
FLAG_SET = json.loads((REPO / "proto" / "shop" / "config" / "flags.json").read_text())
EXPRESS = "checkout.express-shipping"
EXPERIMENT = "checkout-cta"
CHROMIUM = Path("/usr/bin/chromium")
# A pushed version reaches orders in milliseconds; a loaded machine may take seconds.
APPLIED_S = 30.0
# The saga, and the events' trip through Kafka to control's report.
SETTLED_S = 60.0
T = TypeVar("T")

ADDRESSES = {
    "DE": common_pb2.Address(
        name="Ada Lovelace",
        line1="Unter den Linden 1",
        city="Berlin",
        postal_code="10117",
        country_code="DE",
    ),
    "FR": common_pb2.Address(
        name="Ada Lovelace",
        line1="1 Rue de Rivoli",
        city="Paris",
        postal_code="75001",
        country_code="FR",
    ),
}


def poll(what: Callable[[], T | None], timeout: float, why: str) -> T:
    """``what()`` until it answers something (not None), within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while (answer := what()) is None:
        assert time.monotonic() < deadline, f"{why}: not within {timeout:.0f}s"
        time.sleep(0.2)  # poll interval within the deadline loop
    return answer


def cli(shop: Shop, *args: str, role: str = "admin") -> str:
    """`mesh --root ROOT ARGS --token <role's token>`; its output (the test fails on exit != 0)."""
    token = mesh_tokens(shop.root).token(role)
    result = mesh_cli(shop.root, *args, "--token", token, env=shop.env)
    assert result.returncode == 0, f"mesh {' '.join(args)}: {result.stdout}{result.stderr}"
    return str(result.stdout)


def set_orders_limit(shop: Shop, value: str) -> int:
    """`mesh config set orders max_lines_per_order=VALUE`; the version it stored."""
    said = cli(shop, "config", "set", "orders", f"max_lines_per_order={value}", "--reason", "e2e")
    # "orders: version 7 stored (was 6)"
    return int(said.split("version", 1)[1].split()[0])


def orders_verdict(shop: Shop, version: int) -> dict[str, Any] | None:
    """orders' report on ``version`` (`mesh config status orders --json`), or None yet."""
    clients = json.loads(cli(shop, "config", "status", "orders", "--json", role="support"))
    for client in clients:
        if client["client"].startswith("orders@") and client["version"] == version:
            return dict(client)
    return None


def applied(shop: Shop, version: int) -> dict[str, Any]:
    return poll(lambda: orders_verdict(shop, version), APPLIED_S, f"orders on version {version}")


def set_stock(shop: Shop, sku: str, quantity: int) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{shop.ports['inventory']}") as channel:
        inventory_pb2_grpc.InventoryServiceStub(channel).SetStock(
            inventory_pb2.SetStockRequest(sku=sku, quantity=quantity),
            timeout=10,
            metadata=mesh_tokens(shop.root).metadata("admin"),
        )


def place(shop: Shop, customer: str, skus: list[str], country: str = "DE") -> str:
    """PlaceOrder over gRPC as ``customer`` (one unit of each SKU); the order id."""
    request = orders_pb2.PlaceOrderRequest(
        request_id=uuid.uuid4().hex,
        customer_id=customer,
        payment_token="tok_visa",
        lines=[
            orders_pb2.OrderLine(
                sku=sku, quantity=1, unit_price=common_pb2.Money(currency_code="EUR", units=12)
            )
            for sku in skus
        ],
        shipping_address=ADDRESSES[country],
    )
    with grpc.insecure_channel(f"127.0.0.1:{shop.ports['orders']}") as channel:
        placed = orders_pb2_grpc.OrdersServiceStub(channel).PlaceOrder(
            request, timeout=10, metadata=mesh_tokens(shop.root).metadata("customer", customer)
        )
    return str(placed.order_id)


def refusal(shop: Shop, customer: str, skus: list[str]) -> list[tuple[str, str]]:
    """PlaceOrder that must fail with INVALID_ARGUMENT; its field violations."""
    with pytest.raises(grpc.RpcError) as refused:
        place(shop, customer, skus)
    error = refused.value
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error
    status = rpc_status.from_call(error)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad)
    return [(v.field, v.description) for v in bad.field_violations]


@pytest.fixture(scope="module")
def skus(shop_mesh: Shop) -> list[str]:
    """Three SKUs in stock for this module's orders."""
    tag = uuid.uuid4().hex[:6]
    names = [f"cp-{tag}-{n}" for n in range(3)]
    for sku in names:
        set_stock(shop_mesh, sku, 1000)
    return names


@pytest.fixture
def limit_restored(shop_mesh: Shop) -> Iterator[None]:
    """Whatever a test does to the orders namespace, it ends on the default limit, applied."""
    yield
    applied(shop_mesh, set_orders_limit(shop_mesh, "50"))


def test_the_live_limit_changes_place_order_with_no_restart(
    shop_mesh: Shop, skus: list[str], limit_restored: None
) -> None:
    shop = shop_mesh
    pid = mesh_ps(shop.root)["orders"]["pid"]
    one = set_orders_limit(shop, "1")
    assert applied(shop, one)["accepted"]
    assert refusal(shop, "cp-ada", skus[:2]) == [
        (
            "lines",
            f"must have at most 1 line: max_lines_per_order in config namespace orders,"
            f" version {one}",
        )
    ]
    assert place(shop, "cp-ada", skus[:1])  # one line is still fine

    back = set_orders_limit(shop, "50")
    assert applied(shop, back)["accepted"]
    assert place(shop, "cp-ada", skus[:2])
    assert mesh_ps(shop.root)["orders"]["pid"] == pid  # the same process all along


def test_a_version_orders_own_parse_refuses_is_nacked_and_the_previous_stays(
    shop_mesh: Shop, skus: list[str], limit_restored: None
) -> None:
    shop = shop_mesh
    two = set_orders_limit(shop, "2")
    assert applied(shop, two)["accepted"]
    token = mesh_tokens(shop.root).token("admin")
    stored = mesh_cli(
        shop.root,
        "config",
        "set",
        "orders",
        "max_lines_per_order=3.0",
        "--token",
        token,
        env=shop.env,
    )
    if stored.returncode != 0:
        pytest.skip(f"the orders schema refuses 3.0 itself: {stored.stderr.strip()}")
    nacked_version = int(stored.stdout.split("version", 1)[1].split()[0])
    verdict = applied(shop, nacked_version)
    assert not verdict["accepted"]
    assert verdict["running_version"] == two
    assert verdict["error"].startswith("max_lines_per_order: must be a whole number")
    # Still the limit of the version orders runs: 2 lines go, 3 are refused naming it.
    assert place(shop, "cp-bob", skus[:2])
    [(field, why)] = refusal(shop, "cp-bob", skus)
    assert (field, why.split(": ", 1)[0]) == ("lines", "must have at most 2 lines")
    assert why.endswith(f"version {two}")


def report(shop: Shop) -> dict[str, dict[str, int]]:
    """`mesh experiments report checkout-cta --json`: units and conversions by variant."""
    answer = json.loads(cli(shop, "experiments", "report", EXPERIMENT, "--json", role="support"))
    return {
        v["variant"]: {"units": int(v["units"]), "conversions": int(v["conversions"])}
        for v in answer["variants"]
    }


def assignment(shop: Shop, token: str) -> dict[str, Any]:
    answer = requests.get(
        f"{shop.gateway}/v1/experiments/{EXPERIMENT}/assignment",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def test_the_checkout_experiment_counts_an_exposure_and_a_confirmed_order(
    shop_mesh: Shop, skus: list[str]
) -> None:
    shop = shop_mesh
    before = report(shop)
    customer = f"cp-cta-{uuid.uuid4().hex[:8]}"
    token = mesh_tokens(shop.root).token("customer", customer)
    assigned = assignment(shop, token)
    assert assigned["inExperiment"] and assigned["reason"] == "assigned"
    variant = assigned["variant"]
    assert variant in before
    assert assignment(shop, token) == assigned  # a reload: the same variant

    body: dict[str, Any] = {
        "requestId": uuid.uuid4().hex,
        "paymentToken": "tok_visa",
        "lines": [
            {"sku": skus[0], "quantity": 1, "unitPrice": {"currencyCode": "EUR", "units": "9"}}
        ],
        "shippingAddress": {
            "name": "Ada Lovelace",
            "line1": "Unter den Linden 1",
            "city": "Berlin",
            "postalCode": "10117",
            "countryCode": "DE",
        },
    }
    headers = {"Authorization": f"Bearer {token}"}
    posted = requests.post(f"{shop.gateway}/v1/orders", json=body, headers=headers, timeout=10)
    assert posted.status_code == 200, posted.text
    order_id = posted.json()["orderId"]

    def confirmed() -> bool | None:
        order = requests.get(f"{shop.gateway}/v1/orders/{order_id}", headers=headers, timeout=10)
        status = order.json()["order"]["status"]
        assert status != "ORDER_STATUS_CANCELLED", order.text
        return True if status == "ORDER_STATUS_CONFIRMED" else None

    poll(confirmed, SETTLED_S, f"order {order_id} confirmed")
    # One exposure and one conversion more, for this customer's variant only.
    expected = {k: dict(v) for k, v in before.items()}
    expected[variant] = {
        "units": before[variant]["units"] + 1,
        "conversions": before[variant]["conversions"] + 1,
    }
    poll(lambda: True if report(shop) == expected else None, SETTLED_S, "the report counts both")


def shipment_level(shop: Shop, customer: str, order_id: str) -> int:
    """The service level of ``order_id``'s shipment, once its saga has confirmed it."""
    customer_md = mesh_tokens(shop.root).metadata("customer", customer)

    def shipment_id() -> str | None:
        with grpc.insecure_channel(f"127.0.0.1:{shop.ports['orders']}") as channel:
            stub = orders_pb2_grpc.OrdersServiceStub(channel)
            order = stub.GetOrder(
                orders_pb2.GetOrderRequest(order_id=order_id), timeout=10, metadata=customer_md
            ).order
            assert order.status != orders_pb2.ORDER_STATUS_CANCELLED, order.cancellation_reason
            if order.status != orders_pb2.ORDER_STATUS_CONFIRMED:
                return None
            events = stub.ListOrderEvents(
                orders_pb2.ListOrderEventsRequest(order_id=order_id),
                timeout=10,
                metadata=customer_md,
            ).events
        return next(
            str(e.data["shipment_id"]) for e in events if e.type.endswith("OrderShipmentCreated")
        )

    shipment = poll(shipment_id, SETTLED_S, f"order {order_id} confirmed")
    # Customers may not read shipments: orders may, on their behalf (as the saga does).
    with grpc.insecure_channel(f"127.0.0.1:{shop.ports['shipping']}") as channel:
        found = (
            shipping_pb2_grpc.ShippingServiceStub(channel)
            .GetShipment(
                shipping_pb2.GetShipmentRequest(shipment_id=shipment),
                timeout=10,
                metadata=mesh_tokens(shop.root).acting_for(customer),
            )
            .shipment
        )
    return int(found.service_level)


def test_shippings_express_decision_is_what_mesh_flags_eval_says(
    shop_mesh: Shop, skus: list[str]
) -> None:
    shop = shop_mesh
    # Customers on both sides of the 20 % rollout, found with the provider over the same file.
    api.set_provider(MeshFlagProvider(static_source(FLAG_SET)), "e2e-candidates")
    local = api.get_client("e2e-candidates")
    candidates = [f"cp-flag-{n}" for n in range(200)]
    on = [
        c
        for c in candidates
        if local.get_boolean_value(EXPRESS, False, EvaluationContext(c, {"country": "DE"}))
    ]
    off = [c for c in candidates if c not in on]
    cases = [(on[0], "DE"), (on[1], "DE"), (off[0], "DE"), (on[0], "FR")]
    for customer, country in cases:
        context = json.dumps({"targetingKey": customer, "country": country})
        said = json.loads(
            cli(shop, "flags", "eval", EXPRESS, "--context", context, "--json", role="support")
        )
        order_id = place(shop, customer, skus[:1], country)
        level = shipment_level(shop, customer, order_id)
        wanted = (
            shipping_pb2.SERVICE_LEVEL_EXPRESS
            if said["value"]
            else (shipping_pb2.SERVICE_LEVEL_STANDARD)
        )
        assert level == wanted, (customer, country, said)


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (apt-get install chromium)"
)
def test_the_shop_page_labels_checkout_with_the_customers_variant(shop_mesh: Shop) -> None:
    from playwright.sync_api import expect, sync_playwright

    shop = shop_mesh
    customer = f"cp-page-{uuid.uuid4().hex[:8]}"
    token = mesh_tokens(shop.root).token("customer", customer)
    variant = assignment(shop, token)["variant"]
    # Signed in as the page keeps a session (sessionStorage), without the identity round trip.
    session = {
        "access_token": token,
        "refresh_token": "",
        "expires_at": int(time.time() * 1000) + 3_600_000,
        "sub": customer,
        "roles": ["customer"],
    }
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=args
        )
        try:
            page = browser.new_page()
            page.add_init_script(
                f"sessionStorage.setItem('shop.tokens', {json.dumps(json.dumps(session))})"
            )
            page.goto(f"{shop.gateway}/")
            expect(page.locator("body")).to_have_attribute("data-ready", "true")
            place_button = page.locator("#place")
            expect(place_button).to_have_attribute("data-variant", variant)
            expect(place_button).to_have_text("Buy now" if variant == "buy-now" else "Place order")
        finally:
            browser.close()
