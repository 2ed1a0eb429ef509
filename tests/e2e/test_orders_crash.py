"""End to end crash tests of the order saga under `mesh up -d` on real Kafka.

kill -9 payments with orders in flight, then kill -9 orders itself mid-saga; `mesh up -d`
restarts what died. Afterwards every order is CONFIRMED or CANCELLED, nothing stays reserved,
and stock adds up: available = initial - units of the confirmed orders. The customer's own token
places and reads the orders, an admin's sets stock (both from the mesh's identity); the saga
keeps calling as orders on the customer's behalf across the restarts.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from support.mesh import DEFAULT_PORTS, REPO, mesh_cli, mesh_ps, mesh_tokens, port_in_use

from meshkit.client import connect
from meshkit.credentials import StaticCredentials
from meshkit.resilience import unguarded
from shop.common.v1 import common_pb2
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.orders.v1 import orders_pb2, orders_pb2_grpc

INITIAL = 1000
ORDERS_IN_FLIGHT = 24
FINAL = (orders_pb2.ORDER_STATUS_CONFIRMED, orders_pb2.ORDER_STATUS_CANCELLED)
CUSTOMER = "cust-crash"


@pytest.fixture(scope="module")
def crash_mesh(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> Iterator[Path]:
    """`mesh up -d --kafka <real broker>` in a scratch root, for the whole module; `mesh down`."""
    root = tmp_path_factory.mktemp("orders-crash")
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
    """Python stubs for the orders and inventory the mesh runs (many calls: faster than grpcurl),
    orders' calls with the customer's token, inventory's with an admin's."""

    def __init__(self, root: Path) -> None:
        tokens = mesh_tokens(root)
        customer = StaticCredentials(tokens.token("customer", CUSTOMER))
        admin = StaticCredentials(tokens.token("admin"))
        # meshkit's channels reconnect within 2 s of a restart (gRPC's default backs off to 120 s).
        # A patient client: its breakers never open (a kit channel's would, while orders is
        # killed, and then fail the replays fast instead of waiting for orders to be back).
        patient = unguarded()
        self.orders_channel = connect("127.0.0.1:50051", credentials=customer, downstreams=patient)
        self.inventory_channel = connect("127.0.0.1:50052", credentials=admin, downstreams=patient)
        self.orders = orders_pb2_grpc.OrdersServiceStub(self.orders_channel)
        self.inventory = inventory_pb2_grpc.InventoryServiceStub(self.inventory_channel)

    def place(
        self, sku: str, quantity: int, request_id: str | None = None, *, replay: bool = False
    ) -> str:
        """PlaceOrder; the order id (of the first placement, when ``request_id`` is a replay).

        ``replay`` waits for orders to be back (it may be restarting) instead of failing fast.
        """
        response = self.orders.PlaceOrder(
            orders_pb2.PlaceOrderRequest(
                request_id=request_id or f"req-{uuid.uuid4().hex}",
                customer_id=CUSTOMER,
                lines=[
                    orders_pb2.OrderLine(
                        sku=sku,
                        quantity=quantity,
                        unit_price=common_pb2.Money(currency_code="EUR", units=3),
                    )
                ],
                payment_token="tok_visa",
                shipping_address=common_pb2.Address(
                    name="Ada", line1="1 Main St", city="Berlin", postal_code="10115",
                    country_code="DE",
                ),
            ),
            timeout=10,
            wait_for_ready=replay,
        )  # fmt: skip
        return response.order_id

    def wait_final(
        self, order_ids: list[str], timeout: float = 90.0
    ) -> dict[str, orders_pb2.Order]:
        """Poll until every order is CONFIRMED or CANCELLED (orders may be restarting)."""
        deadline = time.monotonic() + timeout
        final: dict[str, orders_pb2.Order] = {}
        while len(final) < len(order_ids):
            assert time.monotonic() < deadline, f"{len(order_ids) - len(final)} orders not final"
            for order_id in order_ids:
                if order_id in final:
                    continue
                try:
                    order = self.orders.GetOrder(
                        orders_pb2.GetOrderRequest(order_id=order_id),
                        timeout=5,
                        wait_for_ready=True,
                    ).order
                except grpc.RpcError:
                    break  # orders is restarting: poll again
                if order.status in FINAL:
                    final[order_id] = order
            time.sleep(0.1)  # poll interval within the deadline loop
        return final

    def stock(self, sku: str) -> tuple[int, int]:
        got = self.inventory.GetStock(inventory_pb2.GetStockRequest(sku=sku), timeout=5)
        return got.available, got.reserved

    def close(self) -> None:
        self.orders_channel.close()
        self.inventory_channel.close()


@pytest.fixture
def shop(crash_mesh: Path) -> Iterator[Shop]:
    client = Shop(crash_mesh)
    yield client
    client.close()


def kill_9(root: Path, component: str) -> None:
    """SIGKILL ``component`` and wait until `mesh ps` sees it stopped."""
    pid = int(str(mesh_ps(root)[component]["pid"]))
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while mesh_ps(root)[component]["state"] != "stopped":
        assert time.monotonic() < deadline, f"{component} still running after kill -9"
        time.sleep(0.05)  # poll interval within the deadline loop


def assert_stock_adds_up(shop: Shop, sku: str, placed: dict[str, int]) -> None:
    final = shop.wait_final(list(placed))
    confirmed = sum(q for oid, q in placed.items() if final[oid].status == FINAL[0])
    assert shop.stock(sku) == (INITIAL - confirmed, 0)


def test_kill_9_payments_with_orders_in_flight(crash_mesh: Path, shop: Shop) -> None:
    sku = f"crash-pay-{uuid.uuid4().hex[:6]}"
    shop.inventory.SetStock(inventory_pb2.SetStockRequest(sku=sku, quantity=INITIAL), timeout=5)
    log = crash_mesh / ".mesh" / "logs" / "orders.log"
    offset = log.stat().st_size
    pid = int(str(mesh_ps(crash_mesh)["payments"]["pid"]))
    quantities = [1 + n % 3 for n in range(ORDERS_IN_FLIGHT)]
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(shop.place, sku, q) for q in quantities]
        futures[ORDERS_IN_FLIGHT // 3].result(timeout=30)
        os.kill(pid, signal.SIGKILL)  # sagas are authorizing right now
        placed = {f.result(timeout=30): q for f, q in zip(futures, quantities, strict=True)}
    up = mesh_cli(crash_mesh, "up", "-d")
    assert up.returncode == 0, up.stderr
    assert "payments: healthy" in up.stderr
    assert_stock_adds_up(shop, sku, placed)
    # Sagas met the dead payments (transient failures) and went on once it was back.
    with log.open() as saga_log:
        saga_log.seek(offset)
        assert "UNAVAILABLE" in saga_log.read()


def test_kill_9_orders_mid_saga_resumes_every_saga(crash_mesh: Path, shop: Shop) -> None:
    sku = f"crash-ord-{uuid.uuid4().hex[:6]}"
    shop.inventory.SetStock(inventory_pb2.SetStockRequest(sku=sku, quantity=INITIAL), timeout=5)
    log = crash_mesh / ".mesh" / "logs" / "orders.log"
    pid = int(str(mesh_ps(crash_mesh)["orders"]["pid"]))
    requests = {f"req-{uuid.uuid4().hex}": 1 + n % 3 for n in range(ORDERS_IN_FLIGHT)}
    accepted = threading.Semaphore(0)

    def place(request_id: str) -> None:
        with contextlib.suppress(grpc.RpcError):  # killed under it: replayed below
            shop.place(sku, requests[request_id], request_id)
        accepted.release()

    # Kill orders while it is placing orders and running their sagas.
    with ThreadPoolExecutor(4) as pool:
        for request_id in requests:
            pool.submit(place, request_id)
        for _ in range(ORDERS_IN_FLIGHT // 3):
            assert accepted.acquire(timeout=30)
        os.kill(pid, signal.SIGKILL)
    offset = log.stat().st_size
    up = mesh_cli(crash_mesh, "up", "-d")
    assert up.returncode == 0, up.stderr
    assert "orders: healthy" in up.stderr
    # Replaying every request id finds the orders that were accepted (and places the others).
    placed = {shop.place(sku, q, rid, replay=True): q for rid, q in requests.items()}
    assert len(placed) == ORDERS_IN_FLIGHT
    assert_stock_adds_up(shop, sku, placed)
    # The restarted process picked up the sagas the killed one left in flight.
    with log.open() as restarted:
        restarted.seek(offset)
        assert "resuming" in restarted.read()
