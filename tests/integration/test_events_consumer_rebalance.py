"""A rebalance while a record is in a handler, on real Kafka, two members in one group.

With a database each (so no shared inbox hides a record processed twice): the member that gives
a partition up must not handle, or commit, records of that partition it fetched before the
revoke; the new owner reads them from the committed offset, so each record is processed by one
member. A member that is thrown out of the group mid-handler (``max.poll.interval.ms`` passed)
cannot be stopped from finishing that record: there the inbox, in the database the replicas
share, keeps every effect single and in order."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from support.events import (
    CONSUMER_MIGRATIONS,
    COUNTER,
    PRODUCER_MIGRATIONS,
    applied_order,
    count_effect,
    count_effects,
    create_topic,
    wait_for,
)

from meshkit.db import Database
from meshkit.events import Event, EventCatalog, EventConsumer, Handler, Outbox, OutboxRelay

pytestmark = pytest.mark.kafka
KEYS = [f"k{n}" for n in range(8)]


class Publisher:
    """Publishes CounterIncremented events (seq per key) through the outbox and relay."""

    def __init__(self, path: Path, bootstrap: str, registry: str, catalog: EventCatalog) -> None:
        self.db = Database(path, PRODUCER_MIGRATIONS)
        self.relay = OutboxRelay(self.db, bootstrap)
        self.outbox = Outbox(catalog, registry, source="/meshkit/test")
        self.seq = dict.fromkeys(KEYS, 0)
        self.ids: list[str] = []

    def publish(self, rounds: int) -> None:
        with self.db.transaction() as conn:
            for _ in range(rounds):
                for key in KEYS:
                    data = {"counter": key, "seq": self.seq[key]}
                    self.ids.append(self.outbox.append(conn, COUNTER, data, key=key))
                    self.seq[key] += 1
        assert self.relay.run_once() == rounds * len(KEYS)

    def close(self) -> None:
        self.relay.close()
        self.db.close()


class Member:
    """An EventConsumer on its own database, looping in a thread."""

    def __init__(self, name: str, db_path: Path, **kwargs: Any) -> None:
        self.db_path = db_path
        self.db = Database(db_path, CONSUMER_MIGRATIONS)
        self.consumer = EventConsumer(self.db, **kwargs)
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=self.consumer.run_forever, args=(self.stop,), kwargs={"poll_s": 0.1}, name=name
        )

    def effects(self) -> dict[str, int]:
        return count_effects(self.db_path)

    def close(self) -> None:
        if self.db.closed:
            return
        self.stop.set()
        if self.thread.ident is not None:
            self.thread.join(timeout=30)
        self.consumer.close()
        self.db.close()


@pytest.fixture
def publisher(
    tmp_path: Path,
    kafka_bootstrap: str,
    kafka_topic: str,
    registry_url: str,
    counter_catalog: tuple[EventCatalog, Path],
) -> Iterator[Publisher]:
    """A Publisher on this test's topic, created with two partitions."""
    create_topic(kafka_bootstrap, kafka_topic, 2)
    publisher = Publisher(
        tmp_path / "producer.db", kafka_bootstrap, registry_url, counter_catalog[0]
    )
    yield publisher
    publisher.close()


class StuckFirst:
    """A handler that blocks in its first call until ``release`` is set, then counts effects."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, event: Event, conn: sqlite3.Connection) -> None:
        if not self.entered.is_set():
            self.entered.set()
            assert self.release.wait(30), "never released"
        count_effect(event, conn)


@pytest.fixture
def group(
    kafka_bootstrap: str,
    kafka_topic: str,
    registry_url: str,
    counter_catalog: tuple[EventCatalog, Path],
) -> Iterator[Callable[..., Member]]:
    """group(name, db_path, handler, **options): a member of this test's consumer group."""
    members: list[Member] = []

    def member(name: str, db_path: Path, handler: Handler, **options: Any) -> Member:
        members.append(
            Member(
                name,
                db_path,
                bootstrap=kafka_bootstrap,
                group=f"g-{kafka_topic}",
                topics=[kafka_topic],
                registry=registry_url,
                catalog=counter_catalog[0],
                handlers={COUNTER: handler},
                **options,
            )
        )
        return members[-1]

    yield member
    for each in members:
        each.close()


def assignments(admin: AdminClient, group: str) -> list[list[int]] | None:
    """Each member's assigned partitions as the group coordinator sees them (None while it
    cannot say: the coordinator is moving)."""
    (future,) = admin.describe_consumer_groups([group], request_timeout=5).values()
    try:
        description = future.result()
    except KafkaException:
        return None
    return sorted(
        sorted(tp.partition for tp in member.assignment.topic_partitions)
        for member in description.members
    )


def test_records_of_a_partition_revoked_while_a_handler_runs_are_processed_once(
    tmp_path: Path,
    kafka_bootstrap: str,
    kafka_topic: str,
    publisher: Publisher,
    group: Callable[..., Member],
) -> None:
    stuck = StuckFirst()
    publisher.publish(2)
    a = group("member-a", tmp_path / "a.db", stuck)
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    name = f"g-{kafka_topic}"
    a.thread.start()
    assert stuck.entered.wait(30), "member a never got a record"
    # b is made only now: a consumer joins its group as soon as it subscribes (at
    # construction), so an idle b made earlier could take the partition holding a's records.
    b = group("member-b", tmp_path / "b.db", count_effect)
    # A handler is running in a. More records arrive (a's fetcher queues them), then b joins:
    # the coordinator takes a partition from a, whose revoke waits for a's next poll.
    publisher.publish(3)
    b.thread.start()
    wait_for(
        lambda: assignments(admin, name) in ([[], [0]], [[], [1]]),
        what="the coordinator to take a partition from member a",
    )
    stuck.release.set()
    wait_for(
        lambda: set(a.effects()) | set(b.effects()) == set(publisher.ids),
        what="every record to be handled by one member or the other",
    )
    wait_for(lambda: assignments(admin, name) == [[0], [1]], what="one partition each")
    assert set(a.effects()) & set(b.effects()) == set(), "processed by both members"
    assert set(a.effects().values()) | set(b.effects().values()) == {1}
    a.close()
    b.close()
    probe = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": name})
    try:
        partitions = [TopicPartition(kafka_topic, p) for p in (0, 1)]
        committed = [tp.offset for tp in probe.committed(partitions, timeout=10)]
        ends = [probe.get_watermark_offsets(tp, timeout=10)[1] for tp in partitions]
    finally:
        probe.close()
    assert committed == ends  # nothing committed past a record, nor behind the end


def test_a_member_thrown_out_mid_handler_leaves_each_effect_once_and_in_order(
    tmp_path: Path,
    kafka_bootstrap: str,
    kafka_topic: str,
    publisher: Publisher,
    group: Callable[..., Member],
) -> None:
    stuck = StuckFirst()
    # The broker's minimum session; max.poll.interval.ms may not be below it.
    timeouts = {"session.timeout.ms": 6000, "max.poll.interval.ms": 6000}
    publisher.publish(3)
    shared = tmp_path / "replicas.db"  # two replicas of one service: one database
    a = group("member-a", shared, stuck, consumer_config=timeouts)
    # Made before a runs: a's stuck handler will hold the shared database's write lock, which
    # making a consumer needs. (b then joins idle; the publish below goes to both partitions.)
    b = group("member-b", shared, count_effect, consumer_config=timeouts)
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    name = f"g-{kafka_topic}"
    a.thread.start()
    assert stuck.entered.wait(30), "member a never got a record"
    b.thread.start()
    # a is stuck in its handler past max.poll.interval.ms: the group drops it, b gets all.
    wait_for(lambda: assignments(admin, name) == [[0, 1]], what="b to own both partitions")
    stuck.release.set()  # a finishes the record in hand (and what else it holds), as b redoes it
    publisher.publish(1)
    wait_for(lambda: set(count_effects(shared)) == set(publisher.ids), what="every record handled")
    assert set(count_effects(shared).values()) == {1}  # each effect once
    assert applied_order(shared) == {key: [0, 1, 2, 3] for key in KEYS}  # and in order
