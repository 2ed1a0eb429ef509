"""Creating a service's topics up front, instead of trusting the broker to auto-create them.

Production clusters often run with ``auto.create.topics.enable=false``; there, a relay whose
topic does not exist would only collect UNKNOWN_TOPIC_OR_PART errors and a consumer would wait
forever. The outbox relay calls ``ensure_topics`` for the topics of its service's event catalog
before it sends anything. A missing topic is created with the config its ``topic.json`` asks
for (``EventCatalog.topic_configs``: e.g. ``retention.ms=-1`` for a topic whose history is the
source of truth) and otherwise the broker's defaults (``num.partitions``,
``default.replication.factor``, ``log.retention.hours``...). A topic that already exists is left
as it is (its partitions, retention and the rest are the operator's to change, on purpose), but
where its config differs from what ``topic.json`` asks for, a warning names each difference.

Where topics cannot be created through the admin API (librdkafka's mock cluster, `mesh up`'s
embedded default, has no controller: creation times out), ``auto_create_topics`` makes the
broker auto-create them instead, as a producer's first send would, so a consumer that starts
before its producers still finds its topics when it subscribes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource
from confluent_kafka.admin._resource import ResourceType
from confluent_kafka.cimpl import NewTopic

from meshkit.events.kafkalog import with_python_logging

log = logging.getLogger("meshkit.events.topics")

BROKER_DEFAULT = -1
"""For ``partitions`` and ``replication``: whatever the broker's defaults say (Kafka >= 2.4)."""

TopicConfigs = Mapping[str, Mapping[str, str]]
"""Topic -> the Kafka topic config it should have (``{}``: the broker's defaults)."""


class TopicCreationError(Exception):
    """A topic could not be created; the message names it and the broker's reason."""


def ensure_topics(
    bootstrap: str,
    topics: Iterable[str] | TopicConfigs,
    *,
    partitions: int = BROKER_DEFAULT,
    replication: int = BROKER_DEFAULT,
    timeout_s: float = 10.0,
) -> list[str]:
    """Create every topic of ``topics`` the cluster at ``bootstrap`` lacks, with its config when
    ``topics`` maps topics to configs; returns the ones created here (a topic another process
    created meanwhile counts as existing). For each existing topic with a config, logs a warning
    per setting the cluster has otherwise (changing it is the operator's call, not this one's).

    Raises TopicCreationError when the cluster cannot be asked within ``timeout_s`` or refuses
    a creation (no permission, an invalid name, partition count or config).
    """
    configs: dict[str, dict[str, str]] = (
        {t: dict(c) for t, c in topics.items()}
        if isinstance(topics, Mapping)
        else {t: {} for t in topics}
    )
    wanted = sorted(configs)
    if not wanted:
        return []
    admin = AdminClient(
        with_python_logging({"bootstrap.servers": bootstrap, "client.id": "meshkit-topics"})
    )
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as exc:
        raise TopicCreationError(f"cannot list the topics at {bootstrap}: {exc}") from exc
    _report_drift(admin, {t: configs[t] for t in wanted if t in existing and configs[t]}, timeout_s)
    missing = [t for t in wanted if t not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [
            NewTopic(
                t, num_partitions=partitions, replication_factor=replication, config=configs[t]
            )
            for t in missing
        ],
        operation_timeout=timeout_s,
        request_timeout=timeout_s,
    )
    created = []
    for topic, future in futures.items():
        try:
            future.result(timeout=timeout_s + 5)
        except TimeoutError as exc:
            raise TopicCreationError(f"creating topic {topic!r} timed out at {bootstrap}") from exc
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise TopicCreationError(f"cannot create topic {topic!r}: {exc}") from exc
        log.info("created topic %s %s", topic, configs[topic], extra={"topic": topic})
        created.append(topic)
    return created


def _report_drift(admin: AdminClient, configs: TopicConfigs, timeout_s: float) -> None:
    """Warn about every setting of ``configs`` an existing topic has otherwise. Best effort: a
    cluster that cannot describe its configs gets one warning, and creation goes on."""
    if not configs:
        return
    futures = admin.describe_configs(
        [ConfigResource(ResourceType.TOPIC, topic) for topic in sorted(configs)],
        request_timeout=timeout_s,
    )
    for resource, future in futures.items():
        topic = resource.name
        try:
            actual = {name: entry.value for name, entry in future.result(timeout_s + 5).items()}
        except (KafkaException, TimeoutError) as exc:
            log.warning("cannot check the config of topic %s: %s", topic, exc)
            continue
        for name, value in sorted(configs[topic].items()):
            if actual.get(name) != value:
                log.warning(
                    "topic %s has %s=%s, but its topic.json asks for %s; left as it is (change it"
                    " on purpose: kafka-configs.sh --alter --entity-type topics --entity-name %s"
                    " --add-config %s=%s)",
                    topic,
                    name,
                    actual.get(name),
                    value,
                    topic,
                    name,
                    value,
                    extra={"topic": topic},
                )


def auto_create_topics(
    bootstrap: str, topics: Iterable[str], *, timeout_s: float = 10.0
) -> list[str]:
    """Make a broker that auto-creates topics (``auto.create.topics.enable``; the mock cluster
    always) create each of ``topics`` it lacks, with its defaults, by asking a producer's
    metadata for it, which is what a first send does. Returns the topics that exist afterwards;
    one the broker still lacks (auto-creation off) is left out, not an error."""
    wanted = sorted(set(topics))
    if not wanted:
        return []
    # A producer asks for a topic's metadata with auto-creation allowed (consumers do not).
    producer = Producer(
        with_python_logging({"bootstrap.servers": bootstrap, "client.id": "meshkit-topics"})
    )
    present = []
    for topic in wanted:
        try:
            metadata = producer.list_topics(topic=topic, timeout=timeout_s).topics.get(topic)
        except KafkaException as exc:
            log.warning("cannot ask %s for topic %s: %s", bootstrap, topic, exc)
            continue
        if metadata is not None and metadata.error is None and metadata.partitions:
            present.append(topic)
    return present
