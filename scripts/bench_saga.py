#!/usr/bin/env python3
"""Benchmark the order saga on real Kafka against bare gRPC round trips, in the same run.

Runs the whole mesh (`mesh up -d --kafka local` in a scratch directory, on the default ports),
stocks a SKU, then:

- burst: places --orders orders from --concurrency clients at once and waits until every one is
  CONFIRMED. Reported: orders/s from the first PlaceOrder to the last confirmation (the latest
  ``updated_at`` the service stamped), recorded as ``saga.throughput``;
- paced: places orders at --rate per second for --duration seconds (open loop: each one is sent
  at its time whatever the others do) and reports place -> CONFIRMED p50/p95/p99 (the order's own
  ``created_at`` -> ``updated_at``, both stamped by orders), recorded as ``saga.paced.p50`` and
  ``saga.paced.p99``;
- baseline: --orders bare gRPC round trips (grpc.health.v1 Check on orders, same concurrency):
  the ceiling of a request/response exchange on this machine. Each order costs 6 RPCs (PlaceOrder
  and 5 participant calls), several SQLite transactions and outbox rows, so 1/6 of the round trip
  rate is the call ceiling.

Every call carries an admin's access token, minted by the scratch mesh's identity as `mesh token
--role admin` does: admins set stock, place orders for the bench's customers and inspect sagas
(orders' policy), so one token does for the whole run, as for `mesh load`.

Completion is learned from SagaAdminService.ListSagas (live sagas, limit 1: one cheap call per
poll), so the poll itself does not load orders; each order is then read once. The CPU seconds
each component spent per order (from /proc) are printed, and ``--profile DIR`` records a py-spy
flame graph (and collapsed stacks) of every service during the burst.

    .venv/bin/python scripts/bench_saga.py [--orders 600] [--concurrency 24]
                                           [--rate 50] [--duration 20] [--profile DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import grpc
from benchlib import percentile, record
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mesh.sagas.v1 import sagas_pb2, sagas_pb2_grpc
from mesh_runner.token import mint
from meshkit import DEFAULT_TIMEOUT, address_of, connect
from meshkit.credentials import StaticCredentials
from meshkit.resilience import unguarded
from shop.common.v1 import common_pb2
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.orders.v1 import orders_pb2, orders_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MESH = str(BIN / "mesh")
# Addresses from the mesh's one source of ports (mesh.toml), by service name.
_MESH_ENV = {"MESH_CONFIG": str(ROOT / "mesh.toml")}
ORDERS, INVENTORY = address_of("orders", _MESH_ENV), address_of("inventory", _MESH_ENV)
SKU = "bench-sku"
FINISH_WITHIN_S = 300.0
TICKS = os.sysconf("SC_CLK_TCK")

# The bench is the load: no bulkhead or breaker of the client may cap or stop it.
UNBOUNDED = unguarded()


def request(run: str, index: int) -> orders_pb2.PlaceOrderRequest:
    """One order that the saga will confirm."""
    return orders_pb2.PlaceOrderRequest(
        request_id=f"bench-{run}-{index}",
        customer_id=f"cust-{index % 50}",
        lines=[
            orders_pb2.OrderLine(
                sku=SKU,
                quantity=1,
                unit_price=common_pb2.Money(currency_code="EUR", units=9, nanos=990_000_000),
            )
        ],
        payment_token="tok_visa",
        shipping_address=common_pb2.Address(
            name="Bench", line1="1 Load St", city="Berlin", postal_code="10115", country_code="DE"
        ),
    )


class Shop:
    """Stubs over one channel to orders (and one to inventory)."""

    def __init__(self, orders: grpc.Channel, inventory: grpc.Channel) -> None:
        self.orders = orders_pb2_grpc.OrdersServiceStub(orders)
        self.sagas = sagas_pb2_grpc.SagaAdminServiceStub(orders)
        self.inventory = inventory_pb2_grpc.InventoryServiceStub(inventory)

    def stock(self, quantity: int) -> None:
        """Enough of the bench SKU for ``quantity`` more orders."""
        self.inventory.SetStock(
            inventory_pb2.SetStockRequest(sku=SKU, quantity=quantity), timeout=DEFAULT_TIMEOUT
        )

    def wait_all_finished(self) -> None:
        """Poll until no saga is live (one small ListSagas per poll), within FINISH_WITHIN_S."""
        deadline = time.monotonic() + FINISH_WITHIN_S
        while self.sagas.ListSagas(
            sagas_pb2.ListSagasRequest(limit=1), timeout=DEFAULT_TIMEOUT
        ).sagas:
            if time.monotonic() > deadline:
                sys.exit(f"bench_saga: sagas still live after {FINISH_WITHIN_S:.0f} s")
            time.sleep(0.02)  # poll interval within the deadline loop

    def confirmed(self, ids: list[str]) -> list[tuple[float, float]]:
        """(created_at, updated_at) in epoch seconds of each order; exits if one is not
        CONFIRMED."""
        times = []
        for order_id in ids:
            order = self.orders.GetOrder(
                orders_pb2.GetOrderRequest(order_id=order_id), timeout=DEFAULT_TIMEOUT
            ).order
            if order.status != orders_pb2.ORDER_STATUS_CONFIRMED:
                sys.exit(
                    f"bench_saga: {order_id} ended {orders_pb2.OrderStatus.Name(order.status)}"
                    f" {order.cancellation_reason!r}"
                )
            times.append(
                (order.created_at.ToNanoseconds() / 1e9, order.updated_at.ToNanoseconds() / 1e9)
            )
        return times


def burst(shop: Shop, n: int, concurrency: int) -> tuple[float, list[float]]:
    """Place n orders from ``concurrency`` clients; (orders/s first place -> last confirmed,
    place -> confirmed latencies in ms)."""
    run = uuid.uuid4().hex[:6]
    shop.stock(n + 10)
    started = time.time()
    with ThreadPoolExecutor(concurrency) as pool:
        ids = list(
            pool.map(
                lambda i: shop.orders.PlaceOrder(request(run, i), timeout=30).order_id, range(n)
            )
        )
    shop.wait_all_finished()
    times = shop.confirmed(ids)
    last = max(updated for _, updated in times)
    return n / (last - started), [(u - c) * 1000 for c, u in times]


def paced(shop: Shop, rate: float, duration: float) -> tuple[float, list[float]]:
    """Place ``rate`` orders a second for ``duration`` seconds, each at its time (open loop);
    (the rate achieved, place -> confirmed latencies in ms)."""
    run = uuid.uuid4().hex[:6]
    n = int(rate * duration)
    shop.stock(n + 10)
    futures: list[Future[str]] = []
    # Enough senders that a slow PlaceOrder does not hold up the next one's time.
    with ThreadPoolExecutor(8) as pool:
        started = time.perf_counter()
        for i in range(n):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)  # the pacing itself, not a wait for a state
            futures.append(
                pool.submit(
                    lambda i=i: shop.orders.PlaceOrder(request(run, i), timeout=30).order_id
                )
            )
        ids = [f.result() for f in futures]
        placed_in = time.perf_counter() - started
    shop.wait_all_finished()
    times = shop.confirmed(ids)
    return n / placed_in, [(u - c) * 1000 for c, u in times]


def round_trips(n: int, concurrency: int) -> tuple[float, list[float]]:
    """n bare unary round trips (health Check on orders); (calls/s, latencies in ms)."""
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


def components(root: Path) -> dict[str, int]:
    """Running component name -> pid (`mesh ps --json`), plus the Kafka broker (which the mesh
    may share rather than start) and this bench process (the clients)."""
    out = subprocess.run(
        [MESH, "--root", str(root), "ps", "--json"], capture_output=True, text=True, check=True
    ).stdout
    pids = {row["name"]: row["pid"] for row in json.loads(out) if row["pid"] and row["state"]}
    for entry in Path("/proc").iterdir():
        if "kafka" not in pids and entry.name.isdigit():
            try:
                if b"kafka.Kafka" in (entry / "cmdline").read_bytes():
                    pids["kafka"] = int(entry.name)
            except OSError:
                continue
    pids["bench clients"] = os.getpid()
    return pids


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields) - idle) / TICKS, sum(fields) / TICKS


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process (all its threads) has used so far."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def measured(
    pids: dict[str, int],
    profile: Path | None,
    label: str,
    run: Callable[[], tuple[float, list[float]]],
    spy_options: tuple[str, ...] = (),
) -> tuple[float, list[float], dict[str, float]]:
    """``run()``, with the CPU seconds each component spent during it (and py-spy recordings
    of the services when ``profile`` is a directory)."""
    spies = []
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)
        for name, pid in pids.items():
            if name in ("kafka", "schema-registry", "trace-receiver", "bench clients"):
                continue
            for fmt, suffix in (("flamegraph", "svg"), ("raw", "txt")):
                spies.append(
                    subprocess.Popen(
                        [str(BIN / "py-spy"), "record", "--pid", str(pid), "--rate", "50",
                         "--nonblocking", *spy_options, "--format", fmt,
                         "-o", str(profile / f"{label}-{name}.{suffix}")],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )  # fmt: skip
        time.sleep(1.0)  # py-spy attaches before the load starts (not a wait for a state)
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    busy_before, _ = machine_busy()
    rate, latencies = run()
    used = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    used["(whole machine)"] = machine_busy()[0] - busy_before
    for spy in spies:
        spy.send_signal(2)  # SIGINT: py-spy writes its output and exits
    for spy in spies:
        spy.wait(timeout=60)
    return rate, latencies, used


def print_cpu(label: str, used: dict[str, float], orders: int, wall: float) -> None:
    machine = used.pop("(whole machine)")
    total = sum(used.values())
    print(
        f"    CPU during {label}: mesh + Kafka + clients {total:.1f} s, whole machine"
        f" {machine:.1f} s, over {wall:.1f} s ({total / wall:.2f} / {machine / wall:.2f} cores"
        f" of {os.cpu_count()})"
    )
    for name, seconds in sorted(used.items(), key=lambda kv: -kv[1]):
        if seconds >= 0.05:
            print(f"      {name:<16}{seconds:7.2f} s  {seconds / orders * 1000:6.2f} ms/order")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=600, help="burst orders (default 600)")
    parser.add_argument("--concurrency", type=int, default=24, help="burst clients (default 24)")
    parser.add_argument("--rate", type=float, default=50.0, help="paced orders/s (default 50)")
    parser.add_argument("--duration", type=float, default=20.0, help="paced seconds (default 20)")
    parser.add_argument("--profile", type=Path, help="py-spy recordings of the burst, into DIR")
    parser.add_argument(
        "--gil", action="store_true", help="profile only threads holding the GIL (CPU, not waits)"
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set for the mesh's processes, for experiments (e.g. OTEL_SDK_DISABLED=true);"
        " figures are then not recorded",
    )
    parser.add_argument("--no-record", action="store_true", help="do not write results.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # .cache: `--kafka local` reuses the checkout's Kafka jars (.cache/kafka).
        for name in ("mesh.toml", "proto", ".cache"):
            (root / name).symlink_to(ROOT / name)
        print("==> mesh up -d --kafka local (scratch root)", flush=True)
        env = dict(os.environ) | dict(kv.split("=", 1) for kv in args.env)
        up = subprocess.run(
            [MESH, "--root", str(root), "up", "-d", "--kafka", "local"], check=False, env=env
        )
        if up.returncode != 0:
            subprocess.run([MESH, "--root", str(root), "down"], check=False)
            return 1
        try:
            pids = components(root)
            admin = StaticCredentials(mint(root, "admin"))
            with (
                connect(ORDERS, credentials=admin, downstreams=UNBOUNDED) as orders,
                connect(INVENTORY, credentials=admin, downstreams=UNBOUNDED) as inventory,
            ):
                shop = Shop(orders, inventory)
                burst(shop, 20, 4)  # warm up: connections, caches, the first outbox rows
                shop.wait_all_finished()
                print(f"==> burst: {args.orders} orders, {args.concurrency} clients", flush=True)
                t0 = time.perf_counter()
                rate, burst_lat, burst_cpu = measured(
                    pids,
                    args.profile,
                    "burst",
                    lambda: burst(shop, args.orders, args.concurrency),
                    ("--gil",) if args.gil else (),
                )
                print_cpu("the burst", burst_cpu, args.orders, time.perf_counter() - t0)
                print(f"==> paced: {args.rate:g} orders/s for {args.duration:g} s", flush=True)
                t0 = time.perf_counter()
                achieved, paced_lat, paced_cpu = measured(
                    pids, None, "paced", lambda: paced(shop, args.rate, args.duration)
                )
                print_cpu(
                    "the paced run", paced_cpu, int(args.rate * args.duration),
                    time.perf_counter() - t0,
                )  # fmt: skip
            print(f"==> {args.orders} bare gRPC round trips, {args.concurrency} clients")
            rtt_rate, rtt_lat = round_trips(args.orders, args.concurrency)
        finally:
            subprocess.run([MESH, "--root", str(root), "down"], check=False)
    p50, p95, p99 = (percentile(paced_lat, q) for q in (0.5, 0.95, 0.99))
    print()
    print(f"{'':34}{'per s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
    print(
        f"{'saga burst, place->CONFIRMED':34}{rate:>9.1f}{percentile(burst_lat, 0.5):>9.1f}"
        f"{percentile(burst_lat, 0.95):>9.1f}{percentile(burst_lat, 0.99):>9.1f}"
        "   (burst latencies are mostly queueing)"
    )
    print(f"{f'saga paced at {args.rate:g}/s':34}{achieved:>9.1f}{p50:>9.1f}{p95:>9.1f}{p99:>9.1f}")
    print(
        f"{'bare gRPC round trip':34}{rtt_rate:>9.1f}{percentile(rtt_lat, 0.5):>9.2f}"
        f"{percentile(rtt_lat, 0.95):>9.2f}{percentile(rtt_lat, 0.99):>9.2f}"
    )
    print(
        f"ratio (orders/s / round trips/s): {rate / rtt_rate:.3f}"
        "  (6 RPCs per order: 1/6 = 0.167 would be the call ceiling)"
    )
    if not (args.no_record or args.env):
        base = {"baseline": rtt_rate, "baseline_name": "bare gRPC round trips/s"}
        record("saga.throughput", rate, "orders/s", target=100, orders=args.orders,
               concurrency=args.concurrency, **base)  # fmt: skip
        for name, value in (("p50", p50), ("p95", p95), ("p99", p99)):
            record(
                f"saga.paced.{name}", value, "ms", better="lower",
                target=250 if name == "p99" else None, rate=args.rate, duration=args.duration,
                baseline=percentile(rtt_lat, {"p50": 0.5, "p95": 0.95, "p99": 0.99}[name]),
                baseline_name=f"bare gRPC round trip {name} (ms)",
            )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
