"""Domain events: facts about shipments, recorded in the same transaction as the change.

Adapters map them to the Avro contracts in proto/shop/shipping/v1/avro/ and append them to the
transactional outbox; the domain only says what happened.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from shipping.domain.model import Shipment


@dataclass(frozen=True)
class ShipmentEvent:
    """What every shipping event carries: the shipment as it was after the change, and when."""

    shipment: Shipment
    occurred_at: datetime.datetime


@dataclass(frozen=True)
class ShipmentCreated(ShipmentEvent):
    """A shipment was booked (CreateShipment acted; a replay does not raise it again)."""


@dataclass(frozen=True)
class ShipmentCancelled(ShipmentEvent):
    """A booked shipment was cancelled (only on the BOOKED -> CANCELLED transition)."""


ShippingEvent = ShipmentCreated | ShipmentCancelled
"""Every event the shipping domain raises."""
