"""Consumer promises on real Kafka: an effect happens once even when the consumer dies between
its database commit and its offset commit; a record that cannot be handled or decoded goes to
the dead-letter topic with its error, the loop carries on, and `mesh dlq` shows and replays it."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from support.events import (
    CONSUMER_MIGRATIONS,
    COUNTER,
    PRODUCER_MIGRATIONS,
    applied_order,
    count_effect,
    count_effects,
    drain,
    start_consumer_process,
)

from meshkit.db import Database
from meshkit.events import (
    Event,
    EventCatalog,
    EventConsumer,
    Handler,
    Outbox,
    OutboxRelay,
    read_dead_letters,
)

pytestmark = pytest.mark.kafka
MESH = Path(sys.executable).parent / "mesh"


@pytest.fixture
def publish(
    tmp_path: Path,
    kafka_bootstrap: str,
    registry_url: str,
    counter_catalog: tuple[EventCatalog, Path],
) -> Iterator[Callable[[str, int], list[str]]]:
    """publish(counter, n): n CounterIncremented events through the outbox and relay."""
    catalog, _ = counter_catalog
    db = Database(tmp_path / "producer.db", PRODUCER_MIGRATIONS)
    outbox = Outbox(catalog, registry_url, source="/meshkit/test")
    relay = OutboxRelay(db, kafka_bootstrap)

    def run(counter: str, n: int) -> list[str]:
        with db.transaction() as conn:
            ids = [
                outbox.append(conn, COUNTER, {"counter": counter, "seq": seq}, key=counter)
                for seq in range(n)
            ]
        assert relay.run_once() == n
        return ids

    yield run
    relay.close()
    db.close()


@pytest.fixture
def make_consumer(
    tmp_path: Path,
    kafka_bootstrap: str,
    kafka_topic: str,
    registry_url: str,
    counter_catalog: tuple[EventCatalog, Path],
) -> Iterator[Callable[..., EventConsumer]]:
    """make_consumer(handler, instance_id=None): an EventConsumer over tmp_path/consumer.db."""
    made: list[tuple[EventConsumer, Database]] = []

    def make(handler: Handler = count_effect, instance_id: str | None = None) -> EventConsumer:
        db = Database(tmp_path / "consumer.db", CONSUMER_MIGRATIONS)
        consumer = EventConsumer(
            db,
            bootstrap=kafka_bootstrap,
            group=f"g-{kafka_topic}",
            topics=[kafka_topic],
            registry=registry_url,
            catalog=counter_catalog[0],
            handlers={COUNTER: handler},
            instance_id=instance_id,
        )
        made.append((consumer, db))
        return consumer

    yield make
    for consumer, db in made:
        consumer.close()
        db.close()


def settle_all(consumer: EventConsumer) -> None:
    """Run until two polls in a row find nothing, so late duplicates would have shown up."""
    idle = 0
    while idle < 2:
        idle = idle + 1 if consumer.run_once(0.3) == 0 else 0


def test_killed_between_db_commit_and_offset_commit_the_effect_happens_once(
    tmp_path: Path,
    kafka_bootstrap: str,
    kafka_topic: str,
    registry_url: str,
    counter_catalog: tuple[EventCatalog, Path],
    publish: Callable[[str, int], list[str]],
    make_consumer: Callable[..., EventConsumer],
) -> None:
    ids = publish("k", 20)
    db_path = tmp_path / "consumer.db"
    group = f"g-{kafka_topic}"
    proc = start_consumer_process(
        "--db", str(db_path), "--bootstrap", kafka_bootstrap, "--registry", registry_url,
        "--catalog", str(counter_catalog[1]), "--topic", kafka_topic, "--group", group,
        "--instance", "worker-1", "--kill-after", "5",
    )  # fmt: skip
    try:
        assert proc.wait(timeout=60) == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert sorted(count_effects(db_path).values()) == [1] * 5  # 5 effects committed...
    probe = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})
    try:
        (committed,) = probe.committed([TopicPartition(kafka_topic, 0)], timeout=10)
    finally:
        probe.close()
    assert committed.offset < 5  # ...but not their offsets: they will be redelivered

    consumer = make_consumer(instance_id="worker-1")  # static member: takes over at once
    drain(consumer, lambda: len(count_effects(db_path)) == len(ids))
    settle_all(consumer)
    effects = count_effects(db_path)
    assert set(effects) == set(ids)
    assert set(effects.values()) == {1}
    assert applied_order(db_path) == {"k": list(range(20))}


def test_a_poison_record_is_dead_lettered_listed_and_replayed_once_after_the_fix(
    tmp_path: Path,
    kafka_bootstrap: str,
    kafka_topic: str,
    publish: Callable[[str, int], list[str]],
    make_consumer: Callable[..., EventConsumer],
) -> None:
    broken = True

    def handler(event: Event, conn: sqlite3.Connection) -> None:
        if broken and event.data["seq"] == 2:
            raise ValueError("seq 2 is cursed")
        count_effect(event, conn)

    ids = publish("p", 5)
    db_path = tmp_path / "consumer.db"
    consumer = make_consumer(handler)
    drain(consumer, lambda: len(count_effects(db_path)) == 4)  # carried on past the poison
    assert ids[2] not in count_effects(db_path)

    listed = run_mesh("dlq", "ls", kafka_topic, "--json", "--bootstrap", kafka_bootstrap)
    (row,) = json.loads(listed.stdout)
    assert row["ce_id"] == ids[2]
    assert row["ce_type"] == COUNTER
    assert row["key"] == "p"
    assert row["error"] == "seq 2 is cursed"
    assert row["error_type"] == "ValueError"
    assert row["consumer_group"] == f"g-{kafka_topic}"
    assert (row["topic"], row["partition"], row["offset"]) == (kafka_topic, 0, 2)
    assert row["time"].endswith("Z")
    table = run_mesh("dlq", "ls", kafka_topic, "--bootstrap", kafka_bootstrap).stdout
    assert ids[2] in table and "ValueError: seq 2 is cursed" in table
    (letter,) = read_dead_letters(kafka_bootstrap, kafka_topic)
    original = dict(letter.original_headers())
    assert original["ce_id"] == ids[2].encode() and "dlq_error" not in original

    broken = False
    replayed = run_mesh("dlq", "replay", kafka_topic, "--bootstrap", kafka_bootstrap)
    assert "replayed 1" in replayed.stdout
    drain(consumer, lambda: len(count_effects(db_path)) == 5)
    again = run_mesh("dlq", "replay", kafka_topic, "--bootstrap", kafka_bootstrap)
    assert "replayed 0" in again.stdout  # progress is committed: nothing is sent twice
    settle_all(consumer)
    assert count_effects(db_path) == dict.fromkeys(ids, 1)


def test_undecodable_and_unknown_records_do_not_stop_the_loop(
    tmp_path: Path,
    kafka_bootstrap: str,
    kafka_topic: str,
    publish: Callable[[str, int], list[str]],
    make_consumer: Callable[..., EventConsumer],
) -> None:
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(
        kafka_topic, key=b"x", value=b"\x00\x00\x00\x00\x01garbage",
        headers=[("ce_id", b"bad-1"), ("ce_type", COUNTER.encode())],
    )  # fmt: skip
    producer.produce(
        kafka_topic, key=b"y", value=b"whatever",
        headers=[("ce_id", b"other-1"), ("ce_type", b"shop.other.v1.SomethingElse")],
    )  # fmt: skip
    assert producer.flush(10) == 0
    ids = publish("ok", 1)
    db_path = tmp_path / "consumer.db"
    consumer = make_consumer()
    drain(consumer, lambda: len(count_effects(db_path)) == 1)
    assert count_effects(db_path) == {ids[0]: 1}

    (letter,) = read_dead_letters(kafka_bootstrap, kafka_topic)
    summary = letter.summary()
    assert (summary["ce_id"], summary["key"], summary["offset"]) == ("bad-1", "x", 0)
    assert summary["error"]
    assert letter.value == b"\x00\x00\x00\x00\x01garbage"  # the original bytes, untouched
    with sqlite3.connect(db_path) as conn:
        outcomes = dict(conn.execute("SELECT event_id, outcome FROM meshkit_inbox").fetchall())
    assert outcomes == {"other-1": "skipped", ids[0]: "handled"}


def run_mesh(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(MESH), *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result
