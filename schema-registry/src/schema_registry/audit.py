"""The registry's audit records: every write as a ``mesh.audit.v1.AuditRecorded`` on
``audit.events.v1``, through an outbox in the registry's own storage.

What is recorded (``schema_registry.registry`` writes them): schema registrations, deletions
(soft and permanent, of a subject or one version), config and mode changes and their removal,
each in the SAME transaction as the change (SUCCESS); writes the registry refused for their
content (FAILURE, in a transaction of their own, since the change rolled back); and writes
refused for their credentials (DENIED, action ``schemas.write``). A registration of content the
subject already holds changes nothing and records nothing.

Who: the verified caller (token ``sub``, roles, client id; ``service`` for a client_credentials
token), or an empty actor when the registry runs without ``--auth``; from where: the client's
address; the trace id of the request's ``traceparent``. Never a token or secret.

Encoding: Confluent wire format (0x00, schema id, Avro body) with the id the AuditRecorded schema
has in this very registry, registered in itself under ``AUDIT_SUBJECT`` when it is absent; the
field mapping is meshkit.audit's ``to_record``; CloudEvents binary-mode headers as every meshkit
outbox row carries. ``run_relay`` publishes the rows with meshkit's OutboxRelay (idempotent
producer, a row marked only after the broker acknowledged it), so without Kafka the outbox just
fills, and nothing is lost until Kafka comes.
"""

from __future__ import annotations

import io
import json
import logging
import struct
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Final

from fastavro import parse_schema, schemaless_writer

from meshkit.audit import (
    AUDIT_EVENT,
    AUDIT_NAMESPACE,
    AUDIT_TOPIC,
    SUCCESS,
    Actor,
    AuditEntry,
    to_record,
)
from meshkit.authz import Principal
from meshkit.events import cloudevent_headers
from schema_registry.storage import OutboxRow

log = logging.getLogger(__name__)

SERVICE: Final = "schema-registry"
SOURCE: Final = f"/meshkit/{SERVICE}"
#: TopicRecordNameStrategy, as `register-all proto/` names it too.
AUDIT_SUBJECT: Final = f"{AUDIT_TOPIC}-{AUDIT_EVENT}"
#: The action of a write refused for its credentials (the permission it needed).
WRITE_ACTION: Final = "schemas.write"
#: How long a published row stays in the outbox before the relay prunes it.
RETENTION_S: Final = 60.0


@dataclass(frozen=True)
class Origin:
    """Who asked for a write, from where, in which trace: what a record says of the request."""

    actor: Actor = field(default_factory=Actor)
    source_address: str = ""
    traceparent: str = ""

    @property
    def trace_id(self) -> str:
        """The W3C trace id of ``traceparent`` (32 hex digits), or ""."""
        parts = self.traceparent.split("-")
        if len(parts) >= 4 and len(parts[1]) == 32 and parts[1] != "0" * 32:
            try:
                int(parts[1], 16)
            except ValueError:
                return ""
            return parts[1].lower()
        return ""

    @property
    def who(self) -> str:
        """The actor for a log line."""
        return self.actor.subject or "anonymous"


ANONYMOUS: Final = Origin()
"""A request nobody identified (the registry runs without --auth, or no credentials came)."""
SYSTEM: Final = Origin(Actor(subject=SERVICE, service=SERVICE))
"""The registry itself (registering the AuditRecorded schema it writes its records with)."""


def actor_of(principal: Principal | None) -> Actor:
    """The audit actor of a verified caller (an empty one for nobody)."""
    return Actor.of(principal)


def audit_schema_text() -> str:
    """The AuditRecorded contract the installed contracts package ships (a copy of proto/'s)."""
    return (resources.files(AUDIT_NAMESPACE) / "avro" / "audit_recorded.avsc").read_text("utf-8")


class AuditLog:
    """Turns registry writes into outbox rows (see the module docstring). Immutable and
    thread-safe; the registry supplies the schema id from its own storage."""

    def __init__(self, schema_text: str | None = None) -> None:
        self.schema_text = schema_text or audit_schema_text()
        self._parsed = parse_schema(json.loads(self.schema_text))

    def row(
        self,
        schema_id: int,
        origin: Origin,
        action: str,
        *,
        outcome: str = SUCCESS,
        resource_type: str = "",
        resource_id: str = "",
        reason: str = "",
        details: Mapping[str, Any] | None = None,
    ) -> OutboxRow:
        """One AuditRecorded as an outbox row, keyed (and ``ce_id``'d) by its audit id."""
        entry = AuditEntry(
            action,
            outcome=outcome,
            resource_type=resource_type,
            resource_id=resource_id,
            reason=reason,
            details={k: str(v) for k, v in (details or {}).items()},
            actor=origin.actor,
            source_address=origin.source_address,
            trace_id=origin.trace_id,
        )
        record = to_record(entry, SERVICE)
        out = io.BytesIO()
        out.write(struct.pack(">bI", 0, schema_id))
        schemaless_writer(out, self._parsed, record)
        audit_id = str(record["audit_id"])
        headers = cloudevent_headers(
            event_type=AUDIT_EVENT,
            source=SOURCE,
            subject=audit_id,
            event_id=audit_id,
            time=record["occurred_at"],
        )
        if origin.trace_id:
            # The request's trace context, so the relay's send span joins the request's trace.
            headers = [(k, v) for k, v in headers if k not in ("traceparent", "tracestate")]
            headers.append(("traceparent", origin.traceparent))
        return OutboxRow(AUDIT_TOPIC, audit_id, out.getvalue(), tuple(headers))


def run_relay(db_path: Path, bootstrap: str, stop: threading.Event) -> None:
    """Publish the outbox of the SQLite store at ``db_path`` to Kafka at ``bootstrap`` until
    ``stop`` is set (creating ``audit.events.v1`` with its topic.json config when missing)."""
    from meshkit.db import Database
    from meshkit.events import EventCatalog, OutboxRelay

    db = Database(db_path)
    relay = OutboxRelay(
        db,
        bootstrap,
        topics=EventCatalog.from_package(AUDIT_NAMESPACE).topic_configs,
        retention_s=RETENTION_S,
    )
    log.info("publishing audit records to %s on %s", AUDIT_TOPIC, bootstrap)
    try:
        # Registry writes are rare and come from other connections (so the relay cannot hear
        # of them): a quarter-second poll keeps a record's delay short at no cost to reads.
        relay.run_forever(stop, idle_s=0.25)
    finally:
        relay.close()
        db.close()
