"""Kafka for order_views: the consumer of a copy, partition positions and lag, and where each
topic's log starts.

The projection consumes the four contexts' topics with meshkit's EventConsumer (inbox dedup in
the projection's transaction, offsets committed after). Reader schemas are the contracts the
installed contracts package ships, checked against the registry at start-up.

A rebuild's fresh copy consumes in replay mode: before its consumer joins, its group's offset is
set to 0 in every partition (so nothing a group of that name committed before counts), and
``auto.offset.reset=error``: where a log no longer starts at 0, or records are deleted before
the copy read them, the consumer reports an error and reads no further in that partition,
instead of jumping silently to the log's new start (what ``earliest`` does). The rebuild sees
the low watermark pass its position and refuses (order_views.app.rebuild).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from meshkit.db import Database
from meshkit.errors import Unavailable
from meshkit.events import EventCatalog, EventConsumer, Handler
from order_views.app.ports import PartitionPosition, Positions

CONTRACT_PACKAGES = ("shop.orders.v1", "shop.payments.v1", "shop.shipping.v1", "shop.inventory.v1")
# A subscription to a topic that does not exist yet (nothing published there so far) is only
# re-checked at the metadata refresh interval: 5 minutes by default, too long for a read model.
CONSUMER_CONFIG = {"topic.metadata.refresh.interval.ms": 2000}
REPLAY_CONFIG = {**CONSUMER_CONFIG, "auto.offset.reset": "error"}
KAFKA_TIMEOUT_S = 5.0


def event_catalog() -> EventCatalog:
    """Every event contract order_views reads, from the installed contracts package, with the
    topic configs their topic.json files give."""
    catalogs = [EventCatalog.from_package(package) for package in CONTRACT_PACKAGES]
    return EventCatalog(
        [event for catalog in catalogs for event in catalog],
        {topic: config for catalog in catalogs for topic, config in catalog.topic_configs.items()},
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

    def __call__(self, db: Database, group: str, *, replay: bool = False) -> EventConsumer:
        """The consumer of ``group`` writing ``db``; ``replay``: from offset 0, never skipping
        ahead (see the module's docstring). Raises Unavailable when Kafka cannot set the
        group's offsets."""
        if replay:
            self.start_at_zero(group)
        return EventConsumer(
            db,
            bootstrap=self.bootstrap,
            group=group,
            topics=self.topics,
            registry=self.registry,
            handlers=self.handlers,
            catalog=self.catalog,
            consumer_config=REPLAY_CONFIG if replay else CONSUMER_CONFIG,
        )

    def start_at_zero(self, group: str) -> None:
        """Commit offset 0 for ``group`` (which has no member yet) in every partition of the
        topics that exist; raises Unavailable when Kafka refuses or does not answer."""
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "client.id": "order-views"})
        try:
            metadata = admin.list_topics(timeout=KAFKA_TIMEOUT_S).topics
            partitions = [
                TopicPartition(topic, partition, 0)
                for topic in self.topics
                if topic in metadata and metadata[topic].error is None
                for partition in sorted(metadata[topic].partitions)
            ]
            if not partitions:
                return
            [future] = admin.alter_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(group, partitions)],
                request_timeout=KAFKA_TIMEOUT_S,
            ).values()
            future.result(timeout=KAFKA_TIMEOUT_S * 2)
        except (KafkaException, TimeoutError) as exc:
            raise Unavailable(f"cannot set consumer group {group} to offset 0: {exc}") from exc


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
