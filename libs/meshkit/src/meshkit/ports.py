"""The ports every service's application layer shares, as Protocols (adapters implement them).

A service's own unit of work extends ``UnitOfWorkPort`` with its repositories::

    class UnitOfWork(UnitOfWorkPort[InventoryEvent], Protocol):
        @property
        def stock(self) -> StockRepository: ...

Pure: importing this pulls in no storage, transport or generated code, so ``app/`` may use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Generic, Protocol, Self, TypeVar

if TYPE_CHECKING:
    from meshkit.audit import AuditEntry

E_contra = TypeVar("E_contra", contravariant=True)


class UnitOfWorkPort(Protocol[E_contra]):
    """One atomic transaction: everything done through it commits together or not at all.

    ``with uow:`` begins; leaving the block normally commits, an exception rolls back.
    ``meshkit.db.UnitOfWork`` is the SQLite implementation.
    """

    def publish(self, event: E_contra | AuditEntry, *, event_id: str | None = None) -> None:
        """Record ``event`` to be published: it exists exactly when this unit of work commits
        (the transactional outbox), and an event its contract refuses fails the whole unit.
        An ``AuditEntry`` becomes an audit record (meshkit.audit) the same way."""

    def __enter__(self) -> Self:
        """Begin the transaction."""

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Commit, or roll back when the block raised."""


R = TypeVar("R")


@dataclass(frozen=True)
class IdempotentResult(Generic[R]):
    """The first answer given under an idempotency key, kept to answer every replay of it.

    ``operation`` and ``fingerprint`` identify the request (everything but the key), so the same
    key reused for a different request is recognised. ``result`` is what that first call returned,
    as it returned it: a replay gets the same answer even after later changes.
    """

    key: str
    operation: str
    fingerprint: str
    result: R


class IdempotencyStore(Protocol[R]):
    """First results by idempotency key, in the same transaction as the work they record.

    Units of work are serialised (SQLite ``BEGIN IMMEDIATE``), so two calls with one new key
    cannot both act. A store may forget a key after its retention window (the contract says how
    long); a replay after that is a new request.
    """

    def get(self, key: str) -> IdempotentResult[R] | None:
        """The recorded result of ``key``, or None when the key is new (or forgotten)."""

    def add(self, record: IdempotentResult[R]) -> None:
        """Record the first result of a key (the key must be new)."""
