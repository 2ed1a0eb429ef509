"""Rebuild and queries over real SQLite copies, with an in-memory event log standing in for Kafka
(a fake consumer per group with its own offsets, inbox marks as meshkit's consumer writes them).

Proves: a rebuilt copy equals the incrementally built one, queries answer throughout a rebuild,
the old file is gone after the swap; keyset pages, bad tokens, FTS5 input sanitising, and the
read-your-writes wait (woken by the projector, FailedPrecondition when it times out).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from unit.order_views.fake_kafka import FakeConsumer, Log
from unit.order_views.shop_events import Projection, dump, order_life

from meshkit.errors import FailedPrecondition, InvalidArgument
from order_views.adapters.copies import SqliteCopies
from order_views.app.progress import Progress
from order_views.app.queries import OrderQueries
from order_views.app.rebuild import Rebuilder, RebuildPhase
from order_views.domain.consistency import ConsistencyToken
from order_views.domain.model import OrderStatus


@pytest.fixture
def log() -> Log:
    return Log()


@pytest.fixture
def copies(tmp_path: Path, log: Log) -> Iterator[tuple[SqliteCopies, Progress]]:
    progress = Progress()
    made = SqliteCopies(
        tmp_path / "views.db",
        lambda db, group, replay=False: FakeConsumer(log, db, group, replay=replay),
        progress,
    )
    made.active().start()
    yield made, progress
    made.close()


def caught_up(copies: SqliteCopies, progress: Progress, log: Log) -> None:
    assert progress.wait_for(lambda: copies.active().positions() == log.ends(), 10.0)


def test_a_rebuild_equals_the_incremental_result_and_queries_answer_throughout(
    copies: tuple[SqliteCopies, Progress], log: Log, projection: object, tmp_path: Path
) -> None:
    views, progress = copies
    queries = OrderQueries(views.lease, progress)
    lives = [order_life(f"o-{n}", customer=f"c-{n % 4}", sku=f"sku-{n}", at=n) for n in range(40)]
    for life in lives[:30]:
        log.append(life)
    caught_up(views, progress, log)
    old_file = views.active().path
    errors: list[BaseException] = []
    answered = 0
    stop = threading.Event()

    def query() -> None:
        nonlocal answered
        while not stop.is_set():
            try:
                assert queries.list_orders("c-1", None, 5, "").orders
                assert queries.search_orders("sku-1", 5, "").orders
                assert queries.get_order_view("o-1").timeline
                answered += 1
            except BaseException as exc:  # noqa: BLE001 - every failure counts
                errors.append(exc)

    reader = threading.Thread(target=query)
    reader.start()
    rebuild = Rebuilder(views, progress, log).rebuild()
    for life in lives[30:]:  # live traffic while rebuilding
        log.append(life)
    final = list(rebuild.follow())[-1]
    caught_up(views, progress, log)
    stop.set()
    reader.join()

    assert final.phase is RebuildPhase.SWAPPED, final.message
    assert views.active().generation == 2 and not old_file.exists()
    assert not errors and answered > 0
    incremental = Projection(tmp_path / "incremental.db")
    for life in lives:
        for _, _, fact in life:
            incremental.apply(fact)
    assert dump(views.active().db) == incremental.dump()


def test_pages_are_keyset_tokens_bound_to_their_listing(
    copies: tuple[SqliteCopies, Progress], log: Log
) -> None:
    views, progress = copies
    queries = OrderQueries(views.lease, progress)
    for n in range(7):
        log.append(order_life(f"o-{n}", customer="c-1", at=n))
    caught_up(views, progress, log)
    seen, token = [], ""
    while True:
        page = queries.list_orders("c-1", OrderStatus.CONFIRMED, 3, token)
        seen += [o.order_id for o in page.orders]
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"o-{n}" for n in reversed(range(7))]  # newest first, each once
    first = queries.list_orders("c-1", None, 3, "")
    with pytest.raises(InvalidArgument):
        queries.list_orders("c-2", None, 3, first.next_page_token)  # another listing's token
    with pytest.raises(InvalidArgument):
        queries.list_orders("c-1", None, 3, "not-a-token")
    with pytest.raises(InvalidArgument):
        queries.list_orders("c-1", None, -1, "")


@pytest.mark.parametrize(
    "text", ['"', 'mug" OR "x', "NOT mug", "mug*", "customer_id:c-1", "(mug", "^mug", "NEAR(a b)"]
)
def test_search_takes_any_text(copies: tuple[SqliteCopies, Progress], log: Log, text: str) -> None:
    views, progress = copies
    log.append(order_life("o-1", sku="mug-blue"))
    caught_up(views, progress, log)
    OrderQueries(views.lease, progress).search_orders(text, 10, "")  # no error is the point


def test_search_ranks_and_pages(copies: tuple[SqliteCopies, Progress], log: Log) -> None:
    views, progress = copies
    queries = OrderQueries(views.lease, progress)
    for n in range(5):
        log.append(order_life(f"o-{n}", sku=f"mug-{n}", at=n))
    caught_up(views, progress, log)
    assert [o.order_id for o in queries.search_orders("mug-3", 10, "").orders] == ["o-3"]
    first = queries.search_orders("mug", 2, "")
    rest = queries.search_orders("mug", 10, first.next_page_token)
    ids = [o.order_id for o in first.orders + rest.orders]
    assert sorted(ids) == [f"o-{n}" for n in range(5)] and len(set(ids)) == 5


def test_a_consistency_token_waits_for_the_projector(
    copies: tuple[SqliteCopies, Progress], log: Log
) -> None:
    views, progress = copies
    queries = OrderQueries(views.lease, progress)
    life = order_life("o-1", customer="c-9")
    token = ConsistencyToken.parse("o-1@1")
    threading.Timer(0.2, log.append, [life]).start()
    started = time.monotonic()
    page = queries.list_orders("c-9", None, 10, "", consistency=token, wait_s=10.0)
    assert [o.order_id for o in page.orders] == ["o-1"]
    assert time.monotonic() - started < 5.0
    with pytest.raises(FailedPrecondition, match=r"version 6.*asks for 9"):
        queries.get_order_view("o-1", consistency=ConsistencyToken.parse("o-1@9"), wait_s=0.2)
    for bad in ("o-1", "o-1@", "@3", "o-1@0", "o-1@-2", "o-1@x"):
        with pytest.raises(InvalidArgument):
            ConsistencyToken.parse(bad)


def test_a_wait_keeps_its_time_while_the_projector_never_rests() -> None:
    # A busy projector advances during every evaluation of the waiter's predicate.
    progress = Progress()
    answers: list[bool] = []

    def never_there() -> bool:
        progress.advance()
        return False

    waiter = threading.Thread(target=lambda: answers.append(progress.wait_for(never_there, 0.2)))
    started = time.monotonic()
    waiter.start()
    waiter.join(5.0)
    assert answers == [False], f"still waiting after {time.monotonic() - started:.1f}s"


def test_a_rebuild_is_refused_when_a_log_no_longer_starts_at_offset_0(
    copies: tuple[SqliteCopies, Progress], log: Log, tmp_path: Path
) -> None:
    views, progress = copies
    log.append([e for n in range(5) for e in order_life(f"o-{n}", at=n)])
    caught_up(views, progress, log)
    log.first["orders.events.v1"] = 3  # retention removed the first three records

    with pytest.raises(FailedPrecondition, match=r"orders\.events\.v1\[0\] now starts at offset 3"):
        Rebuilder(views, progress, log).rebuild()
    assert views.active().generation == 1 and not (tmp_path / "views.g2.db").exists()


def test_a_rebuild_fails_when_records_go_before_the_fresh_copy_read_them(
    copies: tuple[SqliteCopies, Progress], log: Log
) -> None:
    views, progress = copies
    queries = OrderQueries(views.lease, progress)
    log.append([e for n in range(5) for e in order_life(f"o-{n}", at=n)])
    caught_up(views, progress, log)
    log.paused.add(".g2")  # the fresh copy has read nothing yet when retention strikes
    rebuild = Rebuilder(views, progress, log).rebuild()
    log.first["orders.events.v1"] = 3
    log.paused.clear()

    final = list(rebuild.follow())[-1]
    assert final.phase is RebuildPhase.FAILED, final.message
    assert isinstance(final.error, FailedPrecondition)
    assert final.error.reason == "TOPIC_HISTORY_TRUNCATED"
    assert "orders.events.v1[0] now starts at offset 3" in final.message
    assert views.active().generation == 1
    assert len(queries.list_orders("", None, 50, "").orders) == 5, "the serving copy is kept"


def test_a_rebuild_fails_when_a_partition_appears_meanwhile(
    copies: tuple[SqliteCopies, Progress], log: Log
) -> None:
    views, progress = copies
    log.append(order_life("o-1"))
    caught_up(views, progress, log)
    log.paused.add(".g2")
    rebuild = Rebuilder(views, progress, log).rebuild()
    log.append([("refunds.events.v1", "o-1", order_life("o-1")[0][2])])
    log.paused.clear()

    final = list(rebuild.follow())[-1]
    assert final.phase is RebuildPhase.FAILED and "refunds.events.v1[0]" in final.message
    assert views.active().generation == 1
