"""Config push latency: a change stored by the control service, to applied in 100 watching clients.

The control service's ConfigService (built by the kit, as `mesh up` runs it: token verification
against a JWKS, control's policy, SQLite with a durable commit per version) runs in a process of
its own. This process runs 100 ``meshkit.control.LiveConfig`` clients of one namespace, each
with its own thread, channel, Watch stream, parse, last-known-good file (written with fsync
before the version is applied) and ACK report, as 100 services would. An admin stores ~30
changes one after another (each once the previous one is applied everywhere); a change's latency
in a client is from the SetConfig call to the client's subscriber seeing it. p50 and p99 over
every (change, client) pair; the aim is p99 <= 1 s. The baseline, in the same run on the same
server: one unary GetConfig round trip (the least a change could cost to reach anyone).

All 100 clients share this process's one interpreter lock, which 100 services would not: a
harsher setting than the mesh's. Nothing passes or fails on a number.

    .venv/bin/python scripts/bench_control.py [--clients 100] [--changes 30]
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import grpc
from bench_authz import ISSUER, issuer
from benchlib import percentile, record

from mesh.control.v1 import control_pb2 as pb
from mesh.control.v1 import control_pb2_grpc as pb_grpc
from meshkit.control import LiveConfig, Snapshot
from meshkit.credentials import StaticCredentials

AUDIENCE = "meshkit"
NAMESPACE = "bench-push"
TARGET_P99_MS = 1000.0


def serve(jwks: str, folder: Path) -> None:
    """The server's process: control's ConfigService on a free port (printed), until stdin
    closes. Its registry is an empty one in this process (control then logs its audit records
    instead of publishing them: no Kafka needed)."""
    from control.adapters.sqlite import MIGRATIONS
    from control.bootstrap import build_config
    from control.config import Settings
    from meshkit.service import Service
    from schema_registry.server import running_server
    from schema_registry.storage import MemoryStorage

    logging.disable(logging.ERROR)  # its audit fallback logs an ERROR per change
    service = Service[Settings]("control", build_config, settings=Settings, migrations=MIGRATIONS)
    with running_server(MemoryStorage()) as registry:
        settings = Settings(
            port=0,
            db_path=folder / "control.db",
            grace_seconds=0.2,
            schema_registry_url=registry,
            auth_jwks_url=jwks,
            auth_issuer=ISSUER,
            auth_audience=AUDIENCE,
        )
        server = service.create(settings)
        print(json.dumps({"port": server.start()}), flush=True)
        sys.stdin.read()
        server.stop(0)


class Applied:
    """When each client applied each version (perf_counter), and a wait for a version to be
    applied everywhere."""

    def __init__(self, clients: int) -> None:
        self.clients = clients
        self.at: dict[int, list[float]] = {}
        self._changed = threading.Condition()

    def subscriber(self) -> Callable[[Snapshot[Any]], None]:
        def applied(snapshot: Snapshot[Any]) -> None:
            now = time.perf_counter()
            with self._changed:
                self.at.setdefault(snapshot.version, []).append(now)
                self._changed.notify_all()

        return applied

    def wait_everywhere(self, version: int, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(
                lambda: len(self.at.get(version, ())) >= self.clients, timeout
            )


def as_is(document: Mapping[str, Any]) -> Mapping[str, Any]:
    return document


def main() -> int:
    """Measure and record control.push.p50 and control.push.p99."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100, help="watching clients")
    parser.add_argument("--changes", type=int, default=30, help="changes pushed")
    parser.add_argument("--calls", type=int, default=300, help="GetConfig calls (baseline)")
    parser.add_argument("--serve", metavar="JWKS_URL", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, Path(args.folder))
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-control-") as scratch:
        folder = Path(scratch)
        jwks, mint = issuer(folder)
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", jwks, "--folder", scratch],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdin is not None and server.stdout is not None
        try:
            port = json.loads(server.stdout.readline())["port"]
            return measure(args, port, mint, folder)
        finally:
            server.stdin.close()
            server.wait(timeout=30)


def measure(args: argparse.Namespace, port: int, mint: Callable[..., str], folder: Path) -> int:
    target = f"127.0.0.1:{port}"
    channel = grpc.insecure_channel(target)
    admin = pb_grpc.ConfigServiceStub(channel)
    metadata = (("authorization", f"Bearer {mint('bench-admin', 'admin')}"),)
    service_token = StaticCredentials(mint("orders", "service"))
    version = admin.SetConfig(
        pb.SetConfigRequest(namespace=NAMESPACE, document=json.dumps({"n": 0})),
        metadata=metadata,
        timeout=10,
    ).config.version
    # Baseline: a bare unary read of the same document from the same server.
    read = pb.GetConfigRequest(namespace=NAMESPACE)
    reads = []
    for _ in range(args.calls):
        began = time.perf_counter()
        admin.GetConfig(read, metadata=metadata, timeout=10)
        reads.append((time.perf_counter() - began) * 1000)
    applied = Applied(args.clients)
    clients = [
        LiveConfig(
            NAMESPACE,
            parse=as_is,
            target=target,
            credentials=service_token,
            cache_dir=folder / "clients" / str(n),
            client=f"bench-{n}@{port}",
        )
        for n in range(args.clients)
    ]
    latencies: list[float] = []
    stores: list[float] = []
    try:
        began = time.perf_counter()
        for client in clients:
            client.subscribe(applied.subscriber())
            threading.Thread(target=client.start, args=(30.0,), daemon=True).start()
        if not applied.wait_everywhere(version, timeout=60):
            print(f"  only {len(applied.at.get(version, ()))} clients started", file=sys.stderr)
            return 1
        print(f"  {args.clients} clients watching in {time.perf_counter() - began:.1f} s")
        for n in range(1, args.changes + 1):
            change = pb.SetConfigRequest(namespace=NAMESPACE, document=json.dumps({"n": n}))
            sent = time.perf_counter()
            version = admin.SetConfig(change, metadata=metadata, timeout=10).config.version
            stores.append((time.perf_counter() - sent) * 1000)
            if not applied.wait_everywhere(version, timeout=30):
                print(f"  version {version} not applied everywhere in 30 s", file=sys.stderr)
                return 1
            latencies += [(at - sent) * 1000 for at in applied.at[version]]
    finally:
        for client in clients:
            client.close()
        channel.close()
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    read50, read99 = percentile(reads, 0.5), percentile(reads, 0.99)
    common = {
        "clients": args.clients,
        "changes": args.changes,
        "set_config_p50_ms": round(percentile(stores, 0.5), 2),
    }
    record(
        "control.push.p50", p50, "ms", baseline=read50,
        baseline_name="one GetConfig round trip (p50), same server", better="lower", **common,
    )  # fmt: skip
    record(
        "control.push.p99", p99, "ms", baseline=read99,
        baseline_name="one GetConfig round trip (p99), same server", better="lower",
        target=TARGET_P99_MS, **common,
    )  # fmt: skip
    print(
        f"  push to {args.clients} clients, {args.changes} changes:"
        f" p50 {p50:.1f} ms  p99 {p99:.1f} ms  max {max(latencies):.1f} ms"
        f"   (aim p99 <= {TARGET_P99_MS:.0f} ms)\n"
        f"  GetConfig round trip: p50 {read50:.2f} ms  p99 {read99:.2f} ms;"
        f"  SetConfig (stored, durable) p50 {percentile(stores, 0.5):.1f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
