"""Inventory's use cases against an in-memory fake and against SQLite: one suite, both stores."""

from __future__ import annotations

import copy
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

import pytest

from inventory.adapters.events import EVENTS
from inventory.adapters.sqlite import MIGRATIONS, SqliteUnitOfWork
from inventory.app.inventory import Inventory
from inventory.domain.events import (
    InventoryEvent,
    ReservationCommitted,
    ReservationReleased,
    StockReserved,
    StockSet,
)
from inventory.domain.model import Line, Reservation, ReservationStatus, StockItem
from meshkit import AlreadyExists, Database, FailedPrecondition, InvalidArgument, NotFound


class FakeStore:
    """Committed state of the fake: what a database would hold."""

    def __init__(self) -> None:
        self.stock: dict[str, StockItem] = {}
        self.reservations: dict[str, Reservation] = {}
        self.events: list[InventoryEvent] = []


class FakeStock:
    def __init__(self, items: dict[str, StockItem]) -> None:
        self.items = items

    def get(self, sku: str) -> StockItem | None:
        return copy.deepcopy(self.items.get(sku))

    def get_many(self, skus: Iterable[str]) -> dict[str, StockItem]:
        return {s: copy.deepcopy(self.items[s]) for s in set(skus) if s in self.items}

    def save(self, item: StockItem) -> None:
        self.items[item.sku] = copy.deepcopy(item)


class FakeReservations:
    def __init__(self, items: dict[str, Reservation]) -> None:
        self.items = items

    def get(self, reservation_id: str) -> Reservation | None:
        return copy.deepcopy(self.items.get(reservation_id))

    def add(self, reservation: Reservation) -> None:
        assert reservation.reservation_id not in self.items
        self.items[reservation.reservation_id] = copy.deepcopy(reservation)

    def save(self, reservation: Reservation) -> None:
        self.items[reservation.reservation_id] = copy.deepcopy(reservation)


class FakeUnitOfWork:
    """Works on copies and publishes them to the store only on a clean exit, like a transaction."""

    def __init__(self, store: FakeStore) -> None:
        self._store = store

    def __enter__(self) -> Self:
        self.stock = FakeStock(copy.deepcopy(self._store.stock))
        self.reservations = FakeReservations(copy.deepcopy(self._store.reservations))
        self.pending: list[InventoryEvent] = []
        return self

    def publish(self, event: InventoryEvent, *, event_id: str | None = None) -> None:
        self.pending.append(event)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self._store.stock = self.stock.items
            self._store.reservations = self.reservations.items
            self._store.events += self.pending


class RecordingPublisher:
    """The SQLite adapter's publisher port, writing each event into the same transaction."""

    def publish(
        self, conn: sqlite3.Connection, event: InventoryEvent, *, event_id: str | None = None
    ) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS published (event TEXT NOT NULL)")
        conn.execute("INSERT INTO published VALUES (?)", (type(event).__name__,))


class Harness:
    """An Inventory plus a way to read what it published (committed events only)."""

    def __init__(self, inventory: Inventory, published: Callable[[], list[str]]) -> None:
        self.inventory = inventory
        self.published = published


@pytest.fixture(params=["fake", "sqlite"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    if request.param == "fake":
        store = FakeStore()
        yield Harness(
            Inventory(lambda: FakeUnitOfWork(store)),
            lambda: [type(e).__name__ for e in store.events],
        )
        return
    db = Database(tmp_path / "inventory.db", MIGRATIONS)
    publisher = RecordingPublisher()

    def published() -> list[str]:
        with db.snapshot() as conn:
            try:
                return [row[0] for row in conn.execute("SELECT event FROM published")]
            except sqlite3.OperationalError:  # no event was ever committed
                return []

    yield Harness(Inventory(lambda: SqliteUnitOfWork(db, publisher)), published)
    db.close()


@pytest.fixture
def inventory(harness: Harness) -> Inventory:
    return harness.inventory


def levels(inventory: Inventory, sku: str) -> tuple[int, int]:
    item = inventory.get_stock(sku)
    return item.available, item.reserved


def test_set_then_get_round_trips(inventory: Inventory) -> None:
    inventory.set_stock("A", 10)
    assert levels(inventory, "A") == (10, 0)
    inventory.set_stock("A", 4)
    assert levels(inventory, "A") == (4, 0)


def test_unknown_sku_is_not_found(inventory: Inventory) -> None:
    with pytest.raises(NotFound, match="'Z'"):
        inventory.get_stock("Z")


@pytest.mark.parametrize(
    ("sku", "quantity", "fields"),
    [
        ("", -1, ["sku", "quantity"]),
        ("", 1, ["sku"]),
        ("A", -5, ["quantity"]),
        (" A", 1, ["sku"]),
    ],
)
def test_set_stock_validation_names_every_field(
    inventory: Inventory, sku: str, quantity: int, fields: list[str]
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        inventory.set_stock(sku, quantity)
    assert [v.field for v in caught.value.violations] == fields


def test_reserve_holds_units_and_counts_them_out_of_available(inventory: Inventory) -> None:
    inventory.set_stock("A", 10)
    inventory.set_stock("B", 2)
    reservation = inventory.reserve("r1", [Line("A", 3), Line("B", 2), Line("A", 1)])
    assert reservation.lines == (Line("A", 4), Line("B", 2))
    assert reservation.status is ReservationStatus.RESERVED
    assert levels(inventory, "A") == (6, 4)
    assert levels(inventory, "B") == (0, 2)


def test_reserve_is_all_or_nothing(inventory: Inventory) -> None:
    inventory.set_stock("A", 10)
    inventory.set_stock("B", 1)
    with pytest.raises(FailedPrecondition) as caught:
        inventory.reserve("r1", [Line("A", 3), Line("B", 2)])
    assert [v.subject for v in caught.value.violations] == ["B"]
    assert levels(inventory, "A") == (10, 0)
    assert levels(inventory, "B") == (1, 0)


def test_reserve_unknown_sku_is_not_found_and_holds_nothing(inventory: Inventory) -> None:
    inventory.set_stock("A", 10)
    with pytest.raises(NotFound, match="'Q'"):
        inventory.reserve("r1", [Line("A", 1), Line("Q", 1)])
    assert levels(inventory, "A") == (10, 0)


def test_a_refusal_names_a_few_skus_and_counts_the_rest(inventory: Inventory) -> None:
    """A refusal listing every SKU of a 100-line request would be too large for the caller's
    metadata limit (RESOURCE_EXHAUSTED instead of the real code): it names five, counts the rest."""
    skus = [f"{i:03d}" + "s" * 125 for i in range(100)]
    with pytest.raises(NotFound) as missing:
        inventory.reserve("r1", [Line(sku, 1) for sku in skus])
    assert missing.value.message.endswith(" and 95 more")
    assert len(missing.value.message) < 400
    assert missing.value.metadata["skus"].count(",") == 4
    for sku in skus:
        inventory.set_stock(sku, 0)
    with pytest.raises(FailedPrecondition) as short:
        inventory.reserve("r1", [Line(sku, 1) for sku in skus])
    assert short.value.message.endswith(" and 95 more")
    assert len(short.value.message) < 600


def test_reserve_replay_returns_same_result_and_holds_once(inventory: Inventory) -> None:
    inventory.set_stock("A", 10)
    first = inventory.reserve("r1", [Line("A", 3)])
    again = inventory.reserve("r1", [Line("A", 3)])
    assert (again.reservation_id, again.lines, again.status) == (
        first.reservation_id,
        first.lines,
        first.status,
    )
    assert levels(inventory, "A") == (7, 3)


def test_reserve_id_reused_for_other_lines_is_refused(inventory: Inventory) -> None:
    inventory.set_stock("A", 10)
    inventory.reserve("r1", [Line("A", 3)])
    with pytest.raises(AlreadyExists):
        inventory.reserve("r1", [Line("A", 4)])
    assert levels(inventory, "A") == (7, 3)


@pytest.mark.parametrize(
    ("reservation_id", "lines", "fields"),
    [
        ("", [Line("A", 1)], ["reservation_id"]),
        ("r", [], ["lines"]),
        ("r", [Line("", 0)], ["lines[0].sku", "lines[0].quantity"]),
        ("r", [Line("A", 1), Line("B", -2)], ["lines[1].quantity"]),
        ("r", [Line("A", 2**31 - 1), Line("A", 1)], ["lines"]),
        ("r", [Line(f"S{i}", 1) for i in range(101)], ["lines"]),
        ("r" * 129, [Line("S" * 129, 1)], ["reservation_id", "lines[0].sku"]),
    ],
)
def test_reserve_validation_names_every_field(
    inventory: Inventory, reservation_id: str, lines: list[Line], fields: list[str]
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        inventory.reserve(reservation_id, lines)
    assert [v.field for v in caught.value.violations] == fields


def test_release_returns_units_and_is_idempotent(inventory: Inventory) -> None:
    inventory.set_stock("A", 10)
    inventory.reserve("r1", [Line("A", 3)])
    assert inventory.release("r1").status is ReservationStatus.RELEASED
    assert inventory.release("r1").status is ReservationStatus.RELEASED
    assert levels(inventory, "A") == (10, 0)


def test_commit_removes_units_and_is_idempotent(inventory: Inventory) -> None:
    inventory.set_stock("A", 10)
    inventory.reserve("r1", [Line("A", 3)])
    assert inventory.commit("r1").status is ReservationStatus.COMMITTED
    assert inventory.commit("r1").status is ReservationStatus.COMMITTED
    assert levels(inventory, "A") == (7, 0)


@pytest.mark.parametrize(
    ("first", "then"),
    [(Inventory.commit, Inventory.release), (Inventory.release, Inventory.commit)],
    ids=["release-after-commit", "commit-after-release"],
)
def test_crossing_from_one_end_state_to_the_other_is_refused(
    inventory: Inventory,
    first: Callable[[Inventory, str], Reservation],
    then: Callable[[Inventory, str], Reservation],
) -> None:
    inventory.set_stock("A", 10)
    inventory.reserve("r1", [Line("A", 3)])
    first(inventory, "r1")
    before = levels(inventory, "A")
    with pytest.raises(FailedPrecondition):
        then(inventory, "r1")
    assert levels(inventory, "A") == before


def test_commit_of_unknown_reservation_is_not_found(inventory: Inventory) -> None:
    with pytest.raises(NotFound):
        inventory.commit("nope")


def test_a_release_that_overtakes_its_reserve_leaves_nothing_reserved(
    harness: Harness,
) -> None:
    """Issue 20, item 1: the saga's step deadline passes while ReserveStock still runs; the
    compensation's ReleaseReservation arrives first, then the late reserve commits. Nothing may
    stay reserved: the release is remembered, and the late reserve under that id is refused."""
    inventory = harness.inventory
    inventory.set_stock("A", 5)
    try:
        released = inventory.release("order-late")  # the compensation, first
    except NotFound:  # what orders read as "never reserved: nothing to release"
        released = None
    try:
        inventory.reserve("order-late", [Line("A", 2)])  # the reserve, late
    except FailedPrecondition as refused:
        assert refused.reason == "RESERVATION_RELEASED"
    assert levels(inventory, "A") == (5, 0), "a cancelled order keeps stock reserved"
    assert released is not None and released.status is ReservationStatus.RELEASED
    assert released.lines == ()
    # Idempotent, and a release that overtook its reserve publishes nothing (no stock moved).
    assert inventory.release("order-late").status is ReservationStatus.RELEASED
    assert harness.published() == ["StockSet", "AuditEntry"]


def test_stock_cannot_be_set_below_reserved(inventory: Inventory) -> None:
    inventory.set_stock("A", 10)
    inventory.reserve("r1", [Line("A", 6)])
    with pytest.raises(FailedPrecondition, match="reserved"):
        inventory.set_stock("A", 5)
    inventory.set_stock("A", 6)
    assert levels(inventory, "A") == (0, 6)


def test_each_change_publishes_its_event_in_the_same_unit(harness: Harness) -> None:
    inventory = harness.inventory
    inventory.set_stock("A", 10)
    inventory.reserve("r1", [Line("A", 3)])
    inventory.reserve("r1", [Line("A", 3)])  # a replay changes nothing, so publishes nothing
    inventory.commit("r1")
    inventory.commit("r1")
    inventory.reserve("r2", [Line("A", 1)])
    inventory.release("r2")
    assert harness.published() == [
        "StockSet",
        "AuditEntry",  # who set the stock: an audit record in the same unit
        "StockReserved",
        "ReservationCommitted",
        "StockReserved",
        "ReservationReleased",
    ]


def test_a_refused_command_publishes_nothing(harness: Harness) -> None:
    harness.inventory.set_stock("A", 1)
    with pytest.raises(FailedPrecondition):
        harness.inventory.reserve("r1", [Line("A", 2)])
    with pytest.raises(InvalidArgument):
        harness.inventory.set_stock("", 1)
    assert harness.published() == ["StockSet", "AuditEntry"]


def test_a_failing_publish_rolls_the_state_change_back(tmp_path: Path) -> None:
    class Refusing:
        def publish(
            self, conn: sqlite3.Connection, event: InventoryEvent, *, event_id: str | None = None
        ) -> None:
            raise ValueError("event does not match its schema")

    db = Database(tmp_path / "inventory.db", MIGRATIONS)
    inventory = Inventory(lambda: SqliteUnitOfWork(db, Refusing()))
    with pytest.raises(ValueError, match="schema"):
        inventory.set_stock("A", 5)
    with pytest.raises(NotFound):
        inventory.get_stock("A")
    db.close()


def test_events_map_to_records_keyed_by_aggregate() -> None:
    import datetime

    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    lines = (Line("A", 2),)
    stock_set = StockSet("A", 5, 3, 2, now)
    assert (EVENTS.type_of(stock_set), EVENTS.key_of(stock_set)) == (
        "shop.inventory.v1.StockSet",
        "A",
    )
    assert EVENTS.to_record(stock_set) == {
        "sku": "A",
        "on_hand": 5,
        "available": 3,
        "reserved": 2,
        "occurred_at": now,
    }
    for event_type in (StockReserved, ReservationReleased, ReservationCommitted):
        event = event_type("r9", lines, now)
        name, key, record = EVENTS.type_of(event), EVENTS.key_of(event), EVENTS.to_record(event)
        assert (name, key) == (f"shop.inventory.v1.{event_type.__name__}", "r9")
        assert record["lines"] == [{"sku": "A", "quantity": 2}]
        assert EVENTS.event(name, record) == event
