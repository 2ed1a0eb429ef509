"""The registry on Kafka storage (issue 18): a `_schemas` topic in Confluent's record format.

A topic written as a Confluent registry leaves it is served by `schema-registry serve`; what our
registry writes reads back as Confluent's records; a second registry on the topic sees every
write and continues the ids; audit records commit with the change. Record shapes follow
confluentinc/schema-registry core/src/main/java/io/confluent/kafka/schemaregistry/storage/
(SchemaKey, ConfigKey, ModeKey, DeleteSubjectKey/Value, ClearSubjectKey/Value, NoopKey,
SchemaValue, ConfigValue, ModeValue) and KafkaStoreMessageHandler (how they are applied).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from support.kafka import consume, unique_topic
from support.registry import field, record, run_cli, serve

from meshkit.audit import AUDIT_TOPIC
from schema_registry.audit import AUDIT_SUBJECT, AuditLog, Origin
from schema_registry.registry import Registry
from schema_registry.storage import KafkaStorage

pytestmark = pytest.mark.kafka

Record = tuple[dict[str, Any], dict[str, Any] | None]


def _bytes(obj: dict[str, Any] | None) -> bytes | None:
    # Jackson's compact output, as a Confluent registry writes it.
    return None if obj is None else json.dumps(obj, separators=(",", ":")).encode()


def produce(bootstrap: str, topic: str, records: list[Record]) -> None:
    """Write records as a Confluent registry does: plain (non-transactional) produces to the
    compacted single-partition topic it created."""
    create_topic(bootstrap, topic, partitions=1)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for key, value in records:
        producer.produce(topic, key=_bytes(key), value=_bytes(value), partition=0)
    assert producer.flush(30) == 0


def create_topic(bootstrap: str, topic: str, *, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    config = {"cleanup.policy": "compact"}
    future = admin.create_topics([NewTopic(topic, partitions, 1, config=config)])[topic]
    future.result(timeout=30)


def read_topic(bootstrap: str, topic: str) -> list[Record]:
    """Every committed record of the topic, decoded."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique_topic("reader"),
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([topic])
    try:
        found = consume(consumer, 0, until_eof=[0])
    finally:
        consumer.close()
    return [
        (json.loads(m.key() or b""), None if m.value() is None else json.loads(m.value() or b""))
        for m in found
    ]


def schema_key(subject: str, version: int) -> dict[str, Any]:
    return {"keytype": "SCHEMA", "subject": subject, "version": version, "magic": 1}


def avro(name: str) -> str:
    return record(name, field("id"))


def schema_value(
    subject: str, version: int, schema_id: int, schema: str, *, deleted: bool = False, **extra: Any
) -> dict[str, Any]:
    return {
        "subject": subject,
        "version": version,
        "id": schema_id,
        **extra,
        "schema": schema,
        "deleted": deleted,
    }


def confluent_topic() -> list[Record]:
    """What a Confluent registry leaves after registering, referencing, deleting, configuring."""
    base = avro("Base")
    user = record("User", field("base", "shop.test.Base"))
    refs = [{"name": "shop.test.Base", "subject": "base", "version": 1}]
    return [
        ({"keytype": "NOOP", "magic": 0}, None),
        (schema_key("orders-value", 1), schema_value("orders-value", 1, 1, avro("Order"))),
        (schema_key("orders-value", 2), schema_value("orders-value", 2, 2, avro("Order2"))),
        # A soft delete rewrites the version with deleted=true.
        (
            schema_key("orders-value", 2),
            schema_value("orders-value", 2, 2, avro("Order2"), deleted=True),
        ),
        (schema_key("base", 1), schema_value("base", 1, 3, base)),
        (
            schema_key("user-value", 1),
            schema_value("user-value", 1, 4, user, schemaType="AVRO", references=refs),
        ),
        # A subject soft-deleted whole: DELETE_SUBJECT up to version 2.
        (schema_key("old", 1), schema_value("old", 1, 5, avro("Old1"))),
        (schema_key("old", 2), schema_value("old", 2, 1, avro("Order"))),
        (
            {"keytype": "DELETE_SUBJECT", "subject": "old", "magic": 0},
            {"subject": "old", "version": 2},
        ),
        # A hard-deleted version: soft first, then a tombstone.
        (schema_key("gone", 1), schema_value("gone", 1, 6, avro("Gone"))),
        (schema_key("gone", 1), schema_value("gone", 1, 6, avro("Gone"), deleted=True)),
        (schema_key("gone", 1), None),
        # CLEAR_SUBJECT drops the soft-deleted versions of a permanently deleted subject.
        (schema_key("cleared", 1), schema_value("cleared", 1, 3, base, deleted=True)),
        (
            {"keytype": "CLEAR_SUBJECT", "subject": "cleared", "magic": 0},
            {"subject": "cleared"},
        ),
        ({"keytype": "CONFIG", "magic": 0}, {"compatibilityLevel": "FULL"}),
        (
            {"keytype": "CONFIG", "subject": "orders-value", "magic": 0},
            {"subject": "orders-value", "compatibilityLevel": "NONE"},
        ),
        (
            {"keytype": "MODE", "subject": "base", "magic": 0},
            {"subject": "base", "mode": "READONLY"},
        ),
        ({"keytype": "MODE", "subject": "user-value", "magic": 0}, {"subject": "user-value"}),
        ({"keytype": "MODE", "subject": "user-value", "magic": 0}, None),
    ]


def test_a_topic_confluent_wrote_is_served(kafka_bootstrap: str, tmp_path: Path) -> None:
    topic = unique_topic("registry.confluent")
    produce(kafka_bootstrap, topic, confluent_topic())
    with serve("--storage", f"kafka://{kafka_bootstrap}/{topic}", cwd=tmp_path) as server:

        def get(path: str) -> Any:
            reply = requests.get(server.url + path, timeout=10)
            assert reply.status_code == 200, (path, reply.text)
            return reply.json()

        # serve registers its audit schema first: the id after the largest Confluent gave (6,
        # a hard-deleted version's), not 5.
        assert get(f"/subjects/{AUDIT_SUBJECT}/versions/1")["id"] == 7
        assert get("/subjects") == [AUDIT_SUBJECT, "base", "orders-value", "user-value"]
        assert get("/subjects?deleted=true") == [
            AUDIT_SUBJECT,
            "base",
            "old",
            "orders-value",
            "user-value",
        ]
        assert get("/subjects/orders-value/versions") == [1]
        assert get("/subjects/orders-value/versions?deleted=true") == [1, 2]
        assert get("/subjects/old/versions?deleted=true") == [1, 2]
        assert get("/subjects/orders-value/versions/1")["id"] == 1
        user = get("/schemas/ids/4")
        assert user["references"] == [{"name": "shop.test.Base", "subject": "base", "version": 1}]
        assert get("/subjects/base/versions/1/referencedby") == [4]
        # Its only version hard-deleted, id 6 answers 404 (as Confluent's), yet is never reused.
        assert requests.get(server.url + "/schemas/ids/6", timeout=10).status_code == 404
        assert get("/config") == {"compatibilityLevel": "FULL"}
        assert get("/config/orders-value") == {"compatibilityLevel": "NONE"}
        assert get("/mode/base") == {"mode": "READONLY"}
        assert requests.get(server.url + "/mode/user-value", timeout=10).status_code == 404
        new = requests.post(
            server.url + "/subjects/fresh-value/versions",
            json={"schema": avro("Fresh")},
            timeout=10,
        )
        assert new.status_code == 200, new.text
        assert new.json()["id"] == 8
        # Content Confluent stored under id 1 keeps its id under a new subject.
        again = requests.post(
            server.url + "/subjects/copy-value/versions",
            json={"schema": avro("Order")},
            timeout=10,
        )
        assert again.json()["id"] == 1


def test_what_we_write_is_confluents_format(kafka_bootstrap: str) -> None:
    topic = unique_topic("registry.ours")
    storage = KafkaStorage(kafka_bootstrap, topic)
    try:
        registry = Registry(storage)
        base = registry.register("base", {"schema": avro("Base")})
        refs = [{"name": "shop.test.Base", "subject": "base", "version": 1}]
        user_schema = record("User", field("base", "shop.test.Base"))
        user = registry.register("user-value", {"schema": user_schema, "references": refs})
        registry.register("tmp", {"schema": avro("Tmp")})
        with storage.read() as tx:
            tmp_text = tx.schema(3).text  # type: ignore[union-attr]
        registry.delete_version("tmp", "1", permanent=False)
        registry.delete_version("tmp", "1", permanent=True)
        registry.set_config(None, {"compatibility": "FULL"})
        registry.set_config("user-value", {"compatibility": "NONE"})
        registry.set_mode("base", {"mode": "READONLY"}, force=False)
        with storage.read() as tx:
            base_text = tx.schema(base["id"]).text  # type: ignore[union-attr]
            user_text = tx.schema(user["id"]).text  # type: ignore[union-attr]
    finally:
        storage.close()
    assert read_topic(kafka_bootstrap, topic) == [
        (schema_key("base", 1), schema_value("base", 1, base["id"], base_text)),
        (
            schema_key("user-value", 1),
            schema_value("user-value", 1, user["id"], user_text, references=refs),
        ),
        (schema_key("tmp", 1), schema_value("tmp", 1, 3, tmp_text)),
        (
            schema_key("tmp", 1),
            schema_value("tmp", 1, 3, tmp_text, deleted=True),
        ),
        (schema_key("tmp", 1), None),
        ({"keytype": "CONFIG", "magic": 0}, {"compatibilityLevel": "FULL"}),
        (
            {"keytype": "CONFIG", "subject": "user-value", "magic": 0},
            {"subject": "user-value", "compatibilityLevel": "NONE"},
        ),
        (
            {"keytype": "MODE", "subject": "base", "magic": 0},
            {"subject": "base", "mode": "READONLY"},
        ),
    ]


def test_a_second_registry_sees_every_write_and_continues_the_ids(kafka_bootstrap: str) -> None:
    topic = unique_topic("registry.restart")
    first = KafkaStorage(kafka_bootstrap, topic)
    try:
        registry = Registry(first)
        ids = [registry.register(f"s{n}", {"schema": avro(f"R{n}")})["id"] for n in range(5)]
        registry.delete_subject("s4", permanent=False)
        registry.delete_subject("s4", permanent=True)  # the largest id loses its only version
        evolved = record("R0", field("id"), field("x", default=""))
        registry.register("s0", {"schema": evolved})  # checked against version 1: BACKWARD
        registry.set_config("s1", {"compatibility": "NONE"})
        before = first.change_counter()
    finally:
        first.close()
    assert ids == [1, 2, 3, 4, 5]
    second = KafkaStorage(kafka_bootstrap, topic)
    try:
        again = Registry(second)
        assert again.list_subjects("", deleted=False, deleted_only=False) == [
            "s0",
            "s1",
            "s2",
            "s3",
        ]
        versions = again.list_versions(
            "s0", deleted=False, deleted_only=False, deleted_as_negative=False
        )
        assert versions == [1, 2]
        assert again.get_config("s1", default_to_global=False)["compatibilityLevel"] == "NONE"
        assert second.change_counter() >= before > 0
        # Re-registering stored content finds its id (fingerprints recomputed at open) ...
        assert again.register("s9", {"schema": avro("R1")})["id"] == 2
        # ... and new content continues after every id given so far.
        assert again.register("s10", {"schema": avro("R10")})["id"] == 7
    finally:
        second.close()


def test_audit_records_commit_with_their_change(kafka_bootstrap: str) -> None:
    topic = unique_topic("registry.audit")
    subject = unique_topic("audited")
    storage = KafkaStorage(kafka_bootstrap, topic)
    try:
        registry = Registry(storage, audit=AuditLog())
        registry.register(subject, {"schema": avro("Audited")})
        with pytest.raises(Exception, match="incompatible"):
            registry.register(subject, {"schema": record("Audited", field("id", "int"))})
        registry.record_alone(
            Origin(),
            "schemas.register",
            outcome="FAILURE",
            subject=subject,
            reason="refused",
            details={},
        )
        assert storage.pending_outbox() == []
    finally:
        storage.close()
    mine = [
        value
        for _, value in _raw(kafka_bootstrap, AUDIT_TOPIC)
        if value is not None and subject.encode() in value
    ]
    # The registration (in its change's transaction) and the refusal's record (alone); the
    # incompatible registration rolled back with its record.
    assert len(mine) == 2


def _raw(bootstrap: str, topic: str) -> list[tuple[bytes | None, bytes | None]]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique_topic("audit-reader"),
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([topic])
    metadata = consumer.list_topics(topic, timeout=10)
    try:
        found = consume(consumer, 0, until_eof=list(metadata.topics[topic].partitions))
    finally:
        consumer.close()
    return [(m.key(), m.value()) for m in found]


def test_a_topic_with_several_partitions_is_refused(kafka_bootstrap: str) -> None:
    topic = unique_topic("registry.partitions")
    create_topic(kafka_bootstrap, topic, partitions=3)
    with pytest.raises(Exception, match="3 partitions; it must have exactly 1"):
        KafkaStorage(kafka_bootstrap, topic)


def test_serve_says_what_kafka_storage_needs(kafka_bootstrap: str, tmp_path: Path) -> None:
    url = f"kafka://{kafka_bootstrap}/{unique_topic('schemas-workers')}"
    reply = run_cli("serve", "--storage", url, "--workers", "2", "--port", "0", cwd=tmp_path)
    assert reply.returncode == 2
    assert "Kafka storage keeps its state in one process per instance" in reply.stderr
    assert "memory storage" not in reply.stderr
