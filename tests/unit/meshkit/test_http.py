"""meshkit.http: a WSGI app served on a free port, answering, and stopping cleanly."""

from __future__ import annotations

import socket
import threading
import urllib.request

import pytest
from werkzeug.wrappers import Request, Response

from meshkit.http import HttpServer


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
