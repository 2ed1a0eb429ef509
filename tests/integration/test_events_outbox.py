"""Outbox promises on real Kafka and a real registry: an event that does not match its schema
fails the command and reaches nobody; a valid one arrives once, in the Confluent wire format, with
its CloudEvents headers and the trace it was produced in."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Message
from opentelemetry.sdk.trace import TracerProvider
from support.events import (
    COUNTER,
    COUNTER_SCHEMA,
    drain,
    register_all,
    write_contracts,
)
from support.kafka import consume

from meshkit.db import Database
from meshkit.errors import MeshError
from meshkit.events import (
    INBOX_MIGRATION,
    Event,
    EventCatalog,
    EventConsumer,
    EventSchemaError,
    EventType,
    Outbox,
    OutboxRelay,
    SchemaRegistrationError,
)
from schema_registry.client import RegistryClient

pytestmark = pytest.mark.kafka


def test_an_event_off_its_schema_fails_the_command_and_reaches_nobody(
    kafka_bootstrap: str,
    kafka_topic: str,
    registry_url: str,
    counter_catalog: tuple[EventCatalog, Path],
    producer_db: Database,
) -> None:
    catalog, _ = counter_catalog
    outbox = Outbox(catalog, registry_url, source="/meshkit/test")

    with pytest.raises(EventSchemaError) as raised, producer_db.transaction() as conn:
        conn.execute("INSERT INTO counters (counter, value) VALUES ('c1', 1)")
        outbox.append(conn, COUNTER, {"counter": "c1", "seq": "one"}, key="c1")
    assert "seq" in str(raised.value) and "expected long" in str(raised.value)
    assert [v.field for v in raised.value.violations] == ["seq"]
    with producer_db.snapshot() as conn:  # the command's state change rolled back with it
        assert conn.execute("SELECT count(*) FROM counters").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM meshkit_outbox").fetchone()[0] == 0

    # A valid event afterwards is the only thing on the topic.
    with producer_db.transaction() as conn:
        conn.execute("INSERT INTO counters (counter, value) VALUES ('c1', 1)")
        good = outbox.append(conn, COUNTER, {"counter": "c1", "seq": 0}, key="c1")
    relay = OutboxRelay(producer_db, kafka_bootstrap)
    assert relay.run_once() == 1
    assert relay.lag() == (0, None)
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"check-{kafka_topic}",
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
        }
    )
    try:
        consumer.subscribe([kafka_topic])
        (msg,) = consume(consumer, 1, until_eof=[0])
    finally:
        consumer.close()
    headers = text_headers(msg)
    assert headers["ce_id"] == good
    value = msg.value() or b""
    assert value[0] == 0 and struct.unpack(">I", value[1:5])[0] > 0  # Confluent framing


def test_a_valid_event_carries_cloudevents_headers_and_the_trace(
    kafka_bootstrap: str,
    kafka_topic: str,
    registry_url: str,
    counter_catalog: tuple[EventCatalog, Path],
    producer_db: Database,
) -> None:
    catalog, _ = counter_catalog
    outbox = Outbox(catalog, registry_url, source="/meshkit/test")
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("PlaceOrder") as span, producer_db.transaction() as conn:
        event_id = outbox.append(conn, COUNTER, {"counter": "c9", "seq": 0}, key="c9")
        trace_id = format(span.get_span_context().trace_id, "032x")
    assert OutboxRelay(producer_db, kafka_bootstrap).run_once() == 1
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"check-{kafka_topic}",
            "auto.offset.reset": "earliest",
        }
    )
    try:
        consumer.subscribe([kafka_topic])
        (msg,) = consume(consumer, 1)
    finally:
        consumer.close()
    headers = text_headers(msg)
    assert msg.key() == b"c9"
    assert headers["ce_specversion"] == "1.0"
    assert headers["ce_id"] == event_id
    assert headers["ce_type"] == COUNTER
    assert headers["ce_source"] == "/meshkit/test"
    assert headers["ce_subject"] == "c9"
    assert headers["content-type"] == "application/avro"
    assert headers["ce_time"].endswith("Z")
    assert headers["traceparent"].split("-")[1] == trace_id


def test_verify_names_every_unregistered_or_changed_subject(
    tmp_path: Path, kafka_topic: str, registry_url: str
) -> None:
    registered = write_contracts(tmp_path / "a", kafka_topic, COUNTER_SCHEMA)
    register_all(registry_url, registered)
    changed = dict(COUNTER_SCHEMA, fields=[*COUNTER_SCHEMA["fields"], {"name": "x", "type": "int"}])
    other = dict(COUNTER_SCHEMA, name="CounterReset")
    drifted = write_contracts(tmp_path / "b", kafka_topic, changed, other)

    assert EventCatalog.load(registered).verify(registry_url) == {
        f"{kafka_topic}-{COUNTER}": pytest.approx(1, abs=10**9)
    }
    with pytest.raises(SchemaRegistrationError) as raised:
        EventCatalog.load(drifted).verify(registry_url)
    problems = raised.value.problems
    assert set(problems) == {f"{kafka_topic}-{COUNTER}", f"{kafka_topic}-shop.test.v1.CounterReset"}
    assert "not registered" in problems[f"{kafka_topic}-shop.test.v1.CounterReset"]
    assert f"{kafka_topic}-shop.test.v1.CounterReset" in str(raised.value)


def text_headers(msg: Message) -> dict[str, str]:
    raw = msg.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    return {k: v.decode() if isinstance(v, bytes) else (v or "") for k, v in pairs}


def test_an_event_too_large_for_kafka_fails_the_command_and_nothing_commits(
    registry_url: str, counter_catalog: tuple[EventCatalog, Path], producer_db: Database
) -> None:
    catalog, _ = counter_catalog
    outbox = Outbox(catalog, registry_url, source="/meshkit/test")

    with pytest.raises(MeshError) as raised, producer_db.transaction() as conn:
        conn.execute("INSERT INTO counters (counter, value) VALUES ('c1', 1)")
        big = {"counter": "c1", "seq": 0, "note": "x" * 1_000_000}
        outbox.append(conn, COUNTER, big, key="c1")
    error = raised.value
    assert (error.status, error.reason) == ("INVALID_ARGUMENT", "EVENT_TOO_LARGE")
    assert COUNTER in error.message and "1,000,000" in error.message
    assert len(error.message) < 300, "names the event and the sizes, never repeats the data"
    with producer_db.snapshot() as conn:  # the command's state change rolled back with it
        assert conn.execute("SELECT count(*) FROM counters").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM meshkit_outbox").fetchone()[0] == 0

    # The limit is the producer's message.max.bytes, given to the outbox when it differs.
    small = Outbox(catalog, registry_url, source="/meshkit/test", max_message_bytes=4_000)
    with pytest.raises(MeshError, match="4,000"), producer_db.transaction() as conn:
        small.append(conn, COUNTER, {"counter": "c1", "seq": 0, "note": "x" * 4_000}, key="c1")
    with producer_db.transaction() as conn:
        small.append(conn, COUNTER, {"counter": "c1", "seq": 0, "note": "x" * 1_000}, key="c1")


RICH_SCHEMA = """{"type": "record", "name": "Rich", "namespace": "shop.test.v1",
 "doc": "Every kind of field an event contract uses.", "fields": [
  {"name": "id", "type": "string", "doc": "An id."},
  {"name": "n", "type": "long", "doc": "A long."},
  {"name": "ratio", "type": "double", "doc": "A double."},
  {"name": "flag", "type": "boolean", "doc": "A flag."},
  {"name": "note", "type": ["null", "string"], "default": null, "doc": "Optional."},
  {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B"]},
   "doc": "An enum."},
  {"name": "lines", "doc": "Nested records.", "type": {"type": "array", "items": {
    "type": "record", "name": "Line", "fields": [
      {"name": "sku", "type": "string", "doc": "A SKU."},
      {"name": "qty", "type": "int", "doc": "A quantity."}]}}},
  {"name": "tags", "type": {"type": "map", "values": "string"}, "doc": "A map."},
  {"name": "at", "type": {"type": "long", "logicalType": "timestamp-micros"},
   "doc": "An instant."}]}"""


def register_rich(registry_url: str, topic: str) -> EventType:
    """RICH_SCHEMA registered for ``topic``; its EventType."""
    spec = EventType.from_text(RICH_SCHEMA, topic)
    reply = RegistryClient(registry_url).post(
        f"/subjects/{spec.subject}/versions", {"schema": RICH_SCHEMA}
    )
    assert reply.status == 200, reply.json()
    return spec


def rich_records(n: int) -> list[dict[str, Any]]:
    """``n`` records of RICH_SCHEMA, each field kind varied."""
    return [
        {
            "id": f"o-{i}",
            "n": -(2**40) + i * 7919,
            "ratio": i / 3,
            "flag": i % 2 == 0,
            "note": None if i % 3 else f"note é {i}",
            "kind": "AB"[i % 2],
            "lines": [{"sku": f"sku-{j}", "qty": j - 2} for j in range(i % 4)],
            "tags": {f"k{j}": "v" * j for j in range(i % 3)},
            "at": 1_700_000_000_000_000 + i,
        }
        for i in range(n)
    ]


def test_every_event_is_framed_as_confluents_serializer_frames_it(
    registry_url: str, kafka_topic: str, producer_db: Database
) -> None:
    """The outbox writes later events of a type with fastavro directly (its fast path): the bytes
    must be exactly those of confluent-kafka's AvroSerializer, event after event."""
    from confluent_kafka.schema_registry import (
        SchemaRegistryClient,
        topic_record_subject_name_strategy,
    )
    from confluent_kafka.schema_registry.avro import AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    spec = register_rich(registry_url, kafka_topic)
    outbox = Outbox(EventCatalog([spec]), registry_url, source="/meshkit/test")
    reference = AvroSerializer(
        SchemaRegistryClient({"url": registry_url}),
        RICH_SCHEMA,
        conf={
            "auto.register.schemas": False,
            "use.latest.version": False,
            "subject.name.strategy": topic_record_subject_name_strategy,
        },
    )
    records = rich_records(12)
    with producer_db.transaction() as conn:
        for i, data in enumerate(records):
            outbox.append(conn, spec.full_name, data, key=f"o-{i}")
    with producer_db.snapshot() as conn:
        stored = [bytes(r[0]) for r in conn.execute("SELECT value FROM meshkit_outbox ORDER BY id")]
    context = SerializationContext(kafka_topic, MessageField.VALUE)
    assert stored == [reference(dict(data), context) for data in records]


def test_a_consumer_reads_each_event_as_confluents_deserializer_does_with_its_reader_schema(
    tmp_path: Path,
    kafka_bootstrap: str,
    kafka_topic: str,
    registry_url: str,
    producer_db: Database,
) -> None:
    """The consumer reads later records of a schema with fastavro directly (its fast path): each
    event's data must be what confluent-kafka's AvroDeserializer makes of the same bytes with the
    same reader schema -- here an evolved one (a field dropped, one added with a default)."""
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    writer = register_rich(registry_url, kafka_topic)
    evolved = json.loads(RICH_SCHEMA)
    evolved["fields"] = [f for f in evolved["fields"] if f["name"] != "ratio"] + [
        {"name": "channel", "type": "string", "default": "web", "doc": "Added later."}
    ]
    reader = EventType.from_text(json.dumps(evolved), kafka_topic)
    outbox = Outbox(EventCatalog([writer]), registry_url, source="/meshkit/test")
    with producer_db.transaction() as conn:
        for i, data in enumerate(rich_records(12)):
            outbox.append(conn, writer.full_name, data, key=f"o-{i % 3}")
    assert OutboxRelay(producer_db, kafka_bootstrap).run_once() == 12
    seen: list[Event] = []
    consumer = EventConsumer(
        Database(tmp_path / "consumer.db", [INBOX_MIGRATION]),
        bootstrap=kafka_bootstrap,
        group=f"g-{kafka_topic}",
        topics=[kafka_topic],
        registry=registry_url,
        handlers={writer.full_name: lambda event, _conn: seen.append(event)},
        catalog=EventCatalog([reader]),
    )
    try:
        drain(consumer, lambda: len(seen) >= 12)
    finally:
        consumer.close()
    with producer_db.snapshot() as conn:
        stored = [bytes(r[0]) for r in conn.execute("SELECT value FROM meshkit_outbox ORDER BY id")]
    reference = AvroDeserializer(SchemaRegistryClient({"url": registry_url}), json.dumps(evolved))
    context = SerializationContext(kafka_topic, MessageField.VALUE)
    expected = [reference(value, context) for value in stored]
    by_id = {event.data["id"]: event.data for event in seen}
    assert [by_id[record["id"]] for record in expected] == expected
    assert all("ratio" not in data and data["channel"] == "web" for data in by_id.values())
