"""Payments' events on the wire: each domain event and its Avro record on payments.events.v1
(the contracts in proto/shop/payments/v1/avro/, one record per event class, same name)."""

from __future__ import annotations

from meshkit.events import EventMap
from payments.domain.events import (
    PaymentAuthorized,
    PaymentCaptured,
    PaymentDeclined,
    PaymentEvent,
    PaymentRefunded,
    PaymentVoided,
)

EVENTS: EventMap[PaymentEvent] = EventMap("shop.payments.v1")
"""Kafka key and ``ce_subject``: the ORDER id, not the payment id. Every event of a payment carries
the same order id, so per-payment order is kept, and a consumer (the orders saga, order views)
also sees every payment of one order in order, e.g. a decline before the retry's authorization."""
EVENTS.add(PaymentAuthorized, key=lambda e: e.order_id)
EVENTS.add(PaymentDeclined, key=lambda e: e.order_id)
EVENTS.add(PaymentCaptured, key=lambda e: e.order_id)
EVENTS.add(PaymentVoided, key=lambda e: e.order_id)
EVENTS.add(PaymentRefunded, key=lambda e: e.order_id)
