"""Shipping's events on the wire: each domain event and its Avro record on shipping.events.v1.

A record flattens the shipment (its id, order, address, items and tracking number) next to the
event's ``occurred_at``; status and times stay out, the event type says what happened.
"""

from __future__ import annotations

from typing import Any

from meshkit.events import EventMap, as_record
from shipping.domain.events import ShipmentCancelled, ShipmentCreated, ShippingEvent

_SHIPMENT_FIELDS = ("shipment_id", "order_id", "address", "items", "tracking_number")


def shipment_record(event: ShippingEvent) -> dict[str, Any]:
    """The record of ``event``: the shipment's fields of the contract, then ``occurred_at``."""
    shipment = as_record(event.shipment)  # the address through Address.to_record()
    return {
        **{name: shipment[name] for name in _SHIPMENT_FIELDS},
        "occurred_at": event.occurred_at,
    }


EVENTS: EventMap[ShippingEvent] = EventMap("shop.shipping.v1")
"""Keyed by the aggregate: the shipment id."""
EVENTS.add(ShipmentCreated, key=lambda e: e.shipment.shipment_id, to_record=shipment_record)
EVENTS.add(ShipmentCancelled, key=lambda e: e.shipment.shipment_id, to_record=shipment_record)
