"""The HTTP layer's limits (issue 17, "what hostile input found"): idle, head and body timeouts,
head and URL sizes, a connection cap under the file limit, 415 for media types Confluent does
not consume, and heavy requests off the event loop, so reads go on while a check runs."""

from __future__ import annotations

import contextlib
import json
import select
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.registry import (
    SCHEMA_REGISTRY,
    ServeProcess,
    field,
    record,
    register,
    wait_until,
)

from schema_registry.client import RegistryClient
from schema_registry.http import HttpLimits
from schema_registry.server import running_server
from schema_registry.storage import MemoryStorage

V1 = "application/vnd.schemaregistry.v1+json"
UNSUPPORTED = {"error_code": 415, "message": "HTTP 415 Unsupported Media Type"}
# Short enough for tests, long enough that a prompt client never meets them.
FAST = HttpLimits(idle_timeout=0.3, header_timeout=0.5, body_timeout=0.3)


@pytest.fixture
def url() -> Iterator[str]:
    with running_server(MemoryStorage()) as base:
        yield base


@pytest.fixture
def fast() -> Iterator[str]:
    with running_server(MemoryStorage(), limits=FAST) as base:
        yield base


def connect(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def read_until_closed(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything the server sends until it closes; fails when it is still open at ``timeout``."""
    sock.settimeout(timeout)
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise AssertionError(f"still open after {timeout}s; got {received[:200]!r}") from None
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk


def error_of(response: bytes) -> dict[str, object]:
    """The JSON error body of a raw response."""
    body: dict[str, object] = json.loads(response.partition(b"\r\n\r\n")[2])
    return body


# ------------------------------------------------------------------------------ timeouts
def test_an_idle_keep_alive_connection_is_closed(fast: str) -> None:
    with connect(fast) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        response = read_until_closed(sock)
    assert response.startswith(b"HTTP/1.1 200 OK")
    assert response.endswith(b"{}"), "closed silently, after the answer"


def test_a_connection_that_never_sends_is_closed(fast: str) -> None:
    with connect(fast) as sock:
        assert read_until_closed(sock) == b""


def test_a_prompt_client_keeps_its_connection(fast: str) -> None:
    with RegistryClient(fast) as client:
        for _ in range(20):
            assert client.get("/subjects").status == 200


def test_a_head_trickled_a_byte_at_a_time_is_408(fast: str) -> None:
    """Slowloris: each piece comes well inside any gap timeout, the whole head never does."""
    with connect(fast) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        sock.settimeout(0.05)
        received = b""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:  # nothing yet: send the next piece
                try:
                    sock.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    break
                continue
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    assert received.startswith(b"HTTP/1.1 408 Request Timeout"), received[:200]
    assert error_of(received)["error_code"] == 408


def test_a_body_that_stops_arriving_is_408(fast: str) -> None:
    with connect(fast) as sock:
        sock.sendall(
            b"POST /subjects/s/versions HTTP/1.1\r\nHost: x\r\n"
            b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"schema"'
        )
        response = read_until_closed(sock)
    assert response.startswith(b"HTTP/1.1 408 Request Timeout")
    assert error_of(response)["error_code"] == 408


# ------------------------------------------------------------------------------ sizes
def test_a_huge_header_is_refused_before_it_is_read_in_full(url: str) -> None:
    """A 100 MiB header value: 431 after its first chunks, not after 100 MiB."""
    chunk = b"a" * 65536
    sent = 0
    received = b""
    with connect(url) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ")
        while sent < 100 * 1024 * 1024:
            try:
                sock.sendall(chunk)
            except OSError:  # the server closed: it is not reading any more of it
                break
            sent += len(chunk)
            if select.select([sock], [], [], 0)[0]:
                break
        with contextlib.suppress(OSError):
            received = read_until_closed(sock)
    assert received.startswith(b"HTTP/1.1 431 Request Header Fields Too Large"), received[:200]
    assert error_of(received)["error_code"] == 431
    assert sent < 16 * 1024 * 1024, f"the server took {sent} bytes of header"


def test_headers_over_8_kib_together_are_431(url: str) -> None:
    headers = b"".join(b"X-H%d: %s\r\n" % (n, b"v" * 40) for n in range(200))
    with connect(url) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        response = read_until_closed(sock)
    assert response.startswith(b"HTTP/1.1 431")
    assert error_of(response) == {
        "error_code": 431,
        "message": "HTTP 431 Request Header Fields Too Large: "
        "the request line and headers may take 8192 bytes",
    }


def test_a_url_over_8_kib_is_414(url: str) -> None:
    with connect(url) as sock:
        sock.sendall(b"GET /subjects/" + b"s" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        response = read_until_closed(sock)
    assert response.startswith(b"HTTP/1.1 414 URI Too Long")
    assert error_of(response)["error_code"] == 414


def test_a_head_just_under_the_limit_is_served(url: str) -> None:
    with RegistryClient(url) as client:
        reply = client.request("GET", "/subjects", headers={"X-Padding": "p" * 7000})
        assert reply.status == 200
        assert client.get("/subjects/" + "s" * 7000 + "/versions").error_code == 40401


# ------------------------------------------------------------------------------ media types
@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
def test_a_post_a_web_page_could_send_is_415_and_registers_nothing(
    url: str, content_type: str
) -> None:
    with RegistryClient(url) as client:
        body = {"schema": record("A", field("a"))}
        reply = client.request(
            "POST", "/subjects/s/versions", body, headers={"Content-Type": content_type}
        )
        assert (reply.status, reply.json()) == (415, UNSUPPORTED)
        assert client.get("/subjects").json() == []


@pytest.mark.parametrize(
    "content_type",
    [
        V1,
        "application/vnd.schemaregistry+json",
        "application/json",
        "application/json; charset=utf-8",
        "APPLICATION/JSON",
        # Jersey reads a request without Content-Type as this one, and Confluent consumes it.
        "application/octet-stream",
        "",
    ],
)
def test_the_media_types_confluent_consumes_are_accepted(url: str, content_type: str) -> None:
    body = json.dumps({"schema": record("A", field("a"))}).encode()
    header = f"Content-Type: {content_type}\r\n" if content_type else ""
    with connect(url) as sock:
        sock.sendall(
            f"POST /subjects/s/versions HTTP/1.1\r\nHost: x\r\n{header}"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        response = read_until_closed(sock)
    assert response.startswith(b"HTTP/1.1 200 OK"), response[:300]


def test_jersey_checks_the_content_type_of_reads_too(url: str) -> None:
    with RegistryClient(url) as client:
        reply = client.request("GET", "/subjects", headers={"Content-Type": "text/plain"})
        assert (reply.status, reply.json()) == (415, UNSUPPORTED)
        reply = client.request("GET", "/subjects", headers={"Content-Type": "nonsense"})
        assert (reply.status, reply.json()["error_code"]) == (400, 400)
        assert client.get("/subjects").status == 200, "the connection is still usable"


def test_a_resource_that_does_not_exist_is_404_or_405_before_its_media_type(url: str) -> None:
    # Jersey matches the resource, then the method, then what it consumes.
    plain = {"Content-Type": "text/plain"}
    with RegistryClient(url) as client:
        reply = client.request("POST", "/no/such/thing", {}, headers=plain)
        assert (reply.status, reply.json()["error_code"]) == (404, 404)
        reply = client.request("PUT", "/subjects", {}, headers=plain)
        assert (reply.status, reply.json()["error_code"]) == (405, 405)


@pytest.mark.parametrize("content_type", ["", V1])
def test_a_write_from_a_web_page_is_403_and_registers_nothing(url: str, content_type: str) -> None:
    # A page can POST a body with no Content-Type at all (a Blob): no 415 stops that, and no
    # CORS preflight either. Only browsers send Origin; the registry serves no page of its own.
    body = json.dumps({"schema": record("A", field("a"))}).encode()
    header = f"Content-Type: {content_type}\r\n" if content_type else ""
    with connect(url) as sock:
        sock.sendall(
            f"POST /subjects/s/versions HTTP/1.1\r\nHost: 127.0.0.1\r\n{header}"
            f"Origin: https://evil.example\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + body
        )
        response = read_until_closed(sock)
    assert response.startswith(b"HTTP/1.1 403 Forbidden"), response[:300]
    assert error_of(response)["error_code"] == 40301
    assert "evil.example" in str(error_of(response)["message"])
    with RegistryClient(url) as client:
        assert client.get("/subjects").json() == []
        reply = client.request("GET", "/subjects", headers={"Origin": "https://evil.example"})
        assert reply.status == 200, "reads are not refused"


# ------------------------------------------------------------------------------ connections
def test_when_full_the_longest_idle_connection_makes_room() -> None:
    with running_server(MemoryStorage(), limits=HttpLimits(max_connections=3)) as base:
        idle = [connect(base) for _ in range(3)]
        try:
            with RegistryClient(base) as client:
                assert client.get("/").status == 200
            assert read_until_closed(idle[0]) == b"", "the oldest idle one was closed"
        finally:
            for sock in idle:
                sock.close()


def test_when_full_of_busy_connections_a_new_one_is_closed() -> None:
    with running_server(MemoryStorage(), limits=HttpLimits(max_connections=2)) as base:
        busy = [connect(base) for _ in range(2)]
        try:
            for sock in busy:  # half a request each: not idle
                sock.sendall(b"GET / HTTP/1.1\r\n")
            with connect(base) as extra:
                assert read_until_closed(extra) == b""
            busy[0].sendall(b"Host: x\r\nConnection: close\r\n\r\n")
            assert read_until_closed(busy[0]).startswith(b"HTTP/1.1 200 OK")
        finally:
            for sock in busy:
                sock.close()


def test_a_thousand_idle_sockets_do_not_lock_clients_out(tmp_path: Path) -> None:
    """`serve` under a 128-file limit with 300 idle sockets open still answers a new client:
    before, the idle sockets took every descriptor and new clients were dropped."""
    log = tmp_path / "serve.log"
    limited = 'ulimit -n 128 && exec "$0" serve --port 0 --storage memory'
    with log.open("w") as err:
        proc = subprocess.Popen(
            ["sh", "-c", limited, SCHEMA_REGISTRY],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    idle: list[socket.socket] = []
    try:
        wait_until(lambda: "listening on " in log.read_text(), what="the ready line")
        base = log.read_text().split("listening on ")[1].split(" ")[0]
        for _ in range(300):
            idle.append(connect(base))
        with RegistryClient(base) as client:
            assert client.get("/").status == 200
        assert proc.poll() is None
    finally:
        for sock in idle:
            sock.close()
        proc.terminate()
        proc.wait(timeout=20)


_EMFILE_SERVER = textwrap.dedent(
    """
    import os, resource, sys
    from schema_registry.server import running_server
    from schema_registry.storage import MemoryStorage

    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    with running_server(MemoryStorage()) as url:
        print(url, flush=True)
        sys.stdin.readline()
        eaten = []
        try:
            while True:
                eaten.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            pass
        print("full", flush=True)
        sys.stdin.readline()
        for fd in eaten:
            os.close(fd)
        print("free", flush=True)
        sys.stdin.readline()
    """
)


def test_running_out_of_descriptors_does_not_stop_the_server() -> None:
    """Accepting with no descriptor left fails (EMFILE); the server goes on once some free."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _EMFILE_SERVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        base = proc.stdout.readline().strip()
        proc.stdin.write("eat\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "full"
        with connect(base) as starved:
            starved.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            starved.settimeout(2)
            with contextlib.suppress(OSError):
                assert not starved.recv(100).startswith(b"HTTP/1.1 200"), "no fd, no answer"
        proc.stdin.write("free\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "free"
        with RegistryClient(base) as client:
            assert client.get("/").status == 200
    finally:
        proc.stdin.close()
        proc.wait(timeout=20)


# ------------------------------------------------------------------------------ off the loop
def wide(fields: int) -> str:
    return record("Wide", *(field(f"f{i}", "string", default="") for i in range(fields)))


def test_reads_are_answered_while_a_long_compatibility_check_runs(tmp_path: Path) -> None:
    """A check of a 60,000-field schema takes about a second; before, every read on the worker
    waited for it. Twenty reads must come back before its answer does."""
    server = ServeProcess("--storage", f"sqlite:///{tmp_path / 'r.db'}", cwd=tmp_path).start()
    try:
        with RegistryClient(server.url) as client:
            schema_id = register(client, "wide", wide(1000))["id"]
        body = {"schema": wide(60_000)}
        answered = threading.Event()

        def check() -> None:
            with RegistryClient(server.url) as checker:
                reply = checker.post("/compatibility/subjects/wide/versions/latest", body)
                assert reply.json() == {"is_compatible": True}
            answered.set()

        checker = threading.Thread(target=check)
        checker.start()
        reads = 0
        with RegistryClient(server.url) as reader:
            while reads < 20 and not answered.is_set():
                assert reader.get(f"/schemas/ids/{schema_id}").status == 200
                reads += 1
            still_running = not answered.is_set()
        checker.join(timeout=60)
        assert answered.is_set()
        assert (reads, still_running) == (20, True), "reads waited for the check"
    finally:
        server.stop()


def test_a_read_after_a_write_on_one_connection_sees_it(url: str) -> None:
    """Pipelined: the write goes off the loop, the read behind it waits its turn."""
    body = json.dumps({"schema": record("A", field("a"))}).encode()
    with connect(url) as sock:
        sock.sendall(
            b"POST /subjects/s/versions HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\n"
            b"Content-Length: %d\r\n\r\n%s"
            b"GET /subjects HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            % (V1.encode(), len(body), body)
        )
        response = read_until_closed(sock)
    first, second = response.split(b"HTTP/1.1 ")[1:]
    assert first.startswith(b"200") and b'"id":1' in first
    assert second.startswith(b"200") and second.endswith(b'["s"]')


# ------------------------------------------------------------------------------ the command
def test_serve_takes_the_limits_as_options(tmp_path: Path) -> None:
    helped = subprocess.run(
        [str(SCHEMA_REGISTRY), "serve", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for flag in ("--idle-timeout", "--header-timeout", "--body-timeout", "--max-header-size",
                 "--max-connections"):  # fmt: skip
        assert flag in helped
    server = ServeProcess("--storage", "memory", "--idle-timeout", "0.2", cwd=tmp_path).start()
    try:
        with connect(server.url) as sock:
            assert read_until_closed(sock) == b""
        refused = subprocess.run(
            [str(SCHEMA_REGISTRY), "serve", "--port", "0", "--idle-timeout", "0"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert refused.returncode == 1
        assert "--idle-timeout must be more than 0" in refused.stderr
    finally:
        server.stop()
