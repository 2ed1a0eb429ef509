#!/usr/bin/env python3
"""Benchmark the schema registry against this machine's limit, measured in the same run.

1. Register throughput: POSTs of distinct schemas (one new id and version each), req/s.
2. GET /schemas/ids/{id} with wrk against the registry, and against nginx serving the very same
   response bytes from a file on another loopback port: nginx is the ceiling for this exchange
   on this machine, so the result is a ratio (target: registry >= 1/20 of nginx).
3. Kafka storage beside SQLite (issue 18), two one-worker registries side by side: the same GET
   in interleaved wrk rounds (target: Kafka >= 0.9 of SQLite), and registrations per second.
   Skipped, as the failover figure is, when no broker answers on 127.0.0.1:9092.

Needs `wrk` and `nginx` (Debian packages `wrk`, `nginx-light`); when missing and running as root
it installs them with apt-get. Everything it starts is stopped on exit.

    .venv/bin/python scripts/bench_registry.py [--duration 10] [--connections 64] [--workers 2]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from benchlib import percentile, record
from confluent_kafka.admin import AdminClient

from meshkit.events.kafkalog import with_python_logging

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = ROOT / ".venv" / "bin" / "schema-registry"
TARGET_RATIO = 1 / 20
V1_JSON = "application/vnd.schemaregistry.v1+json"


@dataclass
class WrkResult:
    """What wrk measured."""

    requests_per_s: float
    p99_ms: float
    errors: int


def ensure_tools() -> tuple[str, str]:
    """Paths of wrk and nginx, installing the Debian packages when missing (root only)."""
    wrk = shutil.which("wrk")
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if wrk and nginx:
        return wrk, nginx
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        sys.exit("bench_registry: needs wrk and nginx: apt-get install wrk nginx-light")
    print("==> installing wrk and nginx-light with apt-get", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk", "nginx-light"], check=True, env=env)
    return shutil.which("wrk") or "wrk", shutil.which("nginx") or "/usr/sbin/nginx"


@contextmanager
def registry(workdir: Path, workers: int, storage: str | None = None) -> Iterator[int]:
    """A registry subprocess on a free port (on ``storage``, default a SQLite file in
    ``workdir``); yields the port."""
    err = (workdir / "registry.err").open("w+")
    proc = subprocess.Popen(
        [
            str(REGISTRY),
            "serve",
            "--port",
            "0",
            "--workers",
            str(workers),
            "--storage",
            storage or f"sqlite:///{workdir / 'bench.db'}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=err,
        cwd=workdir,
    )
    try:
        deadline = time.monotonic() + 30
        port = None
        while port is None:
            err.seek(0)
            found = re.search(r"listening on http://[^:]+:(\d+)", err.read())
            if found:
                port = int(found.group(1))
            elif proc.poll() is not None or time.monotonic() > deadline:
                err.seek(0)
                sys.exit(f"bench_registry: registry did not start:\n{err.read()}")
            else:
                time.sleep(0.05)
        wait_http(port)
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        err.close()


@contextmanager
def nginx(nginx_bin: str, workdir: Path, body: bytes, path: str, workers: int) -> Iterator[int]:
    """nginx serving `body` at `path` from a file, with the registry's content type."""
    root = workdir / "www"
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(body)
    port = free_port()
    tmp = workdir / "nginx-tmp"
    tmp.mkdir(exist_ok=True)
    conf = workdir / "nginx.conf"
    conf.write_text(
        f"""
worker_processes {workers};
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    default_type {V1_JSON};
    # sendfile costs more than it saves on a ~100-byte file: off is nginx's best here.
    sendfile off; tcp_nodelay on;
    open_file_cache max=100 inactive=60s; open_file_cache_valid 3600s;
    keepalive_requests 10000000;
    etag off; server_tokens off;
    client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp};
    uwsgi_temp_path {tmp}; scgi_temp_path {tmp};
    server {{ listen 127.0.0.1:{port}; root {root}; }}
}}
"""
    )
    proc = subprocess.Popen(
        [nginx_bin, "-c", str(conf), "-p", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(port, path)
        yield port
    finally:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(port: int, path: str = "/") -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            conn.getresponse().read()
            conn.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                sys.exit(f"bench_registry: nothing answers on port {port}")
            time.sleep(0.05)


def schema(n: int, fields: int = 8) -> str:
    return json.dumps(
        {
            "type": "record",
            "name": f"Event{n}",
            "namespace": "bench.events",
            "doc": "A benchmark event.",
            "fields": [
                {"name": f"f{i}", "type": ["null", "string"], "default": None}
                for i in range(fields)
            ],
        }
    )


def bench_register(port: int, total: int, threads: int) -> tuple[float, int]:
    """Register `total` distinct schemas from `threads` keep-alive clients; (req/s, failures)."""
    failures = [0]
    per_thread = total // threads

    def run(t: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        headers = {"Content-Type": V1_JSON}
        for i in range(per_thread):
            n = t * per_thread + i
            conn.request(
                "POST", f"/subjects/bench-{n}/versions", json.dumps({"schema": schema(n)}), headers
            )
            reply = conn.getresponse()
            reply.read()
            if reply.status != 200:
                failures[0] += 1
        conn.close()

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    started = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return per_thread * threads / (time.perf_counter() - started), failures[0]


def run_wrk(wrk: str, url: str, duration: int, connections: int) -> WrkResult:
    # A short warm-up first: connection setup and first-request caches are not the steady state.
    subprocess.run([wrk, "-t1", f"-c{connections}", "-d1s", url], check=True, capture_output=True)
    out = subprocess.run(
        [wrk, "-t1", f"-c{connections}", f"-d{duration}s", "--latency", url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    p99_ms = float(p99.group(1)) * scale[p99.group(2)] if p99 else float("nan")
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return WrkResult(rps, p99_ms, int(errors.group(1)) if errors else 0)


RSS_URLS = 100_000
RSS_TARGET_MIB = 100


def bench_rss_after_404s(workdir: Path, urls: int = RSS_URLS) -> tuple[float, float]:
    """(idle RSS, RSS after ``urls`` GETs of unique unknown subjects) of a fresh one-worker
    registry, in MiB. Each path is ~4 KiB (under any sane URL limit) and its 404 echoes the
    subject: a response cache that kept error answers, or was bounded by count and not bytes,
    grew by hundreds of MiB on this (issue 17)."""
    home = workdir / "rss"
    home.mkdir()
    pad = "x" * 4000
    with registry(home, 1) as port:
        pid = _pid_serving(home)
        _pipelined(port, (f"/subjects/warm-{n}/versions" for n in range(1000)))
        idle = _rss_mib(pid)
        _pipelined(port, (f"/subjects/{n}-{pad}/versions" for n in range(urls)))
        return idle, _rss_mib(pid)


def _pid_serving(home: Path) -> int:
    """The pid of the registry whose storage lives in ``home`` (Linux: read from /proc)."""
    needle = str(home / "bench.db").encode()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if needle in cmdline.read_bytes():
                return int(cmdline.parent.name)
        except OSError:  # the process ended while we looked
            continue
    sys.exit(f"bench_registry: no registry process serving {home}")


def _rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    kib = re.search(r"VmRSS:\s+(\d+) kB", status)
    return int(kib.group(1)) / 1024 if kib else float("nan")


def _pipelined(port: int, paths: Iterator[str], batch: int = 32) -> None:
    """GET every path on one keep-alive connection, ``batch`` requests in flight at a time
    (small enough that neither side's socket buffer fills while the other is not reading)."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        replies = sock.makefile("rb")
        done = False
        while not done:
            chunk = [p for _, p in zip(range(batch), paths, strict=False)]
            done = len(chunk) < batch
            sock.sendall(b"".join(f"GET {p} HTTP/1.1\r\nHost: b\r\n\r\n".encode() for p in chunk))
            for _ in chunk:
                length = 0
                while (line := replies.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                replies.read(length)


CHECK_FIELDS = 100_000
READ_P99_TARGET_MS = 20.0


def bench_reads_during_check(
    port: int, seconds: float = 5.0, fields: int = CHECK_FIELDS
) -> tuple[float, float, int, float]:
    """(p99 of GET /schemas/ids/{id} alone, p99 of the same reads while compatibility checks
    of a ``fields``-field schema run back to back, reads measured during checks, seconds per
    check); latencies in ms. One keep-alive client reads in a loop, another checks.

    The subject's latest version has 1,000 of the fields (a registration may carry 1 MiB of
    schema text, less than 100,000 fields take); the check still parses all of them and
    compares each with the old version. Before issue 17 a check ran on the event loop, and
    every read on its worker waited for it (5.4 s)."""
    wide = [{"name": f"f{i}", "type": "string", "default": ""} for i in range(fields)]
    old = json.dumps({"type": "record", "name": "Wide", "fields": wide[:1000]})
    new = json.dumps({"schema": json.dumps({"type": "record", "name": "Wide", "fields": wide})})
    writer = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    headers = {"Content-Type": V1_JSON}
    writer.request("POST", "/subjects/bench-wide/versions", json.dumps({"schema": old}), headers)
    reply = writer.getresponse()
    schema_id = json.loads(reply.read())["id"]
    path = f"/schemas/ids/{schema_id}"
    check_path = "/compatibility/subjects/bench-wide/versions/latest"
    reader = http.client.HTTPConnection("127.0.0.1", port, timeout=300)

    def read_for(stop: threading.Event, during: threading.Event | None) -> list[float]:
        latencies = []
        while not stop.is_set():
            began = time.perf_counter()
            reader.request("GET", path)
            reader.getresponse().read()
            if during is None or during.is_set():
                latencies.append((time.perf_counter() - began) * 1000)
        return latencies

    alone_stop = threading.Event()
    threading.Timer(seconds, alone_stop.set).start()
    alone = read_for(alone_stop, None)

    stop, checking = threading.Event(), threading.Event()
    checks: list[float] = []

    def check() -> None:
        while not stop.is_set():
            checking.set()
            began = time.perf_counter()
            writer.request("POST", check_path, new, headers)
            answer = writer.getresponse()
            answer.read()
            checking.clear()
            if answer.status != 200:
                sys.exit(f"bench_registry: the compatibility check answered {answer.status}")
            checks.append(time.perf_counter() - began)

    checker = threading.Thread(target=check)
    checker.start()
    checking.wait(30)
    threading.Timer(seconds, stop.set).start()
    during = read_for(stop, checking)
    checker.join()
    writer.close()
    reader.close()
    return percentile(alone, 0.99), percentile(during, 0.99), len(during), sum(checks) / len(checks)


FAILOVER_RUNS = 5
KAFKA = "127.0.0.1:9092"


def kafka_admin() -> AdminClient | None:
    """An admin client of scripts/kafka's broker, or None when none answers (the Kafka
    figures are then skipped, not failed)."""
    admin = AdminClient(
        with_python_logging({"bootstrap.servers": KAFKA, "socket.timeout.ms": 3000})
    )
    try:
        admin.list_topics(timeout=5)
    except Exception:  # noqa: BLE001 - any failure to reach it means no broker here
        return None
    return admin


def bench_failover(workdir: Path, runs: int = FAILOVER_RUNS) -> list[float] | None:
    """Two instances on one fresh Kafka topic (scripts/kafka's broker); `runs` times: kill -9
    the primary, then time until a new registration sent to the survivor is accepted; restart
    the killed one. Seconds per run; None when no broker answers."""
    admin = kafka_admin()
    if admin is None:
        return None
    topic = f"bench.failover.{os.getpid()}.{int(time.time())}"
    group = f"meshkit-schema-registry.{topic}"

    def start() -> tuple[subprocess.Popen[bytes], int]:
        err = (workdir / f"failover-{time.monotonic_ns()}.err").open("w+b")
        proc = subprocess.Popen(
            [str(REGISTRY), "serve", "--port", "0", "--storage", f"kafka://{KAFKA}/{topic}"],
            stdout=subprocess.DEVNULL, stderr=err, cwd=workdir,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            err.seek(0)
            found = re.search(rb"listening on http://[^:]+:(\d+)", err.read())
            if found:
                return proc, int(found.group(1))
            time.sleep(0.05)  # polling a child's output with a deadline
        sys.exit("bench_registry: a Kafka-backed registry did not start")

    def primary_port() -> int:
        found = admin.describe_consumer_groups([group])[group].result(timeout=10)
        for member in found.members:
            parts = member.assignment.topic_partitions if member.assignment else []
            if any(tp.topic == topic for tp in parts):
                return int(member.client_id.rsplit(":", 1)[1])
        return -1

    procs = dict(start() for _ in range(2))
    times: list[float] = []
    try:
        for run in range(runs):
            by_port = {port: proc for proc, port in procs.items()}
            victim = primary_port()
            survivor = next(port for port in by_port if port != victim)
            by_port[victim].kill()
            killed = time.monotonic()
            by_port[victim].wait()
            del procs[by_port[victim]]
            while True:
                conn = http.client.HTTPConnection("127.0.0.1", survivor, timeout=30)
                body = json.dumps({"schema": schema(100_000 + run)})
                conn.request("POST", f"/subjects/failover-{run}/versions", body,
                             {"Content-Type": V1_JSON})  # fmt: skip
                status = conn.getresponse().status
                conn.close()
                if status == 200:
                    break
            times.append(time.monotonic() - killed)
            proc, port = start()
            procs[proc] = port
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)
    return times


def record_failover(workdir: Path) -> None:
    """Measure `bench_failover` and record its median (and max) as registry.failover."""
    print(f"==> failover on Kafka: kill -9 the primary, {FAILOVER_RUNS} runs", flush=True)
    runs = bench_failover(workdir)
    if not runs:
        print("failover: skipped (no Kafka broker on 127.0.0.1:9092; scripts/kafka start)")
        return
    median = sorted(runs)[len(runs) // 2]
    print(f"failover to the first accepted write: median {median:.1f} s, max {max(runs):.1f} s")
    record("registry.failover", median, "s", better="lower", max_s=round(max(runs), 2),
           runs=[round(f, 2) for f in runs])  # fmt: skip


KAFKA_READ_TARGET_RATIO = 0.9
KAFKA_READ_ROUNDS = 3
KAFKA_SCHEMAS = 200


@dataclass
class StorageComparison:
    """Kafka storage beside SQLite, both measured in one run: GET /schemas/ids/{id} with wrk
    per interleaved round (req/s) and registrations of distinct schemas (req/s, failures)."""

    kafka_reads: list[float]
    sqlite_reads: list[float]
    read_errors: int
    kafka_register: tuple[float, int]
    sqlite_register: tuple[float, int]


def _register_when_ready(port: int, timeout_s: float = 60.0) -> int:
    """Register one schema, retrying until accepted (a Kafka-backed instance answers reads
    before it is elected primary); its id."""
    deadline = time.monotonic() + timeout_s
    body = json.dumps({"schema": schema(200_000)})
    while True:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", "/subjects/warm-up/versions", body, {"Content-Type": V1_JSON})
        reply = conn.getresponse()
        answer = reply.read()
        conn.close()
        if reply.status == 200:
            return int(json.loads(answer)["id"])
        if time.monotonic() > deadline:
            sys.exit(f"bench_registry: no registration accepted on port {port}: {answer!r}")
        time.sleep(0.2)  # polling a starting registry, with a deadline


def bench_kafka_storage(
    wrk: str, workdir: Path, duration: int, connections: int
) -> StorageComparison | None:
    """One registry on a fresh Kafka topic (scripts/kafka's broker) and one on SQLite, both one
    worker, running side by side: `KAFKA_SCHEMAS` registrations from 4 clients on each, then
    GET /schemas/ids/{id} with wrk, alternating backends over `KAFKA_READ_ROUNDS` rounds (the
    order flips each round, so drift on the shared machine hits both). None without a broker."""
    admin = kafka_admin()
    if admin is None:
        return None
    topic = f"bench.registry.{os.getpid()}.{int(time.time())}"
    homes = {name: workdir / f"storage-{name}" for name in ("sqlite", "kafka")}
    for home in homes.values():
        home.mkdir()
    seconds = max(2, duration // 2)
    try:
        with (
            registry(homes["sqlite"], 1) as sqlite_port,
            registry(homes["kafka"], 1, storage=f"kafka://{KAFKA}/{topic}") as kafka_port,
        ):
            ports = {"sqlite": sqlite_port, "kafka": kafka_port}
            ids = {name: _register_when_ready(port) for name, port in ports.items()}
            registered = {}
            for name, port in ports.items():
                print(f"==> register on {name}: {KAFKA_SCHEMAS} distinct schemas, 4 clients")
                registered[name] = bench_register(port, KAFKA_SCHEMAS, threads=4)
            reads: dict[str, list[float]] = {"sqlite": [], "kafka": []}
            errors = 0
            for round_ in range(KAFKA_READ_ROUNDS):
                order = ["sqlite", "kafka"] if round_ % 2 == 0 else ["kafka", "sqlite"]
                for name in order:
                    print(f"==> wrk {seconds}s x {connections} conns: {name}, round {round_ + 1}")
                    url = f"http://127.0.0.1:{ports[name]}/schemas/ids/{ids[name]}"
                    result = run_wrk(wrk, url, seconds, connections)
                    reads[name].append(result.requests_per_s)
                    errors += result.errors
    finally:
        with suppress(Exception):  # a topic left behind costs the broker little
            admin.delete_topics([topic], request_timeout=10)[topic].result(timeout=10)
    return StorageComparison(
        reads["kafka"], reads["sqlite"], errors, registered["kafka"], registered["sqlite"]
    )


def record_kafka_storage(wrk: str, workdir: Path, duration: int, connections: int) -> None:
    """Measure `bench_kafka_storage`; record registry.kafka_reads (median round) and
    registry.kafka_register, each with SQLite's figure from the same run as the baseline."""
    print("==> Kafka storage beside SQLite: reads (interleaved) and registrations", flush=True)
    found = bench_kafka_storage(wrk, workdir, duration, connections)
    if found is None:
        print("kafka storage: skipped (no Kafka broker on 127.0.0.1:9092; scripts/kafka start)")
        return
    kafka_rps = statistics.median(found.kafka_reads)
    sqlite_rps = statistics.median(found.sqlite_reads)
    ratio = kafka_rps / sqlite_rps
    (kafka_reg, kafka_fail), (sqlite_reg, sqlite_fail) = found.kafka_register, found.sqlite_register
    print(
        f"GET /schemas/ids/{{id}}: kafka {kafka_rps:,.0f} req/s, sqlite {sqlite_rps:,.0f} "
        f"(median of {KAFKA_READ_ROUNDS} interleaved rounds): ratio {ratio:.3f}, target >= "
        f"{KAFKA_READ_TARGET_RATIO}: {'met' if ratio >= KAFKA_READ_TARGET_RATIO else 'MISSED'}"
    )
    print(
        f"POST register: kafka {kafka_reg:,.0f} req/s ({kafka_fail} failures), sqlite "
        f"{sqlite_reg:,.0f} req/s ({sqlite_fail} failures)",
        flush=True,
    )
    record("registry.kafka_reads", kafka_rps, "req/s", baseline=sqlite_rps,
           baseline_name="the same GET on a SQLite-backed registry, same run, interleaved, req/s",
           target_ratio=KAFKA_READ_TARGET_RATIO, errors=found.read_errors,
           kafka_rounds=[round(r) for r in found.kafka_reads],
           sqlite_rounds=[round(r) for r in found.sqlite_reads])  # fmt: skip
    record("registry.kafka_register", kafka_reg, "req/s", baseline=sqlite_reg,
           baseline_name="registrations on a SQLite-backed registry, same run, req/s",
           failures=kafka_fail, baseline_failures=sqlite_fail, schemas=KAFKA_SCHEMAS,
           clients=4)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument(
        "--workers", type=int, default=1, help="registry worker processes (mesh up runs 1)"
    )
    parser.add_argument("--schemas", type=int, default=1000, help="distinct schemas to register")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    if not REGISTRY.exists():
        sys.exit("bench_registry: run `make setup` first (.venv/bin/schema-registry missing)")
    wrk, nginx_bin = ensure_tools()

    with tempfile.TemporaryDirectory(prefix="bench-registry-") as tmp:
        workdir = Path(tmp)
        with registry(workdir, args.workers) as port:
            print(f"==> register: {args.schemas} distinct schemas, 4 clients", flush=True)
            reg_rps, reg_failures = bench_register(port, args.schemas, threads=4)
            path = "/schemas/ids/1"
            conn = http.client.HTTPConnection("127.0.0.1", port)
            conn.request("GET", path)
            body = conn.getresponse().read()
            conn.close()
            # nginx's best on this machine is the baseline: with wrk on the same 2 cores, one
            # worker sometimes beats two, so both are measured and the faster one counts.
            baselines = []
            for nginx_workers in (1, 2):
                with nginx(nginx_bin, workdir, body, path, nginx_workers) as nginx_port:
                    print(
                        f"==> wrk {args.duration}s x {args.connections} conns: nginx "
                        f"({nginx_workers} workers)",
                        flush=True,
                    )
                    baselines.append(
                        run_wrk(
                            wrk,
                            f"http://127.0.0.1:{nginx_port}{path}",
                            args.duration,
                            args.connections,
                        )
                    )
            base = max(baselines, key=lambda r: r.requests_per_s)
            print(
                f"==> wrk {args.duration}s x {args.connections} conns: registry "
                f"({args.workers} workers)",
                flush=True,
            )
            ours = run_wrk(wrk, f"http://127.0.0.1:{port}{path}", args.duration, args.connections)
            print(f"==> GET /schemas/ids/{{id}} during {CHECK_FIELDS:,}-field checks", flush=True)
            alone_p99, check_p99, check_reads, check_s = bench_reads_during_check(port)
            print(
                f"reads p99 {check_p99:.2f} ms during checks ({check_reads} reads, "
                f"{check_s:.2f} s a check), {alone_p99:.2f} ms alone; target <= "
                f"{READ_P99_TARGET_MS:g} ms",
                flush=True,
            )
        record_kafka_storage(wrk, workdir, args.duration, args.connections)
        record_failover(workdir)
        print(f"==> RSS after {RSS_URLS:,} unique 404 URLs (a fresh registry)", flush=True)
        idle_mib, after_mib = bench_rss_after_404s(workdir)
        print(f"RSS {idle_mib:.0f} MiB idle, {after_mib:.0f} MiB after", flush=True)

    ratio = ours.requests_per_s / base.requests_per_s
    results = {
        "get_by_id": {
            "registry_rps": round(ours.requests_per_s),
            "registry_p99_ms": ours.p99_ms,
            "registry_errors": ours.errors,
            "nginx_rps": round(base.requests_per_s),
            "nginx_rps_by_workers": [round(b.requests_per_s) for b in baselines],
            "nginx_p99_ms": base.p99_ms,
            "ratio": round(ratio, 4),
            "target_ratio": TARGET_RATIO,
            "meets_target": ratio >= TARGET_RATIO,
        },
        "register": {"rps": round(reg_rps), "failures": reg_failures, "schemas": args.schemas},
        "workers": args.workers,
        "connections": args.connections,
        "duration_s": args.duration,
    }
    record("registry.get_by_id", ours.requests_per_s, "req/s", baseline=base.requests_per_s,
           baseline_name="nginx serving the same JSON, req/s", p99_ms=ours.p99_ms,
           errors=ours.errors)  # fmt: skip
    record("registry.register", reg_rps, "req/s", failures=reg_failures, schemas=args.schemas)
    record("registry.read_p99_during_check", check_p99, "ms", baseline=alone_p99,
           baseline_name="p99 of the same reads with no check running, ms", better="lower",
           target=READ_P99_TARGET_MS, reads=check_reads, check_s=round(check_s, 3),
           fields=CHECK_FIELDS)  # fmt: skip
    record("registry.rss_after_404s", after_mib - idle_mib, "MiB", better="lower",
           target=RSS_TARGET_MIB, idle_mib=round(idle_mib, 1), after_mib=round(after_mib, 1),
           urls=RSS_URLS)  # fmt: skip
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(
            f"GET /schemas/ids/{{id}}  registry {ours.requests_per_s:>9,.0f} req/s  "
            f"p99 {ours.p99_ms:.2f} ms  ({ours.errors} errors)"
        )
        print(
            f"                      nginx    {base.requests_per_s:>9,.0f} req/s  "
            f"p99 {base.p99_ms:.2f} ms  (best of 1 and 2 nginx workers: "
            f"{', '.join(f'{b.requests_per_s:,.0f}' for b in baselines)})"
        )
        print(
            f"                      ratio    {ratio:.3f} (1/{1 / ratio:.1f}); target >= 1/20: "
            f"{'met' if ratio >= TARGET_RATIO else 'MISSED'}"
        )
        print(f"POST register         registry {reg_rps:>9,.0f} req/s  ({reg_failures} failures)")
    ok = ratio >= TARGET_RATIO and reg_failures == 0 and ours.errors == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
