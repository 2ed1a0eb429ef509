"""Several schema registry URLs (SCHEMA_REGISTRY_URL="a,b"): meshkit's confluent-kafka client
moves past a registry that is down or answers 5xx, and asks the one that answered first next
time. Real registries (schema-registry, in process) and a real HTTP server answering 503."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator

import pytest

from meshkit.events._registry import registry_client
from schema_registry.server import running_server


@pytest.fixture
def unhealthy() -> Iterator[tuple[str, list[int]]]:
    """A registry instance that answers every request 503, and how many reached it."""
    hits = [0]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits[0] += 1
            body = b'{"error_code": 50003, "message": "storage unavailable"}'
            self.send_response(503)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_the_registry_that_answered_is_asked_first(unhealthy: tuple[str, list[int]]) -> None:
    bad, hits = unhealthy
    with running_server() as good:
        client = registry_client(f"{bad}, {good}/", {"max.retries": 0})
        assert client.get_subjects() == []
        assert hits == [1]
        for _ in range(3):
            assert client.get_subjects() == []
        assert hits == [1]  # not asked again while the other answers


def test_a_registry_that_is_down_is_passed_over() -> None:
    with running_server() as good:
        client = registry_client(f"{closed_port_url()},{good}", {"max.retries": 0})
        assert client.get_subjects() == []
        assert client.get_subjects() == []
