"""The payment use cases: each mutating call runs in one unit of work (one transaction) that
stores the state change, its event (outbox) and the idempotency record together.

Idempotency: keys are global across operations (as Stripe's are). A key seen before with the
same request returns the recorded first result and does nothing else; with a different request
(other operation, payment, order, amount or token) it is AlreadyExists. Requests that fail
(InvalidArgument, NotFound, FailedPrecondition) record nothing, so the caller may fix and retry
under the same key. Because the record commits with the work, a crash either lost both or kept
both: a retry after kill -9 never acts twice.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import uuid
from collections.abc import Callable

from meshkit import timestamps
from meshkit.errors import AlreadyExists, NotFound, Violations
from meshkit.money import WireMoney
from payments.app.ports import PaymentResult, UnitOfWork
from payments.domain.events import PaymentEvent
from payments.domain.model import Payment, validate_authorization, validate_id, validate_key

Clock = Callable[[], datetime.datetime]


def new_payment_id() -> str:
    """A fresh, unguessable payment id (``pay_`` + 24 hex digits)."""
    return f"pay_{uuid.uuid4().hex[:24]}"


class Payments:
    """Authorize, capture, void, refund and read payments.

    Thread safety: safe to share; every call opens its own unit of work. Idempotency: see the
    module docstring.
    """

    def __init__(
        self,
        unit_of_work: Callable[[], UnitOfWork],
        *,
        clock: Clock = timestamps.now,
        new_id: Callable[[], str] = new_payment_id,
    ) -> None:
        self._uow = unit_of_work
        self._clock = clock
        self._new_id = new_id

    def authorize(
        self, idempotency_key: str, order_id: str, amount: WireMoney | None, payment_token: str
    ) -> Payment:
        """Hold ``amount`` (as the request carried it, unchecked; None when absent) for
        ``order_id``; returns the payment, AUTHORIZED or DECLINED."""
        money = validate_authorization(idempotency_key, order_id, amount, payment_token)
        fingerprint = _fingerprint(
            "authorize", order_id, money.total_nanos, money.currency_code, payment_token
        )
        with self._uow() as uow:
            prior = uow.idempotency.get(idempotency_key)
            if prior is not None:
                return _replay(prior, "authorize", fingerprint)
            payment, event = Payment.authorize(
                self._new_id(), order_id, money, payment_token, self._now()
            )
            uow.payments.add(payment)
            _record(uow, PaymentResult(idempotency_key, "authorize", fingerprint, payment), event)
        return payment

    def capture(self, idempotency_key: str, payment_id: str) -> Payment:
        """Settle an AUTHORIZED payment."""
        return self._transition("capture", idempotency_key, payment_id, Payment.capture)

    def void(self, idempotency_key: str, payment_id: str) -> Payment:
        """Cancel an AUTHORIZED payment (the compensation of an authorization)."""
        return self._transition("void", idempotency_key, payment_id, Payment.void)

    def refund(self, idempotency_key: str, payment_id: str) -> Payment:
        """Give back a CAPTURED payment (the compensation of a capture)."""
        return self._transition("refund", idempotency_key, payment_id, Payment.refund)

    def get(self, payment_id: str) -> Payment:
        """The payment as it is now; NotFound when unknown."""
        violations = Violations()
        validate_id(violations, payment_id, "payment_id")
        violations.raise_if_any()
        with self._uow() as uow:
            return _existing(uow, payment_id)

    def _transition(
        self,
        operation: str,
        idempotency_key: str,
        payment_id: str,
        change: Callable[[Payment, datetime.datetime], PaymentEvent],
    ) -> Payment:
        violations = Violations()
        validate_key(violations, idempotency_key)
        validate_id(violations, payment_id, "payment_id")
        violations.raise_if_any()
        fingerprint = _fingerprint(operation, payment_id)
        with self._uow() as uow:
            prior = uow.idempotency.get(idempotency_key)
            if prior is not None:
                return _replay(prior, operation, fingerprint)
            payment = _existing(uow, payment_id)
            event = change(payment, self._now())
            uow.payments.save(payment)
            _record(uow, PaymentResult(idempotency_key, operation, fingerprint, payment), event)
        return payment

    def _now(self) -> datetime.datetime:
        # Aware UTC always: the store keeps microseconds since the epoch, the wire a Timestamp.
        return self._clock().astimezone(datetime.UTC)


def _record(uow: UnitOfWork, result: PaymentResult, event: PaymentEvent) -> None:
    """Outbox row and idempotency record, in the transaction of the change they describe."""
    uow.publish(event)
    # A snapshot: the record keeps this call's answer even when the payment changes later.
    uow.idempotency.add(dataclasses.replace(result, result=result.result.snapshot()))


def _existing(uow: UnitOfWork, payment_id: str) -> Payment:
    payment = uow.payments.get(payment_id)
    if payment is None:
        raise NotFound(
            f"unknown payment {payment_id!r}",
            reason="PAYMENT_NOT_FOUND",
            metadata={"payment_id": payment_id},
        )
    return payment


def _replay(prior: PaymentResult, operation: str, fingerprint: str) -> Payment:
    if prior.fingerprint != fingerprint:
        raise AlreadyExists(
            f"idempotency key {prior.key!r} was already used for a different request"
            f" ({prior.operation} of payment {prior.result.payment_id!r}); use a new key"
            " for a new request",
            reason="IDEMPOTENCY_KEY_REUSED",
            metadata={
                "idempotency_key": prior.key,
                "operation": prior.operation,
                "payment_id": prior.result.payment_id,
            },
        )
    return prior.result.snapshot()


def _fingerprint(operation: str, *arguments: object) -> str:
    """A stable digest of the request: equal exactly when operation and arguments are equal."""
    canonical = json.dumps([operation, *arguments], separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()
