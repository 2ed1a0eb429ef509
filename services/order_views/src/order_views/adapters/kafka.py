"""Kafka for order_views: partition positions and lag, and where each topic's log starts.

The projection consumes the four contexts' topics (CONTRACT_PACKAGES) through the kit's
consumers (``Service(consumes=...)``, ``ctx.consumers``: inbox dedup in the projection's
transaction, offsets committed after). A rebuild's fresh copy consumes in the kit's replay mode
(from offset 0, never skipping ahead); the rebuild sees a partition's low watermark pass its
position and refuses (order_views.app.rebuild).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from confluent_kafka import Consumer, TopicPartition

from order_views.app.ports import PartitionPosition, Positions

CONTRACT_PACKAGES = ("shop.orders.v1", "shop.payments.v1", "shop.shipping.v1", "shop.inventory.v1")
KAFKA_TIMEOUT_S = 5.0


class KafkaLag:
    """Positions and lag per partition: position = max(the copy's inbox, the group's committed
    offset), lag = high watermark - position; and where each partition's log starts (the rebuild's
    TopicLog).

    Thread safety: calls are serialised (metadata consumers, which never subscribe).
    """

    def __init__(self, bootstrap: str, topics: Sequence[str]) -> None:
        self._bootstrap = bootstrap
        self._topics = list(topics)
        self._lock = threading.Lock()
        self._consumers: dict[str, Consumer] = {}
        self._meta: Consumer | None = None

    def _partitions(self, consumer: Consumer) -> list[TopicPartition]:
        wanted: list[TopicPartition] = []
        for topic in self._topics:
            metadata = consumer.list_topics(topic, timeout=KAFKA_TIMEOUT_S).topics.get(topic)
            if metadata is None or metadata.error is not None:
                continue  # not created yet: nothing was ever published there
            wanted += [TopicPartition(topic, p) for p in sorted(metadata.partitions)]
        return wanted

    def starts(self) -> Positions:
        """The low watermark (first offset still stored) of every partition of the topics that
        exist; raises KafkaException when the broker does not answer in time."""
        with self._lock:
            if self._meta is None:
                self._meta = Consumer(
                    {
                        "bootstrap.servers": self._bootstrap,
                        "group.id": "order_views.watermarks",  # never joins nor commits
                        "enable.auto.commit": False,
                    }
                )
            starts: Positions = {}
            for tp in self._partitions(self._meta):
                low, _ = self._meta.get_watermark_offsets(tp, timeout=KAFKA_TIMEOUT_S, cached=False)
                starts[(tp.topic, tp.partition)] = low
            return starts

    def _consumer(self, group: str) -> Consumer:
        consumer = self._consumers.get(group)
        if consumer is None:
            # committed() answers for the consumer's own group.id; one per copy's group.
            for old in self._consumers.values():
                old.close()
            self._consumers.clear()
            consumer = Consumer(
                {
                    "bootstrap.servers": self._bootstrap,
                    "group.id": group,
                    "enable.auto.commit": False,
                }
            )
            self._consumers[group] = consumer
        return consumer

    def partitions(self, group: str, applied: Positions) -> list[PartitionPosition]:
        """Every partition of the topics (those that exist), with ``group``'s position and lag;
        raises KafkaException when the broker does not answer in time."""
        with self._lock:
            consumer = self._consumer(group)
            wanted = self._partitions(consumer)
            if not wanted:
                return []
            committed = {
                (tp.topic, tp.partition): tp.offset
                for tp in consumer.committed(wanted, timeout=KAFKA_TIMEOUT_S)
            }
            rows = []
            for tp in wanted:
                _, high = consumer.get_watermark_offsets(tp, timeout=KAFKA_TIMEOUT_S, cached=False)
                key = (tp.topic, tp.partition)
                position = max(applied.get(key, 0), committed.get(key, -1), 0)
                lag = max(0, high - position)
                rows.append(PartitionPosition(tp.topic, tp.partition, position, lag))
            return rows

    def close(self) -> None:
        """Close the metadata consumers."""
        with self._lock:
            for consumer in self._consumers.values():
                consumer.close()
            self._consumers.clear()
            if self._meta is not None:
                self._meta.close()
                self._meta = None
