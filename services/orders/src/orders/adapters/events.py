"""Publishing order events through meshkit's transactional outbox."""

from __future__ import annotations

import datetime
import sqlite3

from meshkit.events import Outbox
from orders.adapters.records import event_type, to_record
from orders.domain.events import OrderEvent


class OutboxPublisher:
    """The event store's EventSink: one outbox row per stored event, in the same transaction.

    Key = order id (per-order ordering in Kafka); ce_id = ``<order_id>:<version>``, so the same
    stored event always carries the same id and consumers dedupe it however often it is relayed.
    Thread safety: shareable; it writes through the connection it is given.
    """

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox

    def __call__(self, conn: sqlite3.Connection, event: OrderEvent, version: int) -> None:
        self._outbox.append(
            conn,
            event_type(event),
            to_record(event),
            key=event.order_id,
            event_id=f"{event.order_id}:{version}",
            time=datetime.datetime.fromtimestamp(event.occurred_at, datetime.UTC),
        )
