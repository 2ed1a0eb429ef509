"""End to end: the order saga under `mesh up -d` on real Kafka, driven by the real grpcurl.

One mesh for the module (start-up costs seconds); each test uses its own SKUs and request ids,
so the tests do not see each other's stock. Scenarios: confirmed (tok_visa), declined
(tok_chargeDeclined), out of stock, unshippable country (AQ); each ends with the stock adding up,
the order's events on orders.events.v1, and `mesh sagas` showing nothing in flight.

Every call carries the least token that may make it, from the mesh's identity: the customer's
own to place and read its orders, an admin's to set stock, support's to read a payment; `mesh
sagas` mints its admin token itself. The saga calls inventory, payments and shipping as orders,
on behalf of the customer.
"""

from __future__ import annotations

import datetime
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer
from support.mesh import (
    DEFAULT_PORTS,
    REPO,
    Grpcurl,
    MeshTokens,
    mesh_cli,
    mesh_tokens,
    port_in_use,
)

ORDERS = "127.0.0.1:50051"
INVENTORY = "127.0.0.1:50052"
PAYMENTS = "127.0.0.1:50053"
ORDERS_SVC = "shop.orders.v1.OrdersService"
INVENTORY_SVC = "shop.inventory.v1.InventoryService"
ADDRESS = {
    "name": "Ada Lovelace",
    "line1": "Unter den Linden 1",
    "city": "Berlin",
    "postal_code": "10117",
    "country_code": "DE",
}
FINAL = ("ORDER_STATUS_CONFIRMED", "ORDER_STATUS_CANCELLED")
CUSTOMER = "cust-1"


@pytest.fixture(scope="module")
def orders_mesh(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> Iterator[Path]:
    """`mesh up -d --kafka <real broker>` in a scratch root, for the whole module; `mesh down`."""
    root = tmp_path_factory.mktemp("orders-mesh")
    for name in ("mesh.toml", "proto", "scripts"):
        (root / name).symlink_to(REPO / name)
    busy = [p for p in DEFAULT_PORTS if port_in_use(p)]
    assert not busy, f"ports {busy} are in use: stop your own mesh (`mesh down`) first"
    try:
        up = mesh_cli(root, "up", "-d", "--kafka", kafka_bootstrap)
        assert up.returncode == 0, up.stderr
        yield root
    finally:
        mesh_cli(root, "down")


class Shop:
    """The calls of these tests, each with the least token it needs."""

    def __init__(self, grpcurl: Grpcurl, tokens: MeshTokens) -> None:
        self.grpcurl = grpcurl
        self.customer = tokens.metadata("customer", CUSTOMER)
        self.admin = tokens.metadata("admin")
        self.support = tokens.metadata("support")

    def orders(self, method: str, data: object) -> dict[str, Any]:
        """An OrdersService call as the customer."""
        return self.grpcurl.call(ORDERS, f"{ORDERS_SVC}/{method}", data, self.customer)


@pytest.fixture(scope="module")
def tokens(orders_mesh: Path) -> MeshTokens:
    """Tokens from the module mesh's identity."""
    return mesh_tokens(orders_mesh)


@pytest.fixture(scope="module")
def shop(grpcurl: Grpcurl, tokens: MeshTokens) -> Shop:
    """grpcurl with the module mesh's tokens."""
    return Shop(grpcurl, tokens)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def set_stock(shop: Shop, sku: str, quantity: int) -> None:
    shop.grpcurl.call(
        INVENTORY, f"{INVENTORY_SVC}/SetStock", {"sku": sku, "quantity": quantity}, shop.admin
    )


def stock(shop: Shop, sku: str) -> tuple[int, int]:
    got = shop.grpcurl.call(INVENTORY, f"{INVENTORY_SVC}/GetStock", {"sku": sku})  # public
    return int(str(got.get("available", 0))), int(str(got.get("reserved", 0)))


def place(
    shop: Shop, sku: str, quantity: int, token: str = "tok_visa", **changes: Any
) -> tuple[str, dict[str, object]]:
    request = {
        "request_id": unique("req"),
        "customer_id": CUSTOMER,
        "lines": [
            {
                "sku": sku,
                "quantity": quantity,
                "unit_price": {"currency_code": "EUR", "units": 12, "nanos": 500000000},
            }
        ],
        "payment_token": token,
        "shipping_address": ADDRESS,
    } | changes
    return request["request_id"], shop.orders("PlaceOrder", request)


def final_order(shop: Shop, order_id: str, timeout: float = 60.0) -> dict[str, Any]:
    """Poll GetOrder until the order is CONFIRMED or CANCELLED."""
    deadline = time.monotonic() + timeout
    while True:
        got = shop.orders("GetOrder", {"order_id": order_id})
        order = got["order"]
        assert isinstance(order, dict)
        if order["status"] in FINAL:
            return order
        assert time.monotonic() < deadline, f"order {order_id} still {order['status']}"
        time.sleep(0.1)  # poll interval within the deadline loop


def event_types(shop: Shop, order_id: str) -> list[str]:
    listed = shop.orders("ListOrderEvents", {"order_id": order_id})
    events = listed["events"]
    assert isinstance(events, list)
    assert [int(e["version"]) for e in events] == list(range(1, len(events) + 1))
    return [str(e["type"]).rsplit(".", 1)[1] for e in events]


def published(bootstrap: str, order_ids: set[str], timeout: float = 30.0) -> dict[str, list[str]]:
    """The ce_type of every record on orders.events.v1 keyed by one of ``order_ids``, until each
    has its final event (OrderConfirmed or OrderCancelled)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique("test-orders-e2e"),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe(["orders.events.v1"])
    seen: dict[str, list[str]] = {oid: [] for oid in order_ids}
    deadline = time.monotonic() + timeout
    try:
        while not all(s and s[-1] in ("OrderConfirmed", "OrderCancelled") for s in seen.values()):
            assert time.monotonic() < deadline, f"events on Kafka so far: {seen}"
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            key = (msg.key() or b"").decode()
            if key in seen:
                headers = {k: v.decode() for k, v in msg.headers() or []}
                seen[key].append(headers["ce_type"].rsplit(".", 1)[1])
    finally:
        consumer.close()
    return seen


def test_the_four_outcomes_with_stock_events_and_sagas(
    orders_mesh: Path, shop: Shop, kafka_bootstrap: str
) -> None:
    sku = unique("mug")
    set_stock(shop, sku, 10)
    _, ok = place(shop, sku, 2)
    assert ok["status"] == "ORDER_STATUS_PENDING", "PlaceOrder answers at once, PENDING"
    _, declined = place(shop, sku, 1, token="tok_chargeDeclined")
    _, short = place(shop, sku, 50)
    _, antarctica = place(
        shop, sku, 3, shipping_address={**ADDRESS, "city": "McMurdo", "country_code": "AQ"}
    )
    ids = {name: str(r["order_id"]) for name, r in [
        ("ok", ok), ("declined", declined), ("short", short), ("aq", antarctica)
    ]}  # fmt: skip
    orders = {name: final_order(shop, oid) for name, oid in ids.items()}

    assert orders["ok"]["status"] == "ORDER_STATUS_CONFIRMED"
    assert orders["ok"]["total"] == {"currency_code": "EUR", "units": "25"}
    assert "cancellation_reason" not in orders["ok"]
    assert event_types(shop, ids["ok"]) == [
        "OrderPlaced",
        "OrderStockReserved",
        "OrderPaymentAuthorized",
        "OrderShipmentCreated",
        "OrderPaymentCaptured",
        "OrderConfirmed",
    ]

    assert orders["declined"]["status"] == "ORDER_STATUS_CANCELLED"
    assert "authorize payment: payment declined" in orders["declined"]["cancellation_reason"]
    assert event_types(shop, ids["declined"]) == [
        "OrderPlaced",
        "OrderStockReserved",
        "OrderCancelled",
    ]

    assert orders["short"]["status"] == "ORDER_STATUS_CANCELLED"
    reason = orders["short"]["cancellation_reason"]
    assert reason.startswith("reserve stock: FAILED_PRECONDITION") and sku in reason
    assert event_types(shop, ids["short"]) == ["OrderPlaced", "OrderCancelled"]

    assert orders["aq"]["status"] == "ORDER_STATUS_CANCELLED"
    assert orders["aq"]["cancellation_reason"].startswith("create shipment: FAILED_PRECONDITION")
    history = shop.orders("ListOrderEvents", {"order_id": ids["aq"]})
    authorized = [e for e in history["events"] if e["type"].endswith("PaymentAuthorized")]
    payment_id = authorized[0]["data"]["payment_id"]
    # Support reads payments (the customer may not call payments at all).
    payment = shop.grpcurl.call(
        PAYMENTS,
        "shop.payments.v1.PaymentsService/GetPayment",
        {"payment_id": payment_id},
        shop.support,
    )
    assert payment["payment"]["status"] == "PAYMENT_STATUS_VOIDED"

    # Stock adds up: only the confirmed order's 2 units left; nothing stays reserved.
    assert stock(shop, sku) == (8, 0)

    # The same histories reached Kafka through the outbox, in order.
    on_kafka = published(kafka_bootstrap, set(ids.values()))
    assert on_kafka[ids["ok"]][-1] == "OrderConfirmed"
    assert on_kafka[ids["short"]] == ["OrderPlaced", "OrderCancelled"]
    for name, oid in ids.items():
        assert on_kafka[oid] == event_types(shop, oid), name

    # `mesh sagas` mints an admin's token (sagas.inspect) through the mesh's identity.
    sagas = mesh_cli(orders_mesh, "sagas", "--all", "--json")
    assert sagas.returncode == 0, sagas.stderr
    rows = {row["saga_id"]: row for row in json.loads(sagas.stdout)}
    assert rows[ids["ok"]]["state"] == "SUCCEEDED"
    assert rows[ids["aq"]]["state"] == "COMPENSATED"
    assert not any(row["stuck"] for row in rows.values())
    in_flight = mesh_cli(orders_mesh, "sagas")
    assert in_flight.returncode == 0 and "no sagas in flight" in in_flight.stdout


def test_replay_and_as_of(shop: Shop) -> None:
    sku = unique("cap")
    set_stock(shop, sku, 5)
    request_id, first = place(shop, sku, 1)
    order_id = str(first["order_id"])
    order = final_order(shop, order_id)
    assert order["status"] == "ORDER_STATUS_CONFIRMED"

    replay = {
        "request_id": request_id,
        "customer_id": CUSTOMER,
        "lines": order["lines"],
        "payment_token": "tok_visa",
        "shipping_address": ADDRESS,
    }
    again = shop.orders("PlaceOrder", replay)
    assert again["order_id"] == order_id
    assert again["status"] == "ORDER_STATUS_CONFIRMED", "a replay reports the current status"
    assert event_types(shop, order_id).count("OrderPlaced") == 1
    assert stock(shop, sku) == (4, 0), "the replay reserved nothing"

    created = datetime.datetime.fromisoformat(order["created_at"].replace("Z", "+00:00"))
    moment = (created + datetime.timedelta(microseconds=500)).isoformat().replace("+00:00", "Z")
    then = shop.orders("GetOrder", {"order_id": order_id, "as_of": moment})
    assert then["order"]["status"] == "ORDER_STATUS_PENDING"
    assert then["order"]["version"] == "1"

    bad = shop.grpcurl.run(
        ORDERS,
        f"{ORDERS_SVC}/PlaceOrder",
        metadata=shop.customer,
        data={
            "request_id": unique("req"),
            "customer_id": CUSTOMER,
            "payment_token": "tok_visa",
            "lines": [
                {"sku": sku, "quantity": 0, "unit_price": {"currency_code": "EUR", "units": 1}},
                {"sku": sku, "quantity": 1, "unit_price": {"currency_code": "ZZZ", "units": 1}},
            ],
            "shipping_address": {**ADDRESS, "city": ""},
        },
    )
    assert "Code: InvalidArgument" in bad.stderr
    for field in (
        "lines[0].quantity",
        "lines[1].unit_price.currency_code",
        "shipping_address.city",
    ):
        assert f'"field": "{field}"' in bad.stderr


def test_another_customers_order_is_permission_denied_naming_the_permission(
    orders_mesh: Path, shop: Shop, tokens: MeshTokens
) -> None:
    """A customer reading another customer's order, or placing one in their name, gets
    PERMISSION_DENIED naming the permission; an admin may not read the audit trail.

    That the denial reaches the trail, and the trail verifies, is checked on the session's shop
    mesh (test_gateway, test_permissions_audit), not here: every mesh's audit service joins the
    same consumer group ("audit") on the shared broker, so while the shop mesh runs, this
    module's records may be appended to its trail instead of this mesh's."""
    sku = unique("lamp")
    set_stock(shop, sku, 2)
    _, placed = place(shop, sku, 1)
    order_id = str(placed["order_id"])
    snoop = unique("cust-snoop")
    refused = shop.grpcurl.run(
        ORDERS,
        f"{ORDERS_SVC}/GetOrder",
        data={"order_id": order_id},
        metadata=tokens.metadata("customer", snoop),
    )
    assert "Code: PermissionDenied" in refused.stderr, refused.stderr
    assert f"permission orders.read denied on Order {order_id}" in refused.stderr
    # Nor may they place an order in the owner's name.
    impostor = shop.grpcurl.run(
        ORDERS,
        f"{ORDERS_SVC}/PlaceOrder",
        metadata=tokens.metadata("customer", snoop),
        data={
            "request_id": unique("req"),
            "customer_id": CUSTOMER,
            "lines": [
                {"sku": sku, "quantity": 1, "unit_price": {"currency_code": "EUR", "units": 1}}
            ],
            "payment_token": "tok_visa",
            "shipping_address": ADDRESS,
        },
    )
    assert "Code: PermissionDenied" in impostor.stderr, impostor.stderr
    # An admin may not read the audit trail (separation of duties): `mesh audit ls` says so.
    as_admin = mesh_cli(orders_mesh, "audit", "ls", "--token", tokens.token("admin"))
    assert as_admin.returncode == 1 and "PERMISSION_DENIED" in as_admin.stderr, as_admin.stderr
    assert "audit.read" in as_admin.stderr
