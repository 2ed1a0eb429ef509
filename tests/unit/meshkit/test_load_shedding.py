"""The kit's server caps the RPCs in flight (``<PREFIX>_MAX_CONCURRENT_RPCS``): beyond the cap a
call is answered RESOURCE_EXHAUSTED at once, counted, and reported in a WARNING; a health Watch
stream (every client-side health check holds one open) neither holds a worker nor the cap."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from meshkit import MeshServer, ServerSettings, ServiceBinding, create_server, load_settings

SERVICE = "test.v1.Gate"


class Gate:
    """``Wait`` blocks until ``release`` is set; ``Pass`` answers at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self._lock = threading.Condition()
        self.waiting = 0

    def wait(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        with self._lock:
            self.waiting += 1
            self._lock.notify_all()
        self.release.wait(10)
        return b"released"

    def pass_(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        return b"passed"

    def wait_for_waiting(self, count: int, timeout: float = 5.0) -> None:
        with self._lock:
            assert self._lock.wait_for(lambda: self.waiting >= count, timeout), (
                f"{self.waiting} handlers waiting, not {count}"
            )

    def add_to(self, servicer: object, server: grpc.Server) -> None:
        handlers = {
            "Wait": grpc.unary_unary_rpc_method_handler(self.wait),
            "Pass": grpc.unary_unary_rpc_method_handler(self.pass_),
        }
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])


@pytest.fixture
def gate() -> Iterator[tuple[Gate, MeshServer, grpc.Channel]]:
    service = Gate()
    server = create_server(
        "gate",
        ServerSettings(port=0, max_workers=4, max_concurrent_rpcs=2),
        [ServiceBinding(service, service.add_to, SERVICE)],
    )
    port = server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield service, server, channel
    service.release.set()
    channel.close()
    server.stop(0)


def test_the_call_beyond_the_cap_is_shed_at_once_and_then_calls_pass_again(
    gate: tuple[Gate, MeshServer, grpc.Channel], caplog: pytest.LogCaptureFixture
) -> None:
    service, _, channel = gate
    caplog.set_level(logging.INFO)
    waiting = [channel.unary_unary(f"/{SERVICE}/Wait").future(b"", timeout=10) for _ in range(2)]
    service.wait_for_waiting(2)

    start = time.monotonic()
    with pytest.raises(grpc.RpcError) as shed:
        channel.unary_unary(f"/{SERVICE}/Pass")(b"", timeout=5)
    assert shed.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert time.monotonic() - start < 1.0  # answered at once, not after a wait for a worker
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("shed 1 RPCs (in-flight cap 2)" in m for m in warnings), warnings

    service.release.set()
    assert [f.result() for f in waiting] == [b"released", b"released"]
    assert channel.unary_unary(f"/{SERVICE}/Pass")(b"", timeout=5) == b"passed"


def test_health_watch_streams_take_neither_a_worker_nor_the_cap(
    gate: tuple[Gate, MeshServer, grpc.Channel],
) -> None:
    _, _, channel = gate
    health = health_pb2_grpc.HealthStub(channel)
    watches = []
    try:
        # One at a time: a Watch is in flight while it sends its first status (opened all at
        # once, the third would be shed), and holds nothing once it has.
        for _ in range(5):
            watches.append(health.Watch(health_pb2.HealthCheckRequest(), timeout=10))
            assert next(watches[-1]).status == health_pb2.HealthCheckResponse.SERVING
        # Five open streams on a server of four workers and a cap of two: calls still pass.
        for _ in range(3):
            assert channel.unary_unary(f"/{SERVICE}/Pass")(b"", timeout=5) == b"passed"
    finally:
        for watch in watches:
            watch.cancel()


def test_the_default_cap_is_four_calls_per_worker() -> None:
    settings = load_settings(ServerSettings, "DEMO", {"DEMO_MAX_WORKERS": "3"})
    assert settings.rpc_cap == 12
    tuned = load_settings(ServerSettings, "DEMO", {"DEMO_MAX_CONCURRENT_RPCS": "7"})
    assert tuned.rpc_cap == 7
    server = create_server("capped", settings, [])
    assert server.rpc_cap == 12
