"""Shipping's events on real Kafka: a CreateShipment becomes a Confluent-framed Avro
ShipmentCreated on shipping.events.v1, with CloudEvents headers, whose schema id resolves in the
registry the service verified at start-up.

The service runs in this process (SERVICE.create, port 0) against an in-process registry on a free
port, so the test needs no fixed port and can run beside a developer's own mesh. It trusts the test
issuer, and is called as orders' saga calls it: Service "orders" on behalf of the order's customer
(a customer never calls shipping; shipping's policy.cedar).
"""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from confluent_kafka import Consumer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
from support.kafka import consume
from support.registry import wait_until
from support.tokens import TEST_ISSUER, authorized

from meshkit.events import SchemaRegistrationError
from schema_registry.cli import main as registry_cli
from schema_registry.server import running_server
from shipping.bootstrap import SERVICE
from shop.common.v1 import common_pb2
from shop.shipping.v1 import shipping_pb2 as pb
from shop.shipping.v1 import shipping_pb2_grpc as pb_grpc

REPO = Path(__file__).resolve().parents[2]
AVRO = REPO / "proto" / "shop" / "shipping" / "v1" / "avro"
AUDIT_AVRO = REPO / "proto" / "mesh" / "audit" / "v1" / "avro"  # every publisher's audit records
TOPIC = "shipping.events.v1"
CE_HEADERS = {"ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "ce_subject"}

pytestmark = pytest.mark.kafka


@contextlib.contextmanager
def shipping_server(registry_url: str, bootstrap: str, db: Path) -> Iterator[str]:
    """The real shipping server (relay worker included) on a free port; yields its address."""
    settings = SERVICE.load_settings(
        {
            "SHIPPING_PORT": "0",
            "SHIPPING_DB_PATH": str(db),
            "SCHEMA_REGISTRY_URL": registry_url,
            "MESH_KAFKA_BOOTSTRAP": bootstrap,
        }
        | TEST_ISSUER.env
    )
    server = SERVICE.create(settings)
    port = server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(0)


def test_create_publishes_a_framed_avro_shipment_created_with_cloudevents(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    order_id = f"order-{uuid.uuid4().hex[:8]}"
    caller_trace = uuid.uuid4().hex
    with running_server() as registry_url:
        for avro in (AVRO, AUDIT_AVRO):
            assert registry_cli(["--url", registry_url, "register-all", str(avro)]) == 0
        with (
            shipping_server(registry_url, kafka_bootstrap, tmp_path / "shipping.db") as address,
            grpc.insecure_channel(address) as channel,
        ):
            stub = pb_grpc.ShippingServiceStub(
                authorized(channel, service="orders", on_behalf_of="c-1")
            )
            request = pb.CreateShipmentRequest(
                idempotency_key=f"k-{order_id}",
                order_id=order_id,
                address=common_pb2.Address(
                    name="Ada",
                    line1="Unter den Linden 1",
                    city="Berlin",
                    postal_code="10117",
                    country_code="DE",
                ),
                items=[pb.ShipmentItem(sku="mug", quantity=2)],
            )
            metadata = [("traceparent", f"00-{caller_trace}-{uuid.uuid4().hex[:16]}-01")]
            shipment = stub.CreateShipment(request, timeout=10, metadata=metadata).shipment
            replayed = stub.CreateShipment(request, timeout=10).shipment
            assert replayed == shipment
            # The relay (a worker of the server) publishes the row and marks it; only then is the
            # topic sure to exist (the broker creates it on the first produce).
            wait_until(
                lambda: published(tmp_path / "shipping.db") == (1, 1),
                timeout=30,
                what="the relay to publish exactly one outbox row",
            )
            messages = ours(kafka_bootstrap, shipment.shipment_id, count=1)

        registry = SchemaRegistryClient({"url": registry_url})
        [(msg, headers)] = messages
        value = msg.value()
        assert value[0] == 0, "Confluent wire format: magic byte 0"
        schema_id = int.from_bytes(value[1:5], "big")
        registered = registry.get_latest_version(f"{TOPIC}-shop.shipping.v1.ShipmentCreated")
        assert registered.schema_id == schema_id, "the id resolves to the subject's schema"
        record = AvroDeserializer(registry)(value, SerializationContext(TOPIC, MessageField.VALUE))

    assert set(headers) >= CE_HEADERS
    assert headers["ce_specversion"] == "1.0"
    assert headers["ce_type"] == "shop.shipping.v1.ShipmentCreated"
    assert headers["ce_source"] == "/meshkit/shipping"
    assert headers["ce_subject"] == shipment.shipment_id == msg.key().decode()
    assert headers["content-type"] == "application/avro"
    assert headers["traceparent"].split("-")[1] == caller_trace, "the caller's trace continues"
    assert record is not None
    assert record["shipment_id"] == shipment.shipment_id
    assert record["order_id"] == order_id
    assert record["tracking_number"] == shipment.tracking_number
    assert record["address"]["country_code"] == "DE"
    assert record["items"] == [{"sku": "mug", "quantity": 2}]


def test_shipping_refuses_to_start_when_its_schemas_are_not_registered(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    with running_server() as registry_url:
        settings = SERVICE.load_settings(
            {
                "SHIPPING_PORT": "0",
                "SHIPPING_DB_PATH": str(tmp_path / "shipping.db"),
                "SCHEMA_REGISTRY_URL": registry_url,
                "MESH_KAFKA_BOOTSTRAP": kafka_bootstrap,
            }
        )
        with pytest.raises(SchemaRegistrationError) as caught:
            SERVICE.create(settings)
    assert f"{TOPIC}-shop.shipping.v1.ShipmentCreated" in caught.value.message
    assert f"{TOPIC}-shop.shipping.v1.ShipmentCancelled" in caught.value.message


def published(db: Path) -> tuple[int, int]:
    """(outbox rows, rows the broker acknowledged) in the service's database."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        total, done = conn.execute(
            "SELECT count(*), count(published_at) FROM meshkit_outbox"
        ).fetchone()
    return int(total), int(done)


def ours(bootstrap: str, shipment_id: str, count: int) -> list[tuple[object, dict[str, str]]]:
    """The first ``count`` records of ``shipment_id`` on the topic (other tests share it)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([TOPIC])
    found: list[tuple[object, dict[str, str]]] = []
    try:
        while len(found) < count:
            for msg in consume(consumer, 1, timeout=30):
                headers = {k: (v or b"").decode() for k, v in msg.headers() or []}
                if headers.get("ce_subject") == shipment_id:
                    found.append((msg, headers))
    finally:
        consumer.close()
    return found
