"""Orders' events on the wire: each domain event and its Avro record on orders.events.v1.

The same records, as JSON, are what the event store keeps (orders.adapters.sqlite) and what
ListOrderEvents shows: one mapping for the outbox, the store and the edge.
"""

from __future__ import annotations

import datetime
import json

from meshkit.events import EventMap
from meshkit.timestamps import to_millis
from orders.domain.events import (
    OrderCancelled,
    OrderConfirmed,
    OrderEvent,
    OrderPaymentAuthorized,
    OrderPaymentCaptured,
    OrderPlaced,
    OrderShipmentCreated,
    OrderStockReserved,
)

EVENTS: EventMap[OrderEvent] = EventMap("shop.orders.v1")
"""Every event is keyed by its order (per-order ordering in Kafka). Its event id (ce_id) is
``<order_id>:<version>``, given by the event store when it publishes the stored event, so a
relayed-again event always carries the same id and consumers dedupe it."""
EVENTS.add(OrderPlaced, key=lambda e: e.order_id)
EVENTS.add(OrderStockReserved, key=lambda e: e.order_id)
EVENTS.add(OrderPaymentAuthorized, key=lambda e: e.order_id)
EVENTS.add(OrderShipmentCreated, key=lambda e: e.order_id)
EVENTS.add(OrderPaymentCaptured, key=lambda e: e.order_id)
EVENTS.add(OrderConfirmed, key=lambda e: e.order_id)
EVENTS.add(OrderCancelled, key=lambda e: e.order_id)


def event_id(order_id: str, version: int) -> str:
    """The ce_id of an order's event at ``version``: ``<order_id>:<version>``."""
    return f"{order_id}:{version}"


def to_json(event: OrderEvent) -> str:
    """``event``'s record as JSON, times as timestamp-millis integers (Avro's JSON encoding)."""
    return json.dumps(EVENTS.to_record(event), sort_keys=True, default=_millis)


def from_json(type_name: str, text: str, occurred_at: datetime.datetime) -> OrderEvent:
    """The event a ``to_json`` text of ``type_name`` describes, at its exact ``occurred_at`` (the
    record keeps only milliseconds)."""
    return EVENTS.event(type_name, {**json.loads(text), "occurred_at": occurred_at})


def _millis(value: object) -> int:
    if isinstance(value, datetime.datetime):
        return to_millis(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
