"""Relay promises when Kafka says no, on the real broker: a row Kafka can never take is parked
with its error and the rows after it still go out, in each key's order; a destination that is
unavailable holds back only its own rows; published rows are pruned even under constant load.

The relay's producer is idempotent with ``enable.gapless.guarantee`` and no message timeout (see
meshkit.events.relay): a failed batch stops everything after it in its partition, so re-sending
the failed rows in id order can never put an older event of a key behind a newer one.
"""

from __future__ import annotations

import io
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import fastavro
import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic
from support.events import (
    COUNTER,
    COUNTER_SCHEMA,
    create_topic,
    register_all,
    wait_for,
    write_contracts,
)
from support.kafka import consume, unique_topic

from meshkit.db import Database
from meshkit.events import EventCatalog, Outbox, OutboxRelay, cloudevent_headers

pytestmark = pytest.mark.kafka


@pytest.fixture
def run_relay() -> Iterator[Callable[[OutboxRelay], None]]:
    """``run_relay(relay)`` runs its ``run_forever`` on a thread until the test ends."""
    stop = threading.Event()
    running: list[tuple[OutboxRelay, threading.Thread]] = []

    def run(relay: OutboxRelay) -> None:
        kwargs = {"max_backoff_s": 0.2}
        thread = threading.Thread(target=relay.run_forever, args=(stop,), kwargs=kwargs)
        thread.start()
        running.append((relay, thread))

    yield run
    stop.set()
    for relay, thread in running:
        thread.join()
        relay.close()


def seqs_in_order(bootstrap: str, topic: str, count: int) -> list[int]:
    """The ``seq`` of each event on ``topic`` (partition 0) in log order, first copy of each
    ``ce_id`` only (what an inbox-deduplicating consumer applies); reads to the end."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"check-{topic}",
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
        }
    )
    try:
        consumer.subscribe([topic])
        records = consume(consumer, count, until_eof=[0])
    finally:
        consumer.close()
    schema = fastavro.parse_schema(COUNTER_SCHEMA)
    seen: set[str] = set()
    order: list[int] = []
    for record in records:
        ce_id = dict(record.headers() or [])["ce_id"].decode()  # type: ignore[union-attr]
        if ce_id not in seen:
            seen.add(ce_id)
            body = io.BytesIO((record.value() or b"")[5:])  # after the Confluent framing
            order.append(fastavro.schemaless_reader(body, schema, None)["seq"])  # type: ignore[call-overload,index]
    return order


def pending(db: Database) -> int:
    with db.snapshot() as conn:
        return int(
            conn.execute(
                "SELECT count(*) FROM meshkit_outbox WHERE published_at IS NULL"
            ).fetchone()[0]
        )


def test_a_row_too_large_to_send_is_parked_and_the_events_after_it_still_arrive(
    kafka_bootstrap: str,
    kafka_topic: str,
    registry_url: str,
    counter_catalog: tuple[EventCatalog, Path],
    producer_db: Database,
    run_relay: Callable[[OutboxRelay], None],
) -> None:
    outbox = Outbox(counter_catalog[0], registry_url, source="/meshkit/test")
    with producer_db.transaction() as conn:
        outbox.append(conn, COUNTER, {"counter": "k", "seq": 0}, key="k")
        # Forced in as a row written before the outbox refused such events (or by a service
        # configured for a larger limit): more than the producer's message.max.bytes.
        (topic,) = conn.execute("SELECT topic FROM meshkit_outbox").fetchone()
        headers = cloudevent_headers(event_type=COUNTER, source="/meshkit/test", subject="k")
        conn.execute(
            "INSERT INTO meshkit_outbox (topic, key, value, headers, created_at)"
            " VALUES (?, 'k', ?, ?, ?)",
            (topic, b"\x00" * 1_100_000, json.dumps(headers), time.time()),
        )
        for seq in (2, 3, 4):
            outbox.append(conn, COUNTER, {"counter": "k", "seq": seq}, key="k")
    relay = OutboxRelay(producer_db, kafka_bootstrap, delivery_timeout_s=2.0)
    run_relay(relay)

    wait_for(
        lambda: relay.lag()[0] == 0,
        timeout=20,
        what="the events after the oversized row to be published",
    )
    assert seqs_in_order(kafka_bootstrap, kafka_topic, 4) == [0, 2, 3, 4]
    (parked,) = relay.parked()
    assert parked.ce_id == dict(headers)["ce_id"]
    assert "MSG_SIZE_TOO_LARGE" in parked.error
    assert pending(producer_db) == 1, "the parked row is kept, with its error, not published"


@pytest.fixture
def refusing_outbox(
    kafka_bootstrap: str,
    kafka_topic: str,
    registry_url: str,
    counter_catalog: tuple[EventCatalog, Path],
) -> Outbox:
    """An outbox onto a topic taking less than the producer does (2,000 bytes): the broker
    refuses a batch with a bigger record in it as a whole, its innocent neighbours included."""
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    new = NewTopic(kafka_topic, 1, 1, config={"max.message.bytes": "2000"})
    admin.create_topics([new])[kafka_topic].result(timeout=30)
    return Outbox(counter_catalog[0], registry_url, source="/meshkit/test")


def append_counts(db: Database, outbox: Outbox, seqs: range, *, big: int) -> dict[int, str]:
    """Append CounterIncremented ``seqs`` of key ``k`` (``big`` with a 5,000-byte note) in one
    transaction; their ``ce_id`` by seq."""
    ids = {}
    with db.transaction() as conn:
        for seq in seqs:
            event = {"counter": "k", "seq": seq, "note": "x" * 5000 if seq == big else ""}
            ids[seq] = outbox.append(conn, COUNTER, event, key="k")
    return ids


def small_batch_relay(db: Database, bootstrap: str) -> OutboxRelay:
    """A relay sending two records per batch, so later batches of a key are in flight behind
    a refused one."""
    config = {"batch.num.messages": 2}
    return OutboxRelay(db, bootstrap, delivery_timeout_s=2.0, producer_config=config)


def test_a_row_the_broker_refuses_is_parked_and_its_key_keeps_its_order(
    kafka_bootstrap: str,
    kafka_topic: str,
    refusing_outbox: Outbox,
    producer_db: Database,
    run_relay: Callable[[OutboxRelay], None],
) -> None:
    # After a refused batch the idempotent producer would reset its sequence and go on with the
    # batches behind it; re-sending the refused rows would then put them behind later events of
    # their key. With the relay's settings the batches behind it are never written.
    relay = small_batch_relay(producer_db, kafka_bootstrap)
    run_relay(relay)
    append_counts(producer_db, refusing_outbox, range(1), big=-1)
    wait_for(lambda: relay.lag()[0] == 0, what="a first event (a relay that has been running)")

    ids = append_counts(producer_db, refusing_outbox, range(1, 9), big=2)
    wait_for(lambda: relay.lag()[0] == 0, what="every event but the refused one")
    assert seqs_in_order(kafka_bootstrap, kafka_topic, 8) == [0, 1, 3, 4, 5, 6, 7, 8]
    (parked,) = relay.parked()
    assert parked.ce_id == ids[2]
    assert "MSG_SIZE_TOO_LARGE" in parked.error


def test_when_a_new_producers_first_batch_is_refused_its_key_is_still_never_reordered(
    kafka_bootstrap: str,
    kafka_topic: str,
    refusing_outbox: Outbox,
    producer_db: Database,
    run_relay: Callable[[OutboxRelay], None],
) -> None:
    # A broker takes any first sequence from a producer id it has no state for, so the batches
    # behind a refused first batch may be written before the producer stops. Refused rows that
    # can no longer go out in order are parked (each naming why), never sent out of order.
    ids = append_counts(producer_db, refusing_outbox, range(8), big=1)
    relay = small_batch_relay(producer_db, kafka_bootstrap)
    run_relay(relay)

    wait_for(lambda: relay.lag()[0] == 0, what="every row published or parked")
    parked = {row.ce_id: row.error for row in relay.parked()}
    assert "MSG_SIZE_TOO_LARGE" in parked.pop(ids[1])
    assert all("would reorder the key" in error for error in parked.values()), parked
    order = seqs_in_order(kafka_bootstrap, kafka_topic, 7 - len(parked))
    assert order == sorted(order), "a key's events reached Kafka out of order"
    assert {ids[seq] for seq in order} | set(parked) == set(ids.values()) - {ids[1]}


def test_an_unavailable_destination_holds_back_only_its_own_rows(
    tmp_path: Path,
    kafka_bootstrap: str,
    registry_url: str,
    producer_db: Database,
    run_relay: Callable[[OutboxRelay], None],
) -> None:
    # A topic that does not exist yet on a cluster that does not auto-create stands in for an
    # unavailable partition: the producer holds its records and retries, the rest flows.
    late, ready = unique_topic("test.relay.late"), unique_topic("test.relay.ready")
    create_topic(kafka_bootstrap, ready, partitions=1)
    outboxes = {}
    for topic in (late, ready):
        avro = write_contracts(tmp_path / topic, topic, COUNTER_SCHEMA)
        register_all(registry_url, avro)
        outboxes[topic] = Outbox(EventCatalog.load(avro), registry_url, source="/meshkit/test")
    per_topic = 20
    with producer_db.transaction() as conn:
        for seq in range(per_topic):  # interleaved, the unavailable topic's row first
            for topic in (late, ready):
                event = {"counter": f"c{seq % 3}", "seq": seq}
                outboxes[topic].append(conn, COUNTER, event, key="k")
    relay = OutboxRelay(
        producer_db,
        kafka_bootstrap,
        delivery_timeout_s=1.0,
        producer_config={
            "allow.auto.create.topics": False,
            "topic.metadata.propagation.max.ms": 120_000,
        },
    )
    run_relay(relay)

    def published(topic: str) -> int:
        with producer_db.snapshot() as conn:
            return int(
                conn.execute(
                    "SELECT count(*) FROM meshkit_outbox"
                    " WHERE topic = ? AND published_at IS NOT NULL",
                    (topic,),
                ).fetchone()[0]
            )

    wait_for(
        lambda: published(ready) == per_topic,
        timeout=15,
        what="the available topic's rows to be published",
    )
    assert published(late) == 0
    create_topic(kafka_bootstrap, late, partitions=1)
    wait_for(lambda: relay.lag()[0] == 0, timeout=30, what="the held-back rows once it exists")
    for topic in (late, ready):
        assert seqs_in_order(kafka_bootstrap, topic, per_topic) == list(range(per_topic))


def test_published_rows_are_pruned_even_when_there_is_always_work(
    kafka_bootstrap: str,
    registry_url: str,
    counter_catalog: tuple[EventCatalog, Path],
    producer_db: Database,
) -> None:
    outbox = Outbox(counter_catalog[0], registry_url, source="/meshkit/test")
    relay = OutboxRelay(producer_db, kafka_bootstrap, retention_s=0.0)
    try:
        for seq in range(20):  # a service under constant load: every pass finds new rows
            with producer_db.transaction() as conn:
                outbox.append(conn, COUNTER, {"counter": "k", "seq": seq}, key="k")
            assert relay.run_once() == 1
    finally:
        relay.close()
    with sqlite3.connect(producer_db.path) as conn:
        (kept,) = conn.execute("SELECT count(*) FROM meshkit_outbox").fetchone()
    assert kept <= 1, f"{kept} published rows kept past their retention of 0s"
