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
- ``sdk``:   as ``otlp`` but with the SDK's stock OTLPSpanExporter (its protobuf-object encoder),
             to show what meshkit.otlp's encoder buys.

Prints each mode's rps and p50 per concurrency and the traced/untraced ratio; never fails on a
number. ``--seconds`` per measurement (default 3), ``--rounds`` interleaved rounds (default 3):
this box's rates drift by 20% between runs seconds apart, so one pass per mode decides nothing.
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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import grpc
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

from meshkit import ServerSettings, ServiceBinding, connect, create_server, telemetry, wait_healthy
from meshkit.resilience import unguarded

SERVICE = "bench.v1.Echo"
METHOD = f"/{SERVICE}/Echo"
PAYLOAD = b"x" * 64
MODES = ("off", "null", "otlp", "sdk")

# The bench is the load: no bulkhead or breaker of the client may cap or stop it.
UNBOUNDED = unguarded()


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
    elif mode == "sdk":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        telemetry.configure(name, exporter=OTLPSpanExporter())
    else:
        telemetry.shutdown()


def serve(mode: str) -> int:
    """Run the Echo server traced per ``mode``; print its port; on each ``flush`` line on stdin
    export every span ended so far and answer ``flushed``; stop when stdin closes."""
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
    for line in sys.stdin:
        if line.strip() == "flush":
            telemetry.force_flush()
            print("flushed", flush=True)
    server.stop(0)
    telemetry.shutdown()
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used so far (Linux /proc; 0.0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Result(NamedTuple):
    """One measurement: throughput, median latency, CPU µs per RPC of each process."""

    rps: float
    p50_ms: float
    cpu_us: tuple[float, ...]  # client, server, receiver


def measure(
    target: str,
    concurrency: int,
    seconds: float,
    pids: Sequence[int] = (),
    drain: Callable[[], None] = lambda: None,
) -> Result:
    """Throughput, p50 and the CPU per RPC of ``pids`` (client, server, receiver) of
    ``concurrency`` threads calling Echo for ``seconds``, then ``drain`` (export every span
    still queued): its time counts in the throughput and its CPU in the CPU per RPC, so a
    batch left queued at the end of the window is paid for whatever the batch size."""
    channel = connect(target, retry=False, downstreams=UNBOUNDED)
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
    cpu_before = [cpu_seconds(pid) for pid in pids]
    began = time.perf_counter()
    deadline = began + seconds
    start_line.wait()
    for thread in threads:
        thread.join()
    drain()
    elapsed = time.perf_counter() - began
    cpu_after = [cpu_seconds(pid) for pid in pids]
    channel.close()
    every = [x for mine in latencies for x in mine]
    cpu_us = tuple((a - b) / len(every) * 1e6 for a, b in zip(cpu_after, cpu_before, strict=True))
    return Result(len(every) / elapsed, statistics.median(every) * 1000, cpu_us)


def start_receiver(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The real local receiver (mesh_runner.receiver) on a free port, healthy."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mesh_runner.receiver",
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


def run_mode(
    mode: str, concurrency: int, seconds: float, endpoint: str, receiver_pid: int
) -> Result:
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
        pids = (os.getpid(), server.pid, receiver_pid)

        def drain() -> None:
            assert server.stdin is not None and server.stdout is not None
            server.stdin.write(b"flush\n")
            server.stdin.flush()
            telemetry.force_flush()
            assert server.stdout.readline().strip() == b"flushed"

        result = measure(f"127.0.0.1:{port}", concurrency, seconds, pids, drain)
        telemetry.shutdown()
        server.stdin.close()
        server.wait(30)
        return result
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def encode_costs(spans: int = 512, repeat: int = 20) -> tuple[float, float]:
    """µs per span of the SDK's OTLP encoder and of meshkit's (meshkit.otlp), on RPC-shaped
    SERVER spans (four attributes and a status code), in this process."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from meshkit import otlp

    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "bench"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("meshkit")
    attributes = {
        "rpc.system.name": "grpc",
        "rpc.method": SERVICE + "/Echo",
        "server.address": "127.0.0.1",
        "server.port": 7000,
    }
    for _ in range(spans):
        span = tracer.start_span("bench.v1.Echo/Echo", kind=SpanKind.SERVER, attributes=attributes)
        span.set_attribute("rpc.status_code", "OK")
        span.end()
    batch = memory.get_finished_spans()
    assert otlp.encode_request(batch) == encode_spans(batch).SerializeToString()

    def per_span(encode: Callable[[], object]) -> float:
        best = float("inf")
        for _ in range(3):
            began = time.perf_counter()
            for _ in range(repeat):
                encode()
            best = min(best, (time.perf_counter() - began) / repeat / len(batch) * 1e6)
        return best

    return (
        per_span(lambda: encode_spans(batch).SerializeToString()),
        per_span(lambda: otlp.encode_request(batch)),
    )


def report(concurrency: int, mode: str, results: list[Result], off: list[Result] | None) -> str:
    """One line of the table: medians over the rounds, each round's ratio to its ``off`` run."""
    rps = statistics.median(r.rps for r in results)
    p50 = statistics.median(r.p50_ms for r in results)
    cpu = " ".join(f"{statistics.median(r.cpu_us[i] for r in results):>6.0f}" for i in range(3))
    ratio = each = ""
    if off is not None and mode != "off":
        # Each round's traced run against the untraced run beside it.
        ratios = [t.rps / o.rps for t, o in zip(results, off, strict=True)]
        ratio = f"{statistics.median(ratios):.2f}"
        each = " ".join(f"{r:.2f}" for r in ratios)
    return f"{concurrency:>4}  {mode:<6}{rps:>9.0f}{p50:>9.2f}{ratio:>8}  {cpu:<36}{each}"


def record_ratio(concurrency: int, traced: list[Result], off: list[Result]) -> None:
    """``tracing.ratio.c{N}`` in .bench/results.json: the round with the median traced/untraced
    ratio, its traced rps as the value and its untraced rps as the baseline (so the recorded
    ratio is the printed one); the target 0.8 is on that ratio."""
    from benchlib import record

    pairs = sorted(zip(traced, off, strict=True), key=lambda p: p[0].rps / p[1].rps)
    median_traced, median_off = pairs[len(pairs) // 2]
    record(
        f"tracing.ratio.c{concurrency}",
        median_traced.rps,
        "rps",
        baseline=median_off.rps,
        baseline_name=f"the same server untraced, concurrency {concurrency}, same run",
        target=0.8,
        note="target is on ratio (traced/untraced rps, 100% sampled, real OTLP export to the"
        " local receiver); value and baseline are the round with the median ratio",
        rounds=[round(t.rps / o.rps, 3) for t, o in zip(traced, off, strict=True)],
        cpu_us_per_rpc={
            "traced": [round(statistics.median(r.cpu_us[i] for r in traced)) for i in range(3)],
            "untraced": [round(statistics.median(r.cpu_us[i] for r in off)) for i in range(3)],
            "processes": ["client", "server", "receiver"],
        },
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Measure every mode at each concurrency, interleaved over rounds, and print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds per concurrency (median)"
    )
    parser.add_argument("--serve", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve(args.serve)
    sdk_us, ours_us = encode_costs()
    print(
        f"OTLP encoding, RPC span: SDK encode_spans {sdk_us:.1f} us/span, meshkit.otlp"
        f" {ours_us:.1f} us/span (same bytes) -> {sdk_us / ours_us:.1f}x"
    )
    with tempfile.TemporaryDirectory(prefix="bench-tracing-") as tmp:
        receiver, endpoint = start_receiver(Path(tmp))
        try:
            print(
                f"unary Echo {len(PAYLOAD)} B, meshkit server process + connect() client threads,"
                f" {args.seconds:.0f}s each, {args.rounds} interleaved rounds (medians);"
                " traced = SERVER + CLIENT span per RPC, 100% sampled"
            )
            print(
                f"{'conc':>4}  {'mode':<6}{'rps':>9}{'p50 ms':>9}{'ratio':>8}"
                f"  {'CPU us/RPC: client server receiver':<36}ratio per round"
            )
            for concurrency in args.concurrency:
                runs: dict[str, list[Result]] = {mode: [] for mode in args.modes}
                for _ in range(args.rounds):
                    for mode in args.modes:
                        runs[mode].append(
                            run_mode(mode, concurrency, args.seconds, endpoint, receiver.pid)
                        )
                for mode, results in runs.items():
                    print(report(concurrency, mode, results, runs.get("off")), flush=True)
                if "off" in runs and "otlp" in runs:
                    record_ratio(concurrency, runs["otlp"], runs["off"])
        finally:
            receiver.terminate()
            receiver.wait(15)
    print(
        "rps counts the time to export what is still queued after the window (the drain); CPU"
        " us/RPC: user+system CPU of each process over the window and the drain, per RPC."
    )
    print(
        "ratio = traced rps / untraced rps, median over rounds. Reference: opentelemetry-"
        "instrumentation-grpc 0.66b1 with a null exporter measured ~0.68 (conc 1) and ~0.49"
        " (conc 16) here."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
