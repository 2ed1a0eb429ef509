"""Audit records of registry writes (schema_registry.audit), read from the storage's outbox.

Each write that changes something leaves exactly one AuditRecorded, in the Confluent wire format
with the id the AuditRecorded schema has in the registry itself; refused writes leave a FAILURE
or DENIED one; reads, lookups, checks and no-op registrations leave none. Publishing them to a
real broker is tests/integration/test_registry_audit.py.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader
from support.registry import field, record, register
from unit.schema_registry.fake_identity import FakeIdentity

from schema_registry.audit import AUDIT_SUBJECT, audit_schema_text
from schema_registry.client import RegistryClient
from schema_registry.server import running_server
from schema_registry.storage import MemoryStorage, OutboxRow, SqliteStorage, Storage

V1 = record("Thing", field("id"))
V2 = record("Thing", field("id"), field("n", "int", default=0))
BAD = record("Thing", field("id"), field("n", "int"))
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"
READER = parse_schema(json.loads(audit_schema_text()))


def decode(row: OutboxRow) -> tuple[int, dict[str, Any]]:
    magic, schema_id = struct.unpack(">bI", row.value[:5])
    assert magic == 0
    found: dict[str, Any] = schemaless_reader(io.BytesIO(row.value[5:]), READER, READER)  # type: ignore[assignment]
    return schema_id, found


class Registry:
    """A registry with auditing on, and the records it has written since the last look."""

    def __init__(self, storage: Storage, url: str) -> None:
        self.storage = storage
        self.url = url
        self._seen = 0

    def records(self) -> list[dict[str, Any]]:
        rows = self.storage.pending_outbox()
        new, self._seen = rows[self._seen :], len(rows)
        return [decode(row)[1] for row in new]


@pytest.fixture(params=["memory", "sqlite"])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    storage: Storage = (
        MemoryStorage() if request.param == "memory" else SqliteStorage(tmp_path / "r.db")
    )
    try:
        with running_server(storage, audit=True) as url:
            yield Registry(storage, url)
    finally:
        storage.close()


def traced(client: RegistryClient, method: str, path: str, body: Any = None) -> Any:
    return client.request(method, path, body, headers={"traceparent": TRACEPARENT})


def test_the_registry_registers_the_schema_of_its_own_records(registry: Registry) -> None:
    with RegistryClient(registry.url) as client:
        found = client.get(f"/subjects/{AUDIT_SUBJECT}/versions/latest").json()
        assert found["id"] == 1, "registered before anything else, so ids do not shift later"
        register(client, "things-value", V1)
    rows = registry.storage.pending_outbox()
    assert [decode(row)[0] for row in rows] == [1, 1], "every record names that schema's id"
    first = decode(rows[0])[1]
    assert (first["action"], first["resource_id"]) == ("schemas.register", AUDIT_SUBJECT)
    assert first["actor"]["subject"] == "schema-registry", "the registry itself registered it"


def test_each_change_is_one_record_with_what_and_where(registry: Registry) -> None:
    registry.records()  # the AuditRecorded registration itself
    with RegistryClient(registry.url) as client:
        assert traced(client, "POST", "/subjects/things-value/versions", {"schema": V1}).ok
        assert traced(client, "POST", "/subjects/things-value/versions", {"schema": V1}).ok
        assert traced(client, "POST", "/subjects/things-value/versions", {"schema": V2}).ok
        assert traced(client, "PUT", "/config/things-value", {"compatibility": "FULL"}).ok
        assert traced(client, "DELETE", "/config/things-value").ok
        assert traced(client, "PUT", "/config", {"compatibility": "NONE"}).ok
        assert traced(client, "PUT", "/mode/things-value", {"mode": "READONLY"}).ok
        assert traced(client, "DELETE", "/mode/things-value").ok
        assert traced(client, "DELETE", "/subjects/things-value/versions/1").ok
        assert traced(client, "DELETE", "/subjects/things-value/versions/1?permanent=true").ok
        assert traced(client, "DELETE", "/subjects/things-value").ok
        assert traced(client, "DELETE", "/subjects/things-value?permanent=true").ok
    found = registry.records()
    summary = [(r["action"], r["resource_type"], r["resource_id"], r["details"]) for r in found]
    assert summary == [
        ("schemas.register", "Subject", "things-value", {"version": "1", "id": "2"}),
        # registering V1 again changed nothing: no record
        ("schemas.register", "Subject", "things-value", {"version": "2", "id": "3"}),
        ("schemas.config.set", "Subject", "things-value", {"compatibility": "FULL"}),
        ("schemas.config.delete", "Subject", "things-value", {"compatibility": "FULL"}),
        ("schemas.config.set", "Registry", "global", {"compatibility": "NONE"}),
        ("schemas.mode.set", "Subject", "things-value", {"mode": "READONLY", "force": "false"}),
        ("schemas.mode.delete", "Subject", "things-value", {"mode": "READONLY"}),
        (
            "schemas.version.delete",
            "Subject",
            "things-value",
            {"version": "1", "id": "2", "permanent": "false"},
        ),
        (
            "schemas.version.delete",
            "Subject",
            "things-value",
            {"version": "1", "id": "2", "permanent": "true"},
        ),
        (
            "schemas.subject.delete",
            "Subject",
            "things-value",
            {"versions": "2", "permanent": "false"},
        ),
        (
            "schemas.subject.delete",
            "Subject",
            "things-value",
            {"versions": "2", "permanent": "true"},
        ),
    ]
    for found_record in found:
        assert found_record["service"] == "schema-registry"
        assert found_record["outcome"] == "SUCCESS"
        assert found_record["source_address"] == "127.0.0.1"
        assert found_record["trace_id"] == TRACE
        assert found_record["actor"] == {
            "subject": "",
            "roles": [],
            "client_id": "",
            "service": "",
            "on_behalf_of": "",
        }, "without --auth nobody can be named"


def test_reads_lookups_and_checks_record_nothing(registry: Registry) -> None:
    with RegistryClient(registry.url) as client:
        register(client, "things-value", V1)
        registry.records()
        assert client.get("/subjects/things-value/versions").ok
        assert client.post("/subjects/things-value", {"schema": V1}).ok
        assert client.post("/compatibility/subjects/things-value/versions", {"schema": V2}).ok
        assert client.post("/", {}).ok
    assert registry.records() == []


def test_a_refused_change_is_a_failure_and_its_change_left_no_success(registry: Registry) -> None:
    with RegistryClient(registry.url) as client:
        register(client, "things-value", V1)
        registry.records()
        refused = traced(client, "POST", "/subjects/things-value/versions", {"schema": BAD})
        assert refused.status == 409
        assert client.delete("/subjects/nothing-here").error_code == 40401
    found = registry.records()
    assert [(r["action"], r["outcome"], r["resource_id"]) for r in found] == [
        ("schemas.register", "FAILURE", "things-value"),
        ("schemas.subject.delete", "FAILURE", "nothing-here"),
    ]
    assert "incompatible" in found[0]["reason"]
    assert found[0]["details"] == {"method": "POST", "status": "409", "registry_error": "409"}
    assert found[0]["trace_id"] == TRACE


def test_the_audit_schema_stays_resolvable_when_its_subject_is_deleted(
    registry: Registry,
) -> None:
    """Consumers resolve every record's schema id: a permanent delete of the subject is undone
    by the very record that audits it (same content, so the same id)."""
    with RegistryClient(registry.url) as client:
        assert client.delete(f"/subjects/{AUDIT_SUBJECT}").ok
        assert client.get("/schemas/ids/1").status == 200, "soft-deleted ids still resolve"
        assert client.delete(f"/subjects/{AUDIT_SUBJECT}?permanent=true").json() == [1]
        assert client.get("/schemas/ids/1").status == 200
        assert client.get(f"/subjects/{AUDIT_SUBJECT}/versions").json() == [1]
    found = registry.records()
    assert [(r["action"], r["details"].get("permanent", "")) for r in found] == [
        ("schemas.register", ""),
        ("schemas.subject.delete", "false"),
        ("schemas.register", ""),  # the registry's own, inside the permanent delete
        ("schemas.subject.delete", "true"),
    ]
    assert {decode(row)[0] for row in registry.storage.pending_outbox()} == {1}


def test_denied_writes_are_recorded_with_who_was_refused(tmp_path: Path) -> None:
    identity = FakeIdentity(clients={"schema-registrar": ("s3cret", "schemas:write", ("service",))})
    storage = MemoryStorage()
    with running_server(storage, guard=identity.guard(), audit=True) as url:
        registry = Registry(storage, url)
        registry.records()
        reader = identity.token("u-9", scope="orders", roles=("customer",))
        with RegistryClient(url) as anonymous:
            assert traced(anonymous, "PUT", "/config", {"compatibility": "NONE"}).status == 401
        with RegistryClient(url, bearer_token=reader) as client:
            assert client.delete("/subjects/things-value").status == 403
        with RegistryClient(url, basic_auth="schema-registrar:wrong") as client:
            assert client.post("/subjects/x-value/versions", {"schema": V1}).status == 401
        with RegistryClient(url, basic_auth="schema-registrar:s3cret") as client:
            assert client.post("/subjects/x-value/versions", {"schema": V1}).ok
    found = registry.records()
    assert [(r["action"], r["outcome"], r["resource_type"], r["resource_id"]) for r in found] == [
        ("schemas.write", "DENIED", "Registry", "global"),
        ("schemas.write", "DENIED", "Subject", "things-value"),
        ("schemas.write", "DENIED", "Subject", "x-value"),
        ("schemas.register", "SUCCESS", "Subject", "x-value"),
    ]
    anonymous_denial, scope_denial, secret_denial, registered = found
    assert anonymous_denial["actor"]["subject"] == ""
    assert anonymous_denial["trace_id"] == TRACE
    assert anonymous_denial["details"] == {
        "operation": "schemas.config.set",
        "method": "PUT",
        "status": "401",
    }
    assert scope_denial["actor"] == {
        "subject": "u-9",
        "roles": ["customer"],
        "client_id": "shop-web",
        "service": "",
        "on_behalf_of": "",
    }
    assert "schemas:write" in scope_denial["reason"]
    assert secret_denial["reason"] == "the client id or secret is not accepted"
    assert registered["actor"] == {
        "subject": "schema-registrar",
        "roles": ["service"],
        "client_id": "schema-registrar",
        "service": "schema-registrar",
        "on_behalf_of": "",
    }
    everything = b"".join(
        row.value + json.dumps(row.headers).encode() for row in storage.pending_outbox()
    )
    for secret in (reader.encode(), b"s3cret", b"wrong"):
        assert secret not in everything, "no record carries a token or a secret"


def test_records_carry_cloudevents_headers_keyed_by_audit_id(registry: Registry) -> None:
    with RegistryClient(registry.url) as client:
        traced(client, "PUT", "/config", {"compatibility": "FULL"})
    row = registry.storage.pending_outbox()[-1]
    headers = dict(row.headers)
    audit_id = decode(row)[1]["audit_id"]
    assert row.topic == "audit.events.v1"
    assert row.key == headers["ce_id"] == headers["ce_subject"] == audit_id
    assert headers["ce_type"] == "mesh.audit.v1.AuditRecorded"
    assert headers["ce_source"] == "/meshkit/schema-registry"
    assert headers["traceparent"] == TRACEPARENT, "the relay's span joins the request's trace"
