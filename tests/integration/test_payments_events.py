"""Payments' events on real Kafka and a real registry, through the real server and its relay.

An AuthorizePayment RPC must put one Confluent-framed Avro PaymentAuthorized on
payments.events.v1 (key: the order id), whose schema id resolves in the registry to the contract
in proto/, with CloudEvents binary-mode headers and a W3C traceparent; a declined authorization a
PaymentDeclined with its reason. And a service whose schemas are not registered refuses to start.

A customer never calls payments: the calls come, as orders' saga makes them, from Service "orders"
on behalf of the order's customer (payments' policy.cedar), with tokens of the test issuer.
"""

from __future__ import annotations

import io
import json
import struct
import uuid
from collections.abc import Iterator
from pathlib import Path

import fastavro
import grpc
import pytest
from confluent_kafka import Consumer, Message
from support.events import register_all
from support.kafka import consume
from support.tokens import TEST_ISSUER, authorized

from meshkit.events import SchemaRegistrationError
from meshkit.server import MeshServer
from meshkit.settings import ServiceSettings
from payments.bootstrap import SERVICE
from schema_registry.avro import canonical_string, parse_schema
from schema_registry.client import RegistryClient
from shop.common.v1 import common_pb2
from shop.payments.v1 import payments_pb2 as pb
from shop.payments.v1 import payments_pb2_grpc as pb_grpc

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
AVRO = REPO / "proto" / "shop" / "payments" / "v1" / "avro"
AUDIT_AVRO = REPO / "proto" / "mesh" / "audit" / "v1" / "avro"  # every publisher's audit records
TOPIC = "payments.events.v1"


@pytest.fixture
def server(tmp_path: Path, kafka_bootstrap: str, registry_url: str) -> Iterator[MeshServer]:
    register_all(registry_url, AVRO)
    register_all(registry_url, AUDIT_AVRO)
    settings = ServiceSettings(
        port=0,
        db_path=tmp_path / "payments.db",
        kafka_bootstrap=kafka_bootstrap,
        schema_registry_url=registry_url,
        auth_jwks_url=TEST_ISSUER.env["MESH_AUTH_JWKS_URL"],
        auth_issuer=TEST_ISSUER.env["MESH_AUTH_ISSUER"],
        auth_audience=TEST_ISSUER.env["MESH_AUTH_AUDIENCE"],
    )
    server = SERVICE.create(settings)
    server.start()
    yield server
    server.stop(0)


@pytest.fixture
def stub(server: MeshServer) -> Iterator[pb_grpc.PaymentsServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield pb_grpc.PaymentsServiceStub(authorized(channel, service="orders", on_behalf_of="c-1"))


def events_of(kafka_bootstrap: str, order_id: str, count: int) -> list[Message]:
    """The first ``count`` records keyed ``order_id`` on the topic (other runs share it)."""
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"test-payments-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([TOPIC])
    try:
        found: list[Message] = []
        while len(found) < count:
            found += [m for m in consume(consumer, 1) if m.key() == order_id.encode()]
        return found
    finally:
        consumer.close()


def authorize(
    stub: pb_grpc.PaymentsServiceStub, order_id: str, token: str = "tok_visa"
) -> pb.Payment:
    reply = stub.AuthorizePayment(
        pb.AuthorizePaymentRequest(
            idempotency_key=f"{order_id}-authorize",
            order_id=order_id,
            amount=common_pb2.Money(currency_code="EUR", units=12, nanos=300_000_000),
            payment_token=token,
        ),
        timeout=10,
    )
    return reply.payment


def decode(message: Message, registry_url: str) -> tuple[dict[str, object], int]:
    """The record and its schema id, with the writer schema fetched from the registry by id."""
    value = message.value()
    assert value is not None and value[0] == 0, "Confluent wire format: magic byte 0"
    (schema_id,) = struct.unpack(">I", value[1:5])
    with RegistryClient(registry_url) as client:
        reply = client.get(f"/schemas/ids/{schema_id}")
    assert reply.status == 200, reply.body
    writer = fastavro.parse_schema(json.loads(reply.json()["schema"]))
    record = fastavro.schemaless_reader(io.BytesIO(value[5:]), writer)
    assert isinstance(record, dict)
    return record, schema_id


def test_authorize_publishes_a_framed_payment_authorized_with_cloudevents_headers(
    stub: pb_grpc.PaymentsServiceStub, kafka_bootstrap: str, registry_url: str
) -> None:
    order_id = f"order-{uuid.uuid4().hex[:12]}"
    payment = authorize(stub, order_id)
    assert payment.status == pb.PAYMENT_STATUS_AUTHORIZED
    assert authorize(stub, order_id) == payment  # a replay: no second event
    stub.CapturePayment(
        pb.CapturePaymentRequest(
            idempotency_key=f"{order_id}-capture", payment_id=payment.payment_id
        ),
        timeout=10,
    )

    # Per-key order holds, so had the replay published, the second event would not be Captured.
    message, captured = events_of(kafka_bootstrap, order_id, 2)
    assert dict(captured.headers() or [])["ce_type"] == b"shop.payments.v1.PaymentCaptured"
    record, schema_id = decode(message, registry_url)
    assert record["payment_id"] == payment.payment_id
    assert record["order_id"] == order_id
    assert record["amount"] == {"units": 12, "nanos": 300_000_000, "currency_code": "EUR"}

    subject = f"{TOPIC}-shop.payments.v1.PaymentAuthorized"
    with RegistryClient(registry_url) as client:
        latest = client.get(f"/subjects/{subject}/versions/latest").json()
    assert latest["id"] == schema_id
    # The registry stores Confluent's canonical string: the file's schema, nested namespaces
    # left implicit where they are inherited.
    written = parse_schema((AVRO / "payment_authorized.avsc").read_text())
    assert latest["schema"] == canonical_string(written, ())

    headers = {k: v.decode() for k, v in message.headers() or []}
    assert headers["ce_specversion"] == "1.0"
    assert headers["ce_type"] == "shop.payments.v1.PaymentAuthorized"
    assert headers["ce_source"] == "/meshkit/payments"
    assert headers["ce_subject"] == order_id
    assert headers["content-type"] == "application/avro"
    assert headers["ce_id"] and headers["ce_time"].endswith("Z")
    assert headers["traceparent"].startswith("00-")


def test_a_decline_publishes_payment_declined_with_its_reason(
    stub: pb_grpc.PaymentsServiceStub, kafka_bootstrap: str, registry_url: str
) -> None:
    order_id = f"order-{uuid.uuid4().hex[:12]}"
    payment = authorize(stub, order_id, "tok_chargeDeclinedInsufficientFunds")
    assert payment.status == pb.PAYMENT_STATUS_DECLINED
    [message] = events_of(kafka_bootstrap, order_id, 1)
    record, _ = decode(message, registry_url)
    assert record["decline_reason"] == "insufficient_funds"
    headers = {k: v.decode() for k, v in message.headers() or []}
    assert headers["ce_type"] == "shop.payments.v1.PaymentDeclined"


def test_refuses_to_start_when_its_schemas_are_not_registered(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    from schema_registry.server import running_server
    from schema_registry.storage import MemoryStorage

    storage = MemoryStorage()
    with running_server(storage) as empty_registry, pytest.raises(SchemaRegistrationError) as err:
        SERVICE.create(
            ServiceSettings(
                port=0,
                db_path=tmp_path / "p.db",
                kafka_bootstrap=kafka_bootstrap,
                schema_registry_url=empty_registry,
            )
        )
    storage.close()
    for name in ("Authorized", "Declined", "Captured", "Voided", "Refunded"):
        assert f"{TOPIC}-shop.payments.v1.Payment{name}" in str(err.value)
