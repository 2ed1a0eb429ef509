"""grpc.health.v1.Health/List on the kit's server: every status it holds, by name, through the
generated client stub."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from meshkit import MeshServer, ServerSettings, ServiceBinding, create_server

SERVICE = "test.v1.Listed"
Status = health_pb2.HealthCheckResponse


def add_nothing(servicer: object, server: grpc.Server) -> None:
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {})])


@pytest.fixture
def server() -> Iterator[tuple[MeshServer, health_pb2_grpc.HealthStub]]:
    server = create_server(
        "listed", ServerSettings(port=0), [ServiceBinding(object(), add_nothing, SERVICE)]
    )
    port = server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield server, health_pb2_grpc.HealthStub(channel)
    channel.close()
    server.stop(0)


def listed(stub: health_pb2_grpc.HealthStub) -> dict[str, int]:
    response = stub.List(health_pb2.HealthListRequest(), timeout=5)
    return {name: entry.status for name, entry in response.statuses.items()}


def test_list_gives_the_server_and_every_service(
    server: tuple[MeshServer, health_pb2_grpc.HealthStub],
) -> None:
    assert listed(server[1]) == {"": Status.SERVING, SERVICE: Status.SERVING}


def test_list_follows_every_status_set_by_name(
    server: tuple[MeshServer, health_pb2_grpc.HealthStub],
) -> None:
    mesh, stub = server
    mesh.set_serving("meshkit.breaker/payments", False)
    mesh.health.set("meshkit.breaker/shipping", Status.UNKNOWN)
    mesh.set_serving(SERVICE, False)
    assert listed(stub) == {
        "": Status.SERVING,
        SERVICE: Status.NOT_SERVING,
        "meshkit.breaker/payments": Status.NOT_SERVING,
        "meshkit.breaker/shipping": Status.UNKNOWN,
    }
    # Check and List agree.
    check = stub.Check(health_pb2.HealthCheckRequest(service="meshkit.breaker/payments"))
    assert check.status == Status.NOT_SERVING


def test_after_a_graceful_shutdown_begins_everything_is_listed_not_serving(
    server: tuple[MeshServer, health_pb2_grpc.HealthStub],
) -> None:
    mesh, stub = server
    mesh.set_serving("meshkit.breaker/payments", True)
    mesh.health.enter_graceful_shutdown()
    mesh.set_serving(SERVICE, True)  # ignored from now on, as Check ignores it
    assert set(listed(stub).values()) == {Status.NOT_SERVING}
    assert len(listed(stub)) == 3


def test_statuses_change_while_watchers_come_and_go_and_the_server_still_stops() -> None:
    """grpc_health's own servicer sends to its watchers under the lock its close callbacks take
    on grpcio's completion-queue thread, and hangs for good when a status changes as watchers
    leave (3 runs in 3 with this very churn; grpc/grpc PR #43403). The kit's must not."""
    mesh = create_server(
        "churned", ServerSettings(port=0), [ServiceBinding(object(), add_nothing, SERVICE)]
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{mesh.start()}")
    stub = health_pb2_grpc.HealthStub(channel)
    done = threading.Event()

    def flip() -> None:
        serving = False
        while not done.is_set():
            mesh.set_serving(SERVICE, serving := not serving)

    def churn() -> None:
        for _ in range(20):
            watches = [
                stub.Watch(health_pb2.HealthCheckRequest(service=SERVICE), timeout=10)
                for _ in range(6)
            ]
            for watch in watches:
                next(watch)
            for watch in watches:
                watch.cancel()

    flipper = threading.Thread(target=flip, daemon=True)
    flipper.start()
    churner = threading.Thread(target=churn, daemon=True)
    churner.start()
    churner.join(20)
    done.set()
    flipper.join(5)
    # Watchers still open while the server stops: it tells them NOT_SERVING, and stops.
    last = [stub.Watch(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5) for _ in range(3)]
    for watch in last:
        next(watch)  # a hung server: DEADLINE_EXCEEDED here
    stopper = threading.Thread(target=mesh.stop, args=(0,), daemon=True)
    stopper.start()
    stopper.join(10)
    channel.close()
    assert not churner.is_alive() and not flipper.is_alive() and not stopper.is_alive()


def test_client_side_health_checking_follows_the_status_and_holds_no_worker() -> None:
    """What a round_robin channel with ``healthCheckConfig`` does (gRFC A17, meshkit.client's
    channels to replicas): a Watch per channel, open for good. Four such channels on a server of
    two workers all get answers, NOT_SERVING takes the server out of them, SERVING puts it
    back."""

    def echo(request: bytes, context: grpc.ServicerContext) -> bytes:
        return request

    def add_echo(servicer: object, server: grpc.Server) -> None:
        handlers = {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])

    mesh = create_server(
        "checked", ServerSettings(port=0, max_workers=2), [ServiceBinding(None, add_echo, SERVICE)]
    )
    config = {
        "loadBalancingConfig": [{"round_robin": {}}],
        "healthCheckConfig": {"serviceName": ""},
    }
    options = [("grpc.service_config", json.dumps(config))]
    address = f"ipv4:127.0.0.1:{mesh.start()}"
    channels = [grpc.insecure_channel(address, options=options) for _ in range(4)]
    try:
        calls = [c.unary_unary(f"/{SERVICE}/Echo") for c in channels]
        assert [call(b"hi", timeout=5, wait_for_ready=True) for call in calls] == [b"hi"] * 4
        mesh.set_serving("", False)
        with pytest.raises(grpc.RpcError) as refused:
            for _ in range(100):  # the watchers hear of it within a moment
                calls[0](b"hi", timeout=1)
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        mesh.set_serving("", True)
        assert calls[0](b"hi", timeout=5, wait_for_ready=True) == b"hi"
    finally:
        for channel in channels:
            channel.close()
        mesh.stop(0)
