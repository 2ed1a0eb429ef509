"""Orders' use cases and saga worker against an in-memory fake AND SQLite: one suite, both stores.

The participants are a scripted fake (no network): each test says what inventory, payments and
shipping answer, and checks the calls made, the order's events and the saga's end state.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import io
import random
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import fastavro
import pytest
from google.protobuf.json_format import MessageToDict
from google.protobuf.timestamp_pb2 import Timestamp

from meshkit import Aborted, AlreadyExists, InvalidArgument, NotFound
from meshkit.address import Address
from meshkit.audit import AuditEntry
from meshkit.control import ConfigRejected
from meshkit.control.experiments import ConversionRecorded, Experiments, static_experiments
from meshkit.db import Database
from meshkit.events import EventCatalog
from meshkit.money import Money
from meshkit.timestamps import from_micros, to_millis, to_timestamp
from orders.adapters.events import EVENTS, from_json, to_json
from orders.adapters.live_config import DEFAULTS, OrdersConfig, parse_orders_config
from orders.adapters.sqlite import MIGRATIONS, SqliteUnitOfWork
from orders.app.orders import Orders, PlaceOrder
from orders.app.ports import LineLimit, SeenRequest
from orders.app.saga_worker import SagaWorker
from orders.domain.events import OrderEvent, OrderStockReserved
from orders.domain.model import MAX_LINES, LineRequest, Order, OrderStatus
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
from orders.entrypoints.grpc_api import OrdersServicer
from shop.orders.v1 import orders_pb2 as pb

T0 = from_micros(1_700_000_000_000_000)
# The events of an order whose saga met no failure, in order.
CONFIRMED = [
    "OrderPlaced",
    "OrderStockReserved",
    "OrderPaymentAuthorized",
    "OrderShipmentCreated",
    "OrderPaymentCaptured",
    "OrderConfirmed",
]
POLICY = RetryPolicy(step_timeout_s=5.0, call_timeout_s=1.0, initial_backoff_s=0.5)
ADDRESS = Address("Ada", "1 Main St", "Berlin", "10115", "DE")


CTX: Any = None  # the servicer never reads its grpc context


def seconds(n: float) -> datetime.timedelta:
    return datetime.timedelta(seconds=n)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime.datetime:
        return self.now


# ----------------------------------------------------------------------------------------------
# the in-memory fake store
# ----------------------------------------------------------------------------------------------


class FakeStore:
    def __init__(self) -> None:
        self.events: dict[str, list[OrderEvent]] = {}
        self.sagas: dict[str, Saga] = {}
        self.requests: dict[str, SeenRequest] = {}
        self.runners: dict[str, datetime.datetime] = {}
        self.audits: list[AuditEntry | ConversionRecorded] = []


class FakeOrders:
    def __init__(self, events: dict[str, list[OrderEvent]]) -> None:
        self.events = events

    def get(self, order_id: str, *, as_of: datetime.datetime | None = None) -> Order | None:
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
    def __init__(self, sagas: dict[str, Saga], runners: dict[str, datetime.datetime]) -> None:
        self.sagas = sagas
        self.runners = runners

    def beat(self, runner_id: str, now: datetime.datetime) -> None:
        self.runners[runner_id] = now

    def others_alive(self, runner_id: str, since: datetime.datetime) -> bool:
        return any(r != runner_id and t > since for r, t in self.runners.items())

    def get(self, order_id: str) -> Saga | None:
        return self.sagas.get(order_id)

    def save(self, saga: Saga) -> None:
        self.sagas[saga.order_id] = saga

    def due(self, now: datetime.datetime, limit: int) -> list[str]:
        due = [s for s in self.sagas.values() if s.is_live and s.next_attempt_at <= now]
        return [s.order_id for s in sorted(due, key=lambda s: s.next_attempt_at)][:limit]

    def live(self) -> list[Saga]:
        return [s for s in self.sagas.values() if s.is_live]

    def recent(self, *, include_finished: bool, limit: int) -> list[Saga]:
        found = [s for s in self.sagas.values() if include_finished or s.is_live]
        return sorted(found, key=lambda s: s.started_at)[:limit]


class FakeRequests:
    def __init__(self, requests: dict[str, SeenRequest]) -> None:
        self.requests = requests

    def get(self, request_id: str) -> SeenRequest | None:
        return self.requests.get(request_id)

    def add(self, request_id: str, seen: SeenRequest) -> None:
        self.requests[request_id] = seen

    def prune(self, before: datetime.datetime, limit: int) -> int:
        old = sorted((s.created_at, r) for r, s in self.requests.items() if s.created_at < before)
        for _, request_id in old[:limit]:
            del self.requests[request_id]
        return len(old[:limit])


class FakeUnitOfWork:
    """Works on copies and publishes them to the store only on a clean exit, like a transaction."""

    def __init__(self, store: FakeStore) -> None:
        self._store = store

    def __enter__(self) -> Self:
        self._copy = copy.deepcopy(self._store)
        self.orders = FakeOrders(self._copy.events)
        self.sagas = FakeSagas(self._copy.sagas, self._copy.runners)
        self.requests = FakeRequests(self._copy.requests)
        return self

    def publish(self, event: Any, *, event_id: str | None = None) -> None:
        self._copy.audits.append(event)

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
    db = Database(tmp_path / "orders.db", MIGRATIONS)
    yield lambda: SqliteUnitOfWork(db, snapshot_every=2)
    db.close()


class World:
    def __init__(self, uow: Callable[[], Any], clock: Clock | None = None, **options: Any) -> None:
        self.clock = clock or Clock()
        self.participants = FakeParticipants()
        self.ids = iter(f"o-{n}" for n in range(1, 100_000))
        self.worker = SagaWorker(uow, self.participants, POLICY, clock=self.clock, parallelism=1)
        self.orders = Orders(
            uow, clock=self.clock, new_id=lambda: next(self.ids), policy=POLICY, **options
        )

    def place(self, request_id: str = "r-1", **changes: Any) -> Order:
        fields: dict[str, Any] = {
            "request_id": request_id,
            "customer_id": "c-1",
            "lines": (LineRequest("mug", 2, Money.of("EUR", 12, 500_000_000)),),
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
                self.clock.now += seconds(0.5)
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
    assert order.total == Money.of("EUR", 25)
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
                LineRequest("mug", 0, Money.of("EUR", 1)),
                LineRequest("", 1, Money.of("XXX", 1)),
            ),
            shipping_address=Address("Ada", "1 Main St", "", "1011", "DE"),
        )
    fields = {v.field for v in caught.value.violations}
    assert fields == {
        "request_id",
        "lines[0].quantity",
        "lines[1].sku",
        "lines[1].unit_price.currency_code",
        "shipping_address.city",
        "shipping_address.postal_code",
    }
    # A country code that is not one names that field (its own rules cannot apply then).
    with pytest.raises(InvalidArgument) as caught:
        world.place(shipping_address=Address("Ada", "1 Main St", "Berlin", "10115", "de"))
    assert {v.field for v in caught.value.violations} == {"shipping_address.country_code"}
    with pytest.raises(InvalidArgument) as caught:
        world.place(lines=(), shipping_address=None, payment_token="")
    assert {v.field for v in caught.value.violations} == {
        "lines",
        "shipping_address",
        "payment_token",
    }


def test_every_string_and_the_number_of_lines_is_capped(world: World) -> None:
    """Nothing a client sends is unbounded: not stored, not published, not echoed."""
    long = "x" * 129
    line = LineRequest("mug", 1, Money.of("EUR", 1))
    with pytest.raises(InvalidArgument) as caught:
        world.place(
            long,
            customer_id=long,
            payment_token=long,
            lines=(LineRequest(long, 1, Money.of("EUR", 1)), *[line] * 100),
        )
    assert {v.field for v in caught.value.violations} == {
        "request_id",
        "customer_id",
        "payment_token",
        "lines",
        "lines[0].sku",
    }
    assert long not in caught.value.message
    # The address too: a 20 KB postal code never reaches shipping (whose refusal once repeated
    # it whole, too large for the saga to read, which then retried forever).
    with pytest.raises(InvalidArgument) as caught:
        world.place(shipping_address=Address("Ada", "1 Main St", "Berlin", "9" * 20_000, "DE"))
    assert [v.field for v in caught.value.violations] == ["shipping_address.postal_code"]
    assert len(caught.value.message) < 200
    for read in (world.orders.get, world.orders.history):
        with pytest.raises(InvalidArgument) as caught:
            read("x" * 20_000)
        assert [v.field for v in caught.value.violations] == ["order_id"]


def test_an_order_total_its_events_cannot_carry_is_refused_naming_lines(world: World) -> None:
    """OrderPlaced carries the total as Avro long units and int nanos, the mesh keeps amounts as
    int64 nanos: a total beyond that is the caller's error, said at PlaceOrder, not an INTERNAL
    naming an event schema."""
    most = LineRequest("mug", 2**31 - 1, Money.of("EUR", 10**12))  # each part within its limit
    with pytest.raises(InvalidArgument) as caught:
        world.place(lines=(most,))
    assert [v.field for v in caught.value.violations] == ["lines"]
    assert "total" in caught.value.violations[0].description
    # The largest total accepted fits the contract.
    order = world.place("r-2", lines=(LineRequest("mug", 9, Money.of("EUR", 10**9)),))
    assert order.total == Money.of("EUR", 9 * 10**9)
    placed = world.orders.history(order.order_id)[0][1]
    schema = EventCatalog.from_package("shop.orders.v1").get(EVENTS.type_of(placed)).parsed
    fastavro.schemaless_writer(io.BytesIO(), schema, EVENTS.to_record(placed))


def test_get_as_of_answers_the_state_at_that_instant(world: World) -> None:
    order = world.place()
    world.clock.now += seconds(10)
    world.settle()
    assert world.orders.get(order.order_id).status is OrderStatus.CONFIRMED
    then = world.orders.get(order.order_id, as_of=T0 + datetime.timedelta(milliseconds=1))
    assert (then.status, then.version) == (OrderStatus.PENDING, 1)
    with pytest.raises(NotFound):
        world.orders.get(order.order_id, as_of=T0 - seconds(1))
    with pytest.raises(NotFound):
        world.orders.get("nope")


def test_history_lists_every_event_with_its_version(world: World) -> None:
    order = world.place()
    world.settle()
    history = world.orders.history(order.order_id)
    assert [(v, EVENTS.type_of(e).rsplit(".", 1)[1]) for v, e in history] == [
        (1, "OrderPlaced"),
        (2, "OrderStockReserved"),
        (3, "OrderPaymentAuthorized"),
        (4, "OrderShipmentCreated"),
        (5, "OrderPaymentCaptured"),
        (6, "OrderConfirmed"),
    ]
    for _, event in history:  # every event survives its record (the store and the wire)
        name = EVENTS.type_of(event)
        assert from_json(name, to_json(event), event.occurred_at) == event
        assert EVENTS.event(name, EVENTS.to_record(event)) == event
        assert EVENTS.key_of(event) == order.order_id


def test_a_concurrent_append_is_aborted(world: World, unit_of_work: Callable[[], Any]) -> None:
    order = world.place()
    with unit_of_work() as uow:
        a = uow.orders.get(order.order_id)
    with unit_of_work() as uow:
        b = uow.orders.get(order.order_id)
    a.record(OrderStockReserved(order.order_id, T0 + seconds(1)))
    b.record(OrderStockReserved(order.order_id, T0 + seconds(2)))
    with unit_of_work() as uow:
        uow.orders.save(a)
    with pytest.raises(Aborted), unit_of_work() as uow:
        uow.orders.save(b)
    assert len(world.orders.history(order.order_id)) == 2


def replay(order: Order, request_id: str) -> PlaceOrder:
    """The PlaceOrder that placed ``order`` (as World.place sends it), again."""
    return PlaceOrder(request_id, "c-1", order.lines, "tok_visa", order.shipping_address)


def test_a_request_id_is_forgotten_after_the_retention_window(world: World) -> None:
    first = world.place("r-7")
    world.clock.now += datetime.timedelta(hours=24)  # 24 h old exactly: still remembered
    again = world.orders.place(replay(first, "r-7"))
    assert (again.created, again.order.order_id) == (False, first.order_id)
    world.clock.now += datetime.timedelta(microseconds=1)  # older than 24 h: forgotten
    later = world.orders.place(replay(first, "r-7"))
    assert later.created and later.order.order_id != first.order_id
    assert len(world.orders.sagas(include_finished=True)) == 2
    # From then on the id names the new order, for another window.
    assert world.orders.place(replay(first, "r-7")).order.order_id == later.order.order_id
    # Once forgotten, the id may even come with another order: nothing to conflict with.
    world.clock.now += datetime.timedelta(hours=25)
    other = world.place("r-7", customer_id="someone else")
    assert other.order_id not in (first.order_id, later.order.order_id)


def test_the_retention_window_is_configurable_and_expired_ids_are_pruned_on_write(
    unit_of_work: Callable[[], Any],
) -> None:
    world = World(unit_of_work, request_retention=datetime.timedelta(minutes=1))
    for n in range(3):
        world.place(f"r-{n}")
    world.clock.now += seconds(59)
    world.place("r-3")  # prunes nothing yet: the first three are 59 s old
    with unit_of_work() as uow:
        assert [uow.requests.get(f"r-{n}") is not None for n in range(4)] == [True] * 4
    world.clock.now += seconds(2)
    world.place("r-4")  # r-0..r-2 are 61 s old now: forgotten, and their rows deleted
    with unit_of_work() as uow:
        kept = [n for n in range(5) if uow.requests.get(f"r-{n}") is not None]
    assert kept == [3, 4]


def test_a_replay_matches_the_digest_the_previous_release_stored(
    world: World, unit_of_work: Callable[[], Any]
) -> None:
    address = Address("Ada", "1 Main St", "Berlin", "10115", "DE", line2="Apt 2")
    lines = (
        LineRequest("mug", 2, Money.of("EUR", 12, 500_000_000)),
        LineRequest("cap", 1, Money.of("EUR", 5)),
    )
    order = world.place("r-1", lines=lines, shipping_address=address)
    # What the release with float times and (currency, units, nanos) Money stored for this
    # request (its sha256 of the same JSON body): a replay after the upgrade still matches it.
    old = "a78a8d6a1ca9b7a6c5975eea54819770269ca1261c77671b93e0987aa696800c"
    with unit_of_work() as uow:
        uow.requests.add("r-1", SeenRequest(order.order_id, old, T0))
    again = world.orders.place(PlaceOrder("r-1", "c-1", lines, "tok_visa", address))
    assert (again.created, again.order.order_id) == (False, order.order_id)


@pytest.mark.parametrize(
    ("country", "city"), [("HK", "Hong Kong"), ("AE", "Dubai"), ("QA", "Doha")]
)
def test_an_order_to_a_country_without_postal_codes_needs_none(
    world: World, country: str, city: str
) -> None:
    address = Address("Ada", "1 Main St", city, "", country)
    order = world.place(shipping_address=address)
    assert order.shipping_address == address
    world.settle()
    assert world.orders.get(order.order_id).status is OrderStatus.CONFIRMED
    [create] = [c for c in world.participants.calls if isinstance(c, CreateShipment)]
    assert create.address == address


def test_a_postal_code_is_required_where_the_country_has_them(world: World) -> None:
    with pytest.raises(InvalidArgument) as caught:
        world.place(shipping_address=Address("Ada", "1 Main St", "Berlin", "", "DE"))
    assert {v.field for v in caught.value.violations} == {"shipping_address.postal_code"}


def test_prices_follow_their_currencys_minor_units(world: World) -> None:
    ok = world.place("r-1", lines=(LineRequest("tea", 3, Money.of("JPY", 1200)),))
    assert str(ok.total) == "JPY 3600"
    kwd = world.place("r-2", lines=(LineRequest("tea", 2, Money.of("KWD", 1, 250_000_000)),))
    assert str(kwd.total) == "KWD 2.500"
    with pytest.raises(InvalidArgument) as caught:
        world.place("r-3", lines=(LineRequest("tea", 1, Money.of("JPY", 1, 500_000_000)),))
    assert {v.field for v in caught.value.violations} == {"lines[0].unit_price.nanos"}
    with pytest.raises(InvalidArgument) as caught:
        world.place("r-4", lines=(LineRequest("tea", 1, Money.of("EUR", -1)),))
    assert {v.field for v in caught.value.violations} == {"lines[0].unit_price"}


def test_as_of_an_events_own_timestamp_includes_that_event(tmp_path: Path) -> None:
    """Issue 20, item 5: GetOrder(as_of = an event's occurred_at, as ListOrderEvents gives it)
    sees that event, for every event, at instants that float seconds would round wrongly."""

    class Ticking(Clock):
        """Every reading moves on by an irregular number of microseconds."""

        def __init__(self) -> None:
            super().__init__()
            self.rng = random.Random(20)

        def __call__(self) -> datetime.datetime:
            self.now += datetime.timedelta(microseconds=self.rng.randint(1, 999_999))
            return self.now

    db = Database(tmp_path / "o.db", MIGRATIONS)
    try:
        world = World(lambda: SqliteUnitOfWork(db, snapshot_every=2), clock=Ticking())
        servicer = OrdersServicer(world.orders, EVENTS)
        orders = 150
        for n in range(orders):
            world.place(f"r-{n}")
        world.settle(max_steps=10_000)
        checked = 0
        for n in range(1, orders + 1):
            order_id = f"o-{n}"
            listed = servicer.ListOrderEvents(pb.ListOrderEventsRequest(order_id=order_id), CTX)
            for event in listed.events:
                at = pb.GetOrderRequest(order_id=order_id, as_of=event.occurred_at)
                assert servicer.GetOrder(at, CTX).order.version == event.version, (order_id, event)
                before = Timestamp()
                before.FromNanoseconds(event.occurred_at.ToNanoseconds() - 1000)
                if event.version == 1:
                    with pytest.raises(NotFound):
                        servicer.GetOrder(pb.GetOrderRequest(order_id=order_id, as_of=before), CTX)
                else:
                    earlier = pb.GetOrderRequest(order_id=order_id, as_of=before)
                    assert servicer.GetOrder(earlier, CTX).order.version == event.version - 1
                checked += 1
        assert checked == orders * 6
    finally:
        db.close()


def test_as_of_outside_the_timestamp_range_is_an_invalid_argument(world: World) -> None:
    servicer = OrdersServicer(world.orders, EVENTS)
    order = world.place()
    for stamp in (Timestamp(seconds=10**12), Timestamp(seconds=1, nanos=-1)):
        with pytest.raises(InvalidArgument) as caught:
            servicer.GetOrder(pb.GetOrderRequest(order_id=order.order_id, as_of=stamp), CTX)
        assert [v.field for v in caught.value.violations] == ["as_of"]


def test_list_order_events_shows_the_records_as_on_kafka(world: World) -> None:
    servicer = OrdersServicer(world.orders, EVENTS)
    order = world.place()
    [placed] = servicer.ListOrderEvents(
        pb.ListOrderEventsRequest(order_id=order.order_id), CTX
    ).events
    assert (placed.version, placed.type) == (1, "shop.orders.v1.OrderPlaced")
    data = MessageToDict(placed.data)
    assert data["occurred_at"] == to_millis(order.created_at)  # timestamp-millis
    assert data["total"] == {"currency_code": "EUR", "units": 25, "nanos": 0}
    assert data["shipping_address"] == ADDRESS.to_record()
    assert placed.occurred_at == to_timestamp(order.created_at)


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
    assert isinstance(calls[1], AuthorizePayment) and calls[1].amount == Money.of("EUR", 25)
    assert isinstance(calls[2], CreateShipment) and calls[2].idempotency_key.startswith("o-1:")
    assert isinstance(calls[3], CapturePayment) and calls[3].payment_id == "pay-1"
    assert isinstance(calls[4], CommitStock)


def test_one_run_carries_a_saga_through_every_step_it_can_take_now(world: World) -> None:
    """A thread keeps the saga (and its order) in memory from step to step: the five steps of a
    saga that meets no failure all run in one pass, each stored before the next call."""
    order = world.place()
    assert world.worker.run_once() == 5
    assert world.orders.get(order.order_id).status is OrderStatus.CONFIRMED
    assert [type(e).__name__ for _, e in world.orders.history(order.order_id)] == CONFIRMED
    assert world.worker.run_once() == 0


def test_a_carried_saga_stops_at_a_backoff_and_resumes_when_due(world: World) -> None:
    world.participants.answer(CreateShipment, Transient("UNAVAILABLE"), Succeeded())
    order = world.place()
    assert world.worker.run_once() == 3  # reserve, authorize, and the failed create (a retry)
    assert world.orders.sagas()[0].saga.attempt == 1
    assert world.worker.run_once() == 0, "not due before its backoff"
    world.clock.now += seconds(POLICY.backoff(1))
    assert world.worker.run_once() == 3
    assert world.orders.get(order.order_id).status is OrderStatus.CONFIRMED


def test_a_saga_another_worker_moved_meanwhile_is_dropped_not_moved_twice(
    unit_of_work: Callable[[], Any],
) -> None:
    """Two workers over one database: while the first one's call is out, the second one runs
    the same step and stores it. The first one's write finds the saga moved, records nothing
    and stops carrying it; the second one carries it to the end."""
    world = World(unit_of_work)
    second = SagaWorker(unit_of_work, world.participants, POLICY, clock=world.clock, parallelism=1)
    inner = world.participants.execute
    raced: list[int] = []

    def racing(command: Any, timeout: float) -> Any:
        if not raced:  # the first call: the second worker (same participants) runs the step
            raced.append(-1)
            raced[0] = second.carry(order.order_id, max_steps=1)
        return inner(command, timeout)

    world.participants.execute = racing  # type: ignore[method-assign]
    order = world.place()
    assert world.worker.run_once() == 0, "the first worker's step was dropped"
    assert raced == [1]
    world.settle()
    history = [type(e).__name__ for _, e in world.orders.history(order.order_id)]
    assert history.count("OrderStockReserved") == 1 and history[-1] == "OrderConfirmed"
    # The reservation was asked for twice under one key (idempotent), everything else once.
    assert world.participants.kinds().count("ReserveStock") == 2
    assert len(world.participants.kinds()) == 6


def test_sagas_in_flight_together_share_commits_and_one_failing_write_stays_its_own(
    tmp_path: Path,
) -> None:
    """Eight threads carry twenty sagas; their steps are written together (group commit). The
    outbox refuses one order's first confirmation once: only that step is lost (written again
    alone, it fails alone), its saga stays due and finishes later, and no other saga loses or
    doubles an event."""
    db = Database(tmp_path / "o.db", MIGRATIONS)
    refused: list[str] = []

    class Outbox:
        def publish(
            self, conn: sqlite3.Connection, event: OrderEvent, *, event_id: str | None = None
        ) -> None:
            if isinstance(event, AuditEntry):
                return
            confirming_o7 = event.order_id == "o-7" and type(event).__name__ == "OrderConfirmed"
            if confirming_o7 and not refused:
                refused.append(event.order_id)
                raise RuntimeError("registry down")

    def uow() -> SqliteUnitOfWork:
        return SqliteUnitOfWork(db, Outbox())

    try:
        world = World(uow)
        world.worker = SagaWorker(uow, world.participants, POLICY, clock=world.clock, parallelism=8)
        orders = [world.place(f"r-{n}") for n in range(20)]
        world.settle()
        assert refused == ["o-7"]
        for order in orders:
            history = [type(e).__name__ for _, e in world.orders.history(order.order_id)]
            assert history == CONFIRMED, order.order_id
        world.worker.close()
    finally:
        db.close()


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
    assert (world.clock.now - T0).total_seconds() >= POLICY.step_timeout_s


def test_a_failing_compensation_keeps_retrying_and_shows_stuck(world: World) -> None:
    world.participants.answer(CreateShipment, Rejected("FAILED_PRECONDITION: AQ"))
    world.participants.answer(ReleaseStock, Transient("UNAVAILABLE"))
    world.place()
    for _ in range(30):
        world.worker.run_once()
        world.clock.now += seconds(5)
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
    world.clock.now += seconds(100)  # orders was down for a long time
    assert world.worker.resume() == 1
    world.participants.answer(AuthorizePayment, Succeeded(payment_id="pay-1"))
    world.settle()
    assert world.orders.sagas(include_finished=True)[0].saga.status is SagaStatus.CONFIRMED


def test_a_second_worker_starting_leaves_the_running_workers_step_clocks_alone(
    unit_of_work: Callable[[], Any],
) -> None:
    """Issue 20, suspected: a second orders process (a replica, or a restart racing the old one)
    ran resume() at start-up and restarted the step clock of sagas the first one was running, so
    a step whose participant hangs need never reach its deadline."""
    world = World(unit_of_work)
    world.participants.answer(AuthorizePayment, Transient("UNAVAILABLE"))
    world.place()
    world.worker.run_once()
    world.worker.run_once()  # the first worker is running the saga, failing transiently
    before = world.orders.sagas()[0].saga.step_started_at
    world.clock.now += seconds(1)
    second = SagaWorker(unit_of_work, world.participants, POLICY, clock=world.clock, parallelism=1)
    assert second.resume() == 0, "another worker is alive: its sagas are not resumed"
    assert world.orders.sagas()[0].saga.step_started_at == before
    # Once the first worker is gone (no heartbeat for a while), a starting one does resume.
    world.clock.now += seconds(60)
    assert second.resume() == 1


# ----------------------------------------------------------------------------------------------
# SQLite specifics: snapshots, outbox in the same transaction
# ----------------------------------------------------------------------------------------------


def test_a_worker_killed_a_moment_ago_does_not_keep_its_restart_from_resuming(
    tmp_path: Path,
) -> None:
    """kill -9, then a restart within the heartbeat window: the dead worker's recent heartbeat
    must not count as a live worker (its process is gone), so the restart resumes its sagas."""
    db = Database(tmp_path / "o.db", MIGRATIONS)
    try:
        world = World(lambda: SqliteUnitOfWork(db, snapshot_every=2))
        world.participants.answer(AuthorizePayment, Transient("UNAVAILABLE"))
        world.place()
        world.worker.run_once()  # the worker that is about to die beat just now
        gone = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"],
            capture_output=True,
            text=True,
            check=True,
        )
        with db.transaction() as conn:  # as if that worker had been this finished process
            conn.execute("UPDATE saga_runners SET pid = ?", (int(gone.stdout),))
        restarted = SagaWorker(
            lambda: SqliteUnitOfWork(db, snapshot_every=2),
            world.participants,
            POLICY,
            clock=world.clock,
            parallelism=1,
        )
        assert restarted.resume() == 1
    finally:
        db.close()


def test_snapshots_keep_loads_equal_to_the_full_fold(tmp_path: Path) -> None:
    db = Database(tmp_path / "o.db", MIGRATIONS)
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
    db = Database(tmp_path / "o.db", MIGRATIONS)
    published: list[tuple[str, str | None]] = []
    audits: list[tuple[str, str]] = []

    class Outbox:
        def publish(
            self, conn: sqlite3.Connection, event: OrderEvent, *, event_id: str | None = None
        ) -> None:
            if isinstance(event, AuditEntry):
                audits.append((event.action, event.resource_id))
                return
            if event.order_id == "o-2":
                raise RuntimeError("registry down")
            published.append((EVENTS.type_of(event), event_id))

    try:
        world = World(lambda: SqliteUnitOfWork(db, Outbox()))
        world.place("r-1")
        # ce_id <order_id>:<version>: the same stored event always carries the same id.
        assert published == [("shop.orders.v1.OrderPlaced", "o-1:1")]
        # The placement's audit record went into the same unit of work.
        assert audits == [("orders.place", "o-1")]
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


def test_a_refused_step_tells_its_span_why_a_declined_payment_included(
    unit_of_work: Callable[[], Any],
) -> None:
    """A decline answers OK on the wire, so no RPC span is an error: the step's own span must
    say the step failed, and why (as an out-of-stock one does)."""
    told: list[tuple[str, str]] = []

    class Traced:
        def __init__(self, name: str) -> None:
            self.name = name

        def rejected(self, reason: str) -> None:
            told.append((self.name, reason))

    world = World(unit_of_work)
    world.worker = SagaWorker(
        unit_of_work,
        world.participants,
        POLICY,
        clock=world.clock,
        parallelism=1,
        step_span=lambda name, parent, attributes: contextlib.nullcontext(Traced(name)),
    )
    world.participants.answer(AuthorizePayment, Rejected("payment declined: card_declined"))
    world.place()
    world.settle()
    assert told == [("saga authorize_payment", "payment declined: card_declined")]


def test_a_finished_saga_keeps_no_payment_token(tmp_path: Path) -> None:
    db = Database(tmp_path / "o.db", MIGRATIONS)
    try:
        world = World(lambda: SqliteUnitOfWork(db))
        world.place("r-1")
        world.settle()
        world.place("r-2")  # still live: it needs the token to authorize
        with db.snapshot() as conn:
            tokens = dict(conn.execute("SELECT order_id, payment_token FROM sagas").fetchall())
        assert tokens["o-1"] == ""
        # Live, it is kept sealed (AES-GCM), never in clear; the saga still reads it.
        assert tokens["o-2"].startswith("v1.") and "tok_visa" not in tokens["o-2"]
        with SqliteUnitOfWork(db, read_only=True) as uow:
            live = uow.sagas.get("o-2")
        assert live is not None and live.payment_token == "tok_visa"
    finally:
        db.close()


def test_upgrading_wipes_the_tokens_of_sagas_that_ended_before(tmp_path: Path) -> None:
    path = str(tmp_path / "o.db")
    before = Database(path, MIGRATIONS[:3])  # the schema of the release before the wipe
    with before.transaction() as conn:
        for order_id, status in (("o-1", "CONFIRMED"), ("o-2", "CANCELLED"), ("o-3", "RUNNING")):
            conn.execute(
                "INSERT INTO sagas (order_id, status, step, attempt, compensations, reason,"
                " last_error, payment_token, started_at, step_started_at, next_attempt_at,"
                " updated_at) VALUES (?, ?, NULL, 0, '[]', '', '', 'tok_visa', 0, 0, 0, 0)",
                (order_id, status),
            )
    before.close()
    db = Database(path, MIGRATIONS)
    try:
        with db.snapshot() as conn:
            tokens = dict(conn.execute("SELECT order_id, payment_token FROM sagas").fetchall())
        assert tokens == {"o-1": "", "o-2": "", "o-3": "tok_visa"}
    finally:
        db.close()


# ----------------------------------------------------------------------------------------------
# the live line limit (config namespace "orders", max_lines_per_order)
# ----------------------------------------------------------------------------------------------


class Limit:
    """A line limit the test changes between calls, as a pushed config version would."""

    def __init__(self, max_lines: int, version: int = 1) -> None:
        self.max_lines, self.version = max_lines, version

    def __call__(self) -> LineLimit:
        return LineLimit(
            self.max_lines,
            f"max_lines_per_order in config namespace orders, version {self.version}",
        )


TWO_LINES = (
    LineRequest("mug", 1, Money.of("EUR", 12)),
    LineRequest("cap", 1, Money.of("EUR", 8)),
)


def test_the_live_line_limit_refuses_a_new_order_naming_lines_and_the_config_version(
    unit_of_work: Callable[[], Any],
) -> None:
    limit = Limit(1, version=7)
    world = World(unit_of_work, line_limit=limit)
    with pytest.raises(InvalidArgument) as refused:
        world.place("r-1", lines=TWO_LINES)
    [violation] = refused.value.violations
    assert violation.field == "lines"
    assert violation.description == (
        "must have at most 1 line: max_lines_per_order in config namespace orders, version 7"
    )
    assert world.orders.sagas(include_finished=True) == []

    # The next version raises it: the very same request goes through, no restart.
    limit.max_lines, limit.version = 2, 8
    placed = world.place("r-1", lines=TWO_LINES)
    assert len(placed.lines) == 2

    # Lowered again: a replay of the accepted request still answers its order; a new one is
    # refused.
    limit.max_lines, limit.version = 1, 9
    again = world.orders.place(PlaceOrder("r-1", "c-1", TWO_LINES, "tok_visa", ADDRESS))
    assert not again.created and again.order.order_id == placed.order_id
    with pytest.raises(InvalidArgument, match="version 9"):
        world.place("r-2", lines=TWO_LINES)


def test_the_contracts_bound_holds_whatever_the_live_limit(
    unit_of_work: Callable[[], Any],
) -> None:
    lines = tuple(LineRequest(f"sku-{n}", 1, Money.of("EUR", 1)) for n in range(MAX_LINES + 1))
    wide = World(unit_of_work, line_limit=Limit(MAX_LINES + 50))
    with pytest.raises(InvalidArgument, match=f"at most {MAX_LINES} lines"):
        wide.place("r-1", lines=lines)


@pytest.mark.parametrize(
    ("document", "why"),
    [
        ({"max_lines_per_order": 0}, "from 1 to 100"),
        ({"max_lines_per_order": 101}, "from 1 to 100"),
        ({"max_lines_per_order": -3}, "from 1 to 100"),
        ({"max_lines_per_order": "12"}, "whole number"),
        ({"max_lines_per_order": 2.5}, "whole number"),
        ({"max_lines_per_order": True}, "whole number"),
    ],
)
def test_orders_own_parse_rejects_a_limit_it_cannot_honour(
    document: dict[str, Any], why: str
) -> None:
    with pytest.raises(ConfigRejected, match=why) as rejected:
        parse_orders_config(document)
    assert str(rejected.value).startswith("max_lines_per_order: ")


def test_orders_own_parse_takes_the_bounds_and_defaults_a_missing_key() -> None:
    assert parse_orders_config({"max_lines_per_order": 1}).max_lines_per_order == 1
    assert parse_orders_config({"max_lines_per_order": 100}).max_lines_per_order == 100
    assert parse_orders_config({}).max_lines_per_order == 50
    assert parse_orders_config({"max_lines_per_order": 3, "later": 1}).max_lines_per_order == 3
    assert parse_orders_config(DEFAULTS) == OrdersConfig(50)


# ----------------------------------------------------------------------------------------------
# experiments: a confirmed order is a conversion of its customer
# ----------------------------------------------------------------------------------------------


def test_a_confirmation_publishes_the_customers_conversion_in_its_own_transaction() -> None:
    store = FakeStore()
    experiments = Experiments(static_experiments({"experiments": {}}), service="orders")

    def conversions(order: Order) -> list[ConversionRecorded]:
        assert order.total is not None
        value = order.total.total_nanos / 1e9
        return [experiments.conversion("order_confirmed", order.customer_id, value)]

    world = World(lambda: FakeUnitOfWork(store))
    world.worker = SagaWorker(
        lambda: FakeUnitOfWork(store),
        world.participants,
        POLICY,
        clock=world.clock,
        parallelism=1,
        conversions=conversions,
    )
    world.place("r-1", customer_id="cust-ada")
    world.settle()
    world.participants.answer(AuthorizePayment, Rejected("card_declined"))
    world.place("r-2", customer_id="cust-bob")
    world.settle()

    confirmed = [e for e in store.audits if isinstance(e, ConversionRecorded)]
    assert [(c.metric, c.unit_id, c.value, c.service) for c in confirmed] == [
        ("order_confirmed", "cust-ada", 25.0, "orders")
    ]
    # Bob's order was cancelled: no conversion. Ada's came with the OrderConfirmed event.
    assert [type(e).__name__ for e in store.events["o-1"]][-1] == "OrderConfirmed"
    assert [type(e).__name__ for e in store.events["o-2"]][-1] == "OrderCancelled"
