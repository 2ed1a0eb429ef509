"""The registry's access log: one JSON object per line (meshkit's formatter, as every process of
the mesh logs) with method, path, status, duration, client address and subject; every write is
logged with its caller, reads only when sampled (``access_log_reads``, off by default). A real
`schema-registry serve` writes all of its log output as JSON lines."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.registry import field, record, register, run_cli, serve, wait_until

from meshkit.audit import Actor
from meshkit.logs import JsonFormatter
from schema_registry.api import Api, WriteContext
from schema_registry.audit import Origin
from schema_registry.client import RegistryClient
from schema_registry.registry import Registry
from schema_registry.storage import MemoryStorage

TRACE = "0af7651916cd43dd8448eb211c80319c"
SCHEMA = record("Logged", field("a"))


@pytest.fixture
def storage() -> Iterator[MemoryStorage]:
    storage = MemoryStorage()
    yield storage
    storage.close()


@pytest.fixture
def access(caplog: pytest.LogCaptureFixture) -> Callable[[], list[dict[str, Any]]]:
    """The access log's records so far, each parsed from the JSON line meshkit's formatter
    makes of it."""
    caplog.set_level(logging.INFO, logger="schema_registry.access")
    formatter = JsonFormatter("schema-registry")

    def lines() -> list[dict[str, Any]]:
        return [
            json.loads(formatter.format(r))
            for r in caplog.records
            if r.name == "schema_registry.access"
        ]

    return lines


def write(api: Api, subject: str) -> bytes:
    origin = Origin(
        Actor(subject="svc-orders"),
        source_address="10.1.2.3",
        traceparent=f"00-{TRACE}-b7ad6b7169203331-01",
    )
    body = json.dumps({"schema": SCHEMA}).encode()
    return api.handle(
        "POST",
        f"/subjects/{subject}/versions?normalize=true".encode(),
        b"",
        body,
        WriteContext(origin),
    )


def test_a_write_is_one_json_line_with_every_field(
    storage: MemoryStorage, access: Callable[[], list[dict[str, Any]]]
) -> None:
    api = Api(Registry(storage))
    assert write(api, "orders-value").startswith(b"HTTP/1.1 200 ")
    (line,) = access()
    assert line["logger"] == "schema_registry.access"
    assert line["service"] == "schema-registry"
    assert line["level"] == "INFO"
    assert line["http_method"] == "POST"
    assert line["http_path"] == "/subjects/orders-value/versions"
    assert line["http_query"] == "normalize=true"
    assert line["http_status"] == 200
    assert isinstance(line["elapsed_ms"], float)
    assert line["elapsed_ms"] >= 0
    assert line["client_address"] == "10.1.2.3"
    assert line["subject"] == "orders-value"
    assert line["enduser_id"] == "svc-orders"
    assert line["trace_id"] == TRACE
    assert line["msg"].startswith("POST /subjects/orders-value/versions?normalize=true 200 ")


def test_a_refused_write_is_logged_with_its_status(
    storage: MemoryStorage, access: Callable[[], list[dict[str, Any]]]
) -> None:
    api = Api(Registry(storage))
    reply = api.handle("DELETE", b"/subjects/missing%2Fone", b"", b"", WriteContext())
    assert reply.startswith(b"HTTP/1.1 404 ")
    (line,) = access()
    assert (line["http_status"], line["subject"]) == (404, "missing/one")
    assert line["http_path"] == "/subjects/missing%2Fone"
    assert line["client_address"] == ""  # nobody said where it came from


def test_reads_are_not_logged_by_default(
    storage: MemoryStorage, access: Callable[[], list[dict[str, Any]]]
) -> None:
    api = Api(Registry(storage))
    write(api, "orders-value")
    for url in (b"/subjects", b"/subjects/orders-value/versions", b"/schemas/ids/1"):
        api.handle("GET", url, b"", b"", peer="10.9.8.7")
    assert [line["http_method"] for line in access()] == ["POST"]


def test_sampled_reads_are_logged_with_the_peer_and_subject(
    storage: MemoryStorage, access: Callable[[], list[dict[str, Any]]]
) -> None:
    api = Api(Registry(storage), access_log_reads=1.0)
    write(api, "orders-value")
    for _ in range(2):  # a miss, then a cache hit: both logged
        api.handle("GET", b"/subjects/orders-value/versions/latest", b"", b"", peer="10.9.8.7")
    api.handle("GET", b"/schemas/ids/99", b"", b"", peer="10.9.8.7")
    reads = [line for line in access() if line["http_method"] == "GET"]
    assert [(r["http_status"], r["subject"]) for r in reads] == [
        (200, "orders-value"),
        (200, "orders-value"),
        (404, None),
    ]
    assert {r["client_address"] for r in reads} == {"10.9.8.7"}
    assert all("enduser_id" not in r for r in reads)


def test_the_read_share_is_a_rate(storage: MemoryStorage) -> None:
    for rate in (-0.1, 1.5):
        with pytest.raises(ValueError, match="access_log_reads"):
            Api(Registry(storage), access_log_reads=rate)


def test_serve_logs_json_lines_and_every_write(tmp_path: Path) -> None:
    with serve("--storage", "memory", cwd=tmp_path) as server:
        with RegistryClient(server.url) as client:
            register(client, "served-value", SCHEMA)
            assert client.get("/subjects/served-value/versions").status == 200
        wait_until(
            lambda: any("served-value" in line for line in server.stderr_lines),
            what="the write's access-log line",
        )
        logged = list(server.stderr_lines)
    # The ready line is plain text (scripts read the port from it); everything else is JSON.
    parsed = [json.loads(line) for line in logged if "listening on http" not in line]
    assert all(p["service"] == "schema-registry" for p in parsed)
    access = [p for p in parsed if p["logger"] == "schema_registry.access"]
    (line,) = [p for p in access if p["subject"] == "served-value"]
    assert (line["http_method"], line["http_status"]) == ("POST", 200)
    assert line["http_path"] == "/subjects/served-value/versions"
    assert line["client_address"] == "127.0.0.1"
    assert line["enduser_id"] == ""
    assert not [p for p in access if p["http_method"] == "GET"]  # reads: off by default


def test_serve_logs_every_read_with_a_rate_of_one(tmp_path: Path) -> None:
    with serve("--storage", "memory", "--access-log-reads", "1", cwd=tmp_path) as server:
        with RegistryClient(server.url) as client:
            assert client.get("/subjects/sampled-value/versions").status == 404
        wait_until(
            lambda: any("sampled-value" in line for line in server.stderr_lines),
            what="the read's access-log line",
        )
        logged = [json.loads(line) for line in server.stderr_lines if "sampled-value" in line]
    (line,) = logged
    assert (line["http_method"], line["http_status"]) == ("GET", 404)
    assert line["subject"] == "sampled-value" and line["client_address"] == "127.0.0.1"


def test_serve_refuses_a_read_share_outside_0_to_1(tmp_path: Path) -> None:
    reply = run_cli("serve", "--storage", "memory", "--access-log-reads", "2", cwd=tmp_path)
    assert reply.returncode == 1 and "--access-log-reads" in reply.stderr
