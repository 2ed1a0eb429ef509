"""The events of an order's life, as frozen dataclasses: the order's state is their fold.

Each event carries the order id and when it happened (``occurred_at``, an aware UTC datetime,
meshkit.timestamps). Its position in the order's stream (the version) belongs to the store, not
to the event. Every event is also published (orders.adapters.events maps it to its Avro record,
shop.orders.v1.<Name>).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from meshkit.address import Address
from meshkit.money import Money
from orders.domain.values import OrderLine


@dataclass(frozen=True)
class OrderPlaced:
    """An order was accepted (PENDING); its saga starts."""

    order_id: str
    occurred_at: datetime.datetime
    request_id: str
    customer_id: str
    lines: tuple[OrderLine, ...]
    shipping_address: Address
    total: Money


@dataclass(frozen=True)
class OrderStockReserved:
    """Inventory holds every line of the order (reservation id = order id)."""

    order_id: str
    occurred_at: datetime.datetime


@dataclass(frozen=True)
class OrderPaymentAuthorized:
    """Payments holds the order's total on the payment method."""

    order_id: str
    occurred_at: datetime.datetime
    payment_id: str


@dataclass(frozen=True)
class OrderShipmentCreated:
    """Shipping booked the order's shipment."""

    order_id: str
    occurred_at: datetime.datetime
    shipment_id: str
    tracking_number: str


@dataclass(frozen=True)
class OrderPaymentCaptured:
    """The authorized payment was settled: past this point the saga only goes forward."""

    order_id: str
    occurred_at: datetime.datetime
    payment_id: str


@dataclass(frozen=True)
class OrderConfirmed:
    """Stock committed, payment captured, shipment booked: the order is done."""

    order_id: str
    occurred_at: datetime.datetime


@dataclass(frozen=True)
class OrderCancelled:
    """A step failed and every earlier step was undone; ``reason`` says which and why."""

    order_id: str
    occurred_at: datetime.datetime
    reason: str


OrderEvent = (
    OrderPlaced
    | OrderStockReserved
    | OrderPaymentAuthorized
    | OrderShipmentCreated
    | OrderPaymentCaptured
    | OrderConfirmed
    | OrderCancelled
)
"""Any event of an order."""
