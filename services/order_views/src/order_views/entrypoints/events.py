"""The Kafka handlers: translate a decoded event into the projector's Fact, apply it in the
consumer's transaction. Nothing else happens here."""

from __future__ import annotations

import datetime
import sqlite3

from meshkit.events import Event, Handler
from order_views.adapters.sqlite import SqliteViewStore
from order_views.app.projector import apply_fact
from order_views.domain.model import PROJECTED_TYPES, Fact


def to_fact(event: Event) -> Fact:
    """The projector's view of ``event``: its id, type, record, and when it happened (the
    record's ``occurred_at``, else the CloudEvents time)."""
    occurred = event.data.get("occurred_at")
    if not isinstance(occurred, datetime.datetime):
        occurred = event.time
    seconds = occurred.timestamp() if occurred is not None else 0.0
    return Fact(event.id, event.type, event.data, seconds)


def project_event(event: Event, conn: sqlite3.Connection) -> None:
    """Handler: fold ``event`` into the read model inside ``conn``'s open transaction."""
    apply_fact(SqliteViewStore(conn), to_fact(event))


def handlers() -> dict[str, Handler]:
    """One handler per projected event type; the consumer marks and skips every other type."""
    return {event_type: project_event for event_type in sorted(PROJECTED_TYPES)}
