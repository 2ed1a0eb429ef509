"""Orders' events on real Kafka: a PlaceOrder becomes a Confluent-framed Avro OrderPlaced on
orders.events.v1, keyed by the order, with ce_id ``<order_id>:<version>`` (consumers dedupe on
it) and the record ListOrderEvents shows.

The service runs in this process (SERVICE.create, port 0) against an in-process registry on a
free port. It trusts the test issuer, and the customer places and reads their own order. Its peers
are pointed at a port nobody listens on (MESH_ADDRESS_<NAME>), and its own token comes from a test
token endpoint (MESH_URL_IDENTITY), so the saga only retries and never reaches a developer's own
mesh.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
import uuid
from pathlib import Path

import grpc
import pytest
from confluent_kafka import Consumer, Message
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf.json_format import MessageToDict
from support.kafka import consume
from support.mesh import free_port
from support.registry import wait_until
from support.tokens import TEST_ISSUER, authorized, token_endpoint

from meshkit.timestamps import from_micros, from_timestamp, to_millis
from orders.bootstrap import SERVICE
from schema_registry.cli import main as registry_cli
from schema_registry.server import running_server
from shop.common.v1 import common_pb2
from shop.orders.v1 import orders_pb2 as pb
from shop.orders.v1 import orders_pb2_grpc as pb_grpc

REPO = Path(__file__).resolve().parents[2]
AVRO = REPO / "proto" / "shop" / "orders" / "v1" / "avro"
AUDIT_AVRO = REPO / "proto" / "mesh" / "audit" / "v1" / "avro"  # orders audits placements
TOPIC = "orders.events.v1"

pytestmark = pytest.mark.kafka


def test_place_order_publishes_order_placed_with_its_version_as_event_id(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    for peer in ("INVENTORY", "PAYMENTS", "SHIPPING"):
        monkeypatch.setenv(f"MESH_ADDRESS_{peer}", nowhere)
    db = tmp_path / "orders.db"
    with (
        running_server() as registry_url,
        token_endpoint() as identity,
        contextlib.ExitStack() as stack,
    ):
        monkeypatch.setenv("MESH_URL_IDENTITY", identity.url)
        for avro in (AVRO, AUDIT_AVRO):
            assert registry_cli(["--url", registry_url, "register-all", str(avro)]) == 0
        env = {"ORDERS_PORT": "0", "ORDERS_DB_PATH": str(db)} | TEST_ISSUER.env
        env |= {"SCHEMA_REGISTRY_URL": registry_url, "MESH_KAFKA_BOOTSTRAP": kafka_bootstrap}
        server = SERVICE.create(SERVICE.load_settings(env))  # relay and saga worker included
        stack.callback(server.stop, 0)
        channel = stack.enter_context(grpc.insecure_channel(f"127.0.0.1:{server.start()}"))
        # The customer places their own order and reads its events (orders' policy.cedar).
        stub = pb_grpc.OrdersServiceStub(authorized(channel, "customer", "c-1"))
        request = pb.PlaceOrderRequest(
            request_id=f"req-{uuid.uuid4().hex}",
            customer_id="c-1",
            lines=[
                pb.OrderLine(
                    sku="tea",
                    quantity=3,
                    unit_price=common_pb2.Money(currency_code="JPY", units=1200),
                )
            ],
            payment_token="tok_visa",
            # Hong Kong has no postal codes: none is needed.
            shipping_address=common_pb2.Address(
                name="Ada", line1="1 Queen's Road", city="Hong Kong", country_code="HK"
            ),
        )
        order_id = stub.PlaceOrder(request, timeout=10).order_id
        [placed] = stub.ListOrderEvents(
            pb.ListOrderEventsRequest(order_id=order_id), timeout=10
        ).events
        wait_until(
            lambda: published(db) >= 1,
            timeout=30,
            what="the relay to publish the OrderPlaced row",
        )
        msg = first_of(kafka_bootstrap, order_id)

        registry = SchemaRegistryClient({"url": registry_url})
        record = AvroDeserializer(registry)(
            msg.value(), SerializationContext(TOPIC, MessageField.VALUE)
        )

    headers = {k: (v or b"").decode() for k, v in msg.headers() or []}
    assert headers["ce_type"] == "shop.orders.v1.OrderPlaced"
    assert headers["ce_id"] == f"{order_id}:1", "the stored event's id: consumers dedupe on it"
    assert headers["ce_subject"] == order_id == msg.key().decode()
    assert record is not None
    assert record["total"] == {"currency_code": "JPY", "units": 3600, "nanos": 0}
    assert record["shipping_address"]["postal_code"] == ""
    occurred_at = from_timestamp(placed.occurred_at)
    assert occurred_at is not None
    assert record["occurred_at"] == from_micros(to_millis(occurred_at) * 1000), "millis of it"
    shown = MessageToDict(placed.data)
    assert shown["occurred_at"] == to_millis(occurred_at)
    assert shown["total"] == record["total"] and shown["lines"] == record["lines"]


def published(db: Path) -> int:
    """Outbox rows the broker acknowledged."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        (done,) = conn.execute("SELECT count(published_at) FROM meshkit_outbox").fetchone()
    return int(done)


def first_of(bootstrap: str, order_id: str) -> Message:
    """The first record keyed ``order_id`` on the topic (other tests share it)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([TOPIC])
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            [msg] = consume(consumer, 1, timeout=max(0.1, deadline - time.monotonic()))
            if msg.key() == order_id.encode():
                return msg
    finally:
        consumer.close()
    pytest.fail(f"no record of {order_id} on {TOPIC} in 30 s", pytrace=False)
