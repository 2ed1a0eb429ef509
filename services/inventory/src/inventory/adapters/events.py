"""Inventory's events on the wire: each domain event and its Avro record on inventory.events.v1."""

from __future__ import annotations

from inventory.domain.events import (
    InventoryEvent,
    ReservationCommitted,
    ReservationReleased,
    StockReserved,
    StockSet,
)
from meshkit.events import EventMap

EVENTS: EventMap[InventoryEvent] = EventMap("shop.inventory.v1")
"""Keyed by the aggregate: the SKU for stock, the reservation id for a reservation's events."""
EVENTS.add(StockSet, key=lambda e: e.sku)
EVENTS.add(StockReserved, key=lambda e: e.reservation_id)
EVENTS.add(ReservationReleased, key=lambda e: e.reservation_id)
EVENTS.add(ReservationCommitted, key=lambda e: e.reservation_id)
