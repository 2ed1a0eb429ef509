"""What the use cases need from the outside world, as Protocols (adapters implement them)."""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import Protocol, Self

from inventory.domain.events import InventoryEvent
from inventory.domain.model import Reservation, StockItem


class StockRepository(Protocol):
    """Stock items of the current unit of work."""

    def get(self, sku: str) -> StockItem | None:
        """The item, or None for an unknown SKU."""

    def get_many(self, skus: Iterable[str]) -> dict[str, StockItem]:
        """The known items among ``skus``, by SKU."""

    def save(self, item: StockItem) -> None:
        """Insert or update ``item``."""


class ReservationRepository(Protocol):
    """Reservations of the current unit of work."""

    def get(self, reservation_id: str) -> Reservation | None:
        """The reservation, or None."""

    def add(self, reservation: Reservation) -> None:
        """Store a new reservation."""

    def save(self, reservation: Reservation) -> None:
        """Store a changed reservation's status."""


class UnitOfWork(Protocol):
    """One atomic transaction: everything done through it commits together or not at all.

    ``with uow:`` begins; leaving the block normally commits, an exception rolls back.
    """

    @property
    def stock(self) -> StockRepository:
        """Stock items, inside this transaction."""

    @property
    def reservations(self) -> ReservationRepository:
        """Reservations, inside this transaction."""

    def publish(self, event: InventoryEvent) -> None:
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
