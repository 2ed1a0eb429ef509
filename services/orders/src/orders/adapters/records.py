"""Order events <-> their records: the Avro records of proto/shop/orders/v1/avro (also what the
event store keeps as JSON and ListOrderEvents shows), and order snapshots as JSON.

A record's ``occurred_at`` is unix milliseconds (Avro timestamp-millis); the event store keeps
the exact float time in its own column, so ``as_of`` reads are not rounded.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any

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
from orders.domain.model import Order, OrderStatus
from orders.domain.values import Address, Money, OrderLine

NAMESPACE = "shop.orders.v1"

_TYPES: dict[type[Any], str] = {
    cls: f"{NAMESPACE}.{cls.__name__}"
    for cls in (
        OrderPlaced,
        OrderStockReserved,
        OrderPaymentAuthorized,
        OrderShipmentCreated,
        OrderPaymentCaptured,
        OrderConfirmed,
        OrderCancelled,
    )
}
EVENT_TYPES = frozenset(_TYPES.values())
"""The Avro full names of every order event (== CloudEvents ce_type)."""


def event_type(event: OrderEvent) -> str:
    """The Avro full name of ``event``'s record, e.g. ``shop.orders.v1.OrderPlaced``."""
    return _TYPES[type(event)]


def millis(seconds: float) -> int:
    """Unix seconds as whole milliseconds (Avro timestamp-millis)."""
    return round(seconds * 1000)


def _money(money: Money) -> dict[str, Any]:
    return {"currency_code": money.currency_code, "units": money.units, "nanos": money.nanos}


def _money_from(data: Mapping[str, Any]) -> Money:
    return Money(data["currency_code"], int(data["units"]), int(data["nanos"]))


def _address(address: Address) -> dict[str, Any]:
    return {
        "name": address.name,
        "line1": address.line1,
        "line2": address.line2,
        "city": address.city,
        "postal_code": address.postal_code,
        "country_code": address.country_code,
    }


def _address_from(data: Mapping[str, Any]) -> Address:
    return Address(
        name=data["name"],
        line1=data["line1"],
        line2=data.get("line2", ""),
        city=data["city"],
        postal_code=data["postal_code"],
        country_code=data["country_code"],
    )


def _line(line: OrderLine) -> dict[str, Any]:
    return {"sku": line.sku, "quantity": line.quantity, "unit_price": _money(line.unit_price)}


def _line_from(data: Mapping[str, Any]) -> OrderLine:
    return OrderLine(data["sku"], int(data["quantity"]), _money_from(data["unit_price"]))


def to_record(event: OrderEvent) -> dict[str, Any]:
    """The event's Avro record (JSON-safe: strings, ints, lists and dicts only)."""
    record: dict[str, Any] = {"order_id": event.order_id}
    match event:
        case OrderPlaced():
            record |= {
                "request_id": event.request_id,
                "customer_id": event.customer_id,
                "lines": [_line(line) for line in event.lines],
                "total": _money(event.total),
                "shipping_address": _address(event.shipping_address),
            }
        case OrderPaymentAuthorized() | OrderPaymentCaptured():
            record["payment_id"] = event.payment_id
        case OrderShipmentCreated():
            record |= {"shipment_id": event.shipment_id, "tracking_number": event.tracking_number}
        case OrderCancelled():
            record["reason"] = event.reason
        case OrderStockReserved() | OrderConfirmed():
            pass
    record["occurred_at"] = millis(event.occurred_at)
    return record


_DECODERS: dict[str, Callable[[Mapping[str, Any], float], OrderEvent]] = {
    f"{NAMESPACE}.OrderPlaced": lambda r, t: OrderPlaced(
        r["order_id"],
        t,
        r["request_id"],
        r["customer_id"],
        tuple(_line_from(line) for line in r["lines"]),
        _address_from(r["shipping_address"]),
        _money_from(r["total"]),
    ),
    f"{NAMESPACE}.OrderStockReserved": lambda r, t: OrderStockReserved(r["order_id"], t),
    f"{NAMESPACE}.OrderPaymentAuthorized": lambda r, t: OrderPaymentAuthorized(
        r["order_id"], t, r["payment_id"]
    ),
    f"{NAMESPACE}.OrderShipmentCreated": lambda r, t: OrderShipmentCreated(
        r["order_id"], t, r["shipment_id"], r["tracking_number"]
    ),
    f"{NAMESPACE}.OrderPaymentCaptured": lambda r, t: OrderPaymentCaptured(
        r["order_id"], t, r["payment_id"]
    ),
    f"{NAMESPACE}.OrderConfirmed": lambda r, t: OrderConfirmed(r["order_id"], t),
    f"{NAMESPACE}.OrderCancelled": lambda r, t: OrderCancelled(r["order_id"], t, r["reason"]),
}


def from_record(type_name: str, record: Mapping[str, Any], occurred_at: float) -> OrderEvent:
    """The event of type ``type_name`` from its record; ``occurred_at`` is the exact time."""
    return _DECODERS[type_name](record, occurred_at)


def snapshot_json(order: Order) -> str:
    """The order's state (without pending events) as JSON."""
    state = asdict(order)
    state.pop("pending")
    state["status"] = order.status.value
    return json.dumps(state, sort_keys=True)


def order_from_snapshot(text: str) -> Order:
    """The order a ``snapshot_json`` text describes."""
    state = json.loads(text)
    state["status"] = OrderStatus(state["status"])
    state["lines"] = tuple(_line_from(line) for line in state["lines"])
    if state["shipping_address"] is not None:
        state["shipping_address"] = _address_from(state["shipping_address"])
    if state["total"] is not None:
        state["total"] = _money_from(state["total"])
    return Order(**state)
