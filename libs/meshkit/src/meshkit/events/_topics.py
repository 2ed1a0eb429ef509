"""Creating a service's topics up front, instead of trusting the broker to auto-create them.

Production clusters often run with ``auto.create.topics.enable=false``; there, a relay whose
topic does not exist would only collect UNKNOWN_TOPIC_OR_PART errors and a consumer would wait
forever. The outbox relay calls ``ensure_topics`` for the topics of its service's event catalog
before it sends anything; a topic that already exists is left as it is (partitions, retention
and the rest are the operator's), a missing one is created with the broker's defaults
(``num.partitions``, ``default.replication.factor``) unless told otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

log = logging.getLogger("meshkit.events.topics")

BROKER_DEFAULT = -1
"""For ``partitions`` and ``replication``: whatever the broker's defaults say (Kafka >= 2.4)."""


class TopicCreationError(Exception):
    """A topic could not be created; the message names it and the broker's reason."""


def ensure_topics(
    bootstrap: str,
    topics: Iterable[str],
    *,
    partitions: int = BROKER_DEFAULT,
    replication: int = BROKER_DEFAULT,
    timeout_s: float = 10.0,
) -> list[str]:
    """Create every topic of ``topics`` the cluster at ``bootstrap`` lacks; returns the ones
    created here (a topic another process created meanwhile counts as existing).

    Raises TopicCreationError when the cluster cannot be asked within ``timeout_s`` or refuses
    a creation (no permission, an invalid name or partition count).
    """
    wanted = sorted(set(topics))
    if not wanted:
        return []
    admin = AdminClient({"bootstrap.servers": bootstrap, "client.id": "meshkit-topics"})
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as exc:
        raise TopicCreationError(f"cannot list the topics at {bootstrap}: {exc}") from exc
    missing = [t for t in wanted if t not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=partitions, replication_factor=replication) for t in missing],
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
        log.info("created topic %s", topic, extra={"topic": topic})
        created.append(topic)
    return created
