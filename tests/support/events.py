"""Fixtures and helpers for meshkit.events tests: a real registry subprocess, test-only event
contracts registered with the real `schema-registry register-all`, producer/consumer databases.

Also runnable, so fault tests can kill a consumer PROCESS at a precise point:

    python tests/support/events.py consume --db D --bootstrap B --registry URL --catalog DIR \
        --topic T --group G [--instance I] [--kill-after N]

`--kill-after N` SIGKILLs the process right after the database commit of the transaction that
handled the N-th event (a batch applies many in one), before its Kafka offsets are committed (the
consumer commits offsets after each batch's transaction).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from meshkit.db import Database
from meshkit.events import INBOX_MIGRATION, OUTBOX_MIGRATION, Event, EventCatalog, EventConsumer
from support.registry import run_cli, serve

COUNTER = "shop.test.v1.CounterIncremented"
COUNTER_SCHEMA = {
    "type": "record",
    "name": "CounterIncremented",
    "namespace": "shop.test.v1",
    "doc": "A test counter went up by one. Key: the counter id.",
    "fields": [
        {"name": "counter", "type": "string", "doc": "The counter (aggregate id)."},
        {"name": "seq", "type": "long", "doc": "0, 1, 2... per counter."},
        {"name": "note", "type": "string", "default": "", "doc": "Free text."},
    ],
}

PRODUCER_MIGRATIONS = (
    "CREATE TABLE counters (counter TEXT PRIMARY KEY, value INTEGER NOT NULL);",
    OUTBOX_MIGRATION,
)
CONSUMER_MIGRATIONS = (
    # effects: how often each event's effect happened (must end at exactly 1 each);
    # applied: the order effects happened in, to check per-key order.
    "CREATE TABLE effects (ce_id TEXT PRIMARY KEY, times INTEGER NOT NULL);"
    "\nCREATE TABLE applied (n INTEGER PRIMARY KEY AUTOINCREMENT, counter TEXT, seq INTEGER);",
    INBOX_MIGRATION,
)


@pytest.fixture(scope="session")
def registry_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `schema-registry serve --storage memory` subprocess for the session."""
    with serve("--storage", "memory", cwd=tmp_path_factory.mktemp("registry")) as server:
        yield server.url


def write_contracts(directory: Path, topic: str, *schemas: dict[str, Any]) -> Path:
    """``directory``/avro/*.avsc plus topic.json, like proto/<context>/v1/avro/."""
    avro = directory / "avro"
    avro.mkdir(parents=True, exist_ok=True)
    (avro / "topic.json").write_text(json.dumps({"topic": topic}))
    for schema in schemas:
        (avro / f"{schema['name'].lower()}.avsc").write_text(json.dumps(schema, indent=2))
    return avro


def register_all(registry: str, directory: Path) -> None:
    """Register every .avsc under ``directory`` with the real CLI (as `mesh up` does)."""
    result = run_cli("register-all", str(directory), url=registry)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def counter_catalog(
    tmp_path: Path, kafka_topic: str, registry_url: str
) -> tuple[EventCatalog, Path]:
    """The CounterIncremented contract on this test's own topic, registered; and its dir."""
    avro = write_contracts(tmp_path / "contracts", kafka_topic, COUNTER_SCHEMA)
    register_all(registry_url, avro)
    return EventCatalog.load(avro), avro


@pytest.fixture
def producer_db(tmp_path: Path) -> Iterator[Database]:
    """A producer's database (a counters table and the outbox) in the test's tmp_path."""
    db = Database(tmp_path / "producer.db", PRODUCER_MIGRATIONS)
    yield db
    db.close()


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """Create ``topic`` with ``partitions`` partitions and wait until it exists."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, partitions, 1)])
    futures[topic].result(timeout=30)
    wait_for(
        lambda: len(admin.list_topics(topic, timeout=5).topics[topic].partitions) == partitions,
        what=f"{topic} with {partitions} partitions",
    )


def wait_for(predicate: Callable[[], bool], *, timeout: float = 30.0, what: str = "it") -> None:
    """Poll ``predicate`` until true; fail after ``timeout`` seconds (never a bare sleep)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.01)


def count_effects(db_path: Path) -> dict[str, int]:
    """``{ce_id: times its effect happened}`` read straight from a consumer database file."""
    with sqlite3.connect(db_path) as conn:
        return dict(conn.execute("SELECT ce_id, times FROM effects").fetchall())


def applied_order(db_path: Path) -> dict[str, list[int]]:
    """Per counter, the seqs in the order their effects were applied."""
    order: dict[str, list[int]] = {}
    with sqlite3.connect(db_path) as conn:
        for counter, seq in conn.execute("SELECT counter, seq FROM applied ORDER BY n"):
            order.setdefault(counter, []).append(seq)
    return order


def count_effect(event: Event, conn: sqlite3.Connection) -> None:
    """The test handler: one effect per call, recorded in the consumer's own transaction."""
    conn.execute(
        "INSERT INTO effects (ce_id, times) VALUES (?, 1)"
        " ON CONFLICT (ce_id) DO UPDATE SET times = times + 1",
        (event.id,),
    )
    conn.execute(
        "INSERT INTO applied (counter, seq) VALUES (?, ?)",
        (event.data["counter"], event.data["seq"]),
    )


def drain(consumer: EventConsumer, done: Callable[[], bool], timeout: float = 30.0) -> None:
    """Drive ``consumer.run_once`` until ``done()``; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"consumer did not finish in {timeout:.0f}s")
        consumer.run_once(0.2)


class _KillingDatabase(Database):
    """A Database that SIGKILLs the process right after the commit of the N-th handled event."""

    def __init__(self, *args: Any, kill_after: int, **kwargs: Any) -> None:
        self.handled = 0
        self.kill_after = kill_after
        super().__init__(*args, **kwargs)

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        before = self.handled
        with super().transaction(durable=durable) as conn:
            yield conn
        # Committed. If this transaction handled the N-th event, die before the offset commit.
        if self.kill_after and before < self.kill_after <= self.handled:
            os.kill(os.getpid(), signal.SIGKILL)


def _consume_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    for name in ("--db", "--bootstrap", "--registry", "--catalog", "--topic", "--group"):
        parser.add_argument(name, required=True)
    parser.add_argument("--instance")
    parser.add_argument("--kill-after", type=int, default=0)
    args = parser.parse_args(argv)
    db = _KillingDatabase(args.db, CONSUMER_MIGRATIONS, kill_after=args.kill_after)

    def handler(event: Event, conn: sqlite3.Connection) -> None:
        count_effect(event, conn)
        db.handled += 1

    consumer = EventConsumer(
        db,
        bootstrap=args.bootstrap,
        group=args.group,
        topics=[args.topic],
        registry=args.registry,
        catalog=EventCatalog.load(args.catalog),
        handlers={COUNTER: handler},
        instance_id=args.instance,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the test kills us; this bound only guards a hang
        consumer.run_once(0.2)
    consumer.close()
    return 1


def start_consumer_process(*args: str) -> Any:
    """Start this file's `consume` mode as a subprocess (the caller kills/waits for it)."""
    import subprocess

    tests_dir = str(Path(__file__).resolve().parents[1])  # so `support.*` imports as in pytest
    return subprocess.Popen(
        [sys.executable, __file__, "consume", *args],
        env={**os.environ, "PYTHONPATH": tests_dir},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["consume"]:
        raise SystemExit(_consume_main(sys.argv[2:]))
    raise SystemExit(f"usage: {sys.argv[0]} consume ...")
