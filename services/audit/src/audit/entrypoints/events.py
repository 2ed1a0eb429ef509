"""The Kafka handler: each ``mesh.audit.v1.AuditRecorded`` appended to the trail in the
consumer's transaction (the one that writes its inbox mark; the offset is committed after it).
Translates the event to a use-case call, nothing else."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from audit.app.ports import AuditStore
from audit.app.trail import AuditTrail
from meshkit.events import Event, Handler

AUDIT_RECORDED = "mesh.audit.v1.AuditRecorded"


def handlers(
    trail: AuditTrail, store: Callable[[sqlite3.Connection], AuditStore]
) -> dict[str, Handler]:
    """The consumer's handlers: ``store(conn)`` is the trail's store over the open transaction
    (the composition root gives the SQLite one)."""

    def recorded(event: Event, conn: sqlite3.Connection) -> None:
        trail.append(store(conn), event.data)

    return {AUDIT_RECORDED: recorded}
