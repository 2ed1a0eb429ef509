"""Inventory's events on real Kafka: framed Avro our registry resolves, CloudEvents, traceparent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
from support.kafka import consume
from support.mesh import Grpcurl, free_port, mesh_tokens
from support.registry import serve

INVENTORY = "127.0.0.1:50052"
SERVICE = "shop.inventory.v1.InventoryService"
TOPIC = "inventory.events.v1"
REGISTRY = "http://127.0.0.1:8081"
CE_HEADERS = {"ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "ce_subject"}

pytestmark = pytest.mark.kafka


def test_every_event_is_framed_avro_with_cloudevents_and_traceparent(
    running_mesh: Path, kafka_bootstrap: str, grpcurl: Grpcurl
) -> None:
    sku, reservation = f"sku-{uuid.uuid4().hex[:8]}", f"res-{uuid.uuid4().hex[:8]}"
    caller_trace = uuid.uuid4().hex
    traceparent = f"00-{caller_trace}-{uuid.uuid4().hex[:16]}-01"
    tokens = mesh_tokens(running_mesh)
    set_stock = grpcurl.run(
        "-H",
        f"traceparent: {traceparent}",
        "-d",
        json.dumps({"sku": sku, "quantity": 5}),
        INVENTORY,
        f"{SERVICE}/SetStock",
        metadata=tokens.metadata("admin"),
    )
    assert set_stock.returncode == 0, set_stock.stderr
    # Reserving and committing are orders' saga's, acting for the order's customer.
    saga = tokens.acting_for("cust-events")
    grpcurl.call(
        INVENTORY,
        f"{SERVICE}/ReserveStock",
        {"reservation_id": reservation, "lines": [{"sku": sku, "quantity": 2}]},
        saga,
    )
    grpcurl.call(INVENTORY, f"{SERVICE}/CommitReservation", {"reservation_id": reservation}, saga)

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([TOPIC])
    ours = []
    try:
        while len(ours) < 3:
            for msg in consume(consumer, 1, timeout=30):
                headers = {k: (v or b"").decode() for k, v in msg.headers() or []}
                if headers.get("ce_subject") in (sku, reservation):
                    ours.append((msg, headers))
    finally:
        consumer.close()

    registry = SchemaRegistryClient({"url": REGISTRY})
    decode = AvroDeserializer(registry)
    types = [headers["ce_type"] for _, headers in ours]
    assert types == [
        "shop.inventory.v1.StockSet",
        "shop.inventory.v1.StockReserved",
        "shop.inventory.v1.ReservationCommitted",
    ]
    assert len({headers["ce_id"] for _, headers in ours}) == 3, "a ce_id appeared twice"
    for msg, headers in ours:
        value = msg.value()
        assert value[0] == 0, "Confluent wire format: magic byte 0"
        schema_id = int.from_bytes(value[1:5], "big")
        subject = f"{TOPIC}-{headers['ce_type']}"
        registered = registry.get_latest_version(subject)
        assert registered.schema_id == schema_id, "the id resolves to the subject's schema"
        record = decode(value, SerializationContext(TOPIC, MessageField.VALUE))
        assert record is not None
        assert set(headers) >= CE_HEADERS
        assert headers["ce_specversion"] == "1.0"
        assert headers["ce_source"] == "/meshkit/inventory"
        assert headers["content-type"] == "application/avro"
        assert msg.key().decode() == headers["ce_subject"]
        version, trace_id, span_id, _flags = headers["traceparent"].split("-")
        assert (version, len(trace_id), len(span_id)) == ("00", 32, 16)
    stock_set = decode(ours[0][0].value(), SerializationContext(TOPIC, MessageField.VALUE))
    assert stock_set["sku"] == sku and stock_set["on_hand"] == 5
    assert ours[0][1]["traceparent"].split("-")[1] == caller_trace, "the caller's trace continues"


def test_a_service_whose_schemas_are_not_registered_refuses_to_start(tmp_path: Path) -> None:
    with serve("--storage", "memory", cwd=tmp_path) as registry:  # empty: nothing registered
        env = {
            **os.environ,
            "SCHEMA_REGISTRY_URL": registry.url,
            "INVENTORY_PORT": str(free_port()),
            "INVENTORY_DB_PATH": str(tmp_path / "inventory.db"),
        }
        result = subprocess.run(
            [sys.executable, "-m", "inventory"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    assert "refuses to start" in result.stderr
    assert f"{TOPIC}-shop.inventory.v1.StockSet" in result.stderr
