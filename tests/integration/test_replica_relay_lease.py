"""Two outbox relays (two processes, as two replicas of a service run them) on one outbox file,
on real Kafka: one publishes at a time, every row reaches the topic exactly once and in order
per key, and the standby takes over when the holder hangs (SIGSTOP: at lease expiry) or dies
(kill -9: at once, its process being gone); the hung one, woken, stands down."""

from __future__ import annotations

import io
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer
from fastavro import schemaless_reader
from support.events import COUNTER, create_topic, wait_for
from support.kafka import consume

from meshkit.db import Database
from meshkit.events import EventCatalog, Outbox

pytestmark = pytest.mark.kafka

LEASE_S = 2.0
KEYS = [f"counter-{i}" for i in range(6)]
PARTITIONS = 3


def published(db_path: Path) -> int:
    with sqlite3.connect(db_path) as conn:
        row = conn.execute(
            "SELECT count(*) FROM meshkit_outbox WHERE published_at IS NOT NULL"
        ).fetchone()
    return int(row[0])


def holder_pid(db_path: Path) -> int | None:
    with sqlite3.connect(db_path) as conn:
        row = conn.execute("SELECT pid FROM meshkit_leases WHERE name = 'outbox-relay'").fetchone()
    return int(row[0]) if row else None


class Relays:
    """The relay processes (``python -m meshkit.events.relay``), each logging to a file."""

    def __init__(self, db_path: Path, bootstrap: str, logs: Path) -> None:
        self.db_path, self.bootstrap, self.logs = db_path, bootstrap, logs
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def start(self) -> int:
        log = (self.logs / f"relay-{len(self.procs)}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "meshkit.events.relay", "--db", str(self.db_path),
             "--bootstrap", self.bootstrap, "--lease-s", str(LEASE_S), "--batch", "20"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.procs[proc.pid] = proc
        return proc.pid

    def log_of(self, pid: int) -> str:
        index = list(self.procs).index(pid)
        return (self.logs / f"relay-{index}.log").read_text()

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def relays(tmp_path: Path, producer_db: Database, kafka_bootstrap: str) -> Iterator[Relays]:
    running = Relays(Path(producer_db.path), kafka_bootstrap, tmp_path)
    yield running
    running.stop_all()


def test_two_relays_publish_each_row_once_in_key_order_and_take_over_from_a_hung_or_dead_one(
    kafka_bootstrap: str,
    kafka_topic: str,
    registry_url: str,
    counter_catalog: tuple[EventCatalog, Path],
    producer_db: Database,
    relays: Relays,
) -> None:
    create_topic(kafka_bootstrap, kafka_topic, partitions=PARTITIONS)
    outbox = Outbox(counter_catalog[0], registry_url, source="/meshkit/test")
    db_path = Path(producer_db.path)
    seqs = dict.fromkeys(KEYS, 0)

    def append(rounds: int) -> int:
        """``rounds`` transactions of one event per key; the total appended so far."""
        for _ in range(rounds):
            with producer_db.transaction() as conn:
                for key in KEYS:
                    outbox.append(conn, COUNTER, {"counter": key, "seq": seqs[key]}, key=key)
                    seqs[key] += 1
        return sum(seqs.values())

    def all_published(total: int, what: str, timeout: float = 30.0) -> float:
        started = time.monotonic()
        wait_for(lambda: published(db_path) == total, what=what, timeout=timeout)
        return time.monotonic() - started

    first, second = relays.start(), relays.start()
    total = append(25)  # while both start and race for the lease
    all_published(total, "the two relays to publish the first rows")
    holder = holder_pid(db_path)
    assert holder in (first, second)
    standby = second if holder == first else first
    wait_for(lambda: "standing by" in relays.log_of(standby), what="the standby to say so")

    # The holder hangs (alive, not renewing): the standby takes over once the lease expires.
    relays.procs[holder].send_signal(signal.SIGSTOP)
    hung_at = time.monotonic()
    total = append(25)
    all_published(total, "the standby to take over from the hung relay", timeout=LEASE_S + 20)
    took_over_s = time.monotonic() - hung_at
    assert holder_pid(db_path) == standby
    assert took_over_s < LEASE_S + 3.0, f"took {took_over_s:.1f}s"

    # Woken, the hung relay finds the lease is another's and publishes nothing more.
    relays.procs[holder].send_signal(signal.SIGCONT)
    wait_for(
        lambda: "standing by" in relays.log_of(holder).split("taken by", 1)[-1],
        what="the woken relay to stand by",
    )
    total = append(10)
    all_published(total, "the new holder to publish while the old one is awake again")

    # The new holder is killed: its process is gone, so the other takes over at once.
    relays.procs[standby].send_signal(signal.SIGKILL)
    relays.procs[standby].wait()
    killed_at = time.monotonic()
    total = append(25)
    all_published(total, "the survivor to take over from the killed relay", timeout=20)
    took_over_after_kill_s = time.monotonic() - killed_at
    assert holder_pid(db_path) == holder
    assert took_over_after_kill_s < LEASE_S + 1.5, f"took {took_over_after_kill_s:.1f}s"
    assert "taken over from" in relays.log_of(holder)

    # On the topic: every row exactly once, and each key's events in order.
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"probe-{kafka_topic}",
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
        }
    )
    try:
        consumer.subscribe([kafka_topic])
        records = consume(consumer, total, until_eof=range(PARTITIONS))
    finally:
        consumer.close()
    assert len(records) == total, f"{len(records) - total} duplicates"
    ids = [dict(r.headers() or [])["ce_id"] for r in records]
    assert len(set(ids)) == total
    by_key: dict[str, list[int]] = {}
    for record in records:
        key = (record.key() or b"").decode()
        by_key.setdefault(key, []).append(seq_of(record.value() or b"", counter_catalog[0]))
    assert by_key == {key: list(range(seqs[key])) for key in KEYS}
    print(
        f"takeover: hung {took_over_s:.2f}s (lease {LEASE_S}s), dead {took_over_after_kill_s:.2f}s"
    )


def seq_of(value: bytes, catalog: EventCatalog) -> int:
    """The ``seq`` of a CounterIncremented record (Confluent framing, then the Avro body)."""
    schema = catalog.get(COUNTER).parsed
    return int(schemaless_reader(io.BytesIO(value[5:]), schema, schema)["seq"])  # type: ignore[index,call-overload]
