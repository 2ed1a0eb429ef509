"""The order saga parks while payments' circuit breaker is open, and resumes (issue 15, item 5).

Orders, inventory, payments and shipping run in this process on their real composition roots
(real Kafka, a real registry, tokens of a test issuer), orders with a step timeout of 2 s. Then
payments stops. Orders are placed: their sagas fail to authorize, orders' client breaker for
payments opens (meshkit.resilience, the process's defaults: 10 calls, half failing), and every
saga parks, its ``last_error`` saying so in what ``mesh sagas`` shows (ListSagas). payments
stays away for longer than the step timeout: no saga compensates. payments comes back on its
port: the breaker lets its trial calls through, and every order is CONFIRMED.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import grpc
import pytest
from support.events import register_all
from support.mesh import free_port
from support.registry import wait_until
from support.tokens import TEST_ISSUER, authorized, token_endpoint

from inventory.bootstrap import SERVICE as INVENTORY
from mesh.sagas.v1 import sagas_pb2, sagas_pb2_grpc
from meshkit import resilience
from meshkit.resilience import Downstreams, Limits, downstreams
from meshkit.service import Service
from orders.bootstrap import SERVICE as ORDERS
from orders.domain.saga import PARKED
from payments.bootstrap import SERVICE as PAYMENTS
from shipping.bootstrap import SERVICE as SHIPPING
from shop.common.v1 import common_pb2
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.orders.v1 import orders_pb2, orders_pb2_grpc

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
CONTRACTS = [
    REPO / "proto" / "shop" / name / "v1" / "avro"
    for name in ("orders", "inventory", "payments", "shipping")
] + [REPO / "proto" / "mesh" / "audit" / "v1" / "avro"]
STEP_TIMEOUT_S = 2.0
ORDERS_PLACED = 6  # enough failing sagas to fill the breaker's minimum of calls at once
CUSTOMER = "c-park"


class Shop:
    """The four services in this process; payments can be stopped and started again on its
    port (same database)."""

    def __init__(self, stack: ExitStack, env: dict[str, str], tmp_path: Path) -> None:
        self._stack = stack
        self._env = env
        self._tmp = tmp_path
        self.channels: dict[str, grpc.Channel] = {}
        self.payments_port = free_port()
        self._payments: Any = None

    def run(self, service: Service[Any], port: int = 0) -> Any:
        prefix = service.prefix
        env = {
            f"{prefix}_PORT": str(port),
            f"{prefix}_DB_PATH": str(self._tmp / f"{service.name}.db"),
        } | self._env
        if service is ORDERS:
            env["ORDERS_STEP_TIMEOUT_S"] = str(STEP_TIMEOUT_S)
        server = service.create(service.load_settings(env))
        bound = server.start()
        self._stack.callback(server.stop, 0)
        return server, bound

    def start_payments(self) -> None:
        self._payments, _ = self.run(PAYMENTS, self.payments_port)

    def stop_payments(self) -> None:
        self._payments.stop(0)

    def as_(self, name: str, **who: Any) -> grpc.Channel:
        return authorized(self.channels[name], **who)


@pytest.fixture
def shop(
    tmp_path: Path,
    kafka_bootstrap: str,
    registry_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Shop]:
    for contracts in CONTRACTS:
        register_all(registry_url, contracts)
    env = {"SCHEMA_REGISTRY_URL": registry_url, "MESH_KAFKA_BOOTSTRAP": kafka_bootstrap}
    # The process's breakers, fresh and quick to open (what MESH_BREAKER_WINDOW=20 and
    # MESH_BREAKER_MIN_CALLS=10 give a service): the test places a handful of orders only.
    monkeypatch.setattr(resilience, "_DOWNSTREAMS", Downstreams(Limits(window=20, min_calls=10)))
    with token_endpoint() as identity, ExitStack() as stack:
        monkeypatch.setenv("MESH_URL_IDENTITY", identity.url)
        shop = Shop(stack, env | TEST_ISSUER.env, tmp_path)
        shop.start_payments()
        monkeypatch.setenv("MESH_ADDRESS_PAYMENTS", f"127.0.0.1:{shop.payments_port}")
        for service in (INVENTORY, SHIPPING):
            _, port = shop.run(service)
            monkeypatch.setenv(f"MESH_ADDRESS_{service.prefix}", f"127.0.0.1:{port}")
            shop.channels[service.name] = stack.enter_context(
                grpc.insecure_channel(f"127.0.0.1:{port}")
            )
        _, port = shop.run(ORDERS)
        shop.channels["orders"] = stack.enter_context(grpc.insecure_channel(f"127.0.0.1:{port}"))
        yield shop


def place(shop: Shop, sku: str) -> str:
    stub = orders_pb2_grpc.OrdersServiceStub(shop.as_("orders", role="customer", subject=CUSTOMER))
    return stub.PlaceOrder(
        orders_pb2.PlaceOrderRequest(
            request_id=f"req-{uuid.uuid4().hex}",
            customer_id=CUSTOMER,
            lines=[
                orders_pb2.OrderLine(
                    sku=sku, quantity=1, unit_price=common_pb2.Money(currency_code="EUR", units=9)
                )
            ],
            payment_token="tok_visa",
            shipping_address=common_pb2.Address(
                name="Ada", line1="1 Main St", city="Berlin", postal_code="10115",
                country_code="DE",
            ),
        ),
        timeout=10,
    ).order_id  # fmt: skip


def sagas(shop: Shop) -> dict[str, sagas_pb2.Saga]:
    """What `mesh sagas` shows (ListSagas, as an admin), by order id."""
    stub = sagas_pb2_grpc.SagaAdminServiceStub(shop.as_("orders", role="admin"))
    answer = stub.ListSagas(sagas_pb2.ListSagasRequest(include_finished=True), timeout=10)
    return {saga.saga_id: saga for saga in answer.sagas}


def statuses(shop: Shop, order_ids: list[str]) -> dict[str, int]:
    stub = orders_pb2_grpc.OrdersServiceStub(shop.as_("orders", role="customer", subject=CUSTOMER))
    return {
        oid: stub.GetOrder(orders_pb2.GetOrderRequest(order_id=oid), timeout=10).order.status
        for oid in order_ids
    }


def never_compensating(shop: Shop, order_ids: list[str]) -> Callable[[], None]:
    """A check that no saga of ``order_ids`` has begun to compensate (or finished doing so)."""
    going_on = (sagas_pb2.SAGA_STATE_RUNNING, sagas_pb2.SAGA_STATE_SUCCEEDED)

    def check() -> None:
        listed = sagas(shop)
        undone = {oid: listed[oid].reason for oid in order_ids if listed[oid].state not in going_on}
        assert not undone, f"compensating while payments' breaker was open: {undone}"

    return check


def test_sagas_park_on_an_open_breaker_and_confirm_once_payments_is_back(
    shop: Shop, caplog: pytest.LogCaptureFixture
) -> None:
    sku = f"park-{uuid.uuid4().hex[:8]}"
    inventory_pb2_grpc.InventoryServiceStub(shop.as_("inventory", role="admin")).SetStock(
        inventory_pb2.SetStockRequest(sku=sku, quantity=100), timeout=10
    )
    shop.stop_payments()
    caplog.set_level(logging.INFO, logger="orders.saga")
    order_ids = [place(shop, sku) for _ in range(ORDERS_PLACED)]
    check = never_compensating(shop, order_ids)

    def all_parked() -> bool:
        check()
        listed = sagas(shop)
        return all(listed[oid].last_error.startswith(PARKED) for oid in order_ids)

    wait_until(all_parked, timeout=20, what="every saga to park on payments' open breaker")
    listed = sagas(shop)
    for oid in order_ids:
        saga = listed[oid]
        assert (saga.state, saga.step) == (sagas_pb2.SAGA_STATE_RUNNING, "AUTHORIZE_PAYMENT")
        assert "circuit breaker for 'payments' is open" in saga.last_error, saga.last_error
    assert downstreams().breaker("payments").state.value in ("open", "half-open")
    # payments stays away for twice the step timeout: the sagas stay parked, none compensates.
    until = time.monotonic() + 2 * STEP_TIMEOUT_S

    def held() -> bool:
        check()
        return time.monotonic() >= until

    wait_until(held, timeout=4 * STEP_TIMEOUT_S, what="payments to have been away long enough")
    assert all(sagas(shop)[oid].state == sagas_pb2.SAGA_STATE_RUNNING for oid in order_ids)

    shop.start_payments()
    confirmed = orders_pb2.ORDER_STATUS_CONFIRMED
    wait_until(
        lambda: check() or all(s == confirmed for s in statuses(shop, order_ids).values()),
        timeout=40,
        what="every parked saga to resume and confirm once payments is back",
    )
    parking = [r.getMessage() for r in caplog.records if "CircuitOpen" in r.getMessage()]
    assert parking, "the saga log never said a step parked"
