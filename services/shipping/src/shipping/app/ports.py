"""What the use cases need from the outside world, as Protocols (adapters implement them)."""

from __future__ import annotations

from typing import Protocol

from meshkit.address import Address
from meshkit.ports import IdempotencyStore, UnitOfWorkPort
from shipping.domain.events import ShippingEvent
from shipping.domain.model import ServiceLevel, Shipment


class ShipmentRepository(Protocol):
    """Shipments of the current unit of work."""

    def get(self, shipment_id: str) -> Shipment | None:
        """The shipment, or None."""

    def add(self, shipment: Shipment) -> None:
        """Store a new shipment."""

    def save(self, shipment: Shipment) -> None:
        """Store a changed shipment's status and update time."""

    def tracking_number_taken(self, tracking_number: str) -> bool:
        """True when some shipment already has ``tracking_number``."""


class UnitOfWork(UnitOfWorkPort[ShippingEvent], Protocol):
    """One transaction over shipments and idempotency records; ``publish`` its events
    (meshkit's port): state, records and events commit together or not at all."""

    @property
    def shipments(self) -> ShipmentRepository:
        """Shipments, inside this transaction."""

    @property
    def idempotency(self) -> IdempotencyStore[Shipment]:
        """First results by idempotency key (the shipment as that call returned it), inside
        this transaction."""


class ServiceLevels(Protocol):
    """Which service level a new shipment is booked with (a feature flag decides it in the mesh:
    shipping.adapters.flags). Must not raise: when it cannot decide, it answers STANDARD."""

    def level_for(self, *, order_id: str, customer_id: str, address: Address) -> ServiceLevel:
        """The level for a shipment of ``order_id`` to ``address``, booked for ``customer_id``
        (the customer the caller acts for; "" when unknown)."""
