"""What the payment use cases need from the outside world, as Protocols (adapters implement)."""

from __future__ import annotations

from typing import Protocol

from meshkit.ports import IdempotencyStore, IdempotentResult, UnitOfWorkPort
from payments.domain.events import PaymentEvent
from payments.domain.model import Payment


class PaymentRepository(Protocol):
    """Payments of the current unit of work."""

    def get(self, payment_id: str) -> Payment | None:
        """The payment, or None when unknown."""

    def add(self, payment: Payment) -> None:
        """Store a new payment."""

    def save(self, payment: Payment) -> None:
        """Store a changed payment's status and updated_at."""


class UnitOfWork(UnitOfWorkPort[PaymentEvent], Protocol):
    """One transaction over payments and idempotency records; ``publish`` its events (meshkit's
    port). Units of work are serialised (SQLite ``BEGIN IMMEDIATE``), so two calls with one new
    idempotency key cannot both act.
    """

    @property
    def payments(self) -> PaymentRepository:
        """Payments, inside this transaction."""

    @property
    def idempotency(self) -> IdempotencyStore[Payment]:
        """Recorded results by idempotency key, inside this transaction."""


PaymentResult = IdempotentResult[Payment]
"""The first answer under an idempotency key: the payment as that call returned it."""
