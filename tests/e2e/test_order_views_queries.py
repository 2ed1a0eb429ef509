"""End to end: order_views under `mesh up -d` on real Kafka, through the real grpcurl.

One mesh for the module. order_views first replays whatever the shared broker holds (every
earlier run's events), so the module waits for its lag to reach zero before placing orders.
Then: a consistency token from PlaceOrder is never missed by ListOrders, SearchOrders or
GetOrderView; a confirmed order shows CONFIRMED in its customer's list, is found by its SKU, has
its timeline; `mesh rebuild order_views` answers the same afterwards, and a thread querying
throughout the rebuild sees no error.

Each call carries the least token that may make it (from the mesh's identity): the customer's
own to place its orders and read them, support's to search every order and see the lag, an
admin's to set stock; `mesh rebuild` mints its admin token itself. A customer may neither search
(support's) nor list another customer's orders.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from support.mesh import (
    DEFAULT_PORTS,
    REPO,
    Grpcurl,
    MeshTokens,
    mesh_cli,
    mesh_tokens,
    port_in_use,
)

from shop.order_views.v1 import order_views_pb2, order_views_pb2_grpc

ORDERS = "127.0.0.1:50051"
INVENTORY = "127.0.0.1:50052"
VIEWS = "127.0.0.1:50055"
ORDERS_SVC = "shop.orders.v1.OrdersService"
VIEWS_SVC = "shop.order_views.v1.OrderViewsService"
ADDRESS = {
    "name": "Grace Hopper",
    "line1": "Arlington Ridge Rd 1",
    "city": "Arlington",
    "postal_code": "22202",
    "country_code": "US",
}
CATCH_UP_S = 180.0  # replaying the shared broker's history
PORTS_FREE_S = 600.0  # another engineer's e2e run may hold the mesh ports for a while


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_until(what: str, timeout: float, probe: Any) -> Any:
    """Poll ``probe()`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s waiting for {what}"
        time.sleep(0.2)  # poll interval within the deadline loop


@pytest.fixture(scope="module")
def views_mesh(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> Iterator[Path]:
    """`mesh up -d --kafka <real broker>` in a scratch root, caught up; `mesh down` after."""
    root = tmp_path_factory.mktemp("order-views-mesh")
    for name in ("mesh.toml", "proto", "scripts"):
        (root / name).symlink_to(REPO / name)
    wait_until(
        "the mesh ports to be free",
        PORTS_FREE_S,
        lambda: not any(port_in_use(p) for p in DEFAULT_PORTS),
    )
    try:
        up = mesh_cli(root, "up", "-d", "--kafka", kafka_bootstrap)
        assert up.returncode == 0, up.stderr
        yield root
    finally:
        mesh_cli(root, "down")


@pytest.fixture(scope="module")
def caught_up(views_mesh: Path, grpcurl: Grpcurl) -> Path:
    """The mesh, once order_views has replayed the broker's history (lag 0 everywhere)."""
    support = mesh_tokens(views_mesh).metadata("support")

    def no_lag() -> bool:
        status = grpcurl.call(VIEWS, f"{VIEWS_SVC}/GetProjectionStatus", {}, support)
        partitions = status.get("partitions", [])
        assert isinstance(partitions, list)
        return bool(partitions) and all(int(p.get("lag", 0)) == 0 for p in partitions)

    wait_until("order_views to catch up", CATCH_UP_S, no_lag)
    return views_mesh


def place(grpcurl: Grpcurl, tokens: MeshTokens, customer: str, sku: str) -> dict[str, Any]:
    grpcurl.call(
        INVENTORY,
        "shop.inventory.v1.InventoryService/SetStock",
        {"sku": sku, "quantity": 5},
        tokens.metadata("admin"),
    )
    return grpcurl.call(
        ORDERS,
        f"{ORDERS_SVC}/PlaceOrder",
        {
            "request_id": unique("req"),
            "customer_id": customer,
            "lines": [
                {"sku": sku, "quantity": 2, "unit_price": {"currency_code": "EUR", "units": 7}}
            ],
            "payment_token": "tok_visa",
            "shipping_address": ADDRESS,
        },
        tokens.metadata("customer", customer),
    )


def caller(tokens: MeshTokens, query: str, customer: str) -> tuple[tuple[str, str], ...]:
    """Who asks ``query``: support searches (customers may not), the customer reads its own."""
    if query == "SearchOrders":
        return tokens.metadata("support")
    return tokens.metadata("customer", customer)


def answers(
    grpcurl: Grpcurl, tokens: MeshTokens, customer: str, sku: str, order_id: str
) -> list[dict[str, Any]]:
    mine = tokens.metadata("customer", customer)
    return [
        grpcurl.call(VIEWS, f"{VIEWS_SVC}/ListOrders", {"customer_id": customer}, mine),
        grpcurl.call(
            VIEWS, f"{VIEWS_SVC}/SearchOrders", {"query": sku}, tokens.metadata("support")
        ),
        grpcurl.call(VIEWS, f"{VIEWS_SVC}/GetOrderView", {"order_id": order_id}, mine),
    ]


def test_read_your_writes_confirmed_order_and_rebuild(caught_up: Path, grpcurl: Grpcurl) -> None:
    customer, sku = unique("cust"), unique("lamp")
    tokens = mesh_tokens(caught_up)
    mine = tokens.metadata("customer", customer)

    # Read-your-writes: each query right after PlaceOrder, with its token, has the order.
    for query in ("ListOrders", "SearchOrders", "GetOrderView"):
        placed = place(grpcurl, tokens, customer, sku)
        token, order_id = placed["consistency_token"], placed["order_id"]
        assert token == f"{order_id}@1"
        request = {
            "ListOrders": {"customer_id": customer},
            "SearchOrders": {"query": sku},
            "GetOrderView": {"order_id": order_id},
        }[query] | {"consistency_token": token}
        got = grpcurl.call(VIEWS, f"{VIEWS_SVC}/{query}", request, caller(tokens, query, customer))
        found = [got["view"]["summary"]] if query == "GetOrderView" else got["orders"]
        assert order_id in [o["order_id"] for o in found], query

    # The last order, confirmed: its customer's list, a search by its SKU, its timeline.
    def confirmed() -> bool:
        listed = grpcurl.call(VIEWS, f"{VIEWS_SVC}/ListOrders", {"customer_id": customer}, mine)
        found = [o for o in listed["orders"] if o["order_id"] == order_id]
        return bool(found) and found[0]["status"] == "ORDER_STATUS_CONFIRMED"

    wait_until(f"{order_id} CONFIRMED in the view", 60, confirmed)
    listed, searched, view = answers(grpcurl, tokens, customer, sku, order_id)
    assert len(listed["orders"]) == 3 and listed["orders"][0]["order_id"] == order_id
    assert order_id in [o["order_id"] for o in searched["orders"]]
    assert view["view"]["summary"]["total"] == {"currency_code": "EUR", "units": "14"}
    assert [e["description"] for e in view["view"]["timeline"]] == [
        "order placed: 1 line, EUR 14.00",
        "stock reserved",
        "payment authorized",
        view["view"]["timeline"][3]["description"],  # shipment booked (tracking <number>)
        "payment captured",
        "stock committed",
        "order confirmed",
    ]
    assert view["view"]["timeline"][3]["description"].startswith("shipment booked")
    assert (view["view"]["payment_state"], view["view"]["shipment_state"]) == (
        "CAPTURED",
        "BOOKED",
    )
    bad = grpcurl.run(
        VIEWS,
        f"{VIEWS_SVC}/ListOrders",
        data={"customer_id": customer, "page_token": "x"},
        metadata=mine,
    )
    assert "Code: InvalidArgument" in bad.stderr
    # A customer may not search (support's), nor list someone else's orders.
    for query, request in (
        ("SearchOrders", {"query": sku}),
        ("ListOrders", {"customer_id": unique("cust")}),
    ):
        refused = grpcurl.run(VIEWS, f"{VIEWS_SVC}/{query}", data=request, metadata=mine)
        assert "Code: PermissionDenied" in refused.stderr, (query, refused.stderr)

    # Rebuild (`mesh rebuild` mints an admin's token): same answers after; a thread querying
    # throughout sees no error.
    before = answers(grpcurl, tokens, customer, sku, order_id)
    errors: list[str] = []
    calls = 0
    stop = threading.Event()

    def query() -> None:
        nonlocal calls
        with grpc.insecure_channel(VIEWS) as channel:
            stub = order_views_pb2_grpc.OrderViewsServiceStub(channel)
            while not stop.is_set():
                try:
                    got = stub.ListOrders(
                        order_views_pb2.ListOrdersRequest(customer_id=customer),
                        timeout=5,
                        metadata=mine,
                    )
                    if len(got.orders) != 3:
                        errors.append(f"saw {len(got.orders)} orders")
                    calls += 1
                except grpc.RpcError as error:
                    errors.append(f"{error.code().name}: {error.details()}")

    reader = threading.Thread(target=query)
    reader.start()
    try:
        rebuilt = mesh_cli(caught_up, "rebuild", "order_views", timeout=600)
    finally:
        stop.set()
        reader.join()
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "swapped" in rebuilt.stderr and "rebuilt; generation 2 serves" in rebuilt.stdout
    assert not errors, errors[:5]
    assert calls > 0
    assert answers(grpcurl, tokens, customer, sku, order_id) == before
    data = caught_up / ".mesh" / "data"
    assert (data / "order_views.g2.db").exists() and not (data / "order_views.g1.db").exists()
