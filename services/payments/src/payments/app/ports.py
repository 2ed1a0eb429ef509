"""What the payment use cases need from the outside world, as Protocols (adapters implement)."""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self

from payments.domain.events import PaymentEvent
from payments.domain.model import Payment


@dataclass(frozen=True)
class IdempotentResult:
    """The first answer given under an idempotency key, kept to answer every replay.

    ``fingerprint`` identifies the request (operation and its arguments), so the same key reused
    for a different request is recognised. ``payment`` is the payment as that first call
    returned it, not as it is now: a replay gets the same answer even after later changes.
    """

    key: str
    operation: str
    fingerprint: str
    payment: Payment


class PaymentRepository(Protocol):
    """Payments of the current unit of work."""

    def get(self, payment_id: str) -> Payment | None:
        """The payment, or None when unknown."""

    def add(self, payment: Payment) -> None:
        """Store a new payment."""

    def save(self, payment: Payment) -> None:
        """Store a changed payment's status and updated_at."""


class IdempotencyStore(Protocol):
    """First results by idempotency key, in the same transaction as the work they record."""

    def get(self, key: str) -> IdempotentResult | None:
        """The recorded result of ``key``, or None when the key is new."""

    def add(self, result: IdempotentResult) -> None:
        """Record the first result of a key."""


class EventOutbox(Protocol):
    """Events to publish: they exist exactly when the unit of work commits (an outbox)."""

    def add(self, event: PaymentEvent) -> None:
        """Publish ``event`` if, and only if, this unit of work commits."""


class UnitOfWork(Protocol):
    """One atomic transaction: everything done through it commits together or not at all.

    ``with uow:`` begins; leaving the block normally commits, an exception rolls back. Units of
    work are serialised (SQLite ``BEGIN IMMEDIATE``), so two calls with one new idempotency key
    cannot both act.
    """

    @property
    def payments(self) -> PaymentRepository:
        """Payments, inside this transaction."""

    @property
    def idempotency(self) -> IdempotencyStore:
        """Recorded results by idempotency key, inside this transaction."""

    @property
    def events(self) -> EventOutbox:
        """The outbox, inside this transaction."""

    def __enter__(self) -> Self:
        """Begin the transaction."""

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Commit, or roll back when the block raised."""
