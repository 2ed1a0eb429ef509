"""The Kafka handlers: translate a decoded event into the projector's Fact, apply it in the
consumer's transaction. Nothing else happens here; the store over that transaction is handed in
by the composition root (entrypoints never reach into adapters)."""

from __future__ import annotations

import datetime
import sqlite3
from collections.abc import Callable

from meshkit.events import Event, Handler
from meshkit.timestamps import EPOCH, UTC
from order_views.app.ports import ViewStore
from order_views.app.projector import apply_fact
from order_views.domain.model import PROJECTED_TYPES, Fact

ViewStores = Callable[[sqlite3.Connection], ViewStore]
"""The read model inside the consumer's open transaction (``SqliteViewStore``)."""


def to_fact(event: Event) -> Fact:
    """The projector's view of ``event``: its id, type, record, and when it happened (the
    record's ``occurred_at``, else the CloudEvents time, else the epoch), as aware UTC."""
    occurred = event.data.get("occurred_at")
    if not isinstance(occurred, datetime.datetime):
        occurred = event.time
    if occurred is None:
        return Fact(event.id, event.type, event.data, EPOCH)
    # Avro timestamps and CloudEvents times decode aware; a naive one can only mean UTC.
    aware = occurred.astimezone(UTC) if occurred.tzinfo else occurred.replace(tzinfo=UTC)
    return Fact(event.id, event.type, event.data, aware)


def handlers(stores: ViewStores) -> dict[str, Handler]:
    """One handler per projected event type, folding the event into the read model through
    ``stores(conn)`` inside the consumer's transaction; the consumer marks and skips every other
    type."""

    def project_event(event: Event, conn: sqlite3.Connection) -> None:
        apply_fact(stores(conn), to_fact(event))

    return {event_type: project_event for event_type in sorted(PROJECTED_TYPES)}
