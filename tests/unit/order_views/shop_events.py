"""Helpers of order_views' unit tests: the events of an order's life, as the four contexts
publish them (topic, Kafka key, Fact), and a projector that writes SQLite like the consumer."""

from __future__ import annotations

import datetime
from collections.abc import Collection
from pathlib import Path
from typing import Any

from meshkit.db import Database
from meshkit.money import Money
from order_views.adapters.sqlite import SqliteReadModel, SqliteViewStore, open_copy
from order_views.app.projector import apply_fact
from order_views.domain.model import Fact

Published = tuple[str, str, Fact]
"""(topic, key, event) as it reaches order_views."""

BASE = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
EUR_12_50 = Money.of("EUR", 12, 500_000_000)
ADDRESS = {
    "name": "Ada Lovelace",
    "line1": "Unter den Linden 1",
    "line2": "",
    "city": "Berlin",
    "postal_code": "10117",
    "country_code": "DE",
}


def seconds(n: float) -> datetime.timedelta:
    return datetime.timedelta(seconds=n)


def order_life(
    order_id: str,
    *,
    customer: str = "cust-1",
    sku: str = "mug-1",
    outcome: str = "confirmed",
    at: float = 0.0,
    price: Money = EUR_12_50,
) -> list[Published]:
    """Everything published about one order (two of ``sku`` at ``price``), in the order each
    topic has it.

    ``outcome``: confirmed (tok_visa), declined (payment declined after reserving), or
    unshippable (payment voided and stock released after shipping refused).
    """
    total = price * 2
    t = BASE + seconds(at)
    seq = iter(range(1, 100))

    def orders(name: str, **data: Any) -> Published:
        version = next(seq)
        return (
            "orders.events.v1",
            order_id,
            Fact(
                f"{order_id}:{version}",
                f"shop.orders.v1.{name}",
                {"order_id": order_id, **data},
                t + seconds(version),
            ),
        )

    def other(topic: str, name: str, key: str, offset: float, **data: Any) -> Published:
        context = topic.split(".", maxsplit=1)[0]
        return (
            topic,
            key,
            Fact(
                f"{context}-{name}-{order_id}",
                f"shop.{context}.v1.{name}",
                data,
                t + seconds(offset),
            ),
        )

    payment = {"payment_id": f"pay-{order_id}", "order_id": order_id, "amount": total.to_record()}
    lines = [{"sku": sku, "quantity": 2, "unit_price": price.to_record()}]
    address = ADDRESS
    events = [
        orders(
            "OrderPlaced",
            request_id=f"req-{order_id}",
            customer_id=customer,
            lines=lines,
            total=total.to_record(),
            shipping_address=address,
        ),
        other(
            "inventory.events.v1", "StockReserved", order_id, 1.5, reservation_id=order_id, lines=[]
        ),
        orders("OrderStockReserved"),
    ]
    if outcome == "declined":
        return [
            *events,
            other(
                "payments.events.v1",
                "PaymentDeclined",
                order_id,
                2.5,
                decline_reason="card_declined",
                **payment,
            ),
            other(
                "inventory.events.v1",
                "ReservationReleased",
                order_id,
                2.7,
                reservation_id=order_id,
                lines=[],
            ),
            orders("OrderCancelled", reason="authorize payment: payment declined"),
        ]
    events += [
        other("payments.events.v1", "PaymentAuthorized", order_id, 2.5, **payment),
        orders("OrderPaymentAuthorized", payment_id=payment["payment_id"]),
    ]
    if outcome == "unshippable":
        return [
            *events,
            other("payments.events.v1", "PaymentVoided", order_id, 3.5, **payment),
            other(
                "inventory.events.v1",
                "ReservationReleased",
                order_id,
                3.7,
                reservation_id=order_id,
                lines=[],
            ),
            orders("OrderCancelled", reason="create shipment: FAILED_PRECONDITION"),
        ]
    shipment = {"shipment_id": f"shp-{order_id}", "order_id": order_id, "tracking_number": "MK1"}
    return [
        *events,
        other(
            "shipping.events.v1",
            "ShipmentCreated",
            f"shp-{order_id}",
            3.5,
            address=address,
            items=[],
            **shipment,
        ),
        orders("OrderShipmentCreated", shipment_id=shipment["shipment_id"], tracking_number="MK1"),
        other("payments.events.v1", "PaymentCaptured", order_id, 4.5, **payment),
        orders("OrderPaymentCaptured", payment_id=payment["payment_id"]),
        other(
            "inventory.events.v1",
            "ReservationCommitted",
            order_id,
            5.5,
            reservation_id=order_id,
            lines=[],
        ),
        orders("OrderConfirmed"),
    ]


class Projection:
    """One copy of the read model in a temporary file, fed event by event in one transaction
    each (as the consumer does, minus Kafka)."""

    def __init__(self, path: Path) -> None:
        self.db: Database = open_copy(str(path))
        self.model = SqliteReadModel(self.db)

    def apply(self, fact: Fact) -> bool:
        """Project ``fact`` in its own transaction."""
        with self.db.transaction() as conn:
            return apply_fact(SqliteViewStore(conn), fact)

    def apply_batch(self, facts: list[Fact], *, rolled_back: Collection[str] = ()) -> None:
        """Project ``facts`` in ONE transaction, each under a savepoint, as the consumer applies
        a batch; those whose id is in ``rolled_back`` are projected, then rolled back to their
        savepoint (as when the record's inbox mark fails after its handler ran)."""
        with self.db.transaction() as conn:
            for fact in facts:
                conn.execute("SAVEPOINT record")
                apply_fact(SqliteViewStore(conn), fact)
                if fact.id in rolled_back:
                    conn.execute("ROLLBACK TO record")
                conn.execute("RELEASE record")

    def dump(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of the read model (search index included), for comparing two copies."""
        return dump(self.db)


def dump(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the read model (search index included), for comparing two copies."""
    with db.snapshot() as conn:
        return {
            "summary": [
                tuple(r)[1:]  # not seq: rowids depend on arrival order
                for r in conn.execute("SELECT * FROM order_summary ORDER BY order_id")
            ],
            "timeline": [
                tuple(r)
                for r in conn.execute("SELECT * FROM order_timeline ORDER BY order_id, event_id")
            ],
            "search": [
                tuple(r)
                for r in conn.execute(
                    "SELECT order_id, customer_id, skus, address FROM order_search"
                    " ORDER BY order_id"
                )
            ],
        }
