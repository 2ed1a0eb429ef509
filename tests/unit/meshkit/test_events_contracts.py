"""meshkit.events pure parts: CloudEvents headers, catalog loading errors that name the file,
strict validation that names the field, dead-letter headers."""

from __future__ import annotations

import json
import re
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Message
from opentelemetry.sdk.trace import TracerProvider

from meshkit.db import Database
from meshkit.events import (
    OUTBOX_MIGRATION,
    CatalogError,
    DeadLetter,
    EventCatalog,
    EventSchemaError,
    Outbox,
    cloudevent_headers,
    dead_letter_headers,
)

RESERVED = {
    "type": "record",
    "name": "StockReserved",
    "namespace": "shop.test.v1",
    "fields": [
        {"name": "reservation_id", "type": "string"},
        {
            "name": "lines",
            "type": {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "Line",
                    "fields": [
                        {"name": "sku", "type": "string"},
                        {"name": "quantity", "type": "int"},
                    ],
                },
            },
        },
        {"name": "note", "type": ["null", "string"], "default": None},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    ],
}
UNREACHABLE_REGISTRY = "http://127.0.0.1:9"  # validation must fail before any registry call


def contracts(tmp_path: Path, *schemas: dict[str, Any], topic: str | None = "t.events.v1") -> Path:
    avro = tmp_path / "shop" / "test" / "v1" / "avro"
    avro.mkdir(parents=True)
    if topic:
        (tmp_path / "shop" / "test" / "topic.json").write_text(json.dumps({"topic": topic}))
    for schema in schemas:
        (avro / f"{schema['name']}.avsc").write_text(json.dumps(schema))
    return tmp_path


# -- headers --------------------------------------------------------------------------------------


def test_cloudevent_headers_are_binary_mode_with_a_fresh_id_and_utc_time() -> None:
    headers = dict(
        cloudevent_headers(event_type="shop.x.v1.Done", source="/meshkit/x", subject="agg-1")
    )
    assert headers["ce_specversion"] == "1.0"
    assert uuid.UUID(headers["ce_id"]).version == 4
    assert headers["ce_type"] == "shop.x.v1.Done"
    assert headers["ce_source"] == "/meshkit/x"
    assert headers["ce_subject"] == "agg-1"
    assert headers["content-type"] == "application/avro"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", headers["ce_time"])
    assert "traceparent" not in headers  # no span, no trace context


def test_cloudevent_headers_carry_the_current_trace() -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("ReserveStock") as span:
        headers = dict(cloudevent_headers(event_type="a.B", source="/s", subject="k"))
    context = span.get_span_context()
    version, trace_id, span_id, _flags = headers["traceparent"].split("-")
    assert (version, trace_id, span_id) == (
        "00",
        format(context.trace_id, "032x"),
        format(context.span_id, "016x"),
    )


# -- catalog --------------------------------------------------------------------------------------


def test_catalog_maps_each_schema_to_the_nearest_topic_json(tmp_path: Path) -> None:
    catalog = EventCatalog.load(contracts(tmp_path, RESERVED))
    event_type = catalog.get("shop.test.v1.StockReserved")
    assert event_type.topic == "t.events.v1"
    assert event_type.subject == "t.events.v1-shop.test.v1.StockReserved"
    assert catalog.topics == {"t.events.v1"}


def test_catalog_reads_each_topics_config_from_topic_json(tmp_path: Path) -> None:
    root = contracts(tmp_path, RESERVED)
    assert EventCatalog.load(root).topic_configs == {"t.events.v1": {}}
    (tmp_path / "shop" / "test" / "topic.json").write_text(
        json.dumps({"topic": "t.events.v1", "config": {"retention.ms": "-1"}})
    )
    assert EventCatalog.load(root).topic_configs == {"t.events.v1": {"retention.ms": "-1"}}
    for bad in ({"retention.ms": -1}, ["retention.ms"], {"": "1"}):
        (tmp_path / "shop" / "test" / "topic.json").write_text(
            json.dumps({"topic": "t.events.v1", "config": bad})
        )
        with pytest.raises(CatalogError, match=r"shop/test/topic\.json: .*config"):
            EventCatalog.load(root)


def test_catalog_errors_name_the_file(tmp_path: Path) -> None:
    root = contracts(tmp_path, RESERVED, topic=None)
    with pytest.raises(CatalogError, match=r"StockReserved\.avsc: no topic\.json"):
        EventCatalog.load(root)

    (tmp_path / "shop" / "topic.json").write_text('{"topic": ""}')
    with pytest.raises(CatalogError, match=r"shop/topic\.json: expected"):
        EventCatalog.load(root)

    (tmp_path / "shop" / "topic.json").write_text('{"topic": "t"}')
    broken = tmp_path / "shop" / "test" / "v1" / "avro" / "Broken.avsc"
    broken.write_text("{not json")
    with pytest.raises(CatalogError, match=r"Broken\.avsc: not valid JSON"):
        EventCatalog.load(root)

    broken.write_text('{"type": "enum", "name": "E", "symbols": ["A"]}')
    with pytest.raises(CatalogError, match=r"Broken\.avsc: an event schema must be an Avro record"):
        EventCatalog.load(root)

    broken.write_text(json.dumps({**RESERVED, "fields": [{"name": "x", "type": "nope"}]}))
    with pytest.raises(CatalogError, match=r"Broken\.avsc: not a valid Avro schema"):
        EventCatalog.load(root)

    broken.write_text(json.dumps(RESERVED))
    with pytest.raises(
        CatalogError, match=r"StockReserved\.avsc: .*defined twice \(also in .*Broken\.avsc\)"
    ):
        EventCatalog.load(root)


# -- validation -----------------------------------------------------------------------------------


@pytest.fixture
def outbox(tmp_path: Path) -> Outbox:
    catalog = EventCatalog.load(contracts(tmp_path, RESERVED))
    return Outbox(catalog, UNREACHABLE_REGISTRY, source="/meshkit/test")


def append_error(outbox: Outbox, data: dict[str, Any], tmp_path: Path) -> EventSchemaError:
    db = Database(tmp_path / "o.db", [OUTBOX_MIGRATION])
    try:
        with pytest.raises(EventSchemaError) as raised, db.transaction() as conn:
            outbox.append(conn, "shop.test.v1.StockReserved", data, key="r-1")
        with db.snapshot() as conn:
            assert conn.execute("SELECT count(*) FROM meshkit_outbox").fetchone()[0] == 0
    finally:
        db.close()
    return raised.value


def test_validation_names_nested_fields_by_their_path(outbox: Outbox, tmp_path: Path) -> None:
    error = append_error(
        outbox,
        {
            "reservation_id": "r-1",
            "lines": [{"sku": "a", "quantity": 1}, {"sku": "b", "quantity": "2"}],
            "at": 0,
        },
        tmp_path,
    )
    assert [(v.field, v.description) for v in error.violations] == [
        ("lines[1].quantity", "expected int, got str '2'")
    ]
    assert str(error) == (
        "event shop.test.v1.StockReserved does not conform to its schema:"
        " lines[1].quantity: expected int, got str '2'"
    )
    assert error.status == "INTERNAL" and error.reason == "EVENT_SCHEMA_VIOLATION"


def test_validation_reports_missing_unknown_out_of_range_and_union_fields(
    outbox: Outbox, tmp_path: Path
) -> None:
    error = append_error(
        outbox,
        {"lines": [{"sku": "a", "quantity": 2**31}], "note": 5, "at": 0, "colour": "red"},
        tmp_path,
    )
    assert {v.field: v.description for v in error.violations} == {
        "reservation_id": "missing (the field has no default)",
        "lines[0].quantity": "expected int, got int 2147483648",
        "note": "expected one of [null, string], got int 5",
        "colour": "not in the schema",
    }


def test_an_unknown_event_type_is_refused(outbox: Outbox) -> None:
    conn = sqlite3.connect(":memory:")
    with pytest.raises(CatalogError, match=r"unknown event type 'shop\.test\.v1\.Nope'"):
        outbox.append(conn, "shop.test.v1.Nope", {}, key="k")


# -- dead letters ---------------------------------------------------------------------------------


def test_dead_letter_headers_keep_the_original_ones_and_name_the_error() -> None:
    original = Message(
        topic="orders.events.v1",
        partition=2,
        offset=41,
        key=b"o-1",
        value=b"\x00bytes",
        headers=[
            ("ce_id", b"e-1"),
            ("ce_type", b"shop.orders.v1.OrderPlaced"),
            ("dlq_error", b"old"),
        ],
    )
    headers = dead_letter_headers(original, KeyError("sku"), "order-views")
    letter = DeadLetter(0, 7, b"o-1", b"\x00bytes", tuple((k, bytes(v or b"")) for k, v in headers))
    summary = letter.summary()
    assert summary == {
        "key": "o-1",
        "ce_id": "e-1",
        "ce_type": "shop.orders.v1.OrderPlaced",
        "error": "'sku'",
        "error_type": "KeyError",
        "consumer_group": "order-views",
        "topic": "orders.events.v1",
        "partition": 2,
        "offset": 41,
        "time": summary["time"],
        "dlq_partition": 0,
        "dlq_offset": 7,
    }
    assert str(summary["time"]).endswith("Z")
    assert letter.original_headers() == [
        ("ce_id", b"e-1"),
        ("ce_type", b"shop.orders.v1.OrderPlaced"),
    ]
