#!/usr/bin/env python3
"""Benchmark `mesh load`'s own cost: CPU per order and how late orders start, against the same
work done with threads, in the same run.

`mesh load` must keep its rate and cost little, or it measures itself rather than the mesh. Both
drivers run the same open-loop schedule against one stub shop in another process (PlaceOrder
answers at once; GetOrder says PENDING until --saga-ms after placing, then CONFIRMED), so what
differs is only the driver:
- mesh load: mesh_runner.load.drive, one asyncio loop over grpc.aio (what the command runs);
- baseline: a scheduler thread handing each due order to a thread pool that places it with the
  sync stub and polls GetOrder with the same pacing, the obvious alternative.
Reported: CPU seconds of this process per order (ms, lower is better) and p99 start lag (ms from
due to started); each driver runs twice, alternated, and its better run counts. Figures go to
.bench/results.json (load.*).

Two scenarios: a saga of --saga-ms (100: a mesh keeping up) and of --slow-saga-ms (2000: one
falling behind, hundreds of orders in flight, the case an open-loop tool exists for).

    .venv/bin/python scripts/bench_load.py [--rate 200] [--duration 10] [--saga-ms 100]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import socket
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from benchlib import record
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mesh_runner import load
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.orders.v1 import orders_pb2, orders_pb2_grpc

POOL_THREADS = 64


# -- the stub shop (runs in its own process: `bench_load.py --serve PORT SAGA_MS`) ---------------


def serve(port: int, saga_ms: float) -> None:
    """An aio server answering orders, inventory and health as cheaply as it can."""
    from google.protobuf import timestamp_pb2
    from grpc_health.v1 import health

    placed: dict[str, float] = {}

    def stamp(seconds: float) -> timestamp_pb2.Timestamp:
        ts = timestamp_pb2.Timestamp()
        ts.FromNanoseconds(int(seconds * 1e9))
        return ts

    class Orders(orders_pb2_grpc.OrdersServiceServicer):
        async def PlaceOrder(self, request: Any, context: Any) -> Any:  # noqa: N802 (gRPC's name)
            placed.setdefault(request.request_id, time.time())
            return orders_pb2.PlaceOrderResponse(
                order_id=request.request_id, status=orders_pb2.ORDER_STATUS_PENDING
            )

        async def GetOrder(self, request: Any, context: Any) -> Any:  # noqa: N802 (gRPC's name)
            created = placed[request.order_id]
            done = time.time() >= created + saga_ms / 1000
            return orders_pb2.GetOrderResponse(
                order=orders_pb2.Order(
                    order_id=request.order_id,
                    status=orders_pb2.ORDER_STATUS_CONFIRMED
                    if done
                    else orders_pb2.ORDER_STATUS_PENDING,
                    created_at=stamp(created),
                    updated_at=stamp(created + saga_ms / 1000 if done else created),
                )
            )

    class Inventory(inventory_pb2_grpc.InventoryServiceServicer):
        async def GetStock(self, request: Any, context: Any) -> Any:  # noqa: N802 (gRPC's name)
            return inventory_pb2.GetStockResponse(sku=request.sku, available=10**9)

    async def main() -> None:
        server = grpc.aio.server()
        orders_pb2_grpc.add_OrdersServiceServicer_to_server(Orders(), server)
        inventory_pb2_grpc.add_InventoryServiceServicer_to_server(Inventory(), server)
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        print("serving", flush=True)
        await server.wait_for_termination()

    asyncio.run(main())


# -- the baseline: threads ----------------------------------------------------------------------


def run_threads(target: str, rate: float, duration: float, threads: int) -> dict[str, float]:
    """The same schedule and pacing with a scheduler thread and a pool; CPU/order, lag p99."""
    channel = grpc.insecure_channel(target)
    stub = orders_pb2_grpc.OrdersServiceStub(channel)
    health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    lags: list[float] = []
    done = polls = 0
    run = uuid.uuid4().hex[:8]  # fresh ids: a replayed request_id would be an old order
    lock = threading.Lock()
    ewma = load.FIRST_POLL_GUESS_S

    def one(index: int, due: float) -> None:
        nonlocal done, ewma, polls
        started = time.monotonic()
        with lock:
            lags.append((started - due) * 1000)
        placed = stub.PlaceOrder(
            orders_pb2.PlaceOrderRequest(request_id=f"t-{run}-{index}", customer_id="c"), timeout=10
        )
        request = orders_pb2.GetOrderRequest(order_id=placed.order_id)
        time.sleep(max(load.MIN_POLL_S, ewma))  # the pacing, as mesh load's
        while True:
            order = stub.GetOrder(request, timeout=5).order
            with lock:
                polls += 1
            if order.status == orders_pb2.ORDER_STATUS_CONFIRMED:
                took = (order.updated_at.ToNanoseconds() - order.created_at.ToNanoseconds()) / 1e9
                with lock:
                    done += 1
                    ewma += load.EWMA_WEIGHT * (took - ewma)
                return
            age = time.monotonic() - started
            time.sleep(min(max(load.MIN_POLL_S, age / 2), max(load.MAX_POLL_S, ewma / 2)))

    offsets = load.start_offsets(rate, duration)
    cpu = time.process_time()
    with ThreadPoolExecutor(threads) as pool:
        t0 = time.monotonic()
        for index, offset in enumerate(offsets):
            due = t0 + offset
            if (wait := due - time.monotonic()) > 0:
                time.sleep(wait)  # the schedule
            pool.submit(one, index, due)
    cpu = time.process_time() - cpu
    channel.close()
    assert done == len(offsets), f"threads: {done} of {len(offsets)} done"
    return {
        "cpu_ms_per_order": cpu * 1000 / len(offsets),
        "lag_p99_ms": load.percentile(lags, 99) or 0.0,
        "polls_per_order": round(polls / len(offsets), 2),
    }


def run_aio(target: str, rate: float, duration: float) -> dict[str, float]:
    """mesh load's own driver."""
    plan = load.Plan(rate=rate, duration=duration, concurrency=100_000)
    targets = load.Targets(target, target, "bench", "bench")
    summary = asyncio.run(load.drive(plan, targets, report=lambda text, notice: None))
    assert summary["confirmed"] == summary["scheduled"], summary
    return {
        "cpu_ms_per_order": summary["client_cpu_ms_per_order"],
        "lag_p99_ms": summary["start_lag_ms"]["p99"],
        "polls_per_order": summary["get_order_calls_per_order"],
    }


def scenario(rate: float, duration: float, saga_ms: float) -> dict[str, dict[str, float]]:
    """Both drivers against one stub whose saga takes ``saga_ms``; the better of two runs each."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    stub = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), str(saga_ms)],
        stdout=subprocess.PIPE,
        text=True,
    )
    # The pool a thread driver needs to stay open loop: one thread per order in flight, and some.
    pool = max(POOL_THREADS, math.ceil(rate * saga_ms / 1000 * 1.5))
    try:
        assert stub.stdout is not None and stub.stdout.readline().strip() == "serving"
        target = f"127.0.0.1:{port}"
        print(
            f"==> {rate:g} orders/s for {duration:g}s, stub saga {saga_ms:g} ms"
            f" (~{rate * saga_ms / 1000:.0f} in flight; {pool} threads for the baseline)",
            flush=True,
        )
        # Alternated, twice each, the better run of each kept: neither pays the warm-up alone,
        # and a burst from another process on the machine does not decide it.
        runs: dict[str, list[dict[str, float]]] = {"aio": [], "threads": []}
        for _ in range(2):
            runs["aio"].append(run_aio(target, rate, duration))
            runs["threads"].append(run_threads(target, rate, duration, pool))
    finally:
        stub.terminate()
        stub.wait(timeout=10)
    best = {k: min(v, key=lambda r: r["cpu_ms_per_order"]) for k, v in runs.items()}
    aio, threads = best["aio"], best["threads"]
    print(f"{'':24}{'CPU ms/order':>14}{'start lag p99 ms':>18}")
    print(f"{'mesh load (grpc.aio)':24}{aio['cpu_ms_per_order']:>14.3f}{aio['lag_p99_ms']:>18.1f}")
    print(
        f"{'threads (sync stubs)':24}{threads['cpu_ms_per_order']:>14.3f}"
        f"{threads['lag_p99_ms']:>18.1f}"
    )
    print(
        f"GetOrder calls per order: {aio['polls_per_order']} (mesh load),"
        f" {threads['polls_per_order']} (threads)",
        flush=True,
    )
    return best


def main() -> int:
    if sys.argv[1:2] == ["--serve"]:
        serve(int(sys.argv[2]), float(sys.argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="orders/s (default 200)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds (default 10)")
    parser.add_argument(
        "--saga-ms", type=float, default=100.0, help="stub place->confirmed (default 100)"
    )
    parser.add_argument(
        "--slow-saga-ms",
        type=float,
        default=2000.0,
        help="the second scenario's, a mesh falling behind (default 2000)",
    )
    args = parser.parse_args()
    baseline = "the same schedule on threads with sync stubs"
    for suffix, saga_ms in (("", args.saga_ms), (".slow_saga", args.slow_saga_ms)):
        best = scenario(args.rate, args.duration, saga_ms)
        aio, threads = best["aio"], best["threads"]
        figures = (
            ("client_cpu_per_order", "cpu_ms_per_order", "ms CPU/order"),
            ("start_lag_p99", "lag_p99_ms", "ms"),
        )
        for name, key, unit in figures:
            record(
                f"load.{name}{suffix}",
                aio[key],
                unit,
                baseline=threads[key],
                baseline_name=baseline,
                better="lower",
                rate=args.rate,
                saga_ms=saga_ms,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
