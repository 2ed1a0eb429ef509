"""Consumer promises on real Kafka: an effect happens once even when the consumer dies between
its database commit and its offset commit; a record that cannot be handled or decoded goes to
the dead-letter topic with its error, later records of its key follow it there (parked), other
keys carry on, and `mesh dlq` shows and replays them in order. An outage of the schema registry
or a long transient handler error is no bad data: records wait (nothing dead-lettered, no offset
committed past them) and none is lost or reordered."""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

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
    register_all,
    start_consumer_process,
    wait_for,
)
from support.registry import ServeProcess

from meshkit.db import Database
from meshkit.events import (
    Event,
    EventCatalog,
    EventConsumer,
    Handler,
    Outbox,
    OutboxRelay,
    TransientError,
    read_dead_letters,
)

pytestmark = pytest.mark.kafka
MESH = Path(sys.executable).parent / "mesh"
Publish = Callable[..., list[str]]


@pytest.fixture
def publish(
    tmp_path: Path,
    kafka_bootstrap: str,
    registry_url: str,
    counter_catalog: tuple[EventCatalog, Path],
) -> Iterator[Publish]:
    """publish(counter, n): n CounterIncremented events of one counter (seq 0..n-1), or
    publish([(counter, seq), ...]): those, through the outbox and relay; their ids.
    ``registry=URL`` encodes them with another registry's schema ids."""
    catalog, _ = counter_catalog
    db = Database(tmp_path / "producer.db", PRODUCER_MIGRATIONS)
    relay = OutboxRelay(db, kafka_bootstrap)
    outboxes: dict[str, Outbox] = {}

    def run(
        events: str | list[tuple[str, int]], n: int = 0, *, registry: str = registry_url
    ) -> list[str]:
        pairs = [(events, seq) for seq in range(n)] if isinstance(events, str) else events
        if registry not in outboxes:
            outboxes[registry] = Outbox(catalog, registry, source="/meshkit/test")
        with db.transaction() as conn:
            ids = [
                outboxes[registry].append(conn, COUNTER, {"counter": c, "seq": s}, key=c)
                for c, s in pairs
            ]
        assert relay.run_once() == len(pairs)
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
    """make_consumer(handler, instance_id=None, registry=URL, **options): an EventConsumer over
    tmp_path/consumer.db (the session's registry unless ``registry`` is given)."""
    made: list[tuple[EventConsumer, Database]] = []

    def make(
        handler: Handler = count_effect,
        instance_id: str | None = None,
        *,
        registry: str = registry_url,
        **options: Any,
    ) -> EventConsumer:
        db = Database(tmp_path / "consumer.db", CONSUMER_MIGRATIONS)
        consumer = EventConsumer(
            db,
            bootstrap=kafka_bootstrap,
            group=f"g-{kafka_topic}",
            topics=[kafka_topic],
            registry=registry,
            catalog=counter_catalog[0],
            handlers={COUNTER: handler},
            instance_id=instance_id,
            **options,
        )
        made.append((consumer, db))
        return consumer

    yield make
    for consumer, db in made:
        with contextlib.suppress(RuntimeError):  # closed by the test already
            consumer.close()
        db.close()


def settle_all(consumer: EventConsumer) -> None:
    """Run until two polls in a row find nothing, so late duplicates would have shown up."""
    idle = 0
    while idle < 2:
        idle = idle + 1 if consumer.run_once(0.3) == 0 else 0


def run_for(consumer: EventConsumer, seconds: float) -> None:
    """Drive the loop for ``seconds`` (the time an outage lasts)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        consumer.run_once(0.1)


def test_killed_between_db_commit_and_offset_commit_the_effect_happens_once(
    tmp_path: Path,
    kafka_bootstrap: str,
    kafka_topic: str,
    registry_url: str,
    counter_catalog: tuple[EventCatalog, Path],
    publish: Publish,
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
    before = count_effects(db_path)
    assert len(before) >= 5  # the batch holding the 5th event committed its effects...
    assert set(before.values()) == {1}
    probe = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})
    try:
        (committed,) = probe.committed([TopicPartition(kafka_topic, 0)], timeout=10)
    finally:
        probe.close()
    assert committed.offset < len(before)  # ...but not their offsets: they will be redelivered

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
    publish: Publish,
    make_consumer: Callable[..., EventConsumer],
) -> None:
    broken = True

    def handler(event: Event, conn: sqlite3.Connection) -> None:
        if broken and event.data["seq"] == 2:
            raise ValueError("seq 2 is cursed")
        count_effect(event, conn)

    ids = publish("p", 5)
    other = publish("q", 1)
    db_path = tmp_path / "consumer.db"
    consumer = make_consumer(handler)
    drain(consumer, lambda: other[0] in count_effects(db_path))  # carried on past the poison
    settle_all(consumer)
    # ...for other keys: p/3 and p/4 are parked behind p/2, not applied ahead of it
    assert applied_order(db_path) == {"p": [0, 1], "q": [0]}

    listed = run_mesh("dlq", "ls", kafka_topic, "--json", "--bootstrap", kafka_bootstrap)
    row, *parked = json.loads(listed.stdout)
    assert [(r["ce_id"], r["error_type"]) for r in parked] == [
        (ids[3], "KeyParked"),
        (ids[4], "KeyParked"),
    ]
    assert ids[2] in parked[0]["error"]  # names the dead letter the key waits behind
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
    letter, *_ = read_dead_letters(kafka_bootstrap, kafka_topic)
    original = dict(letter.original_headers())
    assert original["ce_id"] == ids[2].encode() and "dlq_error" not in original

    broken = False
    replayed = run_mesh("dlq", "replay", kafka_topic, "--bootstrap", kafka_bootstrap)
    assert "replayed 3" in replayed.stdout
    drain(consumer, lambda: len(count_effects(db_path)) == 6)
    again = run_mesh("dlq", "replay", kafka_topic, "--bootstrap", kafka_bootstrap)
    assert "replayed 0" in again.stdout  # progress is committed: nothing is sent twice
    settle_all(consumer)
    assert count_effects(db_path) == dict.fromkeys(ids + other, 1)
    assert applied_order(db_path) == {"p": [0, 1, 2, 3, 4], "q": [0]}  # the key's order kept

    (later,) = publish([("p", 5)])  # unparked: the key's next event is applied at once
    drain(consumer, lambda: later in count_effects(db_path))
    assert len(read_dead_letters(kafka_bootstrap, kafka_topic)) == 3


def test_undecodable_and_unknown_records_do_not_stop_the_loop(
    tmp_path: Path,
    kafka_bootstrap: str,
    kafka_topic: str,
    publish: Publish,
    make_consumer: Callable[..., EventConsumer],
) -> None:
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    bad = {
        "bad-1": b"\x00\x00\x00\x00\x01garbage",  # a known schema id, bytes that do not match
        "bad-2": b"\x07\x00\x00\x00\x01\x02a\x00\x00",  # not Confluent framing (magic byte)
        "bad-3": b"\x00\x7f\xff\xff\xff\x02a\x00\x00",  # a schema id the registry 404s
    }
    for n, (ce_id, value) in enumerate(bad.items()):
        producer.produce(
            kafka_topic, key=f"x{n}".encode(), value=value,
            headers=[("ce_id", ce_id.encode()), ("ce_type", COUNTER.encode())],
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

    letters = read_dead_letters(kafka_bootstrap, kafka_topic)
    summaries = [letter.summary() for letter in letters]
    assert [(s["ce_id"], s["key"], s["offset"]) for s in summaries] == [
        ("bad-1", "x0", 0),
        ("bad-2", "x1", 1),
        ("bad-3", "x2", 2),
    ]
    assert all(s["error"] for s in summaries)
    assert "40403" in summaries[2]["error"]  # the registry's own answer: no such schema
    assert [letter.value for letter in letters] == list(bad.values())  # the original bytes
    with sqlite3.connect(db_path) as conn:
        outcomes = dict(conn.execute("SELECT event_id, outcome FROM meshkit_inbox").fetchall())
    assert outcomes == {"other-1": "skipped", ids[0]: "handled"}


def test_a_registry_outage_holds_records_back_and_loses_or_reorders_none(
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    kafka_bootstrap: str,
    kafka_topic: str,
    counter_catalog: tuple[EventCatalog, Path],
    publish: Publish,
    make_consumer: Callable[..., EventConsumer],
) -> None:
    caplog.set_level(logging.WARNING, logger="meshkit.events.consumer")
    storage = ("--storage", f"sqlite:///{tmp_path / 'registry.db'}")
    registry = ServeProcess(*storage, cwd=tmp_path).start()
    try:
        url = registry.url
        register_all(url, counter_catalog[1])
        ids = publish([(c, s) for s in range(4) for c in ("a", "b")], registry=url)
        registry.stop()  # down while every event is still unread: the consumer has no schema yet

        db_path = tmp_path / "consumer.db"
        consumer = make_consumer(registry=url, max_retry_backoff_s=0.5)
        run_for(consumer, 2.0)
        assert read_dead_letters(kafka_bootstrap, kafka_topic) == [], "outage taken for bad data"
        assert count_effects(db_path) == {}

        # Stoppable while the registry is still down: once it is retrying again, stop it.
        retries = len(caplog.records)
        stop = threading.Event()
        loop = threading.Thread(target=consumer.run_forever, args=(stop,), kwargs={"poll_s": 0.1})
        loop.start()
        wait_for(lambda: len(caplog.records) > retries, what="run_forever to retry")
        stop.set()
        loop.join(timeout=2)
        assert not loop.is_alive(), "run_forever did not stop during the outage"

        registry = ServeProcess(*storage, "--port", url.rsplit(":", 1)[1], cwd=tmp_path).start()
        assert registry.url == url
        drain(consumer, lambda: len(count_effects(db_path)) == len(ids))
        settle_all(consumer)
    finally:
        registry.stop()
    assert count_effects(db_path) == dict.fromkeys(ids, 1)
    assert applied_order(db_path) == {"a": [0, 1, 2, 3], "b": [0, 1, 2, 3]}
    assert read_dead_letters(kafka_bootstrap, kafka_topic) == []


@pytest.fixture
def broken_registry() -> Iterator[Callable[[str], str]]:
    """broken_registry(mode): the URL of a registry stand-in that answers every request with
    503 ("503") or never answers at all ("hang"): failures the real one cannot be put in."""
    servers: list[ThreadingHTTPServer] = []
    done = threading.Event()

    def start(mode: str) -> str:
        class Broken(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if mode == "hang":
                    done.wait(30)
                    return
                body = b'{"error_code": 50001, "message": "storage unavailable"}'
                self.send_response(503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Broken)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    done.set()
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("mode", ["503", "hang"])
def test_a_registry_answering_5xx_or_not_at_all_is_an_outage_too(
    mode: str,
    tmp_path: Path,
    kafka_bootstrap: str,
    kafka_topic: str,
    publish: Publish,
    make_consumer: Callable[..., EventConsumer],
    broken_registry: Callable[[str], str],
) -> None:
    ids = publish([("k", 0), ("k", 1), ("j", 0)])
    db_path = tmp_path / "consumer.db"
    broken = make_consumer(registry=broken_registry(mode), registry_timeout_s=0.3)
    run_for(broken, 1.5)
    broken.close()  # leaves the group; a consumer with a working registry starts where it was
    assert read_dead_letters(kafka_bootstrap, kafka_topic) == []
    assert count_effects(db_path) == {}

    consumer = make_consumer()
    drain(consumer, lambda: len(count_effects(db_path)) == len(ids))
    settle_all(consumer)
    assert applied_order(db_path) == {"k": [0, 1], "j": [0]}  # nothing was committed past them
    assert read_dead_letters(kafka_bootstrap, kafka_topic) == []


def test_a_long_transient_handler_error_is_retried_in_place_not_dead_lettered(
    tmp_path: Path,
    kafka_bootstrap: str,
    kafka_topic: str,
    publish: Publish,
    make_consumer: Callable[..., EventConsumer],
) -> None:
    failing_until: list[float] = []

    def handler(event: Event, conn: sqlite3.Connection) -> None:
        if (event.data["counter"], event.data["seq"]) == ("k", 1):
            if not failing_until:
                failing_until.append(time.monotonic() + 3.0)
            if time.monotonic() < failing_until[0]:
                raise TransientError("the payments service is restarting")
        count_effect(event, conn)

    ids = publish([("k", 0), ("k", 1), ("j", 0), ("k", 2), ("k", 3), ("j", 1)])
    db_path = tmp_path / "consumer.db"
    consumer = make_consumer(handler)
    drain(consumer, lambda: 3 in applied_order(db_path).get("k", []))
    settle_all(consumer)
    assert applied_order(db_path) == {"k": [0, 1, 2, 3], "j": [0, 1]}
    assert read_dead_letters(kafka_bootstrap, kafka_topic) == []
    assert failing_until and time.monotonic() >= failing_until[0]  # it did fail for 3 s
    assert count_effects(db_path) == dict.fromkeys(ids, 1)


def test_give_up_after_s_dead_letters_a_record_still_failing_and_parks_its_key(
    tmp_path: Path,
    kafka_bootstrap: str,
    kafka_topic: str,
    publish: Publish,
    make_consumer: Callable[..., EventConsumer],
) -> None:
    def handler(event: Event, conn: sqlite3.Connection) -> None:
        if (event.data["counter"], event.data["seq"]) == ("k", 0):
            raise TransientError("never comes back")
        count_effect(event, conn)

    ids = publish([("k", 0), ("k", 1), ("j", 0)])
    db_path = tmp_path / "consumer.db"
    consumer = make_consumer(handler, give_up_after_s=0.5)
    drain(consumer, lambda: len(read_dead_letters(kafka_bootstrap, kafka_topic)) == 2)
    settle_all(consumer)
    assert applied_order(db_path) == {"j": [0]}
    letters = [letter.summary() for letter in read_dead_letters(kafka_bootstrap, kafka_topic)]
    assert [(s["ce_id"], s["error_type"]) for s in letters] == [
        (ids[0], "TransientError"),
        (ids[1], "KeyParked"),
    ]


def run_mesh(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(MESH), *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result
