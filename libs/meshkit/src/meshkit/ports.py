"""The ports every service's application layer shares, as Protocols (adapters implement them).

A service's own unit of work extends ``UnitOfWorkPort`` with its repositories::

    class UnitOfWork(UnitOfWorkPort[InventoryEvent], Protocol):
        @property
        def stock(self) -> StockRepository: ...

Pure: importing this pulls in no storage, transport or generated code, so ``app/`` may use it.
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, Self, TypeVar

E_contra = TypeVar("E_contra", contravariant=True)


class UnitOfWorkPort(Protocol[E_contra]):
    """One atomic transaction: everything done through it commits together or not at all.

    ``with uow:`` begins; leaving the block normally commits, an exception rolls back.
    ``meshkit.db.UnitOfWork`` is the SQLite implementation.
    """

    def publish(self, event: E_contra, *, event_id: str | None = None) -> None:
        """Record ``event`` to be published: it exists exactly when this unit of work commits
        (the transactional outbox), and an event its contract refuses fails the whole unit."""

    def __enter__(self) -> Self:
        """Begin the transaction."""

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Commit, or roll back when the block raised."""
