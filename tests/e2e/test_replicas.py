"""End to end: `mesh up --replicas inventory=2,payments=2` on the default ports and real Kafka.

Both replicas of each serve the saga's calls (counted in their own access logs), and kill -9 of
one inventory replica while orders flow costs the callers at most one failed attempt: every
order still ends CONFIRMED, no saga step failed more than once, and a client of both inventory
replicas (a kit channel: round_robin with health checking) saw at most one failed call. A plain
`mesh up` brings the killed replica back.

Run under ``flock /tmp/meshkit-mesh.lock`` (it takes the mesh's default ports).
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from support.mesh import DEFAULT_PORTS, REPO, mesh_cli, mesh_ps, mesh_tokens, port_in_use

from meshkit.client import connect
from meshkit.credentials import StaticCredentials
from shop.common.v1 import common_pb2
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.orders.v1 import orders_pb2, orders_pb2_grpc

REPLICA_PORTS = (51052, 51053)  # inventory#2, payments#2
ORDERS = 30
CUSTOMER = "cust-replicas"
# The saga's calls of each service (round_robin spreads the calls of a channel, not of each
# method: a saga's authorize and capture may well alternate between the replicas).
INVENTORY_CALLS = ("InventoryService/ReserveStock", "InventoryService/CommitReservation")
PAYMENTS_CALLS = ("PaymentsService/AuthorizePayment", "PaymentsService/CapturePayment")
INVENTORY_STEPS = ("RESERVE_STOCK", "COMMIT_STOCK", "RELEASE_STOCK")
ENV = {**os.environ, "MESH_ACCESS_SLOW_MS": "0"}  # every call in its service's access log


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("replicas")
    for name in ("mesh.toml", "proto", "scripts"):
        (root / name).symlink_to(REPO / name)
    busy = [p for p in (*DEFAULT_PORTS, *REPLICA_PORTS) if port_in_use(p)]
    assert not busy, f"ports {busy} are in use: stop your own mesh (`mesh down`) first"
    try:
        up = mesh_cli(
            root,
            "up", "-d", "--kafka", kafka_bootstrap, "--replicas", "inventory=2,payments=2",
            env=ENV,
        )  # fmt: skip
        assert up.returncode == 0, up.stderr
        yield root
    finally:
        mesh_cli(root, "down", env=ENV)


def calls_in(log: Path, methods: tuple[str, ...]) -> int:
    """How many calls of ``methods`` (``Service/Method``) the access log shows, answered OK."""
    with log.open(errors="replace") as lines:
        return sum(1 for line in lines if any(f"{m} OK" in line for m in methods))


def place(orders: orders_pb2_grpc.OrdersServiceStub, sku: str) -> str:
    response = orders.PlaceOrder(
        orders_pb2.PlaceOrderRequest(
            request_id=f"req-{uuid.uuid4().hex}",
            customer_id=CUSTOMER,
            lines=[
                orders_pb2.OrderLine(
                    sku=sku, quantity=1, unit_price=common_pb2.Money(currency_code="EUR", units=3)
                )
            ],
            payment_token="tok_visa",
            shipping_address=common_pb2.Address(
                name="Ada", line1="1 Main St", city="Berlin", postal_code="10115",
                country_code="DE",
            ),
        ),
        timeout=10,
    )  # fmt: skip
    return str(response.order_id)


def test_replicas_share_the_calls_and_one_dying_costs_at_most_one_attempt(
    replicated: Path,
) -> None:
    rows = mesh_ps(replicated)
    for name, port in (("inventory#2", 51052), ("payments#2", 51053)):
        assert rows[name]["state"] == "running" and rows[name]["port"] == port, rows[name]
    logs = replicated / ".mesh" / "logs"
    orders_log = logs / "orders.log"
    offset = orders_log.stat().st_size
    tokens = mesh_tokens(replicated)
    customer = StaticCredentials(tokens.token("customer", CUSTOMER))
    admin = StaticCredentials(tokens.token("admin"))
    sku = f"replica-{uuid.uuid4().hex[:6]}"
    failures: list[str] = []
    stop = threading.Event()
    with (
        connect("127.0.0.1:50051", credentials=customer) as orders_channel,
        # Both inventory replicas, as every component of the mesh dials them.
        connect("127.0.0.1:50052,127.0.0.1:51052", credentials=admin) as inventory_channel,
    ):
        orders = orders_pb2_grpc.OrdersServiceStub(orders_channel)
        inventory = inventory_pb2_grpc.InventoryServiceStub(inventory_channel)
        inventory.SetStock(inventory_pb2.SetStockRequest(sku=sku, quantity=1000), timeout=5)

        def read_stock() -> None:
            """A steady reader of both replicas, across the kill."""
            while not stop.is_set():
                try:
                    inventory.GetStock(inventory_pb2.GetStockRequest(sku=sku), timeout=2)
                except grpc.RpcError as exc:
                    failures.append(f"{exc.code().name}: {exc.details()}")
                stop.wait(0.01)

        reader = threading.Thread(target=read_stock)
        reader.start()
        order_ids: list[str] = []

        def place_steadily() -> None:
            """Orders at about 20/s, so sagas run before, across and after the kill."""
            for _ in range(ORDERS):
                order_ids.append(place(orders, sku))
                stop.wait(0.05)  # the pace of the load, not a wait for something

        placer = threading.Thread(target=place_steadily)
        placer.start()
        try:
            # kill -9 one inventory replica a third of the way, once it has served some calls.
            second = logs / "inventory#2.log"
            deadline = time.monotonic() + 30
            while len(order_ids) < ORDERS // 3 or calls_in(second, INVENTORY_CALLS) < 3:
                assert time.monotonic() < deadline, "inventory#2 served none of the saga's calls"
                time.sleep(0.02)  # poll interval within the deadline loop
            before_kill = calls_in(second, INVENTORY_CALLS)
            os.kill(int(str(rows["inventory#2"]["pid"])), signal.SIGKILL)
            killed_at = len(order_ids)
            placer.join(timeout=60)
            statuses = wait_final(orders, order_ids)
        finally:
            stop.set()
            placer.join(timeout=10)
            reader.join(timeout=10)
    assert len(order_ids) == ORDERS and 0 < killed_at < ORDERS
    assert Counter(statuses.values()) == {orders_pb2.ORDER_STATUS_CONFIRMED: ORDERS}
    assert len(failures) <= 1, failures

    # No saga step on inventory failed more than once (a failed attempt is a WARNING naming
    # its order and step).
    with orders_log.open(errors="replace") as lines:
        lines.seek(offset)
        steps = [m for line in lines if (m := re.search(r"saga (\S+): (\w+) .*\(Transient", line))]
    on_inventory = Counter(m[1] for m in steps if m[2] in INVENTORY_STEPS)
    assert all(n <= 1 for n in on_inventory.values()), on_inventory

    # Both replicas of each served the saga's calls.
    served = {
        name: calls_in(logs / f"{name}.log", calls)
        for calls, names in (
            (INVENTORY_CALLS, ("inventory", "inventory#2")),
            (PAYMENTS_CALLS, ("payments", "payments#2")),
        )
        for name in names
    }
    assert all(served.values()), served
    print(
        f"served: {served} (inventory#2 {before_kill} before its kill, at order {killed_at});"
        f" failed reads {failures}; failed inventory steps {dict(on_inventory)};"
        f" other failed steps {len(steps) - sum(on_inventory.values())}"
    )

    # A plain `mesh up` brings the killed replica back.
    up = mesh_cli(replicated, "up", "-d", env=ENV)
    assert up.returncode == 0, up.stderr
    assert "inventory#2: healthy" in up.stderr
    assert mesh_ps(replicated)["inventory#2"]["state"] == "running"


def wait_final(
    orders: orders_pb2_grpc.OrdersServiceStub, order_ids: list[str], timeout: float = 90.0
) -> dict[str, int]:
    """Poll until every order is CONFIRMED or CANCELLED; their statuses."""
    final = (orders_pb2.ORDER_STATUS_CONFIRMED, orders_pb2.ORDER_STATUS_CANCELLED)
    deadline = time.monotonic() + timeout
    found: dict[str, int] = {}
    while len(found) < len(order_ids):
        assert time.monotonic() < deadline, f"{len(order_ids) - len(found)} orders not final"
        for order_id in order_ids:
            if order_id not in found:
                order = orders.GetOrder(orders_pb2.GetOrderRequest(order_id=order_id), timeout=5)
                if order.order.status in final:
                    found[order_id] = order.order.status
        time.sleep(0.1)  # poll interval within the deadline loop
    return found


def test_orders_breaker_for_payments_opens_shows_in_mesh_ps_and_recovers(
    replicated: Path,
) -> None:
    """Every payments replica killed: orders' breaker for payments opens (its sagas park
    rather than cancel), `mesh ps` shows it on orders, and once `mesh up` brings payments back
    a trial call closes it and every order confirms."""
    rows = mesh_ps(replicated)
    tokens = mesh_tokens(replicated)
    customer = StaticCredentials(tokens.token("customer", CUSTOMER))
    admin = StaticCredentials(tokens.token("admin"))
    sku = f"breaker-{uuid.uuid4().hex[:6]}"
    with (
        connect("127.0.0.1:50051", credentials=customer) as orders_channel,
        connect("127.0.0.1:50052,127.0.0.1:51052", credentials=admin) as inventory_channel,
    ):
        orders = orders_pb2_grpc.OrdersServiceStub(orders_channel)
        inventory = inventory_pb2_grpc.InventoryServiceStub(inventory_channel)
        inventory.SetStock(inventory_pb2.SetStockRequest(sku=sku, quantity=100), timeout=5)
        for name in ("payments", "payments#2"):
            os.kill(int(str(rows[name]["pid"])), signal.SIGKILL)
        order_ids = [place(orders, sku)]
        deadline = time.monotonic() + 60
        while mesh_ps(replicated)["orders"].get("breakers") != {"payments": "OPEN"}:
            assert time.monotonic() < deadline, mesh_ps(replicated)["orders"]
            order_ids.append(place(orders, sku))  # each saga's failing calls count
            time.sleep(0.2)  # the pace of the orders, and the poll of mesh ps
        shown = mesh_cli(replicated, "ps", env=ENV).stdout
        assert "breaker payments OPEN" in shown, shown

        up = mesh_cli(replicated, "up", "-d", env=ENV)
        assert up.returncode == 0, up.stderr
        statuses = wait_final(orders, order_ids)
    assert Counter(statuses.values()) == {orders_pb2.ORDER_STATUS_CONFIRMED: len(order_ids)}
    assert not mesh_ps(replicated)["orders"].get("breakers"), mesh_ps(replicated)["orders"]
    print(f"{len(order_ids)} orders placed until orders' breaker for payments opened")
