"""Kafka for order_views: the consumer of a copy, and partition positions and lag.

The projection consumes the four contexts' topics with meshkit's EventConsumer (inbox dedup in
the projection's transaction, offsets committed after). Reader schemas are the contracts the
installed contracts package ships, checked against the registry at start-up.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from meshkit.db import Database
from meshkit.events import EventCatalog, EventConsumer, Handler
from order_views.app.ports import PartitionPosition, Positions

CONTRACT_PACKAGES = ("shop.orders.v1", "shop.payments.v1", "shop.shipping.v1", "shop.inventory.v1")
# A subscription to a topic that does not exist yet (nothing published there so far) is only
# re-checked at the metadata refresh interval: 5 minutes by default, too long for a read model.
CONSUMER_CONFIG = {"topic.metadata.refresh.interval.ms": 2000}
KAFKA_TIMEOUT_S = 5.0


def event_catalog() -> EventCatalog:
    """Every event contract order_views reads, from the installed contracts package."""
    return EventCatalog(
        [event for package in CONTRACT_PACKAGES for event in EventCatalog.from_package(package)]
    )


@dataclass(frozen=True)
class ConsumerFactory:
    """Builds a copy's EventConsumer: (database, group) -> consumer of every catalog topic."""

    bootstrap: str
    registry: Any
    catalog: EventCatalog
    handlers: Mapping[str, Handler]

    @property
    def topics(self) -> list[str]:
        """The topics consumed, sorted."""
        return sorted(self.catalog.topics)

    def __call__(self, db: Database, group: str) -> EventConsumer:
        return EventConsumer(
            db,
            bootstrap=self.bootstrap,
            group=group,
            topics=self.topics,
            registry=self.registry,
            handlers=self.handlers,
            catalog=self.catalog,
            consumer_config=CONSUMER_CONFIG,
        )


class KafkaLag:
    """Positions and lag per partition: position = max(the copy's inbox, the group's committed
    offset), lag = high watermark - position.

    Thread safety: calls are serialised (one metadata consumer, which never subscribes).
    """

    def __init__(self, bootstrap: str, topics: Sequence[str]) -> None:
        self._bootstrap = bootstrap
        self._topics = list(topics)
        self._lock = threading.Lock()
        self._consumers: dict[str, Consumer] = {}

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
            wanted: list[TopicPartition] = []
            for topic in self._topics:
                metadata = consumer.list_topics(topic, timeout=KAFKA_TIMEOUT_S).topics.get(topic)
                if metadata is None or metadata.error is not None:
                    continue  # not created yet: nothing was ever published there
                wanted += [TopicPartition(topic, p) for p in sorted(metadata.partitions)]
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
        """Close the metadata consumer."""
        with self._lock:
            for consumer in self._consumers.values():
                consumer.close()
            self._consumers.clear()
