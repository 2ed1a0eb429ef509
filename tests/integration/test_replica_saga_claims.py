"""Orders' saga claims across processes sharing one SQLite file (two replicas of orders): two
workers never carry one saga at once nor call a participant twice for one step; a worker killed
with -9 on this host leaves its sagas to the other at once; a claim of a worker elsewhere (not
checkable here) is waited out, then taken over."""

from __future__ import annotations

import datetime
import select
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from meshkit import timestamps
from meshkit.address import Address
from meshkit.db import Database
from meshkit.money import Money
from meshkit.timestamps import to_micros
from orders.adapters.sqlite import MIGRATIONS, SqliteUnitOfWork
from orders.app.orders import Orders, PlaceOrder
from orders.app.saga_worker import SagaWorker
from orders.domain.model import LineRequest
from orders.domain.saga import Command, Outcome, RetryPolicy, SagaStatus, Succeeded

POLICY = RetryPolicy(step_timeout_s=10.0, call_timeout_s=1.0)
ADDRESS = Address("Ada", "1 Main St", "Berlin", "10115", "DE")


def place(db: Database, count: int) -> list[str]:
    orders = Orders(lambda: SqliteUnitOfWork(db), policy=POLICY)
    return [
        orders.place(
            PlaceOrder(
                request_id=f"r-{n}",
                customer_id="c-1",
                lines=(LineRequest("mug", 1, Money.of("EUR", 3)),),
                payment_token="tok_visa",
                shipping_address=ADDRESS,
            )
        ).order.order_id
        for n in range(count)
    ]


def statuses(db: Database) -> Counter[SagaStatus]:
    with SqliteUnitOfWork(db, read_only=True) as uow:
        return Counter(s.status for s in uow.sagas.recent(include_finished=True, limit=10_000))


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)  # poll interval within the deadline loop


class Calls:
    """Every participant call of every worker, and any two overlapping for one saga."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.made: list[tuple[str, str, str]] = []  # (worker, order id, command)
        self.active: dict[str, str] = {}  # order id -> the worker calling for it now
        self.overlaps: list[str] = []

    def participants(self, worker: str) -> _Participants:
        return _Participants(self, worker)


def order_of(command: Command) -> str:
    """The order a saga command is for: its reservation id, or its key's ``<order_id>:``."""
    reservation = getattr(command, "reservation_id", None)
    if reservation is not None:
        return str(reservation)
    return str(getattr(command, "idempotency_key", "")).partition(":")[0]


class _Participants:
    def __init__(self, calls: Calls, worker: str) -> None:
        self.calls, self.worker = calls, worker

    def execute(self, command: Command, timeout: float) -> Outcome:
        order_id = order_of(command)
        with self.calls.lock:
            if order_id in self.calls.active:
                self.calls.overlaps.append(f"{order_id}: {self.worker} and {self.calls.active}")
            self.calls.active[order_id] = self.worker
            self.calls.made.append((self.worker, order_id, type(command).__name__))
        threading.Event().wait(0.003)  # a participant takes a moment to answer
        with self.calls.lock:
            self.calls.active.pop(order_id, None)
        return Succeeded(payment_id="pay-1", shipment_id="shp-1", tracking_number="TRK-1")


@pytest.fixture
def db_path(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "orders.db"
    Database(path, MIGRATIONS).close()
    yield path


def test_two_workers_on_one_database_never_carry_one_saga_at_once(db_path: Path) -> None:
    writer = Database(db_path, MIGRATIONS)
    # One Database each, as two orders processes have: only SQLite's locks between them.
    dbs = [Database(db_path, MIGRATIONS) for _ in range(2)]
    calls = Calls()
    workers = [
        SagaWorker(
            lambda db=db: SqliteUnitOfWork(db),  # type: ignore[misc]
            calls.participants(f"w{n}"),
            POLICY,
            parallelism=4,
            read_only=lambda db=db: SqliteUnitOfWork(db, read_only=True),  # type: ignore[misc]
        )
        for n, db in enumerate(dbs)
    ]
    stop = threading.Event()
    threads = [threading.Thread(target=w.run_forever, args=(stop,)) for w in workers]
    try:
        order_ids = place(writer, 40)
        for thread in threads:
            thread.start()
        wait_for(
            lambda: statuses(writer)[SagaStatus.CONFIRMED] == len(order_ids), "every saga to end"
        )
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        for db in (*dbs, writer):
            db.close()
    assert calls.overlaps == []
    per_step = Counter((order_id, command) for _, order_id, command in calls.made)
    assert set(per_step.values()) == {1}, "a step was called twice"
    assert len(per_step) == 40 * 5  # reserve, authorize, ship, capture, commit
    by_worker = Counter(worker for worker, _, _ in calls.made)
    assert by_worker["w0"] > 0 and by_worker["w1"] > 0, by_worker
    print(f"calls per worker: {dict(by_worker)}")


# A worker in a process of its own, whose participant never answers: it claims the saga, calls,
# and hangs there (printing the order id first), until it is killed.
HANGING_WORKER = """
import sys, threading
from meshkit.db import Database
from orders.adapters.sqlite import MIGRATIONS, SqliteUnitOfWork
from orders.app.saga_worker import SagaWorker
from orders.domain.saga import RetryPolicy

class Hangs:
    def execute(self, command, timeout):
        print("calling", command.reservation_id, flush=True)  # the first step: ReserveStock
        threading.Event().wait()

db = Database(sys.argv[1], MIGRATIONS)
worker = SagaWorker(lambda: SqliteUnitOfWork(db), Hangs(), RetryPolicy(call_timeout_s=1.0))
worker.run_forever(threading.Event())
"""


def carry_until_confirmed(db_path: Path, calls: Calls, timeout: float) -> float:
    """Run a worker on ``db_path`` until every saga is CONFIRMED; how long that took."""
    db = Database(db_path, MIGRATIONS)
    worker = SagaWorker(lambda: SqliteUnitOfWork(db), calls.participants("survivor"), POLICY)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run_forever, args=(stop,))
    started = time.monotonic()
    thread.start()
    try:
        wait_for(lambda: statuses(db) == {SagaStatus.CONFIRMED: 1}, "the saga to end", timeout)
        return time.monotonic() - started
    finally:
        stop.set()
        thread.join(timeout=30)
        db.close()


def test_the_claim_of_a_worker_killed_on_this_host_is_taken_over_at_once(db_path: Path) -> None:
    db = Database(db_path, MIGRATIONS)
    (order_id,) = place(db, 1)
    db.close()
    hanging = subprocess.Popen(
        [sys.executable, "-c", HANGING_WORKER, str(db_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert hanging.stdout is not None
        ready, _, _ = select.select([hanging.stdout], [], [], 30)
        assert ready, "the worker never called"
        assert hanging.stdout.readline().split() == ["calling", order_id]
    finally:
        hanging.kill()
        hanging.wait()
    took = carry_until_confirmed(db_path, Calls(), timeout=20)
    assert took < 3.0, f"took {took:.1f}s: the dead worker's claim was waited out"


def test_a_claim_held_elsewhere_is_waited_out_then_taken_over(db_path: Path) -> None:
    """A worker on another host (its process cannot be checked from here) holds the saga's
    claim for two more seconds: nothing calls for the saga before then, and it ends after."""
    db = Database(db_path, MIGRATIONS)
    (order_id,) = place(db, 1)
    now = timestamps.now()
    until = now + datetime.timedelta(seconds=2)
    with db.transaction() as conn:
        conn.execute(
            "INSERT INTO saga_runners (runner_id, heartbeat_micros, host, pid)"
            " VALUES ('elsewhere', ?, 'another-host', 1)",
            (to_micros(now),),
        )
        conn.execute(
            "INSERT INTO saga_claims (order_id, runner_id, until_micros) VALUES (?, ?, ?)",
            (order_id, "elsewhere", to_micros(until)),
        )
    db.close()
    calls = Calls()
    took = carry_until_confirmed(db_path, calls, timeout=20)
    assert 1.5 < took < 6.0, f"took {took:.1f}s with a claim 2 s from expiry"
    assert len(calls.made) == 5
