"""meshkit.events: publish and react to events without losing or doubling one.

The pieces, in the order an event meets them::

    EventMap("shop.inventory.v1").add(StockSet, key=...)   # domain event <-> Avro record
    EventCatalog.load("proto/shop/inventory/v1/avro")   # the .avsc contracts + topic.json
    catalog.verify(registry_url)                         # at start-up: refuse to run unregistered
    Outbox(catalog, registry_url, source="/meshkit/inventory")
        .append(conn, "shop.inventory.v1.StockSet", {...}, key=sku)   # in the command's txn
    OutboxRelay(db, bootstrap, topics=catalog.topics)    # creates missing topics, then sends
        .run_forever(stop)                               # or: python -m meshkit.events.relay
    EventConsumer(db, bootstrap=..., group=..., topics=[...], registry=..., handlers={...})
        .run_forever(stop)                               # inbox dedup, offset committed last
    read_dead_letters / replay_dead_letters              # `mesh dlq ls|replay TOPIC`

Storage: add ``OUTBOX_MIGRATION`` (producers) and ``INBOX_MIGRATION`` (consumers) to the
service's own migrations. Wire format: Confluent (magic byte, schema id, Avro) through
confluent-kafka's Avro serdes; metadata in CloudEvents binary-mode headers plus W3C traceparent.

Every background worker has ``run_once() -> int``; ``run_forever(stop)`` only loops it with
backoff, so tests drive workers step by step. This module's ``__all__`` is its public API.
"""

from meshkit.events._catalog import (
    CatalogError,
    EventCatalog,
    EventType,
    SchemaRegistrationError,
)
from meshkit.events._consumer import (
    INBOX_MIGRATION,
    TRANSIENT,
    Event,
    EventConsumer,
    Handler,
    TransientError,
)
from meshkit.events._consumers import CONSUMER_CONFIG, REPLAY_CONFIG, Consumers, reader_catalog
from meshkit.events._dlq import (
    REPLAY_GROUP,
    DeadLetter,
    dead_letter_headers,
    dlq_topic,
    read_dead_letters,
    replay_dead_letters,
)
from meshkit.events._headers import cloudevent_headers
from meshkit.events._mapping import EventMap, EventPublisher, as_record, from_record
from meshkit.events._outbox import (
    MAX_MESSAGE_BYTES,
    OUTBOX_MIGRATION,
    EventSchemaError,
    EventTooLarge,
    Outbox,
)
from meshkit.events._topics import TopicCreationError, ensure_topics
from meshkit.events.relay import OutboxRelay

__all__ = [
    "CONSUMER_CONFIG",
    "INBOX_MIGRATION",
    "MAX_MESSAGE_BYTES",
    "OUTBOX_MIGRATION",
    "REPLAY_CONFIG",
    "REPLAY_GROUP",
    "TRANSIENT",
    "CatalogError",
    "Consumers",
    "DeadLetter",
    "Event",
    "EventCatalog",
    "EventConsumer",
    "EventMap",
    "EventPublisher",
    "EventSchemaError",
    "EventTooLarge",
    "EventType",
    "Handler",
    "Outbox",
    "OutboxRelay",
    "SchemaRegistrationError",
    "TopicCreationError",
    "TransientError",
    "as_record",
    "cloudevent_headers",
    "dead_letter_headers",
    "dlq_topic",
    "ensure_topics",
    "from_record",
    "read_dead_letters",
    "reader_catalog",
    "replay_dead_letters",
]
