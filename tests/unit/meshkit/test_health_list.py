"""grpc.health.v1.Health/List on the kit's server: every status it holds, by name, through the
generated client stub."""

from __future__ import annotations

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
