#!/usr/bin/env python3
"""Benchmark the event backbone against raw Kafka on this machine, in the same run.

meshkit, laid out as two services are: this process is the PRODUCING service (commands append
events to its outbox in SQLite transactions, its relay thread publishes them with an idempotent
producer), a child process is the CONSUMING service (an EventConsumer applies each event exactly
once: inbox mark + effect row in the batch's transaction, offsets committed after). Both databases
are durable (synchronous=FULL). Measured:

- sustained: commands append for ``--duration`` s as fast as they can, ``--per-tx`` events per
  transaction (a command writing several events; one event per commit is capped by the fsync of
  each commit, printed apart as "appends, 1 per tx"); figure = events / (last effect - first
  append), so a consumer falling behind counts against it;
- paced: one event per transaction at ``--rate``/s for ``--paced-seconds``; append -> effect
  latency p50/p99.

Baseline: the very same framed bytes produced with a plain confluent-kafka Producer (idempotent,
acks=all) and read by a plain Consumer, no database anywhere: the limit of the exchange here.
Figures go to .bench/results.json (scripts/benchlib.py). Needs the real broker (started with
scripts/kafka when it is not running, and stopped again afterwards).

    .venv/bin/python scripts/bench_events.py [--duration 30] [--per-tx 10] [--rate 1000]
"""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from benchlib import percentile, record
from confluent_kafka import Consumer, Producer

from meshkit.db import Database
from meshkit.events import (
    INBOX_MIGRATION,
    OUTBOX_MIGRATION,
    Event,
    EventCatalog,
    EventConsumer,
    EventType,
    Outbox,
    OutboxRelay,
)
from meshkit.events.kafkalog import with_python_logging
from schema_registry.client import RegistryClient

ROOT = Path(__file__).resolve().parent.parent
KAFKA = ROOT / "scripts" / "kafka"
REGISTRY = str(ROOT / ".venv" / "bin" / "schema-registry")
BOOTSTRAP = "127.0.0.1:9092"
SCHEMA = """{"type": "record", "name": "Tick", "namespace": "shop.bench.v1",
 "doc": "A benchmark event.", "fields": [
  {"name": "seq", "type": "long", "doc": "Sequence number."},
  {"name": "sku", "type": "string", "doc": "A SKU-sized string."},
  {"name": "quantity", "type": "int", "doc": "A quantity."}]}"""
TYPE = "shop.bench.v1.Tick"
EFFECTS = "CREATE TABLE effects (seq INTEGER PRIMARY KEY, latency_ms REAL, at REAL);"
KEYS = 64
RAW_MAX = 200_000  # the baseline's burst: enough for a steady rate, and quick to frame


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    """Poll ``predicate`` until true; exit with a message after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            sys.exit(f"bench_events: timed out waiting for {what}")
        time.sleep(0.01)  # poll interval within the deadline loop


def pace(start: float, index: int, interval_s: float) -> None:
    """Hold the sender to one step per ``interval_s`` (a rate limit, not a wait for a state)."""
    delay = start + index * interval_s - time.perf_counter()
    if delay > 0:
        time.sleep(delay)


def tick(seq: int) -> dict[str, Any]:
    return {"seq": seq, "sku": f"sku-{seq % 97}", "quantity": 1}


# --- the consuming service (a child process) ------------------------------------------------


def consume_main(argv: list[str]) -> int:
    """``bench_events.py consume DB REGISTRY TOPIC GROUP``: apply events until SIGTERM."""
    import signal

    db_path, registry_url, topic, group = argv
    catalog = EventCatalog([EventType.from_text(SCHEMA, topic)])
    db = Database(db_path, [INBOX_MIGRATION, EFFECTS])

    def apply(event: Event, conn: sqlite3.Connection) -> None:
        assert event.time is not None
        now = time.time()
        latency = (now - event.time.timestamp()) * 1000
        conn.execute("INSERT INTO effects VALUES (?, ?, ?)", (event.data["seq"], latency, now))

    consumer = EventConsumer(
        db,
        bootstrap=BOOTSTRAP,
        group=group,
        topics=[topic],
        registry=registry_url,
        handlers={TYPE: apply},
        catalog=catalog,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("ready", flush=True)
    try:
        consumer.run_forever(stop, poll_s=0.1)
    finally:
        consumer.close()
        db.close()
    return 0


class Effects:
    """The consuming service's effects table, read from this process."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(path, timeout=10)

    def count(self) -> int:
        return int(self._conn.execute("SELECT count(*) FROM effects").fetchone()[0])

    def rows(self) -> list[tuple[int, float, float]]:
        return list(self._conn.execute("SELECT seq, latency_ms, at FROM effects ORDER BY seq"))

    def close(self) -> None:
        self._conn.close()


# --- meshkit: producing service here, consuming service in a child ---------------------------


def start_consumer(db_path: Path, registry_url: str, topic: str) -> subprocess.Popen[str]:
    """The consuming service, started and ready (subscribed)."""
    group = f"bench-{uuid.uuid4().hex}"
    child = subprocess.Popen(
        [sys.executable, __file__, "consume", str(db_path), registry_url, topic, group],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    if child.stdout.readline().strip() != "ready":
        sys.exit("bench_events: the consuming process did not start")
    return child


def run_meshkit(
    registry_url: str,
    topic: str,
    work: Path,
    *,
    duration_s: float,
    per_tx: int = 1,
    interval_s: float = 0.0,
) -> dict[str, Any]:
    """Append for ``duration_s`` (``per_tx`` events per transaction, flat out, or one per
    ``interval_s``), then wait for every effect. Returns counts, timings and latencies."""
    catalog = EventCatalog([EventType.from_text(SCHEMA, topic)])
    work.mkdir(parents=True, exist_ok=True)
    producer_db = Database(work / "producer.db", [OUTBOX_MIGRATION])
    consumer_path = work / "consumer.db"
    Database(consumer_path, [INBOX_MIGRATION, EFFECTS]).close()
    outbox = Outbox(catalog, registry_url, source="/bench")
    outbox.verify()
    relay = OutboxRelay(producer_db, BOOTSTRAP, topics=[topic])
    relay.create_topics()
    child = start_consumer(consumer_path, registry_url, topic)
    effects = Effects(consumer_path)
    stop = threading.Event()
    worker = threading.Thread(target=relay.run_forever, args=(stop,))
    try:
        worker.start()
        # Warm-up: one event end to end, so group join and producer id are not in the figures.
        with producer_db.transaction() as conn:
            outbox.append(conn, TYPE, tick(-1), key="warm")
        wait_for(lambda: effects.count() >= 1, 60, "the warm-up event")
        seq = 0
        started, wall_started = time.perf_counter(), time.time()
        stop_at = started + duration_s
        step = 0
        while time.perf_counter() < stop_at:
            if interval_s:
                pace(started, step, interval_s)
            with producer_db.transaction() as conn:
                for _ in range(per_tx):
                    outbox.append(conn, TYPE, tick(seq), key=f"agg-{seq % KEYS}")
                    seq += 1
            step += 1
        appended_s = time.perf_counter() - started
        n = seq + 1  # with the warm-up event
        wait_for(lambda: effects.count() >= n, 300, "meshkit effects")
        rows = effects.rows()
    finally:
        stop.set()
        if worker.is_alive():
            worker.join(30)
        relay.close()
        child.terminate()
        child.wait(30)
        effects.close()
        producer_db.close()
    if len(rows) != n or len({r[0] for r in rows}) != n:
        sys.exit(f"bench_events: {len(rows)} effects for {n} events (expected exactly once)")
    last_effect = max(r[2] for r in rows)
    elapsed = last_effect - wall_started
    latencies = [r[1] for r in rows if r[0] >= 0]
    return {
        "events": n - 1,
        "appended_per_s": (n - 1) / appended_s,
        "per_s": (n - 1) / elapsed,
        "drain_s": max(0.0, elapsed - appended_s),
        "latencies": latencies,
    }


def framed_values(registry_url: str, topic: str, n: int, work: Path) -> list[bytes]:
    """The same Confluent-framed bytes the outbox stores, for the baseline to send."""
    work.mkdir(parents=True, exist_ok=True)
    catalog = EventCatalog([EventType.from_text(SCHEMA, topic)])
    db = Database(work / "frames.db", [OUTBOX_MIGRATION], durable=False)
    outbox = Outbox(catalog, registry_url, source="/bench")
    with db.transaction() as conn:
        for seq in range(n):
            outbox.append(conn, TYPE, tick(seq), key=f"agg-{seq % KEYS}")
    with db.snapshot() as conn:
        values = [bytes(row[0]) for row in conn.execute("SELECT value FROM meshkit_outbox")]
    db.close()
    return values


def run_raw(values: list[bytes], topic: str, interval_s: float = 0.0) -> tuple[float, list[float]]:
    """Plain produce and consume of ``values``; returns (events/s, latencies in ms)."""
    n = len(values)
    consumer = Consumer(
        with_python_logging(
            {
                "bootstrap.servers": BOOTSTRAP,
                "group.id": f"bench-raw-{uuid.uuid4().hex}",
                "fetch.wait.max.ms": 20,
                "auto.offset.reset": "earliest",
            }
        )
    )
    consumer.subscribe([topic])
    latencies: list[float] = []
    warm = threading.Event()

    def consume() -> None:
        deadline = time.monotonic() + 300
        while len(latencies) < n and time.monotonic() < deadline:
            # consume(N, timeout) waits for N records or the timeout: block for the first one
            # only, then take what is already buffered, so a trickle is not held back.
            first = consumer.poll(0.1)
            if first is None:
                continue
            for msg in [first, *consumer.consume(499, 0)]:
                if msg.error() is None:
                    headers = dict(msg.headers() or [])
                    if "warm-up" in headers:
                        warm.set()
                        continue
                    sent = float(headers["t"] or 0)  # bytes, as produced
                    latencies.append((time.time() - sent) * 1000)

    reader = threading.Thread(target=consume)
    reader.start()
    producer = Producer(
        with_python_logging(
            {
                "bootstrap.servers": BOOTSTRAP,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
            }
        )
    )
    # Warm-up, as on the meshkit side: group join and producer id stay out of the figures.
    producer.produce(topic, values[0], key="warm", headers=[("warm-up", b"1")])
    producer.flush(30)
    if not warm.wait(60):
        sys.exit("bench_events: the baseline's warm-up record never arrived")
    started = time.perf_counter()
    for seq, value in enumerate(values):
        if interval_s:
            pace(started, seq, interval_s)
        while True:
            try:
                producer.produce(
                    topic,
                    value,
                    key=f"agg-{seq % KEYS}",
                    headers=[("t", str(time.time()).encode())],
                )
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    producer.flush(60)
    reader.join()
    elapsed = time.perf_counter() - started
    consumer.close()
    if len(latencies) != n:
        sys.exit(f"bench_events: baseline consumed {len(latencies)} of {n}")
    return n / elapsed, latencies


def report(
    args: argparse.Namespace,
    *,
    mesh: dict[str, Any],
    single: dict[str, Any] | None,
    paced: dict[str, Any],
    raw_rate: float,
    raw_lat: list[float],
) -> None:
    """Print the figures and record them in .bench/results.json."""
    mesh_lat = paced["latencies"]
    p50, p99 = percentile(mesh_lat, 0.5), percentile(mesh_lat, 0.99)
    raw_p50, raw_p99 = percentile(raw_lat, 0.5), percentile(raw_lat, 0.99)
    print()
    print(
        f"meshkit sustained: {mesh['events']:,} events in {args.duration:.0f} s of appends"
        f" ({mesh['appended_per_s']:,.0f}/s appended), all applied {mesh['drain_s']:.1f} s after"
        f" the last append: {mesh['per_s']:,.0f} events/s end to end"
    )
    if single is not None:
        print(
            f"meshkit, 1 event per transaction: {single['per_s']:,.0f} events/s end to end"
            f" (appends {single['appended_per_s']:,.0f}/s: one fsync per commit)"
        )
    print(f"raw produce->consume: {raw_rate:,.0f} events/s")
    print(
        f"ratio (meshkit / raw throughput): {mesh['per_s'] / raw_rate:.3f}; latency at"
        f" {args.rate:.0f}/s p50 {p50:.1f} ms, p99 {p99:.1f} ms (raw: p50 {raw_p50:.1f},"
        f" p99 {raw_p99:.1f}; {len(mesh_lat):,} events)"
    )
    baseline = "raw confluent-kafka produce->consume, events/s"
    record("events.throughput", mesh["per_s"], "events/s", baseline=raw_rate,
           baseline_name=baseline, target=10_000, duration_s=args.duration,
           events_per_tx=args.per_tx)  # fmt: skip
    if single is not None:
        record("events.throughput.one_per_tx", single["per_s"], "events/s", baseline=raw_rate,
               baseline_name=baseline)  # fmt: skip
    lat_base = f"raw confluent-kafka at {args.rate:.0f}/s"
    record(f"events.paced{args.rate:.0f}.p99", p99, "ms", baseline=raw_p99,
           baseline_name=f"{lat_base}, p99", better="lower", target=50)  # fmt: skip
    record(f"events.paced{args.rate:.0f}.p50", p50, "ms", baseline=raw_p50,
           baseline_name=f"{lat_base}, p50", better="lower")  # fmt: skip


def main() -> int:
    if sys.argv[1:2] == ["consume"]:
        return consume_main(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=30.0, help="sustained run, s (30)")
    parser.add_argument("--per-tx", type=int, default=10, help="events per append tx (10)")
    parser.add_argument("--rate", type=float, default=1000.0, help="paced events/s (1000)")
    parser.add_argument("--paced-seconds", type=float, default=10.0, help="paced run, s (10)")
    parser.add_argument(
        "--single-seconds", type=float, default=5.0, help="1-event-per-tx run, s (5; 0: skip)"
    )
    args = parser.parse_args()
    status = subprocess.run([str(KAFKA), "status"], capture_output=True, check=False)
    started_kafka = status.returncode != 0
    if started_kafka:
        subprocess.run([str(KAFKA), "start"], check=True)
    registry = subprocess.Popen(
        [REGISTRY, "serve", "--port", "0", "--storage", "memory"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert registry.stdout is not None
        line = registry.stdout.readline()  # "schema-registry listening on http://host:port ..."
        url = line.split("listening on ", 1)[1].split()[0]
        run = uuid.uuid4().hex[:8]
        names = ("meshkit", "single", "raw", "meshkit-paced", "raw-paced")
        topics = {name: f"bench.{name}.{run}" for name in names}
        client = RegistryClient(url)
        for topic in topics.values():
            reply = client.post(f"/subjects/{topic}-{TYPE}/versions", {"schema": SCHEMA})
            assert reply.status == 200, reply.json()
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            print(
                f"==> meshkit sustained: {args.duration:.0f} s of appends, {args.per_tx} events"
                " per transaction; outbox -> relay -> Kafka -> consumer (exactly once)",
                flush=True,
            )
            mesh = run_meshkit(
                url, topics["meshkit"], work / "a", duration_s=args.duration, per_tx=args.per_tx
            )
            single = None
            if args.single_seconds > 0:
                print(f"==> meshkit, 1 event per transaction, {args.single_seconds:.0f} s")
                single = run_meshkit(
                    url, topics["single"], work / "s", duration_s=args.single_seconds
                )
            raw_n = min(mesh["events"], RAW_MAX)
            print(f"==> raw confluent-kafka: {raw_n:,} of the same framed values", flush=True)
            values = framed_values(url, topics["raw"], raw_n, work / "b")
            raw_rate, _ = run_raw(values, topics["raw"])
            interval = 1.0 / args.rate
            print(
                f"==> latency: {args.rate:.0f}/s for {args.paced_seconds:.0f} s, meshkit then raw",
                flush=True,
            )
            paced = run_meshkit(
                url,
                topics["meshkit-paced"],
                work / "c",
                duration_s=args.paced_seconds,
                interval_s=interval,
            )
            _, raw_lat = run_raw(
                framed_values(url, topics["raw-paced"], paced["events"], work / "d"),
                topics["raw-paced"],
                interval,
            )
    finally:
        registry.terminate()
        registry.wait(10)
        if started_kafka:
            subprocess.run([str(KAFKA), "stop"], check=False)
    report(args, mesh=mesh, single=single, paced=paced, raw_rate=raw_rate, raw_lat=raw_lat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
