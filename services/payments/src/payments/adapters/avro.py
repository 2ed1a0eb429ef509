"""Domain events -> the Avro records of proto/shop/payments/v1/avro/ (one contract per event class).

Kafka key and ``ce_subject``: the ORDER id, not the payment id. Every event of a payment carries
the same order id, so per-payment order is kept, and a consumer (the orders saga, order views)
also sees every payment of one order in order, e.g. a decline before the retry's authorization.
"""

from __future__ import annotations

from typing import Any

from payments.domain.events import (
    PaymentAuthorized,
    PaymentCaptured,
    PaymentDeclined,
    PaymentEvent,
    PaymentRefunded,
    PaymentVoided,
)
from payments.domain.money import Money

NAMESPACE = "shop.payments.v1"
SOURCE = "/meshkit/payments"
EVENT_TYPES = tuple(
    f"{NAMESPACE}.{cls.__name__}"
    for cls in (
        PaymentAuthorized,
        PaymentDeclined,
        PaymentCaptured,
        PaymentVoided,
        PaymentRefunded,
    )
)


def to_record(event: PaymentEvent) -> tuple[str, dict[str, Any], str]:
    """``(event type full name, Avro record, Kafka key)`` of ``event``."""
    record: dict[str, Any] = {
        "payment_id": event.payment_id,
        "order_id": event.order_id,
        "amount": _money(event.amount),
    }
    if isinstance(event, PaymentDeclined):
        record["decline_reason"] = event.decline_reason
    record["occurred_at"] = event.occurred_at
    return f"{NAMESPACE}.{type(event).__name__}", record, event.order_id


def _money(amount: Money) -> dict[str, Any]:
    return {"units": amount.units, "nanos": amount.nanos, "currency_code": amount.currency_code}
