"""A real control server for tests, built by the kit: the ConfigService half only
(``control.bootstrap.build_config``), so it needs no Kafka, with the kit's permission checks
against the test issuer (tests/support/tokens.py) and control's policy.

The registry (the session's ``registry_url``, with the audit contract registered) lets the kit
keep control's audit outbox; its relay points at no broker here, so the records stay in the
outbox (``<db dir>/control.audit-outbox.db``), where ``audit_actions`` reads them. The whole
service, Kafka included, runs in tests/integration/test_control_service.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastavro
from support.events import register_all
from support.tokens import TEST_ISSUER

from control.adapters.sqlite import MIGRATIONS
from control.bootstrap import build_config
from control.config import Settings
from meshkit.server import MeshServer
from meshkit.service import Service

CONFIG_ONLY = Service[Settings]("control", build_config, settings=Settings, migrations=MIGRATIONS)
NO_BROKER = "127.0.0.1:9"  # discard: nothing listens
REPO = Path(__file__).resolve().parents[3]
AUDIT_AVRO = REPO / "proto" / "mesh" / "audit" / "v1" / "avro"


def settings(
    db_path: Path, registry_url: str, *, grace: float = 0.2, poll: float = 0.05
) -> Settings:
    """Control's settings for a test: port 0, the test issuer, a short grace."""
    return Settings(
        port=0,
        db_path=db_path,
        grace_seconds=grace,
        watch_poll_seconds=poll,
        kafka_bootstrap=NO_BROKER,
        schema_registry_url=registry_url,
        auth_jwks_url=TEST_ISSUER.env["MESH_AUTH_JWKS_URL"],
        auth_issuer=TEST_ISSUER.env["MESH_AUTH_ISSUER"],
        auth_audience=TEST_ISSUER.env["MESH_AUTH_AUDIENCE"],
    )


@contextlib.contextmanager
def config_server(db_path: Path, registry_url: str, *, grace: float = 0.2) -> Iterator[MeshServer]:
    """A started ConfigService on 127.0.0.1:<port>; stopped when the block ends."""
    register_all(registry_url, AUDIT_AVRO)
    server = CONFIG_ONLY.create(settings(db_path, registry_url, grace=grace))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def audit_records(db_path: Path) -> list[dict[str, Any]]:
    """The audit records in the kit's audit outbox beside ``db_path``, in order, decoded with
    the contract (the registered writer schema: it is registered from the same file)."""
    schema = fastavro.parse_schema(json.loads((AUDIT_AVRO / "audit_recorded.avsc").read_text()))
    outbox = db_path.with_name("control.audit-outbox.db")
    with contextlib.closing(sqlite3.connect(outbox)) as conn:
        rows = conn.execute("SELECT value FROM meshkit_outbox ORDER BY id").fetchall()
    records = []
    for (value,) in rows:
        record = fastavro.schemaless_reader(io.BytesIO(bytes(value)[5:]), schema)
        assert isinstance(record, dict)
        records.append(record)
    return records
