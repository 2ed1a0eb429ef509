"""What a service reads: the event contracts of other contexts, and consumers built over them.

A service declares the proto packages whose events it reads (``Service(consumes=(...))``); the
kit loads their contracts from the installed contracts package (the reader schemas), checks at
start that each can read every version the registry holds, and hands the service a
``Consumers`` factory: ``consumers(db, group)`` is an EventConsumer of every one of those topics,
deduplicating in ``db``'s inbox (add ``INBOX_MIGRATION`` to its migrations) and committing its
offsets as ``group``.

Replay (``consumers(db, group, replay=True)``, for a read model rebuilt from the logs): before the
consumer joins, the group's offset is set to 0 in every partition (so nothing a group of that
name committed before counts), and ``auto.offset.reset=error``: where a log no longer starts at
0, or records are deleted before the consumer read them, it reports an error and reads no further
in that partition instead of jumping silently to the log's new start (what ``earliest`` does).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from meshkit.db import Database
from meshkit.errors import Unavailable
from meshkit.events._catalog import EventCatalog
from meshkit.events._consumer import EventConsumer, Handler
from meshkit.events.kafkalog import with_python_logging

# A subscription to a topic that does not exist yet (nothing published there so far) is only
# re-checked at the metadata refresh interval, 5 minutes by default: too long for a reader that
# starts before its writers.
CONSUMER_CONFIG: Mapping[str, Any] = {"topic.metadata.refresh.interval.ms": 2000}
REPLAY_CONFIG: Mapping[str, Any] = {**CONSUMER_CONFIG, "auto.offset.reset": "error"}
KAFKA_TIMEOUT_S = 5.0


def reader_catalog(packages: Sequence[str]) -> EventCatalog:
    """Every event contract of ``packages`` (e.g. ``shop.orders.v1``), from the installed
    contracts package, with the topic configs their topic.json files give."""
    catalogs = [EventCatalog.from_package(package) for package in packages]
    return EventCatalog(
        [event for catalog in catalogs for event in catalog],
        {topic: config for catalog in catalogs for topic, config in catalog.topic_configs.items()},
    )


@dataclass(frozen=True)
class Consumers:
    """Builds EventConsumers of a service's reading catalog: ``(db, group) -> EventConsumer``.

    Thread safety: immutable; each call builds a new consumer (one per thread that runs it).
    """

    bootstrap: str
    registry: Any
    catalog: EventCatalog
    handlers: Mapping[str, Handler]
    # Create the topics read that do not exist yet before subscribing (off where the broker
    # cannot: librdkafka's mock cluster, `mesh up`'s embedded default).
    create_topics: bool = True

    @property
    def topics(self) -> list[str]:
        """The topics consumed, sorted."""
        return sorted(self.catalog.topics)

    def __call__(self, db: Database, group: str, *, replay: bool = False) -> EventConsumer:
        """The consumer of ``group`` writing ``db``; ``replay``: from offset 0, never skipping
        ahead (see the module's docstring). Raises Unavailable when Kafka cannot set the group's
        offsets."""
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
            create_topics=self.create_topics,
        )

    def start_at_zero(self, group: str) -> None:
        """Commit offset 0 for ``group`` (which has no member yet) in every partition of the
        topics that exist; raises Unavailable when Kafka refuses or does not answer."""
        from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
        from confluent_kafka.admin import AdminClient

        admin = AdminClient(
            with_python_logging(
                {"bootstrap.servers": self.bootstrap, "client.id": "meshkit-replay"}
            )
        )
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
