"""Orders' use cases and saga worker against an in-memory fake AND SQLite: one suite, both stores.

The participants are a scripted fake (no network): each test says what inventory, payments and
shipping answer, and checks the calls made, the order's events and the saga's end state.
"""

from __future__ import annotations

import contextlib
import copy
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pytest

from meshkit import Aborted, AlreadyExists, InvalidArgument, NotFound
from meshkit.db import Database
from orders.adapters.records import event_type, from_record, to_record
from orders.adapters.sqlite import MIGRATIONS, SqliteUnitOfWork, open_database
from orders.app.orders import Orders, PlaceOrder
from orders.app.saga_worker import SagaWorker
from orders.domain.events import OrderEvent, OrderStockReserved
from orders.domain.model import Order, OrderStatus
from orders.domain.saga import (
    AuthorizePayment,
    CancelPayment,
    CancelShipment,
    CapturePayment,
    Command,
    CommitStock,
    CreateShipment,
    Outcome,
    Rejected,
    ReleaseStock,
    ReserveStock,
    RetryPolicy,
    Saga,
    SagaStatus,
    Succeeded,
    Transient,
)
from orders.domain.values import Address, Money, OrderLine

T0 = 1_700_000_000.0
POLICY = RetryPolicy(step_timeout_s=5.0, call_timeout_s=1.0, initial_backoff_s=0.5)
ADDRESS = Address("Ada", "1 Main St", "Berlin", "10115", "DE")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


# ----------------------------------------------------------------------------------------------
# the in-memory fake store
# ----------------------------------------------------------------------------------------------


class FakeStore:
    def __init__(self) -> None:
        self.events: dict[str, list[OrderEvent]] = {}
        self.sagas: dict[str, Saga] = {}
        self.requests: dict[str, tuple[str, str]] = {}


class FakeOrders:
    def __init__(self, events: dict[str, list[OrderEvent]]) -> None:
        self.events = events

    def get(self, order_id: str, *, as_of: float | None = None) -> Order | None:
        history = [
            e for e in self.events.get(order_id, []) if as_of is None or e.occurred_at <= as_of
        ]
        return Order.from_history(order_id, history) if history else None

    def save(self, order: Order) -> None:
        stored = self.events.setdefault(order.order_id, [])
        if len(stored) != order.version - len(order.pending):
            raise Aborted("version conflict")
        stored.extend(order.pending)
        order.pending.clear()

    def history(self, order_id: str) -> list[tuple[int, OrderEvent]]:
        return list(enumerate(self.events.get(order_id, []), start=1))


class FakeSagas:
    def __init__(self, sagas: dict[str, Saga]) -> None:
        self.sagas = sagas

    def get(self, order_id: str) -> Saga | None:
        return self.sagas.get(order_id)

    def save(self, saga: Saga) -> None:
        self.sagas[saga.order_id] = saga

    def due(self, now: float, limit: int) -> list[str]:
        due = [s for s in self.sagas.values() if s.is_live and s.next_attempt_at <= now]
        return [s.order_id for s in sorted(due, key=lambda s: s.next_attempt_at)][:limit]

    def live(self) -> list[Saga]:
        return [s for s in self.sagas.values() if s.is_live]

    def recent(self, *, include_finished: bool, limit: int) -> list[Saga]:
        found = [s for s in self.sagas.values() if include_finished or s.is_live]
        return sorted(found, key=lambda s: s.started_at)[:limit]


class FakeRequests:
    def __init__(self, requests: dict[str, tuple[str, str]]) -> None:
        self.requests = requests

    def get(self, request_id: str) -> tuple[str, str] | None:
        return self.requests.get(request_id)

    def add(self, request_id: str, order_id: str, fingerprint: str) -> None:
        assert request_id not in self.requests
        self.requests[request_id] = (order_id, fingerprint)


class FakeUnitOfWork:
    """Works on copies and publishes them to the store only on a clean exit, like a transaction."""

    def __init__(self, store: FakeStore) -> None:
        self._store = store

    def __enter__(self) -> Self:
        self._copy = copy.deepcopy(self._store)
        self.orders = FakeOrders(self._copy.events)
        self.sagas = FakeSagas(self._copy.sagas)
        self.requests = FakeRequests(self._copy.requests)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self._store.__dict__.update(self._copy.__dict__)


# ----------------------------------------------------------------------------------------------
# scripted participants
# ----------------------------------------------------------------------------------------------


class FakeParticipants:
    """Answers each command type from a script (default: success), recording every call."""

    def __init__(self) -> None:
        self.script: dict[type, list[Outcome]] = {}
        self.calls: list[Command] = []

    def answer(self, kind: type, *outcomes: Outcome) -> None:
        self.script[kind] = list(outcomes)

    def execute(self, command: Command, timeout: float) -> Outcome:
        assert timeout > 0
        self.calls.append(command)
        queue = self.script.get(type(command), [])
        if queue:
            return queue.pop(0) if len(queue) > 1 else queue[0]
        return Succeeded(payment_id="pay-1", shipment_id="shp-1", tracking_number="TRK-1")

    def kinds(self) -> list[str]:
        return [type(c).__name__ for c in self.calls]


@pytest.fixture(params=["fake", "sqlite"])
def unit_of_work(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Any]]:
    if request.param == "fake":
        store = FakeStore()
        yield lambda: FakeUnitOfWork(store)
        return
    db = open_database(str(tmp_path / "orders.db"))
    yield lambda: SqliteUnitOfWork(db, snapshot_every=2)
    db.close()


class World:
    def __init__(self, uow: Callable[[], Any]) -> None:
        self.clock = Clock()
        self.participants = FakeParticipants()
        self.ids = iter(f"o-{n}" for n in range(1, 1000))
        self.worker = SagaWorker(uow, self.participants, POLICY, clock=self.clock, parallelism=1)
        self.orders = Orders(uow, clock=self.clock, new_id=lambda: next(self.ids), policy=POLICY)

    def place(self, request_id: str = "r-1", **changes: Any) -> Order:
        fields: dict[str, Any] = {
            "request_id": request_id,
            "customer_id": "c-1",
            "lines": (OrderLine("mug", 2, Money("EUR", 12, 500_000_000)),),
            "payment_token": "tok_visa",
            "shipping_address": ADDRESS,
        } | changes
        return self.orders.place(PlaceOrder(**fields)).order

    def settle(self, max_steps: int = 100) -> None:
        """Run the worker (advancing the clock past backoffs) until no saga is live."""
        for _ in range(max_steps):
            if not self.orders.sagas():
                return
            if self.worker.run_once() == 0:
                self.clock.now += 0.5
        raise AssertionError("sagas still live")


@pytest.fixture
def world(unit_of_work: Callable[[], Any]) -> World:
    return World(unit_of_work)


# ----------------------------------------------------------------------------------------------
# PlaceOrder, GetOrder, ListOrderEvents
# ----------------------------------------------------------------------------------------------


def test_place_returns_pending_and_starts_the_saga(world: World) -> None:
    order = world.place()
    assert (order.order_id, order.status, order.version) == ("o-1", OrderStatus.PENDING, 1)
    assert order.total == Money("EUR", 25)
    [summary] = world.orders.sagas()
    assert (summary.saga.status, summary.saga.step.value if summary.saga.step else None) == (
        SagaStatus.RUNNING,
        "RESERVE_STOCK",
    )


def test_a_replayed_request_id_returns_the_same_order_and_starts_nothing(world: World) -> None:
    first = world.place("r-9")
    world.settle()
    again = world.orders.place(
        PlaceOrder("r-9", "c-1", first.lines, "tok_visa", first.shipping_address)
    )
    assert not again.created
    assert (again.order.order_id, again.order.status) == (first.order_id, OrderStatus.CONFIRMED)
    assert len(world.orders.sagas(include_finished=True)) == 1
    with pytest.raises(AlreadyExists, match="different order"):
        world.place("r-9", customer_id="someone else")


def test_bad_input_names_every_field(world: World) -> None:
    with pytest.raises(InvalidArgument) as caught:
        world.place(
            "",
            lines=(
                OrderLine("mug", 0, Money("EUR", 1)),
                OrderLine("", 1, Money("XXX", 1)),
            ),
            shipping_address=Address("Ada", "1 Main St", "", "10115", "de"),
        )
    fields = {v.field for v in caught.value.violations}
    assert fields == {
        "request_id",
        "lines[0].quantity",
        "lines[1].sku",
        "lines[1].unit_price.currency_code",
        "shipping_address.city",
        "shipping_address.country_code",
    }
    with pytest.raises(InvalidArgument) as caught:
        world.place(lines=(), shipping_address=None, payment_token="")
    assert {v.field for v in caught.value.violations} == {
        "lines",
        "shipping_address",
        "payment_token",
    }


def test_get_as_of_answers_the_state_at_that_instant(world: World) -> None:
    order = world.place()
    world.clock.now += 10
    world.settle()
    assert world.orders.get(order.order_id).status is OrderStatus.CONFIRMED
    then = world.orders.get(order.order_id, as_of=T0 + 0.001)
    assert (then.status, then.version) == (OrderStatus.PENDING, 1)
    with pytest.raises(NotFound):
        world.orders.get(order.order_id, as_of=T0 - 1)
    with pytest.raises(NotFound):
        world.orders.get("nope")


def test_history_lists_every_event_with_its_version(world: World) -> None:
    order = world.place()
    world.settle()
    history = world.orders.history(order.order_id)
    assert [(v, event_type(e).rsplit(".", 1)[1]) for v, e in history] == [
        (1, "OrderPlaced"),
        (2, "OrderStockReserved"),
        (3, "OrderPaymentAuthorized"),
        (4, "OrderShipmentCreated"),
        (5, "OrderPaymentCaptured"),
        (6, "OrderConfirmed"),
    ]
    for _, event in history:  # every event survives its record (the store and the wire)
        assert from_record(event_type(event), to_record(event), event.occurred_at) == event


def test_a_concurrent_append_is_aborted(world: World, unit_of_work: Callable[[], Any]) -> None:
    order = world.place()
    with unit_of_work() as uow:
        a = uow.orders.get(order.order_id)
    with unit_of_work() as uow:
        b = uow.orders.get(order.order_id)
    a.record(OrderStockReserved(order.order_id, T0 + 1))
    b.record(OrderStockReserved(order.order_id, T0 + 2))
    with unit_of_work() as uow:
        uow.orders.save(a)
    with pytest.raises(Aborted), unit_of_work() as uow:
        uow.orders.save(b)
    assert len(world.orders.history(order.order_id)) == 2


# ----------------------------------------------------------------------------------------------
# the saga worker
# ----------------------------------------------------------------------------------------------


def test_happy_path_confirms_with_an_idempotency_key_on_every_call(world: World) -> None:
    order = world.place()
    world.settle()
    assert world.orders.get(order.order_id).status is OrderStatus.CONFIRMED
    assert world.participants.kinds() == [
        "ReserveStock",
        "AuthorizePayment",
        "CreateShipment",
        "CapturePayment",
        "CommitStock",
    ]
    calls = world.participants.calls
    assert isinstance(calls[0], ReserveStock) and calls[0].reservation_id == "o-1"
    assert isinstance(calls[1], AuthorizePayment) and calls[1].idempotency_key == "o-1:authorize"
    assert isinstance(calls[1], AuthorizePayment) and calls[1].amount == Money("EUR", 25)
    assert isinstance(calls[2], CreateShipment) and calls[2].idempotency_key.startswith("o-1:")
    assert isinstance(calls[3], CapturePayment) and calls[3].payment_id == "pay-1"
    assert isinstance(calls[4], CommitStock)


def test_a_declined_payment_releases_stock_and_cancels_with_the_reason(world: World) -> None:
    world.participants.answer(AuthorizePayment, Rejected("payment declined: card declined"))
    order = world.place()
    world.settle()
    got = world.orders.get(order.order_id)
    assert got.status is OrderStatus.CANCELLED
    assert got.cancellation_reason == "authorize payment: payment declined: card declined"
    assert world.participants.kinds() == ["ReserveStock", "AuthorizePayment", "ReleaseStock"]


def test_out_of_stock_cancels_without_compensating(world: World) -> None:
    world.participants.answer(ReserveStock, Rejected("FAILED_PRECONDITION: not enough stock"))
    order = world.place()
    world.settle()
    assert world.orders.get(order.order_id).status is OrderStatus.CANCELLED
    assert world.participants.kinds() == ["ReserveStock"]


def test_an_unshippable_address_voids_the_payment_and_releases_stock(world: World) -> None:
    world.participants.answer(CreateShipment, Rejected("FAILED_PRECONDITION: AQ not served"))
    order = world.place()
    world.settle()
    got = world.orders.get(order.order_id)
    assert got.status is OrderStatus.CANCELLED and "AQ not served" in got.cancellation_reason
    assert world.participants.kinds()[-2:] == ["CancelPayment", "ReleaseStock"]
    cancel = world.participants.calls[-2]
    assert isinstance(cancel, CancelPayment) and cancel.payment_id == "pay-1"


def test_transient_failures_retry_with_backoff_then_succeed(world: World) -> None:
    down = Transient("UNAVAILABLE: connection refused")
    world.participants.answer(CapturePayment, down, down, Succeeded(payment_id="pay-1"))
    order = world.place()
    world.settle()
    assert world.orders.get(order.order_id).status is OrderStatus.CONFIRMED
    assert world.participants.kinds().count("CapturePayment") == 3


def test_a_step_down_past_its_timeout_compensates_itself_too(world: World) -> None:
    world.participants.answer(CreateShipment, Transient("DEADLINE_EXCEEDED"))
    order = world.place()
    world.settle()
    got = world.orders.get(order.order_id)
    assert got.status is OrderStatus.CANCELLED
    assert got.cancellation_reason.startswith("create shipment: no answer within 5s")
    kinds = world.participants.kinds()
    assert kinds[-3:] == ["CancelShipment", "CancelPayment", "ReleaseStock"]
    cancel = world.participants.calls[-3]
    assert isinstance(cancel, CancelShipment) and cancel.shipment_id == ""  # unknown: looked up
    assert world.clock.now - T0 >= POLICY.step_timeout_s


def test_a_failing_compensation_keeps_retrying_and_shows_stuck(world: World) -> None:
    world.participants.answer(CreateShipment, Rejected("FAILED_PRECONDITION: AQ"))
    world.participants.answer(ReleaseStock, Transient("UNAVAILABLE"))
    world.place()
    for _ in range(30):
        world.worker.run_once()
        world.clock.now += 5
    [summary] = world.orders.sagas()
    assert summary.saga.status is SagaStatus.COMPENSATING and summary.stuck
    assert summary.saga.step is not None and summary.saga.step.value == "RELEASE_STOCK"
    world.participants.answer(ReleaseStock, Succeeded())
    world.settle()
    assert not world.orders.sagas()


def test_resume_makes_live_sagas_due_with_a_fresh_step_deadline(world: World) -> None:
    world.participants.answer(AuthorizePayment, Transient("UNAVAILABLE"))
    world.place()
    world.worker.run_once()
    world.worker.run_once()
    world.clock.now += 100  # orders was down for a long time
    assert world.worker.resume() == 1
    world.participants.answer(AuthorizePayment, Succeeded(payment_id="pay-1"))
    world.settle()
    assert world.orders.sagas(include_finished=True)[0].saga.status is SagaStatus.CONFIRMED


# ----------------------------------------------------------------------------------------------
# SQLite specifics: snapshots, outbox in the same transaction
# ----------------------------------------------------------------------------------------------


def test_snapshots_keep_loads_equal_to_the_full_fold(tmp_path: Path) -> None:
    db = open_database(str(tmp_path / "o.db"))
    try:
        world = World(lambda: SqliteUnitOfWork(db, snapshot_every=2))
        order = world.place()
        world.settle()
        with db.snapshot() as conn:
            versions = [r[0] for r in conn.execute("SELECT version FROM order_snapshots")]
        assert versions == [2, 4, 6]
        with SqliteUnitOfWork(db) as uow:
            loaded = uow.orders.get(order.order_id)
            folded = Order.from_history(order.order_id, [e for _, e in uow.orders.history("o-1")])
        assert loaded == folded and loaded is not None and loaded.version == 6
    finally:
        db.close()


def test_events_and_outbox_rows_commit_together(tmp_path: Path) -> None:
    db = open_database(str(tmp_path / "o.db"))
    published: list[tuple[str, int]] = []

    def publish(conn: sqlite3.Connection, event: OrderEvent, version: int) -> None:
        if event.order_id == "o-2":
            raise RuntimeError("registry down")
        published.append((event_type(event), version))

    try:
        world = World(lambda: SqliteUnitOfWork(db, publish))
        world.place("r-1")
        assert published == [("shop.orders.v1.OrderPlaced", 1)]
        with pytest.raises(RuntimeError):
            world.place("r-2")
        with pytest.raises(NotFound):  # rolled back: no event, no saga, no request id
            world.orders.get("o-2")
        assert len(world.orders.sagas()) == 1
    finally:
        db.close()


def test_every_saga_step_runs_in_a_span_continuing_the_place_orders_trace(
    unit_of_work: Callable[[], Any],
) -> None:
    caller = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    opened: list[tuple[str, str, dict[str, str]]] = []

    def step_span(name: str, parent: str, attributes: Any) -> Any:
        opened.append((name, parent, dict(attributes)))
        return contextlib.nullcontext()

    world = World(unit_of_work)
    world.worker = SagaWorker(
        unit_of_work,
        world.participants,
        POLICY,
        clock=world.clock,
        parallelism=1,
        step_span=step_span,
    )
    world.orders = Orders(
        unit_of_work,
        clock=world.clock,
        new_id=lambda: "o-traced",
        policy=POLICY,
        trace_context=lambda: caller,
    )
    world.place()
    world.settle()
    assert [name for name, _, _ in opened] == [
        "saga reserve_stock",
        "saga authorize_payment",
        "saga create_shipment",
        "saga capture_payment",
        "saga commit_stock",
    ]
    assert {parent for _, parent, _ in opened} == {caller}, "the trace survives the database"
    assert all(attrs["order.id"] == "o-traced" for _, _, attrs in opened)


def test_a_finished_saga_keeps_no_payment_token(tmp_path: Path) -> None:
    db = open_database(str(tmp_path / "o.db"))
    try:
        world = World(lambda: SqliteUnitOfWork(db))
        world.place("r-1")
        world.settle()
        world.place("r-2")  # still live: it needs the token to authorize
        with db.snapshot() as conn:
            tokens = dict(conn.execute("SELECT order_id, payment_token FROM sagas").fetchall())
        assert tokens == {"o-1": "", "o-2": "tok_visa"}
    finally:
        db.close()


def test_upgrading_wipes_the_tokens_of_sagas_that_ended_before(tmp_path: Path) -> None:
    path = str(tmp_path / "o.db")
    before = Database(path, MIGRATIONS[:-1])  # the schema of the previous release
    with before.transaction() as conn:
        for order_id, status in (("o-1", "CONFIRMED"), ("o-2", "CANCELLED"), ("o-3", "RUNNING")):
            conn.execute(
                "INSERT INTO sagas (order_id, status, step, attempt, compensations, reason,"
                " last_error, payment_token, started_at, step_started_at, next_attempt_at,"
                " updated_at) VALUES (?, ?, NULL, 0, '[]', '', '', 'tok_visa', 0, 0, 0, 0)",
                (order_id, status),
            )
    before.close()
    db = open_database(path)
    try:
        with db.snapshot() as conn:
            tokens = dict(conn.execute("SELECT order_id, payment_token FROM sagas").fetchall())
        assert tokens == {"o-1": "", "o-2": "", "o-3": "tok_visa"}
    finally:
        db.close()
