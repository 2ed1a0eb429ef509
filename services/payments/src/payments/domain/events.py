"""What happened to a payment, as immutable facts (one per state change).

Adapters map these to the Avro contracts in proto/shop/payments/v1/avro/ (one record per class,
same name); the domain never sees Avro.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from meshkit.money import Money


@dataclass(frozen=True)
class PaymentAuthorized:
    """The amount is now held on the payment method."""

    payment_id: str
    order_id: str
    amount: Money
    occurred_at: datetime.datetime


@dataclass(frozen=True)
class PaymentDeclined:
    """The processor refused the authorization; ``decline_reason`` says why."""

    payment_id: str
    order_id: str
    amount: Money
    decline_reason: str
    occurred_at: datetime.datetime


@dataclass(frozen=True)
class PaymentCaptured:
    """An authorized amount was settled."""

    payment_id: str
    order_id: str
    amount: Money
    occurred_at: datetime.datetime


@dataclass(frozen=True)
class PaymentVoided:
    """An authorization was cancelled before capture; nothing was charged."""

    payment_id: str
    order_id: str
    amount: Money
    occurred_at: datetime.datetime


@dataclass(frozen=True)
class PaymentRefunded:
    """A captured amount was given back in full."""

    payment_id: str
    order_id: str
    amount: Money
    occurred_at: datetime.datetime


PaymentEvent = (
    PaymentAuthorized | PaymentDeclined | PaymentCaptured | PaymentVoided | PaymentRefunded
)
