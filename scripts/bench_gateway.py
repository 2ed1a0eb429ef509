#!/usr/bin/env python3
"""The gateway's cost: GET /v1/orders/{id} through it against a direct gRPC GetOrder, same run.

Runs the whole shop (`mesh up -d` in a scratch root, every component on free ports, identity with
the tests' clients, the gateway with rate limits out of the way), registers a customer, logs in
with the authorization code flow + PKCE (tests/support/identity.login), places one order over
gRPC with that customer's token (the stock set with an admin's, minted by the mesh's identity as
`mesh token --role admin` does) and waits until it is CONFIRMED. Both modes below read the order
with the customer's token: orders checks it (the order's own customer) on every call. Then, per
concurrency (default 1 and 32), in interleaved rounds (the order of the two flips every round):

- ``gateway``: GET /v1/orders/{id} with the bearer token, HTTP/1.1 keep-alive, one connection
  per client thread (http.client);
- ``direct``:  GetOrder on orders over one gRPC channel (grpc sync stub), the same metadata the
  gateway sends on (``authorization``, ``x-request-id``).

The load comes from a separate process (this script with ``--load``), the same Python client
shape for both (threads, a blocking call each): its CPU is measured and printed apart, so what
the gateway and orders cost per request is read from /proc and not mixed with the client's, and
the client's GIL is not the gateway's. Both clients are Python on purpose: a C load generator
(wrk is on this box) would take less of the 2 cores on the HTTP side only and flatter the ratio.
The machine has 2 cores and client, gateway, orders and the trace receiver share them, as they
would on one host; the CPU table says who used what, and ``ctxsw/req`` the context switches of
gateway + orders per request (thread hand-offs: waitress's loop -> worker -> gRPC's threads).

Recorded (scripts/benchlib.py): ``gateway.get_order.c{N}`` (value: gateway rps, baseline: direct
rps, the round with the median ratio; target 0.5 on the ratio) and ``gateway.get_order.c{N}.p50``
/ ``.p99`` (ms, against the direct call's). Then one more c32 gateway round runs under py-spy
(``--gil``: the thread holding the GIL, i.e. where the gateway's Python CPU goes; not measured),
and the top frames are printed by layer (token verification, transcoding, gRPC call, werkzeug,
waitress, logging, tracing...); the flame graph and raw stacks go to ``--profile-dir``.

    .venv/bin/python scripts/bench_gateway.py [--seconds 3] [--rounds 3] [--concurrency 1 32]
                                              [--profile-dir .bench/gateway] [--no-profile]

Nothing passes or fails on a number; the script fails when the mesh cannot start or a request
fails.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import grpc
from benchlib import percentile, record

from shop.common.v1 import common_pb2
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.orders.v1 import orders_pb2, orders_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MESH = str(BIN / "mesh")
# The tests' helpers: the moved mesh.toml, the test OAuth clients, register() and login().
sys.path.insert(0, str(ROOT / "tests"))

MODES = ("gateway", "direct")
SKU = "bench-gateway-sku"
PASSWORD = "correct horse battery staple 42"  # noqa: S105  (a throwaway bench account)
# Limits far above anything a run reaches: the bench measures the gateway, not its 429s (the
# limiter still runs: one bucket check per request per key, as in production).
LIMITS = """
[[default]]
name = "bench"
capacity = 100000000
per_seconds = 1
"""
TICKS = os.sysconf("SC_CLK_TCK")


# --- the load generator (a separate process) -------------------------------------------------


@dataclass(frozen=True)
class LoadSpec:
    """What one load process does: ``mode`` against ``target`` from ``concurrency`` threads."""

    mode: str  # gateway | direct
    target: str  # gateway: http://host:port; direct: host:port of orders
    order_id: str
    token: str
    concurrency: int
    seconds: float


def _http_caller(spec: LoadSpec) -> Callable[[], Callable[[], None]]:
    """A factory of per-thread callers: each owns one keep-alive HTTP/1.1 connection."""
    host, _, port = spec.target.removeprefix("http://").partition(":")
    path = f"/v1/orders/{spec.order_id}"
    headers = {"Authorization": f"Bearer {spec.token}", "Accept": "application/json"}

    def make() -> Callable[[], None]:
        connection = http.client.HTTPConnection(host, int(port), timeout=10)

        def call() -> None:
            connection.request("GET", path, headers=headers)
            reply = connection.getresponse()
            body = reply.read()
            if reply.status != 200:
                raise RuntimeError(f"GET {path} -> {reply.status}: {body[:200]!r}")

        return call

    return make


def _grpc_caller(spec: LoadSpec) -> Callable[[], Callable[[], None]]:
    """A factory of per-thread callers sharing one channel (one HTTP/2 connection), as the
    gateway shares its channel to orders."""
    channel = grpc.insecure_channel(spec.target)
    stub = orders_pb2_grpc.OrdersServiceStub(channel)
    request = orders_pb2.GetOrderRequest(order_id=spec.order_id)
    metadata = (("x-request-id", "bench"), ("authorization", f"Bearer {spec.token}"))

    def make() -> Callable[[], None]:
        def call() -> None:
            stub.GetOrder(request, timeout=10, metadata=metadata)

        return call

    return make


# What a failed call raises: the parent reports the first one and fails the run.
FAILURES = (OSError, http.client.HTTPException, grpc.RpcError, RuntimeError)


def run_load(spec: LoadSpec, control: IO[str], out: IO[str]) -> int:
    """Warm up every thread, say ``ready``, wait for a line on ``control``, load for
    ``spec.seconds``, then write one JSON line: count, elapsed, p50/p99 ms, this process's CPU
    seconds over the window, the first error (if any)."""
    make = _http_caller(spec) if spec.mode == "gateway" else _grpc_caller(spec)
    latencies: list[list[float]] = [[] for _ in range(spec.concurrency)]
    errors: list[str] = []
    start_line = threading.Barrier(spec.concurrency + 1)
    warmed = threading.Barrier(spec.concurrency + 1)
    deadline = [0.0]

    def worker(index: int) -> None:
        call = make()
        try:
            for _ in range(20):  # connection, caches, the server's first requests
                call()
        except FAILURES as exc:  # reported by the parent, which fails the run
            errors.append(f"warm-up: {exc}")
        warmed.wait()
        start_line.wait()
        mine = latencies[index]
        clock = time.perf_counter
        while not errors:
            began = clock()
            if began >= deadline[0]:
                return
            try:
                call()
            except FAILURES as exc:
                errors.append(str(exc))
                return
            mine.append(clock() - began)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(spec.concurrency)]
    for thread in threads:
        thread.start()
    warmed.wait()
    out.write("ready\n")
    out.flush()
    control.readline()
    cpu_before = time.process_time()
    began = time.perf_counter()
    deadline[0] = began + spec.seconds
    start_line.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    cpu = time.process_time() - cpu_before
    every = [x * 1000 for mine in latencies for x in mine]
    result = {
        "count": len(every),
        "elapsed": elapsed,
        "p50_ms": percentile(every, 0.5) if every else 0.0,
        "p99_ms": percentile(every, 0.99) if every else 0.0,
        "cpu_s": cpu,
        "error": errors[0] if errors else "",
    }
    out.write(json.dumps(result) + "\n")
    out.flush()
    return 0


# --- the mesh ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shop:
    """The running mesh: where the gateway and orders listen, pids, the customer's token and
    order."""

    gateway: str  # http://127.0.0.1:port
    orders: str  # 127.0.0.1:port
    pids: dict[str, int]
    token: str
    order_id: str


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process ``pid`` (all its threads) has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def context_switches(pid: int) -> int:
    """Voluntary + involuntary context switches of every thread of ``pid`` so far (a thread
    that ended takes its count with it: the servers' threads are long-lived pools)."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            for line in (task / "status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    total += int(line.split()[1])
    except OSError:
        pass
    return total


def machine_busy() -> float:
    """Busy CPU seconds of the whole machine so far (/proc/stat)."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / TICKS  # minus idle, iowait


def kafka_option() -> str:
    """A broker already answering on 127.0.0.1:9092 is shared (and left running at the end);
    otherwise `mesh up` starts the local one in the scratch root and `mesh down` stops it."""
    from mesh_runner.processes import port_open

    return "127.0.0.1:9092" if port_open("127.0.0.1", 9092, timeout=0.5) else "local"


def mesh(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`mesh --root ROOT ARGS...` in ``env``, output captured."""
    return subprocess.run(
        [MESH, "--root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )


def prepare(root: Path) -> tuple[dict[str, int], dict[str, str]]:
    """The scratch root: the repository's components moved to free ports, the tests' OAuth
    clients, roomy rate limits. Returns the ports and the environment for `mesh up`."""
    from support.identity import TEST_CLIENTS
    from support.mesh import write_moved_mesh_toml

    for name in ("proto", "scripts", ".cache"):
        (root / name).symlink_to(ROOT / name)
    ports = write_moved_mesh_toml(root)
    (root / "clients.toml").write_text(TEST_CLIENTS)
    (root / "ratelimits.toml").write_text(LIMITS)
    env = {
        **os.environ,
        "GATEWAY_RATE_LIMITS_FILE": str(root / "ratelimits.toml"),
        "SCHEMA_REGISTRY_URL": f"http://127.0.0.1:{ports['schema-registry']}",
        "IDENTITY_CLIENTS_FILE": str(root / "clients.toml"),
    }
    # The mesh's own trace receiver and Kafka choice, not whatever this shell points at.
    for key in ("MESH_KAFKA_BOOTSTRAP", "OTEL_EXPORTER_OTLP_ENDPOINT", "MESH_CONFIG"):
        env.pop(key, None)
    return ports, env


def place_order(orders: str, inventory: str, customer: str, token: str, admin: str) -> str:
    """One order for ``customer`` over gRPC with the customer's ``token`` (the stock set with
    the ``admin`` token), waited for until CONFIRMED (the saga ran, so the order read back is a
    complete one); its id."""
    with grpc.insecure_channel(inventory) as channel:
        inventory_pb2_grpc.InventoryServiceStub(channel).SetStock(
            inventory_pb2.SetStockRequest(sku=SKU, quantity=100),
            timeout=10,
            metadata=(("authorization", f"Bearer {admin}"),),
        )
    request = orders_pb2.PlaceOrderRequest(
        request_id=f"bench-gateway-{uuid.uuid4().hex[:8]}",
        customer_id=customer,
        lines=[
            orders_pb2.OrderLine(
                sku=SKU,
                quantity=2,
                unit_price=common_pb2.Money(currency_code="EUR", units=9, nanos=990_000_000),
            )
        ],
        payment_token="tok_visa",
        shipping_address=common_pb2.Address(
            name="Bench", line1="1 Load St", city="Berlin", postal_code="10115", country_code="DE"
        ),
    )
    mine = (("authorization", f"Bearer {token}"),)
    with grpc.insecure_channel(orders) as channel:
        stub = orders_pb2_grpc.OrdersServiceStub(channel)
        order_id = str(stub.PlaceOrder(request, timeout=30, metadata=mine).order_id)
        deadline = time.monotonic() + 60
        while True:
            order = stub.GetOrder(
                orders_pb2.GetOrderRequest(order_id=order_id), timeout=10, metadata=mine
            ).order
            if order.status == orders_pb2.ORDER_STATUS_CONFIRMED:
                return order_id
            if order.status == orders_pb2.ORDER_STATUS_CANCELLED or time.monotonic() > deadline:
                name = orders_pb2.OrderStatus.Name(order.status)
                raise RuntimeError(f"the bench order ended {name} {order.cancellation_reason!r}")
            time.sleep(0.1)  # poll interval within the deadline loop


def start_shop(root: Path, ports: dict[str, int], env: dict[str, str]) -> Shop:
    """Customer, token and confirmed order on the mesh `mesh up` started in ``root``."""
    from support.identity import Identity, login, register

    from mesh_runner.token import mint

    identity = Identity(
        root,
        f"127.0.0.1:{ports['identity']}",
        f"http://127.0.0.1:{ports['identity:http']}",
        env["SCHEMA_REGISTRY_URL"],
        env,
    )
    email = f"bench-{uuid.uuid4().hex[:10]}@example.com"
    user_id = register(identity, email, PASSWORD)
    token = str(login(identity, email, PASSWORD)["access_token"])
    orders = f"127.0.0.1:{ports['orders']}"
    admin = mint(root, "admin")
    order_id = place_order(orders, f"127.0.0.1:{ports['inventory']}", user_id, token, admin)
    listed = json.loads(mesh(root, env, "ps", "--json").stdout)
    pids = {str(row["name"]): int(row["pid"]) for row in listed if row["pid"] and row["state"]}
    gateway = f"http://127.0.0.1:{ports['gateway:http']}"
    shop = Shop(gateway, orders, pids, token, order_id)
    check_same_order(shop)
    return shop


def check_same_order(shop: Shop) -> None:
    """The gateway answers the order orders holds (so both modes measure the same read)."""
    import requests

    reply = requests.get(
        f"{shop.gateway}/v1/orders/{shop.order_id}",
        headers={"Authorization": f"Bearer {shop.token}"},
        timeout=10,
    )
    if reply.status_code != 200:
        raise RuntimeError(f"gateway GET -> {reply.status_code}: {reply.text[:300]}")
    got = reply.json()["order"]
    if got["orderId"] != shop.order_id or got["status"] != "ORDER_STATUS_CONFIRMED":
        raise RuntimeError(f"the gateway answered another order: {got}")


# --- measuring ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    """One measured window: rate, latencies and CPU per request of each process."""

    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: dict[str, float]  # process -> CPU µs per request (client, gateway, orders, ...)
    switches: float  # context switches of gateway + orders per request


WATCHED = ("gateway", "orders", "trace-receiver")


def measure(shop: Shop, mode: str, concurrency: int, seconds: float) -> Result:
    """One window of ``mode`` load from a fresh load process."""
    target = shop.gateway if mode == "gateway" else shop.orders
    argv = [
        sys.executable,
        __file__,
        "--load",
        mode,
        "--target",
        target,
        "--order-id",
        shop.order_id,
        "--concurrency",
        str(concurrency),
        "--seconds",
        str(seconds),
    ]
    env = {**os.environ, "BENCH_GATEWAY_TOKEN": shop.token}  # not on a command line
    load = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert load.stdin is not None and load.stdout is not None
        if load.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the {mode} load process did not start")
        pids = {name: shop.pids[name] for name in WATCHED if name in shop.pids}
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        switched = sum(context_switches(pids[n]) for n in ("gateway", "orders"))
        busy = machine_busy()
        load.stdin.write("go\n")
        load.stdin.flush()
        answer = json.loads(load.stdout.readline())
        used = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
        used["machine"] = machine_busy() - busy
        switched = sum(context_switches(pids[n]) for n in ("gateway", "orders")) - switched
        load.wait(30)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
    if answer["error"]:
        raise RuntimeError(f"{mode} c{concurrency}: {answer['error']}")
    count = int(answer["count"])
    used["client"] = float(answer["cpu_s"])
    return Result(
        count / float(answer["elapsed"]),
        float(answer["p50_ms"]),
        float(answer["p99_ms"]),
        {name: s / count * 1e6 for name, s in used.items()},
        switched / count,
    )


CPU_COLUMNS = ("client", "gateway", "orders", "trace-receiver", "machine")


def report_line(concurrency: int, mode: str, results: list[Result], ratios: str) -> str:
    """One table row: medians over the rounds."""
    rps = statistics.median(r.rps for r in results)
    p50 = statistics.median(r.p50_ms for r in results)
    p99 = statistics.median(r.p99_ms for r in results)
    cpu = "".join(
        f"{statistics.median(r.cpu_us.get(c, 0.0) for r in results):>9.0f}" for c in CPU_COLUMNS
    )
    switches = statistics.median(r.switches for r in results)
    return (
        f"{concurrency:>4}  {mode:<8}{rps:>8.0f}{p50:>8.2f}{p99:>8.2f}{cpu}{switches:>7.1f}"
        f"  {ratios}"
    )


def record_figures(concurrency: int, gateway: list[Result], direct: list[Result]) -> None:
    """``gateway.get_order.c{N}``: the round with the median gateway/direct ratio (value and
    baseline from the same round, so the recorded ratio is a measured one); its latencies."""
    pairs = sorted(zip(gateway, direct, strict=True), key=lambda p: p[0].rps / p[1].rps)
    via, bare = pairs[len(pairs) // 2]

    def cpu(results: list[Result]) -> dict[str, int]:
        return {
            c: round(statistics.median(r.cpu_us.get(c, 0.0) for r in results)) for c in CPU_COLUMNS
        }

    name = f"gateway.get_order.c{concurrency}"
    record(
        name,
        via.rps,
        "rps",
        baseline=bare.rps,
        baseline_name=f"GetOrder over gRPC directly to orders, concurrency {concurrency}, same run",
        target=0.5,
        note="target is on ratio (gateway rps / direct gRPC rps); value and baseline are the"
        " round with the median ratio; load from a separate Python process (threads,"
        " keep-alive HTTP/1.1 vs one gRPC channel)",
        concurrency=concurrency,
        rounds=[round(g.rps / d.rps, 3) for g, d in zip(gateway, direct, strict=True)],
        cpu_us_per_request={"gateway": cpu(gateway), "direct": cpu(direct)},
        context_switches_per_request={
            "gateway": round(statistics.median(r.switches for r in gateway), 1),
            "direct": round(statistics.median(r.switches for r in direct), 1),
        },
    )
    for quantile in ("p50", "p99"):
        record(
            f"{name}.{quantile}",
            statistics.median(getattr(r, f"{quantile}_ms") for r in gateway),
            "ms",
            baseline=statistics.median(getattr(r, f"{quantile}_ms") for r in direct),
            baseline_name=f"GetOrder over gRPC directly, {quantile} (ms), same run",
            better="lower",
            concurrency=concurrency,
        )


# --- the profile -------------------------------------------------------------------------------

# Where a sample's time goes: the leaf-most frame from one of these files names its layer (so
# json.dumps called by the log formatter counts as logging, by the edge as the response).
LAYERS: tuple[tuple[str, str], ...] = (
    ("/meshkit/tokens.py", "token verification (PyJWT, ES256)"),
    ("/jwt/", "token verification (PyJWT, ES256)"),
    ("/cryptography/", "token verification (PyJWT, ES256)"),
    ("/gateway/transcoding.py", "transcoding (protojson in/out)"),
    ("/google/protobuf/", "transcoding (protojson in/out)"),
    ("/gateway/ratelimit.py", "rate limiting"),
    ("/gateway/routing.py", "routing (route match)"),
    # Before /grpc/: the OTLP exporter lives in opentelemetry/exporter/otlp/proto/grpc/.
    ("/opentelemetry/", "tracing (spans, export)"),
    ("/meshkit/telemetry.py", "tracing (spans, export)"),
    ("/meshkit/spans.py", "tracing (spans, export)"),
    ("/meshkit/otlp.py", "tracing (spans, export)"),
    ("/site-packages/grpc/", "gRPC call (client stub)"),
    ("/meshkit/logs.py", "logging (access log)"),
    ("/logging/", "logging (access log)"),
    ("/werkzeug/", "werkzeug (Request/Response)"),
    ("/meshkit/http.py", "meshkit.http middleware (span, timing)"),
    ("/waitress/", "waitress (HTTP server)"),
    ("/gateway/edge.py", "edge pipeline (headers, JSON body)"),
)


def layer_of(frames: Sequence[str]) -> str:
    """The layer of one stack (frames root first, ``func (file:line)``)."""
    for frame in reversed(frames):
        for needle, layer in LAYERS:
            if needle in frame:
                if layer.startswith("edge") and "_call " in frame:
                    return "gRPC call (client stub)"
                return layer
    return "other (threading, selectors, ...)"


def _short(frame: str) -> str:
    """``func (path:line)`` with the path from its package on (as py-spy shows it by default)."""
    for marker in ("/site-packages/", "/src/", "/lib/python3.11/"):
        head, found, tail = frame.rpartition(marker)
        if found:
            return head.partition(" (")[0] + " (" + tail
    return frame


def summarise(raw: Path, top: int = 12) -> list[str]:
    """The profile by layer, then the top leaf frames (self time), from py-spy's raw output."""
    layers: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if "(" in f]
        if not frames:
            continue
        layers[layer_of(frames)] += int(count)
        leaf = frames[-1]
        leaves[_short(leaf)] += int(count)
    total = sum(layers.values())
    if not total:
        return ["  (py-spy recorded no samples)"]
    lines = [f"  {total} samples with the GIL held; by layer (leaf-most frame from the layer):"]
    lines += [f"    {n / total:6.1%}  {layer}" for layer, n in layers.most_common()]
    lines.append(f"  top {top} frames by self time:")
    lines += [f"    {n / total:6.1%}  {leaf[:110]}" for leaf, n in leaves.most_common(top)]
    return lines


def profile(shop: Shop, directory: Path, seconds: float) -> list[str]:
    """A c32 gateway window under py-spy (raw stacks and a flame graph), summarised."""
    directory.mkdir(parents=True, exist_ok=True)
    pid = shop.pids["gateway"]
    spies = [
        subprocess.Popen(
            [str(BIN / "py-spy"), "record", "--pid", str(pid), "--rate", "200", "--gil",
             "--nonblocking", "--full-filenames", "--format", fmt,
             "-o", str(directory / f"gateway-c32.{suffix}")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for fmt, suffix in (("raw", "txt"), ("flamegraph", "svg"))
    ]  # fmt: skip
    try:
        time.sleep(1.0)  # py-spy attaches before the load starts (not a wait for a state)
        result = measure(shop, "gateway", 32, seconds)
    finally:
        for spy in spies:
            spy.send_signal(2)  # SIGINT: py-spy writes its output and exits
        for spy in spies:
            _, err = spy.communicate(timeout=60)
            if spy.returncode not in (0, -2) and err:
                print(f"py-spy: {err.decode(errors='replace').strip()}", file=sys.stderr)
    lines = [
        f"py-spy on the gateway (pid {pid}), c32 for {seconds:g} s at {result.rps:.0f} rps (not"
        f" a measured round): {directory / 'gateway-c32.svg'}"
    ]
    raw = directory / "gateway-c32.txt"
    return lines + (summarise(raw) if raw.exists() else ["  (no raw profile written)"])


# --- main --------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Start the shop, measure both modes per concurrency over interleaved rounds, record,
    profile, stop the shop."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement (default 3)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument(
        "--profile-dir", type=Path, default=ROOT / ".bench" / "gateway", help="py-spy output"
    )
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy round")
    parser.add_argument("--no-record", action="store_true", help="do not write results.json")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set for the mesh's processes, for experiments (e.g. OTEL_SDK_DISABLED=true);"
        " figures are then not recorded",
    )
    parser.add_argument("--load", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--order-id", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.load:
        spec = LoadSpec(
            args.load,
            args.target,
            args.order_id,
            os.environ["BENCH_GATEWAY_TOKEN"],
            args.concurrency[0],
            args.seconds,
        )
        return run_load(spec, sys.stdin, sys.stdout)

    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        root = Path(tmp)
        ports, env = prepare(root)
        env.update(kv.split("=", 1) for kv in args.env)
        kafka = kafka_option()
        print(f"==> mesh up -d --kafka {kafka} (scratch root, free ports)", flush=True)
        up = mesh(root, env, "up", "-d", "--kafka", kafka)
        try:
            if up.returncode != 0:
                print(up.stdout + up.stderr, file=sys.stderr)
                return 1
            shop = start_shop(root, ports, env)
            print(
                f"==> GET /v1/orders/{{id}} via the gateway ({shop.gateway}) vs GetOrder on"
                f" orders ({shop.orders}); {args.seconds:g} s per window, {args.rounds}"
                " interleaved rounds (medians)",
                flush=True,
            )
            header = "".join(
                f"{c:>9}" for c in ("client", "gateway", "orders", "receiver", "machine")
            )
            print(
                f"{'conc':>4}  {'mode':<8}{'rps':>8}{'p50 ms':>8}{'p99 ms':>8}{header}"
                f"{'ctxsw':>7}  ratio"
            )
            print(f"{'':4}  {'':8}{'':24}{'<------- CPU us per request ------->':>45}{'/req':>7}")
            for concurrency in args.concurrency:
                runs: dict[str, list[Result]] = {mode: [] for mode in MODES}
                for index in range(args.rounds):
                    order = MODES if index % 2 == 0 else MODES[::-1]
                    for mode in order:
                        runs[mode].append(measure(shop, mode, concurrency, args.seconds))
                ratios = [
                    g.rps / d.rps for g, d in zip(runs["gateway"], runs["direct"], strict=True)
                ]
                each = " ".join(f"{r:.2f}" for r in ratios)
                print(report_line(concurrency, "direct", runs["direct"], ""))
                print(
                    report_line(
                        concurrency,
                        "gateway",
                        runs["gateway"],
                        f"{statistics.median(ratios):.2f} (rounds {each})",
                    ),
                    flush=True,
                )
                if not (args.no_record or args.env):
                    record_figures(concurrency, runs["gateway"], runs["direct"])
            if not args.no_profile:
                print()
                for line in profile(shop, args.profile_dir, max(args.seconds, 8.0)):
                    print(line)
        finally:
            down = mesh(root, env, "down")
            if down.returncode != 0:
                print(down.stdout + down.stderr, file=sys.stderr)
    print(
        "ratio = gateway rps / direct rps per round (target >= 0.5). CPU us per request: user +"
        " system CPU of each process over the window / requests; machine = every process on the"
        " box (2 cores), so its excess over the sum is other work on the machine. ctxsw/req:"
        " context switches of gateway + orders per request."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
