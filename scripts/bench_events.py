#!/usr/bin/env python3
"""Benchmark the event backbone against raw Kafka on this machine, in the same run.

meshkit: each event is appended to the outbox in its own SQLite transaction (as a command
would), the relay publishes it with an idempotent producer, and an EventConsumer applies it once
(inbox mark + effect row in one transaction, offset committed after). Measured: events/s from
the first append to the last effect of a burst, and append-to-effect latency p50/p99 of events
paced at --rate (below saturation; a burst's latencies are mostly queueing, printed apart).

Baseline: the very same framed bytes produced with a plain confluent-kafka Producer (idempotent,
acks=all) and read by a plain Consumer, no database anywhere: the limit of the exchange here.
The report is the ratio of the two. Needs the real broker (started with scripts/kafka when it
is not running, and stopped again afterwards).

    .venv/bin/python scripts/bench_events.py [--events 5000] [--paced 400] [--rate 200]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

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
from schema_registry.client import RegistryClient

ROOT = Path(__file__).resolve().parent.parent
KAFKA = ROOT / "scripts" / "kafka"
BOOTSTRAP = "127.0.0.1:9092"
SCHEMA = """{"type": "record", "name": "Tick", "namespace": "shop.bench.v1",
 "doc": "A benchmark event.", "fields": [
  {"name": "seq", "type": "long", "doc": "Sequence number."},
  {"name": "sku", "type": "string", "doc": "A SKU-sized string."},
  {"name": "quantity", "type": "int", "doc": "A quantity."}]}"""
TYPE = "shop.bench.v1.Tick"


def wait_for(predicate: object, timeout: float, what: str) -> None:
    """Poll ``predicate`` until true; exit with a message after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            sys.exit(f"bench_events: timed out waiting for {what}")
        time.sleep(0.01)  # poll interval within the deadline loop


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def pace(start: float, index: int, interval_s: float) -> None:
    """Hold the sender to one event per ``interval_s`` (a rate limit, not a wait for a state)."""
    delay = start + index * interval_s - time.perf_counter()
    if delay > 0:
        time.sleep(delay)


def run_meshkit(
    n: int, registry_url: str, topic: str, work: Path, interval_s: float = 0.0
) -> tuple[float, list[float]]:
    """Outbox -> relay -> consumer; returns (events/s, latencies in ms). ``interval_s`` > 0
    paces the appends (for latency below saturation); 0 sends a burst (for throughput)."""
    catalog = EventCatalog([EventType.from_text(SCHEMA, topic)])
    work.mkdir(parents=True, exist_ok=True)
    producer_db = Database(work / "producer.db", [OUTBOX_MIGRATION])
    consumer_db = Database(
        work / "consumer.db",
        [INBOX_MIGRATION, "CREATE TABLE effects (seq INTEGER PRIMARY KEY, latency_ms REAL);"],
    )
    outbox = Outbox(catalog, registry_url, source="/bench")
    outbox.verify()
    relay = OutboxRelay(producer_db, BOOTSTRAP)
    effects = [0]

    def apply(event: Event, conn: object) -> None:
        assert event.time is not None
        latency = (time.time() - event.time.timestamp()) * 1000
        conn.execute(  # type: ignore[attr-defined]
            "INSERT INTO effects VALUES (?, ?)", (event.data["seq"], latency)
        )
        effects[0] += 1

    consumer = EventConsumer(
        consumer_db,
        bootstrap=BOOTSTRAP,
        group=f"bench-{uuid.uuid4().hex}",
        topics=[topic],
        registry=registry_url,
        handlers={TYPE: apply},
        catalog=catalog,
    )
    stop = threading.Event()
    workers = [
        threading.Thread(target=relay.run_forever, args=(stop,)),
        threading.Thread(target=consumer.run_forever, args=(stop,)),
    ]
    for worker in workers:
        worker.start()
    # Warm-up: one event end to end, so group join and producer id are not in the figures.
    with producer_db.transaction() as conn:
        outbox.append(conn, TYPE, {"seq": -1, "sku": "warm", "quantity": 1}, key="warm")
    wait_for(lambda: effects[0] >= 1, 60, "the warm-up event")
    n += 1
    started = time.perf_counter()
    for seq in range(n - 1):
        pace(started, seq, interval_s)
        with producer_db.transaction() as conn:
            outbox.append(
                conn,
                TYPE,
                {"seq": seq, "sku": f"sku-{seq % 97}", "quantity": 1},
                key=f"agg-{seq % 64}",
            )
    wait_for(lambda: effects[0] >= n, 120, "meshkit effects")
    elapsed = time.perf_counter() - started
    stop.set()
    for worker in workers:
        worker.join(30)
    relay.close()
    consumer.close()
    with consumer_db.snapshot() as conn:
        latencies = [r[0] for r in conn.execute("SELECT latency_ms FROM effects ORDER BY seq")]
        applied = conn.execute("SELECT count(*) FROM effects").fetchone()[0]
    if applied != n:
        sys.exit(f"bench_events: {applied} effects for {n} events (expected exactly once)")
    producer_db.close()
    consumer_db.close()
    return (n - 1) / elapsed, latencies[1:]


def framed_values(registry_url: str, topic: str, n: int, work: Path) -> list[bytes]:
    """The same Confluent-framed bytes the outbox stores, for the baseline to send."""
    work.mkdir(parents=True, exist_ok=True)
    catalog = EventCatalog([EventType.from_text(SCHEMA, topic)])
    db = Database(work / "frames.db", [OUTBOX_MIGRATION])
    outbox = Outbox(catalog, registry_url, source="/bench")
    with db.transaction() as conn:
        for seq in range(n):
            outbox.append(
                conn,
                TYPE,
                {"seq": seq, "sku": f"sku-{seq % 97}", "quantity": 1},
                key=f"agg-{seq % 64}",
            )
    with db.snapshot() as conn:
        values = [bytes(row[0]) for row in conn.execute("SELECT value FROM meshkit_outbox")]
    db.close()
    return values


def run_raw(values: list[bytes], topic: str, interval_s: float = 0.0) -> tuple[float, list[float]]:
    """Plain produce and consume of ``values``; returns (events/s, latencies in ms)."""
    n = len(values)
    consumer = Consumer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "group.id": f"bench-raw-{uuid.uuid4().hex}",
            "fetch.wait.max.ms": 20,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    latencies: list[float] = []
    warm = threading.Event()

    def consume() -> None:
        deadline = time.monotonic() + 120
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
        {"bootstrap.servers": BOOTSTRAP, "enable.idempotence": True, "acks": "all", "linger.ms": 5}
    )
    # Warm-up, as on the meshkit side: group join and producer id stay out of the figures.
    producer.produce(topic, values[0], key="warm", headers=[("warm-up", b"1")])
    producer.flush(30)
    if not warm.wait(60):
        sys.exit("bench_events: the baseline's warm-up record never arrived")
    started = time.perf_counter()
    for seq, value in enumerate(values):
        pace(started, seq, interval_s)
        producer.produce(
            topic, value, key=f"agg-{seq % 64}", headers=[("t", str(time.time()).encode())]
        )
        producer.poll(0)
    producer.flush(60)
    reader.join()
    elapsed = time.perf_counter() - started
    consumer.close()
    if len(latencies) != n:
        sys.exit(f"bench_events: baseline consumed {len(latencies)} of {n}")
    return n / elapsed, latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000, help="burst size for throughput")
    parser.add_argument(
        "--paced", type=int, default=400, help="events sent at --rate for latency (default 400)"
    )
    parser.add_argument("--rate", type=float, default=200.0, help="paced events/s (default 200)")
    args = parser.parse_args()
    status = subprocess.run([str(KAFKA), "status"], capture_output=True, check=False)
    started_kafka = status.returncode != 0
    if started_kafka:
        subprocess.run([str(KAFKA), "start"], check=True)
    registry = subprocess.Popen(
        [
            str(ROOT / ".venv" / "bin" / "schema-registry"),
            "serve",
            "--port",
            "0",
            "--storage",
            "memory",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert registry.stdout is not None
        line = registry.stdout.readline()  # "schema-registry listening on http://host:port ..."
        url = line.split("listening on ", 1)[1].split()[0]
        run = uuid.uuid4().hex[:8]
        topics = {
            name: f"bench.{name}.{run}" for name in ("meshkit", "raw", "meshkit-paced", "raw-paced")
        }
        client = RegistryClient(url)
        for topic in topics.values():
            reply = client.post(f"/subjects/{topic}-{TYPE}/versions", {"schema": SCHEMA})
            assert reply.status == 200, reply.json()
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            print(f"==> meshkit: {args.events} events, outbox -> relay -> consumer (exactly once)")
            mesh_rate, mesh_burst = run_meshkit(args.events, url, topics["meshkit"], work / "a")
            print(f"==> raw confluent-kafka: the same {args.events} framed values")
            raw_rate, raw_burst = run_raw(
                framed_values(url, topics["raw"], args.events, work / "b"), topics["raw"]
            )
            interval = 1.0 / args.rate
            print(f"==> latency: {args.paced} events at {args.rate:.0f}/s, meshkit then raw")
            _, mesh_lat = run_meshkit(
                args.paced, url, topics["meshkit-paced"], work / "c", interval
            )
            _, raw_lat = run_raw(
                framed_values(url, topics["raw-paced"], args.paced, work / "d"),
                topics["raw-paced"],
                interval,
            )
    finally:
        registry.terminate()
        registry.wait(10)
        if started_kafka:
            subprocess.run([str(KAFKA), "stop"], check=False)
    print()
    print(
        f"{'':24}{'events/s':>10}{'burst p50':>11}{'p50 ms':>9}{'p99 ms':>9}"
        f"   (events/s and burst p50: {args.events} at once; p50/p99: {args.rate:.0f}/s)"
    )
    for name, rate, burst, paced in (
        ("meshkit outbox->effect", mesh_rate, mesh_burst, mesh_lat),
        ("raw produce->consume", raw_rate, raw_burst, raw_lat),
    ):
        print(
            f"{name:24}{rate:>10.0f}{percentile(burst, 0.5):>11.1f}"
            f"{percentile(paced, 0.5):>9.1f}{percentile(paced, 0.99):>9.1f}"
        )
    print(
        f"ratio (meshkit / raw throughput): {mesh_rate / raw_rate:.2f}; latency at"
        f" {args.rate:.0f}/s p50 {percentile(mesh_lat, 0.5):.1f} ms vs"
        f" {percentile(raw_lat, 0.5):.1f} ms raw"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
