"""Inventory's events on the wire: domain events -> Avro records on inventory.events.v1."""

from __future__ import annotations

import sqlite3
from typing import Any, Protocol

from inventory.domain.events import (
    InventoryEvent,
    ReservationCommitted,
    ReservationReleased,
    StockReserved,
    StockSet,
)
from meshkit.events import Outbox

NAMESPACE = "shop.inventory.v1"


class EventPublisher(Protocol):
    """Writes an event into the open transaction ``conn`` (the outbox, or a recorder in tests)."""

    def publish(self, conn: sqlite3.Connection, event: InventoryEvent) -> None:
        """Append ``event`` in ``conn``'s transaction."""


def to_record(event: InventoryEvent) -> tuple[str, str, dict[str, Any]]:
    """(Avro full name, key = aggregate id, record) for ``event``."""
    if isinstance(event, StockSet):
        return (
            f"{NAMESPACE}.StockSet",
            event.sku,
            {
                "sku": event.sku,
                "on_hand": event.on_hand,
                "available": event.available,
                "reserved": event.reserved,
                "occurred_at": event.occurred_at,
            },
        )
    name = {
        StockReserved: "StockReserved",
        ReservationReleased: "ReservationReleased",
        ReservationCommitted: "ReservationCommitted",
    }[type(event)]
    record = {
        "reservation_id": event.reservation_id,
        "lines": [{"sku": line.sku, "quantity": line.quantity} for line in event.lines],
        "occurred_at": event.occurred_at,
    }
    return f"{NAMESPACE}.{name}", event.reservation_id, record


class OutboxPublisher:
    """EventPublisher over meshkit's transactional outbox. Thread-safe (the outbox is)."""

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox

    def publish(self, conn: sqlite3.Connection, event: InventoryEvent) -> None:
        """Validate, serialize and append ``event`` to the outbox inside ``conn``'s transaction."""
        event_type, key, record = to_record(event)
        self._outbox.append(conn, event_type, record, key=key, time=event.occurred_at)
