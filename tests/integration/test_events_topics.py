"""A service's topics are created before its relay sends, on the real broker: missing ones with
the broker's defaults (or the partitions asked for), existing ones left alone, refusals named."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType
from support.events import PRODUCER_MIGRATIONS, create_topic
from support.kafka import unique_topic

from meshkit.db import Database
from meshkit.events import OutboxRelay, TopicCreationError, ensure_topics

pytestmark = pytest.mark.kafka


def partitions_of(bootstrap: str, topic: str) -> int | None:
    """The topic's partition count, or None when the cluster does not have it."""
    # Listing every topic (rather than asking for this one) never auto-creates it.
    topics = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
    return len(topics[topic].partitions) if topic in topics else None


def test_missing_topics_are_created_and_existing_ones_left_alone(kafka_bootstrap: str) -> None:
    fresh, other, existing = (unique_topic("test.topics") for _ in range(3))
    create_topic(kafka_bootstrap, existing, 2)
    assert partitions_of(kafka_bootstrap, fresh) is None

    created = ensure_topics(kafka_bootstrap, [fresh, existing, fresh])
    assert created == [fresh]
    assert partitions_of(kafka_bootstrap, fresh) == 1, "the broker's num.partitions (scripts/kafka)"
    assert partitions_of(kafka_bootstrap, existing) == 2, "an existing topic is not touched"

    assert ensure_topics(kafka_bootstrap, [fresh, existing]) == [], "idempotent"
    assert ensure_topics(kafka_bootstrap, [other], partitions=3) == [other]
    assert partitions_of(kafka_bootstrap, other) == 3


def config_of(bootstrap: str, topic: str, key: str) -> str:
    """The topic's value of ``key`` as the cluster describes it."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    [future] = admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)]).values()
    return str(future.result(timeout=10)[key].value)


def test_topics_are_created_with_their_config_and_drift_is_reported(
    kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    fresh, existing = unique_topic("test.topics"), unique_topic("test.topics")
    create_topic(kafka_bootstrap, existing, 1)  # the broker's default retention (24 h here)
    wanted = {"retention.ms": "-1", "cleanup.policy": "delete"}

    with caplog.at_level(logging.WARNING, logger="meshkit.events.topics"):
        created = ensure_topics(kafka_bootstrap, {fresh: wanted, existing: wanted})

    assert created == [fresh]
    assert config_of(kafka_bootstrap, fresh, "retention.ms") == "-1"
    assert config_of(kafka_bootstrap, existing, "retention.ms") != "-1", "not altered"
    [drift] = [r.getMessage() for r in caplog.records if existing in r.getMessage()]
    assert "retention.ms" in drift and "-1" in drift, drift
    assert not [r for r in caplog.records if fresh in r.getMessage() and r.levelname == "WARNING"]


def test_the_relay_creates_its_topics_with_their_config(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = unique_topic("test.topics.relay")
    db = Database(tmp_path / "producer.db", PRODUCER_MIGRATIONS)
    relay = OutboxRelay(db, kafka_bootstrap, topics={topic: {"retention.ms": "-1"}})
    try:
        assert relay.create_topics() is True
        assert config_of(kafka_bootstrap, topic, "retention.ms") == "-1"
    finally:
        relay.close()
        db.close()


def test_a_refused_creation_names_the_topic_and_the_reason(kafka_bootstrap: str) -> None:
    topic = unique_topic("test.topics")
    with pytest.raises(TopicCreationError, match=rf"{topic}.*(?i:replication)"):
        ensure_topics(kafka_bootstrap, [topic], replication=3)  # one broker here
    assert partitions_of(kafka_bootstrap, topic) is None


def test_an_unreachable_cluster_is_an_error_not_a_hang() -> None:
    with pytest.raises(TopicCreationError, match=r"cannot list the topics at 127\.0\.0\.1:9"):
        ensure_topics("127.0.0.1:9", ["anything"], timeout_s=1)


def test_the_relay_creates_its_topics_before_sending(kafka_bootstrap: str, tmp_path: Path) -> None:
    topic = unique_topic("test.topics.relay")
    db = Database(tmp_path / "producer.db", PRODUCER_MIGRATIONS)
    relay = OutboxRelay(db, kafka_bootstrap, topics=[topic])
    try:
        assert partitions_of(kafka_bootstrap, topic) is None
        assert relay.create_topics() is True
        assert partitions_of(kafka_bootstrap, topic) == 1
    finally:
        relay.close()
        db.close()


def test_a_relay_told_not_to_create_topics_leaves_the_cluster_alone(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = unique_topic("test.topics.relay")
    db = Database(tmp_path / "producer.db", PRODUCER_MIGRATIONS)
    relay = OutboxRelay(db, kafka_bootstrap, topics=[topic], create_topics=False)
    try:
        assert relay.create_topics() is True, "nothing to create"
        assert partitions_of(kafka_bootstrap, topic) is None
    finally:
        relay.close()
        db.close()
