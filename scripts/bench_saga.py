#!/usr/bin/env python3
"""Benchmark the order saga on real Kafka against bare gRPC round-trips, in the same run.

Runs the whole mesh (`mesh up -d --kafka local` in a scratch directory, on the default ports),
stocks a SKU, then places N orders from C concurrent clients and waits until every one is
CONFIRMED. Reported: orders/s from the first PlaceOrder to the last confirmation, and p50/p99 of
PlaceOrder -> CONFIRMED (the order's own created_at -> updated_at, stamped by the service).
Baseline: the same count of bare gRPC round-trips (grpc.health.v1 Check on orders, same C) on
this machine: the ceiling for a request/response exchange here. Each order costs ~6 participant
calls, several SQLite transactions and outbox rows, so the ratio says how close the saga runs to
that ceiling.

    .venv/bin/python scripts/bench_saga.py [--orders 200] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from meshkit import DEFAULT_TIMEOUT, address_of, connect
from shop.common.v1 import common_pb2
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.orders.v1 import orders_pb2, orders_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
MESH = str(Path(sys.executable).parent / "mesh")
# Addresses from the mesh's one source of ports (mesh.toml), by service name.
_MESH_ENV = {"MESH_CONFIG": str(ROOT / "mesh.toml")}
ORDERS, INVENTORY = address_of("orders", _MESH_ENV), address_of("inventory", _MESH_ENV)


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def request(run: str, index: int) -> orders_pb2.PlaceOrderRequest:
    """One order that the saga will confirm."""
    return orders_pb2.PlaceOrderRequest(
        request_id=f"bench-{run}-{index}",
        customer_id=f"cust-{index % 50}",
        lines=[
            orders_pb2.OrderLine(
                sku="bench-sku",
                quantity=1,
                unit_price=common_pb2.Money(currency_code="EUR", units=9, nanos=990_000_000),
            )
        ],
        payment_token="tok_visa",
        shipping_address=common_pb2.Address(
            name="Bench", line1="1 Load St", city="Berlin", postal_code="10115", country_code="DE"
        ),
    )


def run_orders(n: int, concurrency: int, interval_s: float = 0.0) -> tuple[float, list[float]]:
    """Place n orders (a burst, or one per ``interval_s``), wait for all to confirm;
    (orders/s, latencies in ms)."""
    run = uuid.uuid4().hex[:6]
    with connect(ORDERS) as channel, connect(INVENTORY) as inv_channel:
        inventory_pb2_grpc.InventoryServiceStub(inv_channel).SetStock(
            inventory_pb2.SetStockRequest(sku="bench-sku", quantity=n + 10),
            timeout=DEFAULT_TIMEOUT,
        )
        stub = orders_pb2_grpc.OrdersServiceStub(channel)
        started = time.perf_counter()
        if interval_s:
            ids = []
            for i in range(n):
                delay = started + i * interval_s - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)  # the pacing rate limit, not a wait for a state
                ids.append(stub.PlaceOrder(request(run, i), timeout=30).order_id)
        else:
            with ThreadPoolExecutor(concurrency) as pool:
                ids = list(
                    pool.map(
                        lambda i: stub.PlaceOrder(request(run, i), timeout=30).order_id, range(n)
                    )
                )
        latencies: list[float] = []
        pending = list(ids)
        deadline = time.monotonic() + 300
        while pending:
            if time.monotonic() > deadline:
                sys.exit(f"bench_saga: {len(pending)} orders still pending after 300 s")
            still = []
            for order_id in pending:
                order = stub.GetOrder(
                    orders_pb2.GetOrderRequest(order_id=order_id), timeout=DEFAULT_TIMEOUT
                ).order
                if order.status == orders_pb2.ORDER_STATUS_PENDING:
                    still.append(order_id)
                elif order.status != orders_pb2.ORDER_STATUS_CONFIRMED:
                    sys.exit(f"bench_saga: {order_id} ended {order.cancellation_reason!r}")
                else:
                    took = order.updated_at.ToDatetime() - order.created_at.ToDatetime()
                    latencies.append(took.total_seconds() * 1000)
            pending = still
            if pending:
                time.sleep(0.05)  # poll interval within the deadline loop
        elapsed = time.perf_counter() - started
    return n / elapsed, latencies


def run_round_trips(n: int, concurrency: int) -> tuple[float, list[float]]:
    """n bare unary round-trips (health Check on orders); (calls/s, latencies in ms)."""
    with grpc.insecure_channel(ORDERS) as channel:
        check = health_pb2_grpc.HealthStub(channel).Check
        check(health_pb2.HealthCheckRequest(), timeout=DEFAULT_TIMEOUT)  # connect first

        def one(_: int) -> float:
            start = time.perf_counter()
            check(health_pb2.HealthCheckRequest(), timeout=DEFAULT_TIMEOUT)
            return (time.perf_counter() - start) * 1000

        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            latencies = list(pool.map(one, range(n)))
        return n / (time.perf_counter() - started), latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=200, help="orders to place (default 200)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients")
    parser.add_argument(
        "--paced", type=int, default=60, help="orders placed one by one for latency (default 60)"
    )
    parser.add_argument("--rate", type=float, default=10.0, help="paced orders/s (default 10)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # .cache: `--kafka local` reuses the checkout's Kafka jars (.cache/kafka).
        for name in ("mesh.toml", "proto", ".cache"):
            (root / name).symlink_to(ROOT / name)
        print("==> mesh up -d --kafka local (scratch root)", flush=True)
        up = subprocess.run(
            [MESH, "--root", str(root), "up", "-d", "--kafka", "local"], check=False
        )
        if up.returncode != 0:
            subprocess.run([MESH, "--root", str(root), "down"], check=False)
            return 1
        try:
            print(f"==> latency: {args.paced} orders at {args.rate:.0f}/s", flush=True)
            _, saga_lat = run_orders(args.paced, 1, 1 / args.rate)
            print(f"==> throughput: {args.orders} orders, {args.concurrency} clients", flush=True)
            saga_rate, burst_lat = run_orders(args.orders, args.concurrency)
            print(
                f"==> {args.orders} bare gRPC round-trips, {args.concurrency} clients", flush=True
            )
            rtt_rate, rtt_lat = run_round_trips(args.orders, args.concurrency)
        finally:
            subprocess.run([MESH, "--root", str(root), "down"], check=False)
    print()
    print(f"{'':30}{'per s':>9}{'p50 ms':>9}{'p99 ms':>9}")
    print(
        f"{'saga PlaceOrder->CONFIRMED':30}{saga_rate:>9.1f}"
        f"{percentile(saga_lat, 0.5):>9.1f}{percentile(saga_lat, 0.99):>9.1f}"
        f"   (latency at {args.rate:.0f} orders/s; p50 {percentile(burst_lat, 0.5):.0f} ms"
        " in the burst, mostly queueing)"
    )
    print(
        f"{'bare gRPC round-trip':30}{rtt_rate:>9.1f}"
        f"{percentile(rtt_lat, 0.5):>9.2f}{percentile(rtt_lat, 0.99):>9.2f}"
    )
    print(
        f"ratio (orders/s / round-trips/s): {saga_rate / rtt_rate:.3f}"
        f"  (~6 participant calls per order: 1/6 = 0.167 would be the call ceiling)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
