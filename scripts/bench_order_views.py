#!/usr/bin/env python3
"""Benchmark order_views: projection throughput, and query latency through the real gRPC server.

Projection: the events of N orders (default 100 000; about 11 events each across the orders,
payments, shipping and inventory contexts, 64 orders in flight at a time) are generated IN-PROCESS
and fed to order_views' real Kafka handlers as ``meshkit.events.Event``s -- no Kafka, no Avro, so
the figure is the read model's own cost. The read model is first filled with most of the orders
(handlers only, big transactions: just how this benchmark loads 100k orders quickly); then
measured on it:

- ``projection.throughput``: ``--sample-orders`` orders applied THE WAY meshkit's EventConsumer
  applies a consumed batch: ``--batch`` (its ``batch_size``, 500) records per transaction, per
  record a SAVEPOINT, the inbox check, the parked-key check, the handler, the inbox mark and
  RELEASE; on a durable database (synchronous=FULL, as the service runs);
- ``projection.one_per_tx``: ``--one-per-tx-orders`` more orders the same way, one record per
  transaction (what the consumer did before it batched).

Baseline: ``--baseline-inserts`` bare one-row INSERTs, one transaction each, on the same kind of
database: what SQLite alone costs here. Each rate is the median of ``--rounds`` (5) consecutive
runs over a fifth of its sample each: the machine is shared, and one busy second must not make
a figure. Also shown: the consumer alone (the same batches with handlers that do nothing).

Queries: the real OrderViewsService on a real gRPC server (127.0.0.1, port 0) over the loaded copy,
called sequentially from one client: ListOrders for a customer (~10 orders each), SearchOrders by
a SKU (a few matches) and by a city (many matches, ranked, first page of 50). Baseline: the bare
gRPC round trip of grpc.health.v1 Check on the same server. Reported: p50/p99 and the ratios.

    .venv/bin/python scripts/bench_order_views.py [--orders 100000] [--queries 2000]
"""

from __future__ import annotations

import argparse
import datetime
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
from benchlib import record
from grpc_health.v1 import health_pb2, health_pb2_grpc

from meshkit.db import Database
from meshkit.events import Event, Handler
from meshkit.server import ServiceBinding, create_server
from order_views.adapters.copies import SqliteCopies
from order_views.adapters.sqlite import SqliteViewStore
from order_views.app.progress import Progress
from order_views.app.queries import OrderQueries
from order_views.bootstrap import SERVICE
from order_views.domain.model import Fact
from order_views.entrypoints.events import handlers
from order_views.entrypoints.grpc_api import OrderViewsServicer
from shop.order_views.v1 import order_views_pb2 as pb
from shop.order_views.v1 import order_views_pb2_grpc as pb_grpc

FIGURES = (None, "list_customer", "search_sku", "search_city")
CITIES = ["Berlin", "Paris", "Lisbon", "Oslo", "Rome", "Vienna", "Prague", "Dublin"]
BASE = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)


def after(base: datetime.datetime, seconds: float) -> datetime.datetime:
    return base + datetime.timedelta(seconds=seconds)


def order_events(n: int, customers: int, rng: random.Random) -> list[tuple[str, Fact]]:
    """The events of order ``n`` as the shop publishes them (group, event); ~1 in 10 cancelled."""
    oid, t = f"ord-{n:07d}", after(BASE, n * 0.5)
    money = {"currency_code": "EUR", "units": 25, "nanos": 0}
    sku = f"sku-{rng.randrange(20_000):05d}"
    address = {
        "name": f"Customer {n % customers}",
        "line1": f"Main St {n % 97}",
        "line2": "",
        "city": rng.choice(CITIES),
        "postal_code": f"{10000 + n % 900}",
        "country_code": "DE",
    }
    version = iter(range(1, 20))
    pay = {"payment_id": f"pay-{n}", "order_id": oid, "amount": money}

    def o(name: str, **data: Any) -> tuple[str, Fact]:
        v = next(version)
        return "orders", Fact(
            f"{oid}:{v}", f"shop.orders.v1.{name}", {"order_id": oid, **data}, after(t, v / 100)
        )

    def x(ctx: str, name: str, dt: float, **data: Any) -> tuple[str, Fact]:
        return ctx, Fact(f"{ctx}-{name}-{n}", f"shop.{ctx}.v1.{name}", data, after(t, dt))

    events = [
        o("OrderPlaced", request_id=f"r{n}", customer_id=f"cust-{n % customers:05d}",
          lines=[{"sku": sku, "quantity": 1 + n % 3, "unit_price": money}], total=money,
          shipping_address=address),
        x("inventory", "StockReserved", 0.015, reservation_id=oid, lines=[]),
        o("OrderStockReserved"),
        x("payments", "PaymentAuthorized", 0.035, **pay),
        o("OrderPaymentAuthorized", payment_id=pay["payment_id"]),
    ]  # fmt: skip
    if n % 10 == 9:
        return [
            *events,
            x("payments", "PaymentVoided", 0.045, **pay),
            x("inventory", "ReservationReleased", 0.047, reservation_id=oid, lines=[]),
            o("OrderCancelled", reason="create shipment: FAILED_PRECONDITION"),
        ]
    return [
        *events,
        x("shipping", "ShipmentCreated", 0.045, shipment_id=f"shp-{n}", order_id=oid,
          tracking_number=f"MK{n}", address=address, items=[]),
        o("OrderShipmentCreated", shipment_id=f"shp-{n}", tracking_number=f"MK{n}"),
        x("payments", "PaymentCaptured", 0.065, **pay),
        o("OrderPaymentCaptured", payment_id=pay["payment_id"]),
        x("inventory", "ReservationCommitted", 0.075, reservation_id=oid, lines=[]),
        o("OrderConfirmed"),
    ]  # fmt: skip


TOPICS = {
    "orders": "orders.events.v1",
    "payments": "payments.events.v1",
    "shipping": "shipping.events.v1",
    "inventory": "inventory.events.v1",
}
IN_FLIGHT = 64  # orders whose events interleave, as concurrent sagas publish them


def generate(first: int, last: int, customers: int) -> Iterator[tuple[str, Fact]]:
    """The events of orders ``first`` .. ``last - 1``; ``IN_FLIGHT`` orders at a time have their
    events interleaved (each order's own events stay in order), so neighbouring events are
    mostly of different orders, as when many sagas run at once."""
    for window in range(first, last, IN_FLIGHT):
        lives = [
            order_events(n, customers, random.Random(n))  # noqa: S311 - a reproducible workload
            for n in range(window, min(last, window + IN_FLIGHT))
        ]
        for step in range(max(len(life) for life in lives)):
            for life in lives:
                if step < len(life):
                    yield life[step]


class Offsets:
    """Turns facts into the ``meshkit.events.Event``s the consumer would decode: the record
    (with its ``occurred_at``, as the Avro contracts carry it), the context's topic and
    successive offsets of one partition per topic."""

    def __init__(self) -> None:
        self._next: dict[str, int] = {}

    def event(self, context: str, fact: Fact) -> Event:
        topic = TOPICS[context]
        offset = self._next.get(topic, 0)
        self._next[topic] = offset + 1
        key = str(fact.data.get("order_id") or fact.data.get("reservation_id") or "")
        return Event(
            id=fact.id,
            type=fact.type,
            source=f"/meshkit/{context}",
            subject=key,
            time=fact.occurred_at,
            data={**fact.data, "occurred_at": fact.occurred_at},
            topic=topic,
            partition=0,
            offset=offset,
            key=key,
            headers={},
        )


# What meshkit's EventConsumer runs per record (libs/meshkit/src/meshkit/events/_consumer.py);
# the parked-keys table is the one it creates in the consumer's database.
PARKED_TABLE = """
CREATE TABLE IF NOT EXISTS meshkit_parked (
    n              INTEGER PRIMARY KEY,
    consumer_group TEXT NOT NULL,
    topic          TEXT NOT NULL,
    key            BLOB NOT NULL,
    event_id       TEXT NOT NULL,
    reason         TEXT NOT NULL,
    parked_at      REAL NOT NULL,
    UNIQUE (consumer_group, topic, key, event_id)
)
"""
SEEN = "SELECT 1 FROM meshkit_inbox WHERE consumer_group = ? AND event_id = ?"
PARKED_HEAD = (
    "SELECT event_id FROM meshkit_parked WHERE consumer_group = ? AND topic = ?"
    " AND key = ? ORDER BY n LIMIT 1"
)
MARK = (
    "INSERT OR IGNORE INTO meshkit_inbox (consumer_group, event_id, event_type, topic,"
    ' partition, "offset", outcome, processed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)'
)


def apply_like_the_consumer(
    db: Database, group: str, table: Mapping[str, Handler], batch: Sequence[Event]
) -> None:
    """``batch`` as EventConsumer applies a consumed batch: ONE transaction; per record a
    savepoint, the inbox check, the parked-key check, the handler, the inbox mark, release (a
    record that raises rolls back to its savepoint only). The offsets would be committed after."""
    with db.transaction() as conn:
        for event in batch:
            conn.execute("SAVEPOINT record")
            try:
                seen = conn.execute(SEEN, (group, event.id)).fetchone()
                key = event.key.encode() if event.key is not None else None
                head = conn.execute(PARKED_HEAD, (group, event.topic, key)).fetchone()
                if not seen and head is None:
                    handler = table.get(event.type)
                    if handler is not None:
                        handler(event, conn)
                    conn.execute(
                        MARK,
                        (
                            group,
                            event.id,
                            event.type,
                            event.topic,
                            event.partition,
                            event.offset,
                            "handled" if handler is not None else "skipped",
                            time.time(),
                        ),
                    )
            except BaseException:
                conn.execute("ROLLBACK TO record")
                conn.execute("RELEASE record")
                raise
            conn.execute("RELEASE record")


def consume(
    db: Database, group: str, table: Mapping[str, Handler], events: Iterable[Event], size: int
) -> int:
    """Apply ``events`` like the consumer in batches of ``size`` (one transaction each)."""
    count = 0
    batch: list[Event] = []
    for event in events:
        batch.append(event)
        if len(batch) >= size:
            apply_like_the_consumer(db, group, table, batch)
            count += len(batch)
            batch.clear()
    if batch:
        apply_like_the_consumer(db, group, table, batch)
        count += len(batch)
    return count


def bulk_load(
    db: Database, table: Mapping[str, Handler], events: Iterable[Event], size: int
) -> int:
    """Only how this benchmark fills the read model quickly: the handlers, ``size`` events per
    transaction, no inbox."""
    count = 0
    batch: list[Event] = []

    def flush() -> None:
        with db.transaction() as conn:
            for item in batch:
                table[item.type](item, conn)
        batch.clear()

    for event in events:
        batch.append(event)
        count += 1
        if len(batch) >= size:
            flush()
    flush()
    return count


def baseline_inserts(path: Path, count: int) -> float:
    """Seconds for ``count`` one-row INSERTs, one transaction each, on a database like the
    read model's (meshkit.db.Database: WAL, synchronous=FULL)."""
    db = Database(path, ["CREATE TABLE t (id TEXT PRIMARY KEY, body TEXT NOT NULL);"])
    started = time.perf_counter()
    for i in range(count):
        with db.transaction() as conn:
            conn.execute("INSERT INTO t VALUES (?, ?)", (f"e-{i}", "x" * 200))
    took = time.perf_counter() - started
    db.close()
    return took


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def timed(call: Callable[[], object], count: int) -> list[float]:
    for _ in range(min(50, count)):  # warm-up
        call()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


class NoConsumer:
    """The copy's consumer in this benchmark: events were loaded directly, Kafka is not used."""

    def __init__(self, db: Database, group: str, *, replay: bool = False) -> None:
        self._idle = threading.Event()

    def run_once(self, timeout: float = 1.0) -> int:
        self._idle.wait(timeout)
        return 0

    def close(self) -> None:
        self._idle.set()


def main() -> int:  # noqa: PLR0915 - one linear script: load, then measure
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument(
        "--sample-orders", type=int, default=5_000, help="orders applied like the consumer"
    )
    parser.add_argument(
        "--one-per-tx-orders", type=int, default=1_000, help="orders applied 1 event per txn"
    )
    parser.add_argument("--batch", type=int, default=500, help="the consumer's batch_size")
    parser.add_argument("--load-batch", type=int, default=2_000)
    parser.add_argument("--baseline-inserts", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=5, help="each rate: the median of these")
    args = parser.parse_args()
    table = handlers(SqliteViewStore)
    offsets = Offsets()
    sampled = args.sample_orders + args.one_per_tx_orders
    loaded_orders = max(0, args.orders - sampled)

    with tempfile.TemporaryDirectory(prefix="bench-order-views-") as tmp:
        root = Path(tmp)
        progress = Progress()
        copies = SqliteCopies(root / "views.db", NoConsumer, progress)
        copy = copies.active()
        with copy.db.transaction() as conn:
            conn.execute(PARKED_TABLE)

        def events(first: int, last: int) -> Iterator[Event]:
            return (offsets.event(c, f) for c, f in generate(first, last, args.customers))

        started = time.perf_counter()  # generating them included: not a figure, only a load
        loaded = bulk_load(copy.db, table, events(0, loaded_orders), args.load_batch)
        load_rate = loaded / (time.perf_counter() - started) if loaded else 0.0

        # Each figure is the median of ``--rounds`` consecutive runs (the machine is shared:
        # one busy second must not make the figure).
        def rounds(first: int, last: int) -> list[list[Event]]:
            step = max(1, (last - first) // args.rounds)
            return [list(events(lo, min(last, lo + step))) for lo in range(first, last, step)]

        def median_rate(chunks: list[list[Event]], apply: Callable[[list[Event]], object]) -> float:
            rates = []
            for chunk in chunks:
                started = time.perf_counter()
                apply(chunk)
                rates.append(len(chunk) / (time.perf_counter() - started))
            return statistics.median(rates) if rates else 0.0

        sample_end = loaded_orders + args.sample_orders
        measured = rounds(loaded_orders, sample_end)
        rate = median_rate(measured, lambda c: consume(copy.db, copy.group, table, c, args.batch))

        # The consumer's own share: the same records and statements, handlers that do nothing.
        noop: dict[str, Handler] = {kind: lambda event, conn: None for kind in table}
        floor_rate = median_rate(
            measured, lambda c: consume(copy.db, f"{copy.group}.floor", noop, c, args.batch)
        )

        singles = rounds(sample_end, args.orders)
        one_rate = median_rate(singles, lambda c: consume(copy.db, copy.group, table, c, 1))

        base_rate = statistics.median(
            args.baseline_inserts
            // args.rounds
            / baseline_inserts(root / f"baseline-{n}.db", args.baseline_inserts // args.rounds)
            for n in range(args.rounds)
        )
        with copy.db.snapshot() as conn:
            placed = conn.execute("SELECT COUNT(*) FROM order_summary WHERE placed = 1").fetchone()[
                0
            ]
        total = loaded + sum(map(len, measured)) + sum(map(len, singles))
        print(f"projected {placed} orders from {total} events (generated in-process, no Kafka)")
        print(
            f"  like the consumer ({args.batch}/txn, savepoint+inbox per event): {rate:9.0f}"
            f" events/s  [{sum(map(len, measured))} events onto {loaded_orders} orders]"
        )
        print(f"  the consumer alone (same, no-op handlers):          {floor_rate:9.0f} events/s")
        print(
            f"  one event per txn (+ inbox):                        {one_rate:9.0f} events/s"
            f"  [{sum(map(len, singles))} events]"
        )
        print(
            f"  bulk load ({args.load_batch}/txn, handlers only, no inbox, incl. generating):"
            f"  {load_rate:9.0f} events/s"
        )
        print(
            f"  baseline: bare 1-row INSERT per txn:                {base_rate:9.0f} events/s"
            f"  -> projection at {rate / base_rate:.2f}x of bare SQLite"
        )
        bare = "bare SQLite 1-row INSERT per txn/s"
        record("projection.throughput", rate, "events/s", baseline=base_rate, baseline_name=bare,
               target=10_000, batch=args.batch)  # fmt: skip
        record("projection.one_per_tx", one_rate, "events/s", baseline=base_rate,
               baseline_name=bare)  # fmt: skip

        settings = SERVICE.load_settings(
            {"ORDER_VIEWS_PORT": "0", "ORDER_VIEWS_HOST": "127.0.0.1",
             "ORDER_VIEWS_DB_PATH": str(root / "unused.db"), "ORDER_VIEWS_LOG_LEVEL": "WARNING"}
        )  # fmt: skip
        servicer = OrderViewsServicer(OrderQueries(copies.lease, progress), list)
        server = create_server(
            "order_views",
            settings,
            [ServiceBinding(servicer, pb_grpc.add_OrderViewsServiceServicer_to_server,
                            "shop.order_views.v1.OrderViewsService")],
        )  # fmt: skip
        port = server.start()
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.OrderViewsServiceStub(channel)
                health = health_pb2_grpc.HealthStub(channel)
                rng = random.Random(11)  # noqa: S311 - a reproducible workload

                def customer() -> str:
                    return f"cust-{rng.randrange(args.customers):05d}"

                def sku() -> str:
                    return f"sku-{rng.randrange(20_000):05d}"

                found = stub.ListOrders(pb.ListOrdersRequest(customer_id="cust-00001"), timeout=5)
                assert found.orders, "the loaded copy answers"
                rows = {
                    "gRPC health Check (baseline)": timed(
                        lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=5),
                        args.queries,
                    ),
                    "ListOrders customer (~10)": timed(
                        lambda: stub.ListOrders(
                            pb.ListOrdersRequest(customer_id=customer()), timeout=5
                        ),
                        args.queries,
                    ),
                    "SearchOrders by SKU": timed(
                        lambda: stub.SearchOrders(pb.SearchOrdersRequest(query=sku()), timeout=5),
                        args.queries,
                    ),
                    "SearchOrders by city (top 50)": timed(
                        lambda: stub.SearchOrders(
                            pb.SearchOrdersRequest(query=rng.choice(CITIES)), timeout=5
                        ),
                        max(50, args.queries // 10),
                    ),
                }
        finally:
            server.stop(0)
            copies.close()
        base_p50, base_p99 = percentiles(rows["gRPC health Check (baseline)"])
        print(f"queries over {placed} orders through the real gRPC server (sequential, 1 client):")
        for (name, samples), figure in zip(rows.items(), FIGURES, strict=True):
            p50, p99 = percentiles(samples)
            print(
                f"  {name:<30} p50 {p50:7.2f} ms  p99 {p99:7.2f} ms"
                f"  ({p50 / base_p50:5.1f}x the bare round trip)  [{len(samples)} calls]"
            )
            if figure is None:
                continue
            for stat, value, base in (("p50", p50, base_p50), ("p99", p99, base_p99)):
                record(f"projection.query.{figure}.{stat}", value, "ms", baseline=base,
                       baseline_name=f"gRPC health Check {stat}", better="lower",
                       calls=len(samples))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
