"""identity in the running mesh: the real grpcurl creates and reads a User, and its event
reaches Kafka through the outbox, as framed Avro with CloudEvents headers and the caller's trace."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer
from support.kafka import consume
from support.mesh import Grpcurl

from meshkit.addresses import address_of

SERVICE = "shop.identity.v1.IdentityService"
TOPIC = "identity.events.v1"

pytestmark = pytest.mark.kafka


def test_create_and_get_over_grpcurl_and_the_event_reaches_kafka(
    running_mesh: Path, kafka_bootstrap: str, grpcurl: Grpcurl
) -> None:
    target = address_of("identity", {"MESH_ROOT": str(running_mesh)})
    trace_id = uuid.uuid4().hex
    created = grpcurl.run(
        "-H",
        f"traceparent: 00-{trace_id}-{uuid.uuid4().hex[:16]}-01",
        "-d",
        '{"display_name": "first"}',
        target,
        f"{SERVICE}/CreateUser",
    )
    assert created.returncode == 0, created.stderr
    user = json.loads(created.stdout)["user"]
    user_id = user["user_id"]
    got = grpcurl.call(target, f"{SERVICE}/GetUser", {"user_id": user_id})
    assert got["user"] == user
    missing = grpcurl.run("-d", '{"user_id": "nope"}', target, f"{SERVICE}/GetUser")
    assert "NotFound" in missing.stderr

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([TOPIC])
    try:
        ours = []
        while not ours:
            for msg in consume(consumer, 1, timeout=30):
                headers = {k: (v or b"").decode() for k, v in msg.headers() or []}
                if headers.get("ce_subject") == user_id:
                    ours.append(headers)
    finally:
        consumer.close()
    assert ours[0]["ce_type"] == "shop.identity.v1.UserCreated"
    assert ours[0]["ce_source"] == "/meshkit/identity"
    assert ours[0]["traceparent"].split("-")[1] == trace_id
