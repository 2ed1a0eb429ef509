"""The registry's audit records on a real broker: `schema-registry serve --kafka` publishes one
mesh.audit.v1.AuditRecorded per write to audit.events.v1 (Confluent wire format, the schema id
the registry gave the AuditRecorded schema itself), decoded here with fastavro; records written
while no Kafka was configured wait in the outbox and arrive once a relay runs; a refused
credential is a DENIED record that does not hold the credential.

audit.events.v1 is shared with every other test of the session, so records are picked by their
(unique) subjects.
"""

from __future__ import annotations

import io
import json
import struct
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer
from fastavro import parse_schema, schemaless_reader
from support.events import wait_for
from support.mesh import free_port
from support.registry import field, record, serve

from schema_registry.audit import AUDIT_SUBJECT
from schema_registry.client import RegistryClient

pytestmark = pytest.mark.kafka

TOPIC = "audit.events.v1"
TRACE = "0af7651916cd43dd8448eb211c80319c"
V1 = record("Crate", field("crate_id"), namespace="shop.audit_test.v1")
V2 = record(
    "Crate", field("crate_id"), field("n", "int", default=0), namespace="shop.audit_test.v1"
)


def audit_records(
    bootstrap: str, registry_url: str, subjects: Iterable[str], count: int, timeout: float = 60
) -> list[tuple[dict[str, Any], dict[str, str], int]]:
    """The first ``count`` records about ``subjects`` on audit.events.v1: (record decoded with
    the writer schema the registry serves for its id, headers, schema id)."""
    wanted = set(subjects)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"registry-audit-test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([TOPIC])
    writers: dict[int, Any] = {}
    found: list[tuple[dict[str, Any], dict[str, str], int]] = []
    deadline = time.monotonic() + timeout
    try:
        with RegistryClient(registry_url) as registry:
            while len(found) < count:
                assert time.monotonic() < deadline, f"got {len(found)} of {count}: {found}"
                msg = consumer.poll(0.5)
                if msg is None or msg.error() is not None:
                    continue
                value = msg.value()
                assert value is not None
                magic, schema_id = struct.unpack(">bI", value[:5])
                assert magic == 0
                if schema_id not in writers:
                    reply = registry.get(f"/schemas/ids/{schema_id}")
                    if reply.status != 200:
                        continue  # a record of another test's registry
                    writers[schema_id] = parse_schema(json.loads(reply.json()["schema"]))
                # The broker is shared: a record of another registry may carry an id that names
                # another schema here, and then it does not decode as an audit record.
                try:
                    decoded = schemaless_reader(io.BytesIO(value[5:]), writers[schema_id], None)
                except Exception:  # noqa: BLE001 - any decoding failure means "not ours"
                    continue
                if not isinstance(decoded, dict) or decoded.get("resource_id") not in wanted:
                    continue
                raw = msg.headers() or []
                pairs = raw.items() if isinstance(raw, dict) else raw
                headers = {k: v.decode() if isinstance(v, bytes) else str(v) for k, v in pairs}
                found.append((decoded, headers, schema_id))
    finally:
        consumer.close()
    return found


def test_writes_become_audit_records_on_kafka(tmp_path: Path, kafka_bootstrap: str) -> None:
    subject = f"crates-{uuid.uuid4().hex[:8]}-value"
    db = tmp_path / "registry.db"
    with serve("--storage", f"sqlite:///{db}", "--kafka", kafka_bootstrap, cwd=tmp_path) as proc:
        with RegistryClient(proc.url) as client:
            trace = {"traceparent": f"00-{TRACE}-b7ad6b7169203331-01"}
            registered = client.request(
                "POST", f"/subjects/{subject}/versions", {"schema": V1}, headers=trace
            ).json()
            assert client.post(f"/subjects/{subject}/versions", {"schema": V2}).ok
            assert client.put(f"/config/{subject}", {"compatibility": "FULL"}).ok
            assert client.delete(f"/subjects/{subject}/versions/1").ok
            assert client.delete(f"/subjects/{subject}/versions/1?permanent=true").ok
            assert client.put(f"/mode/{subject}", {"mode": "READONLY"}).ok
            audit_schema = client.get(f"/subjects/{AUDIT_SUBJECT}/versions/latest").json()
        found = audit_records(kafka_bootstrap, proc.url, [subject], 6)
        # Published rows are marked, so a restarted relay does not send them again.
        wait_for(lambda: _unpublished(db) == 0, what="the outbox to be marked published")
    records = [r for r, _, _ in found]
    assert [(r["action"], r["details"]) for r in records] == [
        ("schemas.register", {"version": "1", "id": str(registered["id"])}),
        ("schemas.register", {"version": "2", "id": str(registered["id"] + 1)}),
        ("schemas.config.set", {"compatibility": "FULL"}),
        (
            "schemas.version.delete",
            {"version": "1", "id": str(registered["id"]), "permanent": "false"},
        ),
        (
            "schemas.version.delete",
            {"version": "1", "id": str(registered["id"]), "permanent": "true"},
        ),
        ("schemas.mode.set", {"mode": "READONLY", "force": "false"}),
    ]
    assert {schema_id for _, _, schema_id in found} == {audit_schema["id"]}
    first, headers, _ = found[0]
    assert first["trace_id"] == TRACE
    assert first["source_address"] == "127.0.0.1"
    assert first["service"] == "schema-registry"
    assert (first["outcome"], first["resource_type"]) == ("SUCCESS", "Subject")
    assert first["actor"]["subject"] == "", "no --auth: nobody to name"
    assert headers["ce_type"] == "mesh.audit.v1.AuditRecorded"
    assert headers["ce_id"] == first["audit_id"]
    assert headers["ce_source"] == "/meshkit/schema-registry"


def test_records_wait_in_the_outbox_until_kafka_comes(
    tmp_path: Path, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MESH_KAFKA_BOOTSTRAP", raising=False)
    subject = f"offline-{uuid.uuid4().hex[:8]}-value"
    storage = ("--storage", f"sqlite:///{tmp_path / 'registry.db'}")
    with serve(*storage, cwd=tmp_path) as offline, RegistryClient(offline.url) as client:
        assert client.post(f"/subjects/{subject}/versions", {"schema": V1}).ok
        assert client.put(f"/config/{subject}", {"compatibility": "NONE"}).ok
    assert _unpublished(tmp_path / "registry.db") >= 2
    # Two workers: the relay is a child process of its own then.
    with serve(*storage, "--workers", "2", "--kafka", kafka_bootstrap, cwd=tmp_path) as online:
        found = audit_records(kafka_bootstrap, online.url, [subject], 2)
        wait_for(lambda: _unpublished(tmp_path / "registry.db") == 0, what="the outbox to drain")
    assert [r["action"] for r, _, _ in found] == ["schemas.register", "schemas.config.set"]


def test_a_refused_credential_is_denied_on_kafka_without_the_credential(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    subject = f"denied-{uuid.uuid4().hex[:8]}-value"
    # No identity answers there: a malformed token is refused without asking it.
    jwks = f"http://127.0.0.1:{free_port()}/.well-known/jwks.json"
    secret_token = f"not-a-jwt-{uuid.uuid4().hex}"
    with serve("--auth", jwks, "--kafka", kafka_bootstrap, cwd=tmp_path) as proc:
        with RegistryClient(proc.url, bearer_token=secret_token) as client:
            refused = client.post(f"/subjects/{subject}/versions", {"schema": V1})
            assert refused.status == 401
        with RegistryClient(proc.url) as reader:
            assert reader.get("/subjects").status == 200
        found = audit_records(kafka_bootstrap, proc.url, [subject], 1)
    denied, headers, _ = found[0]
    assert (denied["action"], denied["outcome"]) == ("schemas.write", "DENIED")
    assert denied["details"] == {
        "operation": "schemas.register",
        "method": "POST",
        "status": "401",
    }
    assert secret_token not in json.dumps(denied, default=str)
    assert secret_token not in json.dumps(headers)


def _unpublished(db: Path) -> int:
    import sqlite3

    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT count(*) FROM meshkit_outbox WHERE published_at IS NULL"
        ).fetchone()
    return int(row[0])
