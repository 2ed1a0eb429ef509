"""Several order_views processes on one database directory (issue 20, suspected; issue 13 runs
replicas so): a starting process leaves another's rebuild alone, a swap leaves the copy another
process serves, and every process follows the swap.

Each "process" is its own SqliteCopies over the same catalog path (its own SQLite connections and
file locks, as a process has), fed by the in-memory log standing in for Kafka.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from unit.order_views.fake_kafka import FakeConsumer, Log
from unit.order_views.shop_events import order_life

from meshkit.db import Database
from order_views.adapters.copies import SqliteCopies
from order_views.app.progress import Progress
from order_views.app.queries import OrderQueries
from order_views.app.rebuild import Rebuilder, RebuildPhase

Process = tuple[SqliteCopies, Progress]


@pytest.fixture
def log() -> Log:
    return Log()


@pytest.fixture
def process(tmp_path: Path, log: Log) -> Iterator[Callable[[], Process]]:
    """Starts a "process" on tmp_path/views.db: its copies, its serving copy's consumer."""
    started: list[SqliteCopies] = []

    def runner(db: Database, group: str, *, replay: bool = False) -> FakeConsumer:
        return FakeConsumer(log, db, group, replay=replay)

    def start() -> Process:
        progress = Progress()
        copies = SqliteCopies(tmp_path / "views.db", runner, progress)
        copies.active().start()
        started.append(copies)
        return copies, progress

    yield start
    for copies in started:
        copies.close()


def in_new_thread(call: Callable[[], object]) -> object:
    """``call()``'s result (or exception) on a thread of its own: a fresh gRPC worker thread
    opens its own SQLite connection."""
    result: list[object] = []

    def run() -> None:
        try:
            result.append(call())
        except Exception as exc:  # noqa: BLE001 - handed to the test
            result.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    return result[0]


def order_ids(copies: SqliteCopies, progress: Progress) -> list[str]:
    page = OrderQueries(copies.lease, progress).list_orders("", None, 500, "")
    return sorted(o.order_id for o in page.orders)


def wait_caught_up(copies: SqliteCopies, progress: Progress, log: Log) -> None:
    assert progress.wait_for(lambda: copies.active().positions() == log.ends(), 10.0)


def test_a_starting_process_leaves_the_copy_another_process_is_building(
    process: Callable[[], Process], log: Log, tmp_path: Path
) -> None:
    a, a_progress = process()
    log.append([e for n in range(5) for e in order_life(f"o-{n}", at=n)])
    wait_caught_up(a, a_progress, log)
    log.paused.add(".g2")  # A's rebuild is still catching up while B starts
    running = Rebuilder(a, a_progress, log).rebuild()
    assert running.status.phase is RebuildPhase.CATCHING_UP
    building = tmp_path / "views.g2.db"
    assert building.exists()

    b, _ = process()
    assert building.exists(), "B deleted the copy A is building"
    log.paused.clear()
    final = list(running.follow())[-1]
    assert final.phase is RebuildPhase.SWAPPED, final.message

    c, c_progress = process()  # a later start: the rebuilt copy serves, whole
    assert c.active().generation == 2
    wait_caught_up(c, c_progress, log)
    assert order_ids(c, c_progress) == [f"o-{n}" for n in range(5)]
    b.refresh()  # B follows the swap and lets the old copy go; the last one out deletes it
    assert b.active().generation == 2
    assert not (tmp_path / "views.g1.db").exists()


def test_a_swap_leaves_the_copy_another_process_serves_until_it_follows(
    process: Callable[[], Process], log: Log, tmp_path: Path
) -> None:
    a, a_progress = process()
    b, b_progress = process()
    log.append([e for n in range(5) for e in order_life(f"o-{n}", at=n)])
    wait_caught_up(a, a_progress, log)
    wait_caught_up(b, b_progress, log)

    final = list(Rebuilder(a, a_progress, log).rebuild().follow())[-1]
    assert final.phase is RebuildPhase.SWAPPED, final.message

    # B still serves generation 1 until it notices; a fresh thread of B (a new connection)
    # must find it whole.
    answer = in_new_thread(lambda: order_ids(b, b_progress))
    assert answer == [f"o-{n}" for n in range(5)], f"B, after A's swap: {answer!r}"

    b.refresh()
    assert b.active().generation == 2
    assert not (tmp_path / "views.g1.db").exists(), "the last process out deletes the old copy"
    log.append(order_life("o-9", at=9))
    wait_caught_up(b, b_progress, log)
    assert in_new_thread(lambda: order_ids(b, b_progress)) == [
        *(f"o-{n}" for n in range(5)),
        "o-9",
    ]
