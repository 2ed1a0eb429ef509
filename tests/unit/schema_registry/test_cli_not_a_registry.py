"""`schema-registry` pointed at something that is not a registry says so in one sentence.

Real counterparts each time: a gRPC server (meshkit.server, as every service of the mesh runs),
a closed port, a TCP server that answers garbage, an HTTP server that answers a web page, and
https:// to the plaintext registry. Also: a reader that closes the pipe early gets no traceback.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from support.registry import SCHEMA_REGISTRY, run_cli

from meshkit.console import CLOSED_STDOUT_EXIT
from meshkit.server import create_server
from meshkit.settings import ServerSettings
from schema_registry.server import running_server


def _assert_one_sentence(result: subprocess.CompletedProcess[str], url: str, *words: str) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"schema-registry: no schema registry at {url}: "), lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    assert lines[0].isprintable(), lines[0]  # no binary bytes of the answer


def test_a_grpc_port_is_named_as_such() -> None:
    server = create_server("not-a-registry", ServerSettings(port=0), [])
    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}"
        result = run_cli("subjects", url=url)
    finally:
        server.stop(0)
    _assert_one_sentence(result, url, "HTTP/2", "gRPC", "8081")


def test_a_closed_port() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    _assert_one_sentence(run_cli("subjects", url=url), url, "connection refused", "8081")


@contextmanager
def _tcp_server(answer: bytes) -> Iterator[str]:
    """A TCP server that answers every connection with ``answer`` and closes it."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(4096)
                conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        listener.close()
        thread.join(5)


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (b"\x07\xffgarbage\x00\x01 and more\r\n", ("not HTTP", "it began")),
        (b"", ("closed the connection",)),
    ],
    ids=["garbage", "nothing"],
)
def test_a_server_that_answers_garbage(answer: bytes, words: tuple[str, ...]) -> None:
    with _tcp_server(answer) as url:
        result = run_cli("subjects", url=url)
    _assert_one_sentence(result, url, *words)


class _WebPage(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<html><body>Not Found</body></html>"
        self.send_response(404)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test reads the CLI's stderr, not the server's."""


def test_a_web_server_that_answers_html() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _WebPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        result = run_cli("subjects", url=url)
    finally:
        server.shutdown()
        server.server_close()
    _assert_one_sentence(result, url, "HTTP 404", "text/html", "not a registry's JSON")


def test_https_to_the_plaintext_registry() -> None:
    with running_server() as base:
        url = base.replace("http://", "https://")
        result = run_cli("subjects", url=url)
    _assert_one_sentence(result, url, "TLS handshake failed", "http://")


def test_a_closed_stdout_ends_the_command_quietly() -> None:
    """`schema-registry subjects | head -0`: the reader is gone before the answer is printed."""
    with running_server() as url:
        read, write = os.pipe()
        os.close(read)
        try:
            result = subprocess.run(
                [str(SCHEMA_REGISTRY), "--url", url, "subjects", "--json"],
                stdout=write,
                stderr=subprocess.PIPE,
                text=True,
                timeout=60,
                check=False,
            )
        finally:
            os.close(write)
    assert result.stderr == ""
    assert result.returncode == CLOSED_STDOUT_EXIT
