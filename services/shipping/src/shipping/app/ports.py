"""What the use cases need from the outside world, as Protocols (adapters implement them)."""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self

from shipping.domain.events import ShippingEvent
from shipping.domain.model import Shipment


@dataclass(frozen=True)
class IdempotencyRecord:
    """The first outcome of a mutating call, kept under its caller-chosen key.

    ``operation`` and ``fingerprint`` identify the request (everything but the key), ``result`` is
    the shipment exactly as the first call returned it: a replay answers with this snapshot.
    """

    key: str
    operation: str
    fingerprint: str
    result: Shipment


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


class IdempotencyStore(Protocol):
    """Idempotency records of the current unit of work."""

    def get(self, key: str) -> IdempotencyRecord | None:
        """The record of ``key``, or None when the key was never used successfully."""

    def add(self, record: IdempotencyRecord) -> None:
        """Store a new record (its key must be new)."""


class UnitOfWork(Protocol):
    """One atomic transaction: state, idempotency records and events commit together or not at all.

    ``with uow:`` begins; leaving the block normally commits, an exception rolls back.
    """

    @property
    def shipments(self) -> ShipmentRepository:
        """Shipments, inside this transaction."""

    @property
    def idempotency(self) -> IdempotencyStore:
        """Idempotency records, inside this transaction."""

    def publish(self, event: ShippingEvent) -> None:
        """Record ``event`` to be published: it exists exactly when this unit of work commits
        (the transactional outbox), and an event the contract refuses fails the whole unit."""

    def __enter__(self) -> Self:
        """Begin the transaction."""

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Commit, or roll back when the block raised."""
