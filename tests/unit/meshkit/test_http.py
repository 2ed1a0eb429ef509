"""meshkit.http: a WSGI app served on a free port, answering, and stopping cleanly; and a
service of the kit serving one beside its gRPC server (``ctx.serve_http``)."""

from __future__ import annotations

import dataclasses
import socket
import threading
import urllib.request
from pathlib import Path

import pytest
from werkzeug.wrappers import Request, Response

from meshkit import Service, ServiceContext, ServiceSettings, binding
from meshkit.http import HttpServer
from meshkit.server import ServiceBinding
from shop.inventory.v1 import inventory_pb2_grpc


@Request.application  # type: ignore[arg-type]
def _echo(request: Request) -> Response:
    return Response(f"{request.method} {request.path}", content_type="text/plain")


def test_serves_until_stopped_then_refuses_connections() -> None:
    server = HttpServer(_echo, name="test-http", port=0)
    stop = threading.Event()
    thread = threading.Thread(target=server.serve_forever, args=(stop,))
    thread.start()
    try:
        with urllib.request.urlopen(f"{server.url}/hello?x=1", timeout=5) as reply:
            assert reply.status == 200
            assert reply.read() == b"GET /hello"
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", server.port), timeout=1):
        pass


def test_a_port_in_use_is_refused_with_the_address() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
            HttpServer(_echo, name="test-http", port=port)


@dataclasses.dataclass(frozen=True)
class WebSettings(ServiceSettings):
    http_port: int = 0


def test_a_service_serves_http_beside_grpc_on_its_http_port_from_mesh_toml(
    tmp_path: Path,
) -> None:
    config = tmp_path / "mesh.toml"
    config.write_text(
        '[[component]]\nname = "web"\ncommand = ["x"]\nport = 61011\nhttp_port = 61012\n'
        'health = "grpc"\n'
    )
    bound: list[HttpServer] = []

    def build(ctx: ServiceContext[WebSettings]) -> list[ServiceBinding]:
        bound.append(ctx.serve_http(_echo))
        servicer = inventory_pb2_grpc.InventoryServiceServicer()
        return [binding(servicer, inventory_pb2_grpc.add_InventoryServiceServicer_to_server)]

    service = Service("web", build, settings=WebSettings, database=False)
    assert service.load_settings({"MESH_CONFIG": str(config)}).http_port == 61012
    settings = service.load_settings(
        {"MESH_CONFIG": str(config), "WEB_PORT": "0", "WEB_HTTP_PORT": "0"}
    )
    server = service.create(settings)
    server.start()
    try:
        with urllib.request.urlopen(f"{bound[0].url}/x", timeout=5) as reply:
            assert reply.read() == b"GET /x"
    finally:
        server.stop(0)
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", bound[0].port), timeout=1):
        pass
