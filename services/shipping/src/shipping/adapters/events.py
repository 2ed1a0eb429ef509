"""Shipping's events on the wire: domain events -> Avro records on shipping.events.v1."""

from __future__ import annotations

import sqlite3
from typing import Any, Protocol

from meshkit.events import Outbox
from shipping.domain.events import ShipmentCancelled, ShipmentCreated, ShippingEvent
from shipping.domain.model import Shipment

NAMESPACE = "shop.shipping.v1"


class EventPublisher(Protocol):
    """Writes an event into the open transaction ``conn`` (the outbox, or a recorder in tests)."""

    def publish(self, conn: sqlite3.Connection, event: ShippingEvent) -> None:
        """Append ``event`` in ``conn``'s transaction."""


def to_record(event: ShippingEvent) -> tuple[str, str, dict[str, Any]]:
    """(Avro full name, key = the shipment id, record) for ``event``."""
    name = {ShipmentCreated: "ShipmentCreated", ShipmentCancelled: "ShipmentCancelled"}[type(event)]
    record = {**_shipment_fields(event.shipment), "occurred_at": event.occurred_at}
    return f"{NAMESPACE}.{name}", event.shipment.shipment_id, record


def _shipment_fields(shipment: Shipment) -> dict[str, Any]:
    return {
        "shipment_id": shipment.shipment_id,
        "order_id": shipment.order_id,
        "address": shipment.address.to_record(),
        "items": [{"sku": item.sku, "quantity": item.quantity} for item in shipment.items],
        "tracking_number": shipment.tracking_number,
    }


class OutboxPublisher:
    """EventPublisher over meshkit's transactional outbox. Thread-safe (the outbox is)."""

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox

    def publish(self, conn: sqlite3.Connection, event: ShippingEvent) -> None:
        """Validate, serialize and append ``event`` to the outbox inside ``conn``'s transaction."""
        event_type, key, record = to_record(event)
        self._outbox.append(conn, event_type, record, key=key, time=event.occurred_at)
