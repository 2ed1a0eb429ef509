"""What the use cases need from the outside world, as Protocols (adapters implement them)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from inventory.domain.events import InventoryEvent
from inventory.domain.model import Reservation, StockItem
from meshkit.ports import UnitOfWorkPort


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


class UnitOfWork(UnitOfWorkPort[InventoryEvent], Protocol):
    """One transaction over stock and reservations; ``publish`` its events (meshkit's port)."""

    @property
    def stock(self) -> StockRepository:
        """Stock items, inside this transaction."""

    @property
    def reservations(self) -> ReservationRepository:
        """Reservations, inside this transaction."""
