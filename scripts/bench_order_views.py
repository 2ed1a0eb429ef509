#!/usr/bin/env python3
"""Benchmark order_views: projection throughput, and query latency through the real gRPC server.

Projection: the events of N orders (default 100 000; about 11 events each across the orders,
payments, shipping and inventory contexts) are generated IN-PROCESS and fed straight into the
projector over SQLite -- no Kafka, no Avro, so the figure is the read model's own cost. First a
sample (``--sample-orders``) the way the consumer applies events: one transaction per event with
the inbox check and mark; then the rest in batches (``--batch`` events per transaction), which is
only how this benchmark loads 100k orders quickly. Baseline: the same number of bare one-row
INSERTs, one transaction each, on the same kind of database: what SQLite alone costs here.

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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from meshkit.db import Database
from meshkit.server import ServiceBinding, create_server
from order_views.adapters.copies import SqliteCopies
from order_views.adapters.sqlite import SqliteViewStore
from order_views.app.progress import Progress
from order_views.app.projector import apply_fact
from order_views.app.queries import OrderQueries
from order_views.bootstrap import SERVICE
from order_views.domain.model import Fact
from order_views.entrypoints.grpc_api import OrderViewsServicer
from shop.order_views.v1 import order_views_pb2 as pb
from shop.order_views.v1 import order_views_pb2_grpc as pb_grpc

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


def generate(orders: int, customers: int) -> Iterator[tuple[str, Fact]]:
    rng = random.Random(7)  # noqa: S311 - a reproducible workload, not a secret
    for n in range(orders):
        yield from order_events(n, customers, rng)


def apply_like_the_consumer(db: Database, group: str, event: Fact, offset: int) -> None:
    """One transaction: inbox check, projection, inbox mark (what EventConsumer does per event)."""
    with db.transaction() as conn:
        if conn.execute(
            "SELECT 1 FROM meshkit_inbox WHERE consumer_group = ? AND event_id = ?",
            (group, event.id),
        ).fetchone():
            return
        apply_fact(SqliteViewStore(conn), event)
        conn.execute(
            "INSERT INTO meshkit_inbox VALUES (?, ?, ?, 'bench', 0, ?, 'handled', ?)",
            (group, event.id, event.type, offset, time.time()),
        )


def baseline_inserts(path: Path, count: int) -> float:
    """Seconds for ``count`` one-row INSERTs, one transaction each (WAL, synchronous=NORMAL)."""
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

    def __init__(self, *_: object) -> None:
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
    parser.add_argument("--sample-orders", type=int, default=5_000)
    parser.add_argument("--batch", type=int, default=2_000)
    parser.add_argument("--queries", type=int, default=2_000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-order-views-") as tmp:
        root = Path(tmp)
        progress = Progress()
        copies = SqliteCopies(root / "views.db", NoConsumer, progress)
        copy = copies.active()
        events = generate(args.orders, args.customers)
        sample = [e for _, e in generate(args.sample_orders, args.customers)]

        started = time.perf_counter()
        for offset, event in enumerate(sample):
            apply_like_the_consumer(copy.db, copy.group, event, offset)
        per_event_s = time.perf_counter() - started
        per_event_rate = len(sample) / per_event_s

        # The rest of the orders, batched (skip the sample's orders: already projected).
        loaded = len(sample)
        skip = len(sample)
        started = time.perf_counter()
        batch: list[Fact] = []
        for index, (_, event) in enumerate(events):
            if index < skip:
                continue
            batch.append(event)
            if len(batch) >= args.batch:
                with copy.db.transaction() as conn:
                    store = SqliteViewStore(conn)
                    for item in batch:
                        apply_fact(store, item)
                loaded += len(batch)
                batch.clear()
        with copy.db.transaction() as conn:
            store = SqliteViewStore(conn)
            for item in batch:
                apply_fact(store, item)
        loaded += len(batch)
        batched_s = time.perf_counter() - started
        batched_rate = (loaded - len(sample)) / batched_s if batched_s else 0.0
        base_s = baseline_inserts(root / "baseline.db", len(sample))
        base_rate = len(sample) / base_s

        with copy.db.snapshot() as conn:
            placed = conn.execute("SELECT COUNT(*) FROM order_summary WHERE placed = 1").fetchone()[
                0
            ]
        print(f"projected {placed} orders from {loaded} events (generated in-process, no Kafka)")
        print(
            f"  per event (consumer-like: 1 txn + inbox): {per_event_rate:9.0f} events/s"
            f"  [{len(sample)} events]"
        )
        print(f"  batched ({args.batch} events/txn, bulk load):  {batched_rate:9.0f} events/s")
        print(
            f"  baseline: bare 1-row INSERT per txn:      {base_rate:9.0f} events/s"
            f"  -> projection at {per_event_rate / base_rate:.2f}x of bare SQLite"
        )

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
                customer = lambda: f"cust-{rng.randrange(args.customers):05d}"  # noqa: E731
                sku = lambda: f"sku-{rng.randrange(20_000):05d}"  # noqa: E731
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
        base_p50, _ = percentiles(rows["gRPC health Check (baseline)"])
        print(f"queries over {placed} orders through the real gRPC server (sequential, 1 client):")
        for name, samples in rows.items():
            p50, p99 = percentiles(samples)
            print(
                f"  {name:<30} p50 {p50:7.2f} ms  p99 {p99:7.2f} ms"
                f"  ({p50 / base_p50:5.1f}x the bare round trip)  [{len(samples)} calls]"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
