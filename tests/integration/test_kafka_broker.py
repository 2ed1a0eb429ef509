"""The real Kafka broker from scripts/kafka carries what the mesh relies on.

Keys (per-aggregate ordering), headers (CloudEvents metadata, trace context) and exactly-once
delivery from an idempotent producer, checked end to end with confluent-kafka.
"""

from __future__ import annotations

import uuid
from collections import defaultdict

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

# NewTopic's public home is confluent_kafka.admin, which re-exports it without __all__.
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from support.kafka import consume

pytestmark = pytest.mark.kafka

PARTITIONS = 3
# confluent-kafka's header type; the list is invariant, so spell it out once.
Headers = list[tuple[str, str | bytes | None]]
Record = tuple[bytes, bytes, Headers]


def _create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions)])
    futures[topic].result(timeout=30)


def _produce(producer: Producer, records: list[Record], topic: str) -> list[Message]:
    delivered: list[Message] = []
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(err)
        else:
            delivered.append(msg)

    for key, value, headers in records:
        producer.produce(topic, key=key, value=value, headers=headers, on_delivery=on_delivery)
    assert producer.flush(30) == 0, "records still queued after 30s"
    assert errors == []
    return delivered


def _consumer(bootstrap: str, **extra: object) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **extra,
        }
    )


def test_records_keep_keys_headers_and_per_partition_order(
    kafka_bootstrap: str, kafka_topic: str
) -> None:
    _create_topic(kafka_bootstrap, kafka_topic, PARTITIONS)
    keys = [f"order-{i}".encode() for i in range(6)]
    per_key = 5
    sent: list[Record] = []
    for seq in range(per_key):
        for key in keys:
            headers: Headers = [
                ("ce_specversion", b"1.0"),
                ("ce_id", uuid.uuid4().bytes),
                ("ce_type", b"shop.orders.v1.OrderPlaced"),
                ("ce_subject", key),
                # A repeated header name must survive as two entries, in order.
                ("x-hop", b"relay"),
                ("x-hop", b"broker"),
            ]
            sent.append((key, f"{key.decode()}:{seq}".encode(), headers))
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 5})
    _produce(producer, sent, kafka_topic)

    consumer = _consumer(kafka_bootstrap, **{"enable.partition.eof": True})
    consumer.subscribe([kafka_topic])
    try:
        received = consume(consumer, len(sent), until_eof=range(PARTITIONS))
    finally:
        consumer.close()

    assert len(received) == len(sent)
    expected = {value: (key, headers) for key, value, headers in sent}
    for msg in received:
        value = msg.value()
        assert value is not None
        key, headers = expected.pop(value)
        assert msg.key() == key
        assert msg.headers() == headers
    assert expected == {}, "records missing"

    partition_of: dict[bytes, set[int | None]] = defaultdict(set)
    offsets: dict[int | None, list[int]] = defaultdict(list)
    seqs_by_key: dict[bytes, list[int]] = defaultdict(list)
    for msg in received:
        msg_key, msg_value, offset = msg.key(), msg.value(), msg.offset()
        assert isinstance(msg_key, bytes) and msg_value is not None and offset is not None
        partition_of[msg_key].add(msg.partition())
        offsets[msg.partition()].append(offset)
        seqs_by_key[msg_key].append(int(msg_value.rsplit(b":", 1)[1]))
    # Same key, same partition; within a partition, consumption follows the log order,
    # so every key's records come back in the order they were produced.
    assert all(len(parts) == 1 for parts in partition_of.values())
    for partition_offsets in offsets.values():
        assert partition_offsets == sorted(partition_offsets)
    assert all(seqs == list(range(per_key)) for seqs in seqs_by_key.values())
    assert len(offsets) > 1, "all keys hashed to one partition; the order check proves little"


def test_idempotent_producer_delivers_each_record_exactly_once(
    kafka_bootstrap: str, kafka_topic: str
) -> None:
    count = 500
    producer = Producer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            # Small batches: many in-flight produce requests, the case sequence numbers guard.
            "batch.num.messages": 20,
            "max.in.flight.requests.per.connection": 5,
        }
    )
    # No explicit topic creation: the first produce also exercises auto.create.topics.enable.
    sent: list[Record] = [
        (f"k{i % 7}".encode(), f"record-{i}".encode(), [("n", str(i).encode())])
        for i in range(count)
    ]
    delivered = _produce(producer, sent, kafka_topic)
    assert len(delivered) == count

    consumer = _consumer(kafka_bootstrap, **{"enable.partition.eof": True})
    consumer.subscribe([kafka_topic])
    try:
        received = consume(consumer, count, until_eof=[0])
        low, high = consumer.get_watermark_offsets(TopicPartition(kafka_topic, 0), timeout=10)
    finally:
        consumer.close()

    values = [msg.value() for msg in received]
    assert sorted(v for v in values if v is not None) == sorted(v for _, v, _ in sent)
    assert len(set(values)) == count
    # The log itself holds exactly `count` records: none was written twice by a retry.
    assert (low, high) == (0, count)
