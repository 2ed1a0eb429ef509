"""The Order aggregate, its value objects and the rules of a valid order. Pure: no IO.

An order is event-sourced: its state is the fold of its events (``Order.from_history``), its
``version`` is the number of events applied, and a change is made by ``record``-ing a new event,
which checks the transition first. The saga (orders.domain.saga) decides which event comes next;
the aggregate refuses any that does not fit the order's lifecycle::

    PENDING --StockReserved, PaymentAuthorized, ShipmentCreated, PaymentCaptured--> PENDING
    PENDING --Confirmed--> CONFIRMED        PENDING --Cancelled(reason)--> CANCELLED
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from meshkit.address import Address, WireAddress, validate_address
from meshkit.errors import FailedPrecondition, Violations, quoted
from meshkit.money import Money, WireMoney, validate_money
from meshkit.timestamps import EPOCH
from orders.domain.events import (
    OrderCancelled,
    OrderConfirmed,
    OrderEvent,
    OrderPaymentAuthorized,
    OrderPaymentCaptured,
    OrderPlaced,
    OrderShipmentCreated,
    OrderStockReserved,
)
from orders.domain.values import OrderLine

MAX_QUANTITY = 2**31 - 1  # quantities travel as int32
MAX_ID = 128  # request_id, customer_id, payment_token, sku, order_id: characters
MAX_LINES = 100
# The mesh keeps an amount as int64 nanos (OrderPlaced's total is Avro long units + int nanos,
# order_views and payments store integers): a round ceiling below 2**63 nanos.
MAX_TOTAL_UNITS = 9_000_000_000


class OrderStatus(enum.Enum):
    """Where an order stands (the proto's OrderStatus without UNSPECIFIED)."""

    PENDING = "PENDING"
    CONFIRMED = "CONFIRMED"
    CANCELLED = "CANCELLED"


@dataclass
class Order:
    """The order aggregate: state folded from events, plus the events recorded but not stored.

    ``version`` counts every applied event (stored or pending); the store appends ``pending``
    with the expected version ``version - len(pending)``, so a concurrent writer is refused.
    """

    order_id: str
    customer_id: str = ""
    request_id: str = ""
    lines: tuple[OrderLine, ...] = ()
    shipping_address: Address | None = None
    total: Money | None = None
    status: OrderStatus = OrderStatus.PENDING
    cancellation_reason: str = ""
    created_at: datetime.datetime = EPOCH
    updated_at: datetime.datetime = EPOCH
    version: int = 0
    stock_reserved: bool = False
    payment_id: str = ""
    payment_captured: bool = False
    shipment_id: str = ""
    tracking_number: str = ""
    pending: list[OrderEvent] = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def place(
        cls,
        order_id: str,
        *,
        request_id: str,
        customer_id: str,
        lines: Sequence[OrderLine],
        shipping_address: Address,
        now: datetime.datetime,
    ) -> Order:
        """A new order with its OrderPlaced event pending. The caller validated the input."""
        order = cls(order_id)
        order.record(
            OrderPlaced(
                order_id=order_id,
                occurred_at=now,
                request_id=request_id,
                customer_id=customer_id,
                lines=tuple(lines),
                shipping_address=shipping_address,
                total=order_total(lines),
            )
        )
        return order

    @classmethod
    def from_history(
        cls, order_id: str, events: Iterable[OrderEvent], base: Order | None = None
    ) -> Order:
        """Fold ``events`` (in version order) onto ``base`` (a snapshot) or a blank order."""
        order = replace(base, pending=[]) if base is not None else cls(order_id)
        for event in events:
            order.apply(event)
        return order

    @property
    def is_final(self) -> bool:
        """True once CONFIRMED or CANCELLED: no further event is accepted."""
        return self.status is not OrderStatus.PENDING

    def record(self, event: OrderEvent) -> None:
        """Check that ``event`` may happen now, apply it and keep it pending for the store.

        Raises FailedPrecondition when the transition is not allowed (e.g. anything after the
        order was confirmed or cancelled).
        """
        self._check(event)
        self.apply(event)
        self.pending.append(event)

    def _check(self, event: OrderEvent) -> None:
        placed = self.version > 0
        if isinstance(event, OrderPlaced):
            ok, why = not placed, "it was placed already"
        else:
            ok, why = placed and not self.is_final, f"it is {self.status.value.lower()}"
            if not placed:
                why = "it was never placed"
        if not ok:
            raise FailedPrecondition(
                f"order {self.order_id!r} cannot take {type(event).__name__}: {why}",
                reason=f"ORDER_{self.status.value}",
            )

    def apply(self, event: OrderEvent) -> None:
        """Fold one stored event into the state (no checks: history is fact)."""
        match event:
            case OrderPlaced():
                self.customer_id = event.customer_id
                self.request_id = event.request_id
                self.lines = event.lines
                self.shipping_address = event.shipping_address
                self.total = event.total
                self.status = OrderStatus.PENDING
                self.created_at = event.occurred_at
            case OrderStockReserved():
                self.stock_reserved = True
            case OrderPaymentAuthorized():
                self.payment_id = event.payment_id
            case OrderShipmentCreated():
                self.shipment_id = event.shipment_id
                self.tracking_number = event.tracking_number
            case OrderPaymentCaptured():
                self.payment_captured = True
            case OrderConfirmed():
                self.status = OrderStatus.CONFIRMED
            case OrderCancelled():
                self.status = OrderStatus.CANCELLED
                self.cancellation_reason = event.reason
        self.updated_at = event.occurred_at
        self.version += 1


def order_total(lines: Sequence[OrderLine]) -> Money:
    """Sum of quantity x unit price; all lines share the first line's currency."""
    total = Money.zero(lines[0].unit_price.currency_code if lines else "")
    for line in lines:
        total += line.total
    return total


@dataclass(frozen=True)
class LineRequest:
    """One line as a PlaceOrder caller sent it: its price is the wire's, not checked yet."""

    sku: str
    quantity: int
    unit_price: WireMoney


def validate_place_order(
    *,
    request_id: str,
    customer_id: str,
    lines: Sequence[LineRequest],
    payment_token: str,
    shipping_address: WireAddress | None,
) -> tuple[tuple[OrderLine, ...], Address]:
    """The order's lines and address as domain values; raises InvalidArgument naming every bad
    field of a PlaceOrder request (paths as in the proto).

    Prices follow meshkit.money (ISO 4217 codes and minor units), the address meshkit.address
    (each country's own rules: no postal code where the country has none), the same rules as
    every service of the mesh.
    """
    v = Violations()
    for name, value in (
        ("request_id", request_id),
        ("customer_id", customer_id),
        ("payment_token", payment_token),
    ):
        if v.check(value.strip() != "", name, "must not be empty"):
            v.check(len(value) <= MAX_ID, name, f"must be at most {MAX_ID} characters")
    v.check(len(lines) > 0, "lines", "must have at least one line")
    v.check(len(lines) <= MAX_LINES, "lines", f"must have at most {MAX_LINES} lines")
    currency = lines[0].unit_price.currency_code if lines else ""
    checked: list[OrderLine] = []
    for i, line in enumerate(lines):
        where = f"lines[{i}]"
        if v.check(line.sku.strip() != "", f"{where}.sku", "must not be empty"):
            v.check(len(line.sku) <= MAX_ID, f"{where}.sku", f"must be at most {MAX_ID} characters")
        v.check(line.quantity > 0, f"{where}.quantity", "must be positive")
        v.check(line.quantity <= MAX_QUANTITY, f"{where}.quantity", f"must be <= {MAX_QUANTITY}")
        price = validate_money(v, line.unit_price, f"{where}.unit_price", positive=False)
        if price is None:
            continue
        if i > 0:
            v.check(
                price.currency_code == currency,
                f"{where}.unit_price.currency_code",
                f"must be {quoted(currency)} like lines[0]: an order has one currency",
            )
        if v.check(price.total_nanos >= 0, f"{where}.unit_price", "must not be negative"):
            checked.append(OrderLine(line.sku, line.quantity, price))
    if checked and not v.items:  # every line is valid, all in one currency
        total = order_total(checked)
        v.check(
            abs(total.units) <= MAX_TOTAL_UNITS,
            "lines",
            f"the order's total (quantity x unit_price over the lines) must be at most"
            f" {MAX_TOTAL_UNITS} units of its currency",
        )
    address = validate_address(v, shipping_address, "shipping_address")
    v.raise_if_any()
    assert address is not None and len(checked) == len(lines)  # or a violation was raised
    return tuple(checked), address
