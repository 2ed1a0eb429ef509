"""The transactional outbox: events are rows written in the same SQLite transaction as the state
change that produced them; the relay (meshkit.events.relay) publishes them afterwards."""

from __future__ import annotations

import datetime
import io
import json
import sqlite3
import time
from collections.abc import Mapping
from typing import Any

from fastavro import schemaless_writer

from meshkit.errors import FieldViolation, InvalidArgument, MeshError, Unavailable
from meshkit.events._catalog import (
    CatalogError,
    EventCatalog,
    EventType,
    SchemaRegistrationError,
    _client,
)
from meshkit.events._headers import cloudevent_headers
from meshkit.events._validate import violations

OUTBOX_MIGRATION = """
CREATE TABLE meshkit_outbox (
    -- AUTOINCREMENT: ids are never reused after published rows are pruned, so id order is
    -- commit order is publish order.
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    topic        TEXT NOT NULL,
    key          TEXT NOT NULL,
    value        BLOB NOT NULL,     -- Confluent wire format: 0x00, schema id, Avro body
    headers      TEXT NOT NULL,     -- JSON [[name, value], ...], CloudEvents + traceparent
    created_at   REAL NOT NULL,     -- unix seconds
    published_at REAL,              -- NULL until the broker acknowledged it
    error        TEXT               -- why Kafka can never take it (the row is parked); else NULL
);
CREATE INDEX meshkit_outbox_pending ON meshkit_outbox (id) WHERE published_at IS NULL;
"""
"""Append this to the service's own migrations (``Database(path, [*mine, OUTBOX_MIGRATION])``).

The relay adds the ``error`` column to an outbox table created before it existed (see
``meshkit.events.relay``), so services never need a second outbox migration for it."""

MAX_MESSAGE_BYTES = 1_000_000
"""The largest record the relay's producer sends: librdkafka's default ``message.max.bytes``,
set explicitly by the relay. Brokers take more by default (``message.max.bytes`` 1,048,588)."""

FRAMING_BYTES = 5
"""Confluent wire format framing: magic byte 0x00 and a 4-byte big-endian schema id."""

RECORD_ROOM = 1_024
"""Bytes of a record's size kept free for what is not known at append time: the record framing
(lengths, attributes, varints) and the PRODUCER span's ``traceparent``/``tracestate``, which the
relay puts in place of the row's."""


class EventSchemaError(MeshError):
    """An event does not conform to its Avro schema; ``violations`` names every bad field.

    A bug in the producing service, not in the request, hence INTERNAL: the command fails and,
    because it is raised inside the command's transaction, nothing it did is stored.
    """

    status = "INTERNAL"

    def __init__(self, event_type: str, found: list[FieldViolation]) -> None:
        self.event_type = event_type
        self.violations = tuple(found)
        detail = "; ".join(f"{v.field}: {v.description}" for v in found)
        super().__init__(
            f"event {event_type} does not conform to its schema: {detail}",
            reason="EVENT_SCHEMA_VIOLATION",
        )


class EventTooLarge(InvalidArgument):
    """An event is larger than one Kafka message may be: the command that made it fails.

    Kafka's producer refuses a record over its ``message.max.bytes`` at once, so such an event
    could never be published. Raised inside the command's transaction, so nothing the command did
    is stored. INVALID_ARGUMENT: the same request always makes the same event, so retrying it
    cannot help (RESOURCE_EXHAUSTED would read as "try later"). The message names the event type
    and the sizes, never the data.
    """

    def __init__(self, event_type: str, size: int, limit: int) -> None:
        super().__init__(
            f"the request makes event {event_type} of {size:,} bytes, over the {limit:,}-byte"
            " limit of one Kafka message: send less in one request",
            reason="EVENT_TOO_LARGE",
        )
        self.event_type = event_type
        self.size = size
        self.limit = limit
        self.metadata = {"event_type": event_type, "size": str(size), "limit": str(limit)}


def record_size(key: str, value: bytes, headers: list[tuple[str, str]]) -> int:
    """What a row takes of the producer's ``message.max.bytes``: key, value and headers as they
    are sent, plus ``RECORD_ROOM``."""
    named = len("".join(name + text for name, text in headers).encode())
    return len(key.encode()) + len(value) + named + RECORD_ROOM


class Outbox:
    """Appends events to the outbox table inside the caller's transaction.

    ``append`` validates the event strictly against its schema and serializes it with
    confluent-kafka's ``AvroSerializer`` (Confluent wire format, schema id looked up in the
    registry once per subject and cached; never auto-registered), so the relay only moves bytes
    and needs no registry.

    Thread safety: one Outbox may be shared by every thread of a service; each call writes through
    the connection it is given. Transactions: ``append`` never commits; the event exists exactly
    when the caller's transaction commits. Idempotency: each call appends a new event with a new
    ``ce_id`` (uuid4) unless ``event_id`` is given.

    Size: an event whose record would exceed ``max_message_bytes`` (the relay producer's
    ``message.max.bytes``; pass the same number to both when you change it) is refused with
    EventTooLarge, so every row in the outbox is one Kafka can take.
    """

    def __init__(
        self,
        catalog: EventCatalog,
        registry: Any,
        *,
        source: str,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        from confluent_kafka.schema_registry import topic_record_subject_name_strategy
        from confluent_kafka.schema_registry.avro import AvroSerializer

        self._catalog = catalog
        self._source = source
        self._max_message_bytes = max_message_bytes
        self._registry = _client(registry)
        conf = {
            "auto.register.schemas": False,
            "use.latest.version": False,
            "subject.name.strategy": topic_record_subject_name_strategy,
        }
        self._serializers = {
            t.full_name: AvroSerializer(self._registry, t.schema_text, conf=conf) for t in catalog
        }
        # Per event type, once the serializer has framed one event: its framing (magic byte and
        # schema id, which the serializer caches for good too) for the fast path in _serialize.
        self._framing: dict[str, bytes] = {}

    def verify(self) -> dict[str, int]:
        """``catalog.verify`` against this outbox's registry: call it at start-up so a service with
        an unregistered or changed schema refuses to start, naming the subjects."""
        return self._catalog.verify(self._registry)

    def append(
        self,
        conn: sqlite3.Connection,
        event_type: str,
        data: Mapping[str, Any],
        *,
        key: str,
        event_id: str | None = None,
        time: datetime.datetime | None = None,
    ) -> str:
        """Append one event (Avro full name ``event_type``, record ``data``) keyed by ``key`` (the
        aggregate id, also ``ce_subject``) in ``conn``'s open transaction; returns its ``ce_id``.

        Raises EventSchemaError naming every bad field, EventTooLarge when its record would be
        more than Kafka takes in one message, CatalogError for an unknown type,
        SchemaRegistrationError when the schema is not registered, Unavailable when the
        registry cannot be reached for a subject not looked up yet. The caller's transaction
        should then roll back (``Database.transaction`` does so when the exception propagates).
        """
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            spec = self._catalog.get(event_type)
        except KeyError:
            raise CatalogError(f"unknown event type {event_type!r}: not in the catalog") from None
        found = violations(data, spec.parsed)
        if found:
            raise EventSchemaError(event_type, found)
        headers = cloudevent_headers(
            event_type=event_type, source=self._source, subject=key, event_id=event_id, time=time
        )
        try:
            value = self._serialize(spec, data)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                raise SchemaRegistrationError({spec.subject: f"not registered: {exc}"}) from exc
            raise Unavailable(f"schema registry: {exc}") from exc
        except (ValueError, TypeError) as exc:
            # The strict check above should catch everything fastavro would refuse; keep the
            # writer's word as the last line of defence, still naming the event.
            raise EventSchemaError(event_type, [FieldViolation("<event>", str(exc))]) from exc
        except Exception as exc:  # transport failures of the registry client
            raise Unavailable(f"schema registry unreachable: {exc}") from exc
        assert value is not None
        size = record_size(key, value, headers)
        if size > self._max_message_bytes:
            raise EventTooLarge(event_type, size, self._max_message_bytes)
        conn.execute(
            "INSERT INTO meshkit_outbox (topic, key, value, headers, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (spec.topic, key, value, json.dumps(headers), _now()),
        )
        return dict(headers)["ce_id"]

    def _serialize(self, spec: EventType, data: Mapping[str, Any]) -> bytes:
        """Confluent wire format: 0x00, the schema id, the Avro body. The first event of a type
        goes through confluent-kafka's AvroSerializer (which looks the schema id up); later ones
        reuse its framing and write the body with fastavro directly, the same bytes for a
        quarter of the cost (profiled in issue 11; checked byte for byte by the outbox tests)."""
        from confluent_kafka.serialization import MessageField, SerializationContext

        framing = self._framing.get(spec.full_name)
        if framing is None:
            value: bytes | None = self._serializers[spec.full_name](
                dict(data), SerializationContext(spec.topic, MessageField.VALUE)
            )
            assert value is not None
            if value[:1] == b"\x00" and len(value) >= FRAMING_BYTES:
                self._framing[spec.full_name] = bytes(value[:FRAMING_BYTES])
            return value
        out = io.BytesIO()
        out.write(framing)
        schemaless_writer(out, spec.parsed, dict(data))
        return out.getvalue()


def _now() -> float:
    return time.time()
