"""Tracing overhead: unary RPC throughput of a meshkit service, traced at 100% vs untraced.

Server: a meshkit server (create_server: edge interceptor, health, reflection) in its own process
with a raw-bytes Echo (64 B). Client: ``meshkit.connect()`` from N threads of this process (sync
stubs, as the services' own clients are). Client and server share the machine's cores, as in the
reference measurement (docs: performance.md, contrib grpc instrumentation ~0.5 of untraced).

Modes, measured in the same run, interleaved per concurrency:
- ``off``:   no tracing (the fallback: an unsampled context per RPC, passed on to the server),
- ``null``:  SERVER + CLIENT span per RPC, 100% sampled, BatchSpanProcessor -> an exporter that
             drops the batch (the reference's set-up: the span cost alone, comparable to the 0.5),
- ``otlp``:  the same spans through the real OTLP/gRPC exporter to the real local receiver
             (`mesh up`'s, a third process storing them in SQLite): everything tracing costs when
             it all runs on this machine.

Prints each mode's rps and p50 per concurrency and the traced/untraced ratio; never fails on a
number. ``--seconds`` per measurement (default 3).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from meshkit import ServerSettings, ServiceBinding, connect, create_server, telemetry, wait_healthy

SERVICE = "bench.v1.Echo"
METHOD = f"/{SERVICE}/Echo"
PAYLOAD = b"x" * 64
MODES = ("off", "null", "otlp")


class NullExporter(SpanExporter):
    """Accepts and drops every batch."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Drop ``spans``."""
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing to release."""


def configure(mode: str, name: str) -> None:
    """Tracing for ``mode`` in this process (the OTLP endpoint comes from the environment)."""
    if mode == "null":
        telemetry.configure(name, exporter=NullExporter())
    elif mode == "otlp":
        assert telemetry.configure(name), "OTEL_EXPORTER_OTLP_ENDPOINT is not set"
    else:
        telemetry.shutdown()


def serve(mode: str) -> int:
    """Run the Echo server traced per ``mode``; print its port; stop when stdin closes."""
    configure(mode, "bench-server")

    def echo(request: bytes, context: grpc.ServicerContext) -> bytes:
        return request

    def add(servicer: object, server: grpc.Server) -> None:
        handler = grpc.unary_unary_rpc_method_handler(echo)
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(SERVICE, {"Echo": handler})]
        )

    server = create_server(
        "bench", ServerSettings(port=0, max_workers=32), [ServiceBinding(None, add, SERVICE)]
    )
    print(server.start(), flush=True)
    sys.stdin.read()
    server.stop(0)
    telemetry.shutdown()
    return 0


def measure(target: str, concurrency: int, seconds: float) -> tuple[float, float]:
    """(requests per second, p50 ms) of ``concurrency`` threads calling Echo for ``seconds``."""
    channel = connect(target, retry=False)
    call = channel.unary_unary(METHOD)
    for _ in range(200):  # warm up the connection and the span machinery
        call(PAYLOAD, timeout=5)
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    start_line = threading.Barrier(concurrency + 1)
    deadline = 0.0

    def worker(index: int) -> None:
        mine = latencies[index]
        start_line.wait()
        while True:
            began = time.perf_counter()
            if began >= deadline:
                return
            call(PAYLOAD, timeout=5)
            mine.append(time.perf_counter() - began)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    deadline = time.perf_counter() + seconds
    start_line.wait()
    for thread in threads:
        thread.join()
    channel.close()
    every = [x for mine in latencies for x in mine]
    return len(every) / seconds, statistics.median(every) * 1000


def start_receiver(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The real local receiver (meshkit.runner.receiver) on a free port, healthy."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "meshkit.runner.receiver",
            "--port",
            str(port),
            "--db",
            str(workdir / "traces.db"),
            "--log-level",
            "WARNING",
        ],
        stdin=subprocess.DEVNULL,
    )
    wait_healthy(f"127.0.0.1:{port}", timeout=30)
    return process, f"http://127.0.0.1:{port}"


def run_mode(mode: str, concurrency: int, seconds: float, endpoint: str) -> tuple[float, float]:
    """Start a server for ``mode``, trace this process the same way, measure, stop."""
    env = dict(os.environ, OTEL_EXPORTER_OTLP_ENDPOINT=endpoint)
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert server.stdout is not None and server.stdin is not None
        port = int(server.stdout.readline())
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
        configure(mode, "bench-client")
        result = measure(f"127.0.0.1:{port}", concurrency, seconds)
        telemetry.shutdown()
        server.stdin.close()
        server.wait(30)
        return result
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Measure every mode at each concurrency and print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--serve", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve(args.serve)
    with tempfile.TemporaryDirectory(prefix="bench-tracing-") as tmp:
        receiver, endpoint = start_receiver(Path(tmp))
        try:
            print(
                f"unary Echo {len(PAYLOAD)} B, meshkit server process + connect() client threads,"
                f" {args.seconds:.0f}s each; traced = SERVER + CLIENT span per RPC, 100% sampled"
            )
            print(f"{'conc':>4}  {'mode':<6}{'rps':>9}{'p50 ms':>9}{'ratio':>8}")
            for concurrency in args.concurrency:
                results = {
                    mode: run_mode(mode, concurrency, args.seconds, endpoint) for mode in args.modes
                }
                base = results.get("off", (0.0, 0.0))[0]
                for mode, (rps, p50) in results.items():
                    ratio = f"{rps / base:8.2f}" if base and mode != "off" else f"{'':8}"
                    print(f"{concurrency:>4}  {mode:<6}{rps:>9.0f}{p50:>9.2f}{ratio}", flush=True)
        finally:
            receiver.terminate()
            receiver.wait(15)
    print(
        "ratio = traced rps / untraced rps (same run). Reference: opentelemetry-instrumentation-"
        "grpc 0.66b1 with a null exporter measured ~0.68 (conc 1) and ~0.49 (conc 16) here."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
