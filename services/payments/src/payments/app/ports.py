"""What the payment use cases need from the outside world, as Protocols (adapters implement)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from meshkit.ports import UnitOfWorkPort
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


class UnitOfWork(UnitOfWorkPort[PaymentEvent], Protocol):
    """One transaction over payments and idempotency records; ``publish`` its events (meshkit's
    port). Units of work are serialised (SQLite ``BEGIN IMMEDIATE``), so two calls with one new
    idempotency key cannot both act.
    """

    @property
    def payments(self) -> PaymentRepository:
        """Payments, inside this transaction."""

    @property
    def idempotency(self) -> IdempotencyStore:
        """Recorded results by idempotency key, inside this transaction."""
