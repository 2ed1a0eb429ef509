"""Payments, their state machine, and the simulated processor's test tokens.

State machine (anything else is FailedPrecondition)::

    authorize ─▶ AUTHORIZED ─capture─▶ CAPTURED ─refund─▶ REFUNDED
            │         └──────void────▶ VOIDED
            └──▶ DECLINED (terminal)

Test tokens follow the Stripe names people know: ``tok_visa`` approves, ``tok_chargeDeclined*``
decline with a Stripe-style decline code as the reason. A well-formed but unknown ``tok_*`` is an
INVALID_ARGUMENT, not a decline: a typo (``tok_vsia``) must surface as a caller bug, not be
mistaken by a saga for a customer's card being refused (Stripe too answers "No such token" as an
invalid request, not as a decline).
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import re
from dataclasses import dataclass

from meshkit.errors import FailedPrecondition, PreconditionViolation, Violations
from meshkit.money import Money, WireMoney, validate_money
from payments.domain.events import (
    PaymentAuthorized,
    PaymentCaptured,
    PaymentDeclined,
    PaymentEvent,
    PaymentRefunded,
    PaymentVoided,
)

# Token -> decline reason ("" approves). Reasons are Stripe decline codes: stable, machine
# readable, and what people who know test cards expect.
TEST_TOKENS: dict[str, str] = {
    "tok_visa": "",
    "tok_mastercard": "",
    "tok_amex": "",
    "tok_chargeDeclined": "generic_decline",
    "tok_chargeDeclinedInsufficientFunds": "insufficient_funds",
    "tok_chargeDeclinedExpiredCard": "expired_card",
    "tok_chargeDeclinedIncorrectCvc": "incorrect_cvc",
}

# The currencies the simulated processor settles. Their minor units (JPY none, the others cents,
# öre, øre, grosz, haléř) are ISO 4217's, from meshkit.money: a processor cannot charge a fraction
# of the smallest coin, so amounts must be whole minor units.
CURRENCIES = frozenset(
    {"AUD", "CAD", "CHF", "CZK", "DKK", "EUR", "GBP", "JPY", "NOK", "PLN", "SEK", "USD"}
)
# The simulated processor's ceiling on one authorization, in whole units of its currency.
MAX_UNITS = 1_000_000_000

_TOKEN = re.compile(r"tok_[A-Za-z0-9_]{1,100}")
MAX_ID_LENGTH = 128
MAX_KEY_LENGTH = 255


class PaymentStatus(enum.Enum):
    """Where a payment stands."""

    AUTHORIZED = "AUTHORIZED"
    DECLINED = "DECLINED"
    CAPTURED = "CAPTURED"
    VOIDED = "VOIDED"
    REFUNDED = "REFUNDED"


@dataclass
class Payment:
    """One authorization attempt for one order, and what happened to it since."""

    payment_id: str
    order_id: str
    amount: Money
    status: PaymentStatus
    decline_reason: str
    created_at: datetime.datetime
    updated_at: datetime.datetime

    @classmethod
    def authorize(
        cls,
        payment_id: str,
        order_id: str,
        amount: Money,
        token: str,
        now: datetime.datetime,
    ) -> tuple[Payment, PaymentEvent]:
        """Ask the simulated processor; a decline is a DECLINED payment, not an error.

        ``token`` must have passed ``validate_token`` (it is in TEST_TOKENS).
        """
        reason = TEST_TOKENS[token]
        if reason:
            payment = cls(payment_id, order_id, amount, PaymentStatus.DECLINED, reason, now, now)
            return payment, PaymentDeclined(payment_id, order_id, amount, reason, now)
        payment = cls(payment_id, order_id, amount, PaymentStatus.AUTHORIZED, "", now, now)
        return payment, PaymentAuthorized(payment_id, order_id, amount, now)

    def capture(self, now: datetime.datetime) -> PaymentCaptured:
        """Settle the authorized amount."""
        self._move("capture", PaymentStatus.AUTHORIZED, PaymentStatus.CAPTURED, now)
        return PaymentCaptured(self.payment_id, self.order_id, self.amount, now)

    def void(self, now: datetime.datetime) -> PaymentVoided:
        """Cancel an authorization that was not captured (use refund once captured)."""
        self._move("void", PaymentStatus.AUTHORIZED, PaymentStatus.VOIDED, now)
        return PaymentVoided(self.payment_id, self.order_id, self.amount, now)

    def refund(self, now: datetime.datetime) -> PaymentRefunded:
        """Give a captured amount back in full (use void before capture)."""
        self._move("refund", PaymentStatus.CAPTURED, PaymentStatus.REFUNDED, now)
        return PaymentRefunded(self.payment_id, self.order_id, self.amount, now)

    def snapshot(self) -> Payment:
        """A copy that later changes to this payment do not affect."""
        return dataclasses.replace(self)

    def _move(
        self,
        action: str,
        source: PaymentStatus,
        target: PaymentStatus,
        now: datetime.datetime,
    ) -> None:
        if self.status is not source:
            state = self.status.value.lower()
            hint = _HINTS.get((action, self.status), "")
            raise FailedPrecondition(
                f"cannot {action} payment {self.payment_id!r}: it is {state}"
                f" ({action} needs an {source.value.lower()} payment){hint}",
                violations=[
                    PreconditionViolation(
                        "PAYMENT_STATUS",
                        self.payment_id,
                        f"is {self.status.value}, {action} needs {source.value}",
                    )
                ],
                reason=f"PAYMENT_{self.status.value}",
                metadata={
                    "payment_id": self.payment_id,
                    "status": self.status.value,
                    "action": action,
                },
            )
        self.status = target
        self.updated_at = now


_HINTS = {
    ("void", PaymentStatus.CAPTURED): "; refund it instead",
    ("refund", PaymentStatus.AUTHORIZED): "; void it instead",
}


def validate_key(violations: Violations, key: str) -> None:
    """An idempotency key is a non-empty string of at most 255 characters."""
    if violations.check(key != "", "idempotency_key", "must not be empty"):
        violations.check(
            len(key) <= MAX_KEY_LENGTH,
            "idempotency_key",
            f"must be at most {MAX_KEY_LENGTH} characters",
        )


def validate_id(violations: Violations, value: str, field: str) -> None:
    """Ids are non-empty, at most 128 characters, without surrounding whitespace."""
    if violations.check(value != "", field, "must not be empty"):
        violations.check(value == value.strip(), field, "must not start or end with whitespace")
        violations.check(
            len(value) <= MAX_ID_LENGTH, field, f"must be at most {MAX_ID_LENGTH} characters"
        )


def validate_token(violations: Violations, token: str) -> None:
    """The token must be one of TEST_TOKENS; the description says what is wrong with it."""
    field = "payment_token"
    if not violations.check(token != "", field, "must not be empty"):
        return
    if not _TOKEN.fullmatch(token):
        violations.add(field, "must be a test token such as 'tok_visa' (tok_ + letters, digits, _)")
    elif token not in TEST_TOKENS:
        violations.add(
            field, f"unknown test token {token!r}; known: {', '.join(sorted(TEST_TOKENS))}"
        )


def validate_amount(violations: Violations, amount: WireMoney | None, field: str) -> Money | None:
    """The positive amount ``amount`` as Money, in a currency the processor settles and at most
    MAX_UNITS; or None after recording every bad subfield of ``field``."""
    money = validate_money(violations, amount, field, currencies=CURRENCIES)
    units_field = f"{field}.units"
    if (
        amount is not None
        and amount.units > MAX_UNITS
        # meshkit's own ceiling (far above this one) already named the field.
        and not any(v.field == units_field for v in violations.items)
    ):
        violations.add(units_field, f"must be at most {MAX_UNITS}")
        return None
    return money


def validate_authorization(key: str, order_id: str, amount: WireMoney | None, token: str) -> Money:
    """The validated amount; raises InvalidArgument naming every bad field of the request."""
    violations = Violations()
    validate_key(violations, key)
    validate_id(violations, order_id, "order_id")
    money = validate_amount(violations, amount, "amount")
    validate_token(violations, token)
    violations.raise_if_any()
    assert money is not None  # no violations means the amount was valid
    return money
