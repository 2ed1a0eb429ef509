"""HTTP-level behaviour: media types, errors, keep-alive, pipelining, 100-continue, HEAD."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.registry import field, in_process, record, register

from schema_registry.client import RegistryClient

V1 = "application/vnd.schemaregistry.v1+json"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[RegistryClient]:
    with in_process("memory", tmp_path) as client:
        yield client


def raw_exchange(api: RegistryClient, data: bytes, *, until: int = 1) -> bytes:
    """Send raw bytes, read until `until` complete responses arrived (or the peer closed)."""
    host, port = api.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        while received.count(b"HTTP/1.1 ") < until or not _complete(received, until):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


def _complete(data: bytes, count: int) -> bool:
    """Whether `data` holds `count` complete responses (by Content-Length)."""
    rest = data
    for _ in range(count):
        head, sep, body = rest.partition(b"\r\n\r\n")
        if not sep:
            return False
        length = next(
            (
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            0,
        )
        if len(body) < length:
            return False
        rest = body[length:]
    return True


def test_root_answers_empty_json_with_the_registry_media_type(api: RegistryClient) -> None:
    reply = api.get("/")
    assert reply.status == 200
    assert reply.json() == {}
    assert reply.headers["content-type"] == V1
    assert api.post("/", {"anything": 1}).json() == {}


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("", V1),
        ("*/*", V1),
        (f"{V1}, application/vnd.schemaregistry+json, application/json", V1),
        ("application/json", "application/json"),
        ("application/vnd.schemaregistry+json", "application/vnd.schemaregistry+json"),
        ("text/html,application/xhtml+xml,*/*;q=0.8", V1),
    ],
)
def test_content_negotiation(api: RegistryClient, accept: str, expected: str) -> None:
    reply = api.request("GET", "/subjects", headers={"Accept": accept})
    assert reply.status == 200
    assert reply.headers["content-type"] == expected


def test_unacceptable_accept_is_406(api: RegistryClient) -> None:
    reply = api.request("GET", "/subjects", headers={"Accept": "text/html"})
    assert (reply.status, reply.error_code) == (406, 406)


def test_posts_without_accept_like_ckp_sends_them(api: RegistryClient) -> None:
    # ckp replaces its headers on POST: only Content-Type and its own headers go out.
    body = json.dumps({"schema": record("A", field("a")), "schemaType": "AVRO", "references": []})
    request = (
        "POST /subjects/s/versions?normalize=False HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: {V1}\r\nConfluent-Accept-Unknown-Properties: true\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()
    response = raw_exchange(api, request)
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")
    assert f"Content-Type: {V1}".encode() in response


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nope", 404),
        ("GET", "/subjects/s/versions/1/extra", 404),
        ("PATCH", "/subjects", 405),
        ("PUT", "/schemas/types", 405),
    ],
)
def test_unknown_routes_and_methods(
    api: RegistryClient, method: str, path: str, status: int
) -> None:
    reply = api.request(method, path)
    assert (reply.status, reply.error_code) == (status, status)
    assert set(reply.json()) == {"error_code", "message"}


def test_a_bad_query_integer_is_a_400(api: RegistryClient) -> None:
    assert api.get("/subjects?offset=x").error_code == 400


def test_keep_alive_serves_many_requests_on_one_connection(api: RegistryClient) -> None:
    for _ in range(50):
        assert api.get("/subjects").status == 200


def test_pipelined_requests_are_answered_in_order(api: RegistryClient) -> None:
    register(api, "s", record("A", field("a")))
    requests = (
        b"GET /subjects HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /schemas/ids/1 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    response = raw_exchange(api, requests, until=3)
    first = response.index(b'["s"]')
    second = response.index(b'{"schema"')
    third = response.index(b"HTTP/1.1 404")
    assert first < second < third


def test_expect_100_continue(api: RegistryClient) -> None:
    body = json.dumps({"schema": record("A", field("a"))}).encode()
    head = (
        "POST /subjects/s/versions HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
        f"Content-Type: {V1}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    response = raw_exchange(api, head + body, until=2)
    assert response.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK")


def test_head_has_headers_and_no_body(api: RegistryClient) -> None:
    response = raw_exchange(api, b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 200 OK")
    assert response.endswith(b"\r\n\r\n")
    assert b"Content-Length: 2" in response


def test_http_1_0_closes_after_the_answer(api: RegistryClient) -> None:
    response = raw_exchange(api, b"GET / HTTP/1.0\r\n\r\n", until=2)
    assert response.count(b"HTTP/1.1 ") == 1
    assert response.endswith(b"{}")


def test_garbage_is_a_400_and_the_connection_closes(api: RegistryClient) -> None:
    response = raw_exchange(api, b"NOT HTTP AT ALL\r\n\r\n", until=2)
    assert response.startswith(b"HTTP/1.1 400 Bad Request")


def test_oversized_bodies_are_refused(api: RegistryClient) -> None:
    head = b"POST /subjects/s/versions HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n"
    response = raw_exchange(api, head, until=2)
    assert response.startswith(b"HTTP/1.1 413")


def test_get_answers_are_refreshed_after_a_write(api: RegistryClient) -> None:
    assert api.get("/subjects").json() == []
    register(api, "s", record("A", field("a")))
    assert api.get("/subjects").json() == ["s"], "the cached answer was dropped"
