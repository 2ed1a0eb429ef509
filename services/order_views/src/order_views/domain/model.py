"""The order read model and the pure projector that folds the shop's events into it.

Events reach order_views from four topics (orders, payments, shipping, inventory) in no relative
order: Kafka orders events per key within one topic only. So every piece of an order's view is
kept so that the order of arrival across topics does not matter:

- the summary's status follows the orders stream's version (``<order_id>:<version>`` in the
  event id): an event older than the version already applied never changes it;
- payment and shipment state only move forward along their ranks (AUTHORIZED < CAPTURED <
  VOIDED/REFUNDED/DECLINED; BOOKED < CANCELLED), whichever topic says so first;
- the timeline is a set of entries keyed by event id, shown sorted by time.

A payment event that arrives before its OrderPlaced creates a record that is not ``placed`` yet:
queries do not show it until the order itself has been projected. Applying the same event twice
changes nothing (the consumer's inbox already drops redeliveries; this makes a replay into a
fresh copy safe on its own too). Events of a type the projector does not know are ignored.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from meshkit.address import Address
from meshkit.money import Money
from meshkit.timestamps import EPOCH


class OrderStatus(enum.Enum):
    """Where an order stands (the proto's OrderStatus without UNSPECIFIED)."""

    PENDING = "PENDING"
    CONFIRMED = "CONFIRMED"
    CANCELLED = "CANCELLED"


@dataclass(frozen=True)
class Line:
    """One order line."""

    sku: str
    quantity: int
    unit_price: Money


@dataclass(frozen=True)
class Fact:
    """An event as the projector sees it, free of any transport.

    ``id`` is the CloudEvents id (for orders events ``<order_id>:<version>``), ``type`` the Avro
    full name, ``data`` the decoded record, ``occurred_at`` when it happened (aware UTC).
    """

    id: str
    type: str
    data: Mapping[str, Any]
    occurred_at: datetime.datetime


@dataclass(frozen=True)
class TimelineEntry:
    """One thing that happened to an order (unique per order by ``event_id``).

    Timelines sort by ``occurred_at``, then ``sequence`` (the orders stream's version; 0 for
    other contexts' events), then ``event_id``: deterministic whatever the arrival order, and at
    equal times a participant's event (stock committed) comes before the orders event that
    records its outcome (order confirmed), as it happened.
    """

    order_id: str
    event_id: str
    occurred_at: datetime.datetime
    event_type: str
    description: str
    sequence: int = 0


@dataclass(frozen=True)
class OrderRecord:
    """Everything the read model keeps about one order (one row of the summary table).

    ``version`` is the highest orders-stream version applied (the read-your-writes position);
    ``placed`` is False until OrderPlaced has been projected (until then the record only holds
    what other contexts said about the order, and queries do not show it).
    """

    order_id: str
    placed: bool = False
    customer_id: str = ""
    status: OrderStatus = OrderStatus.PENDING
    total: Money | None = None
    lines: tuple[Line, ...] = ()
    shipping_address: Address | None = None
    created_at: datetime.datetime = EPOCH
    updated_at: datetime.datetime = EPOCH
    cancellation_reason: str = ""
    version: int = 0
    payment_state: str = ""
    shipment_state: str = ""

    @property
    def skus(self) -> tuple[str, ...]:
        """The distinct SKUs ordered, in line order."""
        return tuple(dict.fromkeys(line.sku for line in self.lines))


@dataclass(frozen=True)
class Projected:
    """What one event did to one order: its record after the event, the timeline entry to add
    (None when the event is not shown on the timeline), and whether the search index must
    (re)index the order (its searchable text became known)."""

    record: OrderRecord
    entry: TimelineEntry | None = None
    reindex: bool = False


ORDERS = "shop.orders.v1."
PAYMENTS = "shop.payments.v1."
SHIPPING = "shop.shipping.v1."
INVENTORY = "shop.inventory.v1."

# Payment and shipment states only move up their rank, so their events may arrive in any order.
PAYMENT_RANK = {"AUTHORIZED": 1, "CAPTURED": 2, "VOIDED": 3, "REFUNDED": 3, "DECLINED": 3}
SHIPMENT_RANK = {"BOOKED": 1, "CANCELLED": 2}


@dataclass(frozen=True)
class _Rule:
    """How one event type changes an order: the timeline sentence (None: not on the timeline;
    the orders stream already has its mirror, e.g. PaymentAuthorized ~ OrderPaymentAuthorized),
    the payment or shipment state it reaches, the order status it sets."""

    describe: Any = None  # Callable[[Mapping[str, Any]], str] | None
    payment: str = ""
    shipment: str = ""
    status: OrderStatus | None = None
    field_order_id: str = "order_id"


def _placed(data: Mapping[str, Any]) -> str:
    lines = data.get("lines") or []
    total = _money(data.get("total"))
    count = len(lines)
    return f"order placed: {count} line{'s' if count != 1 else ''}" + (
        f", {total}" if total else ""
    )


RULES: dict[str, _Rule] = {
    ORDERS + "OrderPlaced": _Rule(_placed, status=OrderStatus.PENDING),
    ORDERS + "OrderStockReserved": _Rule(lambda d: "stock reserved"),
    ORDERS + "OrderPaymentAuthorized": _Rule(lambda d: "payment authorized", payment="AUTHORIZED"),
    ORDERS + "OrderShipmentCreated": _Rule(
        lambda d: f"shipment booked (tracking {d.get('tracking_number', '')})", shipment="BOOKED"
    ),
    ORDERS + "OrderPaymentCaptured": _Rule(lambda d: "payment captured", payment="CAPTURED"),
    ORDERS + "OrderConfirmed": _Rule(lambda d: "order confirmed", status=OrderStatus.CONFIRMED),
    ORDERS + "OrderCancelled": _Rule(
        lambda d: f"order cancelled: {d.get('reason', '')}", status=OrderStatus.CANCELLED
    ),
    PAYMENTS + "PaymentAuthorized": _Rule(payment="AUTHORIZED"),
    PAYMENTS + "PaymentCaptured": _Rule(payment="CAPTURED"),
    PAYMENTS + "PaymentDeclined": _Rule(
        lambda d: f"payment declined ({d.get('decline_reason', '')})", payment="DECLINED"
    ),
    PAYMENTS + "PaymentVoided": _Rule(
        lambda d: "payment voided (nothing charged)", payment="VOIDED"
    ),
    PAYMENTS + "PaymentRefunded": _Rule(lambda d: "payment refunded", payment="REFUNDED"),
    SHIPPING + "ShipmentCreated": _Rule(shipment="BOOKED"),
    SHIPPING + "ShipmentCancelled": _Rule(lambda d: "shipment cancelled", shipment="CANCELLED"),
    INVENTORY + "StockReserved": _Rule(field_order_id="reservation_id"),
    INVENTORY + "ReservationReleased": _Rule(
        lambda d: "stock released", field_order_id="reservation_id"
    ),
    INVENTORY + "ReservationCommitted": _Rule(
        lambda d: "stock committed", field_order_id="reservation_id"
    ),
}
"""Every event type the projector applies; any other type is ignored (e.g. StockSet)."""

PROJECTED_TYPES: frozenset[str] = frozenset(RULES)


def order_id_of(fact: Fact) -> str | None:
    """The order ``fact`` is about, or None when the projector does not apply its type."""
    rule = RULES.get(fact.type)
    if rule is None:
        return None
    order_id = fact.data.get(rule.field_order_id)
    return order_id if isinstance(order_id, str) and order_id else None


def orders_version(event_id: str) -> int | None:
    """The version in an orders event id ``<order_id>:<version>``; None if it has none."""
    _, sep, tail = event_id.rpartition(":")
    return int(tail) if sep and tail.isdigit() else None


def project(record: OrderRecord | None, fact: Fact) -> Projected | None:
    """The order's record after ``fact`` (a new record when ``record`` is None), or None when
    the projector does not apply ``fact``'s type or it names no order. Pure and deterministic;
    applying an event already applied (same id) returns the record unchanged (``record``
    itself)."""
    rule = RULES.get(fact.type)
    if rule is None:
        return None
    order_id = fact.data.get(rule.field_order_id)
    if not isinstance(order_id, str) or not order_id:
        return None
    before = record or OrderRecord(order_id)
    # What the event changes, gathered first and applied in one ``replace`` (the projector runs
    # once per consumed event: each replace builds a whole record).
    changes: dict[str, Any] = {}
    reindex = False
    sequence = 0
    if fact.type.startswith(ORDERS):
        version = orders_version(fact.id)
        sequence = version or 0
        # What OrderPlaced says never changes, so it applies whenever it comes; the status
        # only moves with the stream's version (an older event never overrides a newer one).
        if fact.type == ORDERS + "OrderPlaced" and not before.placed:
            changes.update(_placed_changes(fact))
            reindex = True
        if version is None or version > before.version:
            if version is not None:
                changes["version"] = version
            if rule.status is not None and rule.status is not OrderStatus.PENDING:
                changes["status"] = rule.status
            if fact.type == ORDERS + "OrderCancelled":
                changes["cancellation_reason"] = str(fact.data.get("reason", ""))
    if rule.payment and _rank(PAYMENT_RANK, rule.payment) > _rank(
        PAYMENT_RANK, before.payment_state
    ):
        changes["payment_state"] = rule.payment
    if rule.shipment and _rank(SHIPMENT_RANK, rule.shipment) > _rank(
        SHIPMENT_RANK, before.shipment_state
    ):
        changes["shipment_state"] = rule.shipment
    after = before
    if any(getattr(before, name) != value for name, value in changes.items()):
        changes["updated_at"] = max(before.updated_at, fact.occurred_at)
        after = replace(before, **changes)
    entry = None
    if rule.describe is not None:
        entry = TimelineEntry(
            order_id,
            fact.id,
            fact.occurred_at,
            fact.type,
            str(rule.describe(fact.data)),
            sequence,
        )
    return Projected(after, entry, reindex)


def _placed_changes(fact: Fact) -> dict[str, Any]:
    """What OrderPlaced sets on the record."""
    data = fact.data
    lines = tuple(
        Line(str(line["sku"]), int(line["quantity"]), _money(line["unit_price"]) or Money.zero(""))
        for line in data.get("lines") or []
    )
    return {
        "placed": True,
        "customer_id": str(data.get("customer_id", "")),
        "total": _money(data.get("total")),
        "lines": lines,
        "shipping_address": Address.from_record(data.get("shipping_address") or {}),
        "created_at": fact.occurred_at,
    }


def _money(raw: Any) -> Money | None:
    return Money.from_record(raw) if isinstance(raw, Mapping) else None


def _rank(ranks: Mapping[str, int], state: str) -> int:
    return ranks.get(state, 0)


@dataclass(frozen=True)
class OrderView:
    """One order as GetOrderView shows it: its record and its timeline, oldest first."""

    record: OrderRecord
    timeline: tuple[TimelineEntry, ...] = field(default=())
