"""What design for failure costs a call, and what the retry budget saves a failing peer.

1. **Overhead.** A meshkit server (in a process of its own, so the client's threads do not share
   its GIL) serves a trivial GetOrder. The same calls go alternately, in the same run, through a
   plain grpc channel and through a kit channel (``meshkit.client.connect``: deadline, bulkhead,
   circuit breaker, credentials, the method's retry policy; tracing off): the ratio is what the
   kit's client side costs a call.
2. **Amplification.** The server answers UNAVAILABLE to everything. The same failing calls go
   through a kit channel (gRPC retries with the retry budget: retryThrottling) and through a
   channel with the same retry policy and no budget: attempts per call at the server, and the
   ratio, is what the budget spares a peer that is down. (The breaker is set out of the way
   here: it would stop the calls altogether, which is measured by the tests, not here.)

Nothing passes or fails on a number.

    .venv/bin/python scripts/bench_resilience.py [--seconds 3] [--threads 1,8] [--calls 200]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
from typing import Any

import grpc
from benchlib import calls_per_second, record

from meshkit.client import RETRY_POLICY, connect
from meshkit.resilience import Downstreams, Limits
from meshkit.server import MeshServer, ServiceBinding, create_server
from meshkit.settings import ServerSettings
from shop.orders.v1 import orders_pb2 as pb
from shop.orders.v1 import orders_pb2_grpc as pb_grpc

METADATA = [("authorization", "Bearer bench")]  # (else the kit would fetch a token of its own)


class Orders(pb_grpc.OrdersServiceServicer):
    """GetOrder answering at once, or UNAVAILABLE for every call while failing; counts calls."""

    def __init__(self, failing: bool) -> None:
        self.failing = failing
        self.attempts = 0
        self._lock = threading.Lock()

    def GetOrder(self, request: pb.GetOrderRequest, context: grpc.ServicerContext) -> Any:  # noqa: N802
        with self._lock:
            self.attempts += 1
        if self.failing:
            context.abort(grpc.StatusCode.UNAVAILABLE, "down on purpose")
        return pb.GetOrderResponse()


def serve(servicer: Orders) -> MeshServer:
    binding = ServiceBinding(
        servicer, pb_grpc.add_OrdersServiceServicer_to_server, "shop.orders.v1.OrdersService"
    )
    server = create_server("bench", ServerSettings(port=0, max_workers=16), [binding])
    server.start()
    return server


def rps(channel: grpc.Channel, threads: int, seconds: float) -> float:
    """GetOrder calls per second from ``threads`` client threads over ``channel``."""
    stub = pb_grpc.OrdersServiceStub(channel)
    request = pb.GetOrderRequest(order_id="o-1")
    return calls_per_second(
        lambda: stub.GetOrder(request, metadata=METADATA, timeout=5), threads, seconds
    )


def attempts_per_call(channel: grpc.Channel, server: MeshServer, calls: int) -> float:
    """Attempts the failing server saw per failing call made through ``channel``."""
    servicer = server._services[0].servicer
    assert isinstance(servicer, Orders)
    before = servicer.attempts
    stub = pb_grpc.OrdersServiceStub(channel)
    for _ in range(calls):
        try:
            stub.GetOrder(pb.GetOrderRequest(order_id="o-1"), metadata=METADATA, timeout=5)
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.UNAVAILABLE
    return (servicer.attempts - before) / calls


def unbudgeted(target: str) -> grpc.Channel:
    """The same retry policy as the kit's, without retryThrottling: what retries cost unbounded."""
    config = {"methodConfig": [{"name": [{}], "retryPolicy": RETRY_POLICY}]}
    return grpc.insecure_channel(
        target, options=[("grpc.enable_retries", 1), ("grpc.service_config", json.dumps(config))]
    )


def serve_one() -> None:
    """The server's process: a healthy server; its port on stdout, until stdin closes."""
    server = serve(Orders(failing=False))
    print(json.dumps({"port": server.port}), flush=True)
    sys.stdin.read()
    server.stop(0)


def overhead(threads_list: list[int], seconds: float) -> None:
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None and process.stdout is not None
    target = f"127.0.0.1:{json.loads(process.stdout.readline())['port']}"
    registry = Downstreams(Limits(max_concurrent=1000))
    try:
        with grpc.insecure_channel(target) as plain, connect(target, downstreams=registry) as kit:
            for threads in threads_list:
                with_kit = without = 0.0
                for _ in range(2):  # alternate, so drift on a busy machine hits both alike
                    with_kit += rps(kit, threads, seconds / 2)
                    without += rps(plain, threads, seconds / 2)
                with_kit, without = with_kit / 2, without / 2
                cost_us = (1 / with_kit - 1 / without) * 1e6
                record(
                    f"resilience.rpc.c{threads}",
                    with_kit,
                    "calls/s",
                    baseline=without,
                    baseline_name="the same calls over a plain grpc channel",
                    cost_us_per_call=round(cost_us, 1),
                )
                print(
                    f"  GetOrder c{threads:<3} kit channel {with_kit:>8,.0f}/s   plain"
                    f" {without:>8,.0f}/s   ratio {with_kit / without:.2f}"
                    f"   (~{cost_us:.0f} us per call)"
                )
    finally:
        process.stdin.close()
        process.wait(timeout=30)


def amplification(calls: int) -> None:
    server = serve(Orders(failing=True))
    target = f"127.0.0.1:{server.port}"
    registry = Downstreams(Limits(window=100_000, min_calls=100_000))
    try:
        with connect(target, downstreams=registry) as kit, unbudgeted(target) as bare:
            budgeted = attempts_per_call(kit, server, calls)
            unbounded = attempts_per_call(bare, server, calls)
    finally:
        server.stop(0)
    record(
        "resilience.retry_amplification",
        budgeted,
        "attempts/call",
        baseline=unbounded,
        baseline_name="the same retry policy without the retry budget",
        better="lower",
        calls=calls,
    )
    print(
        f"  a peer answering UNAVAILABLE: {budgeted:.2f} attempts per call with the retry budget,"
        f" {unbounded:.2f} without   ratio {budgeted / unbounded:.2f}"
    )


def main() -> int:
    """Measure and record resilience.rpc (per thread count) and resilience.retry_amplification."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--threads", default="1,8", help="client threads, comma-separated")
    parser.add_argument("--calls", type=int, default=200, help="failing calls per channel")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_one()
        return 0
    overhead([int(t) for t in args.threads.split(",")], args.seconds)
    amplification(args.calls)
    return 0


if __name__ == "__main__":
    sys.exit(main())
