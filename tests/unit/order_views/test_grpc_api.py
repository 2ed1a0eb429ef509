"""The OrderViewsService on a real gRPC server (port 0) over a copy of the read model: what the
wire carries for totals in currencies with 0 and 3 decimals, and for times."""

from __future__ import annotations

import datetime

import pytest
from google.protobuf import timestamp_pb2
from unit.order_views.shop_events import BASE, Projection, order_life

from meshkit.money import Money
from shop.common.v1 import common_pb2
from shop.order_views.v1 import order_views_pb2 as pb
from shop.order_views.v1 import order_views_pb2_grpc as pb_grpc


@pytest.mark.parametrize(
    ("price", "total", "shown"),
    [
        (
            Money.of("JPY", 600),
            common_pb2.Money(currency_code="JPY", units=1200, nanos=0),
            "JPY 1200",
        ),
        (
            Money.of("KWD", 0, 625_000_000),
            common_pb2.Money(currency_code="KWD", units=1, nanos=250_000_000),
            "KWD 1.250",
        ),
    ],
    ids=["JPY", "KWD"],
)
def test_a_total_is_served_in_its_currency(
    served: tuple[Projection, pb_grpc.OrderViewsServiceStub],
    price: Money,
    total: common_pb2.Money,
    shown: str,
) -> None:
    copy, stub = served
    for _, _, fact in order_life("o-1", customer="c-1", price=price):
        copy.apply(fact)

    [summary] = stub.ListOrders(pb.ListOrdersRequest(customer_id="c-1"), timeout=5).orders
    assert summary.total == total
    view = stub.GetOrderView(pb.GetOrderViewRequest(order_id="o-1"), timeout=5).view
    assert view.summary.total == total
    assert view.lines[0].unit_price == price.to_wire(common_pb2.Money)
    assert view.timeline[0].description == f"order placed: 1 line, {shown}"
    assert view.shipping_address.postal_code == "10117"
    assert view.shipping_address.line1 == "Unter den Linden 1"


def test_times_are_served_exact_to_the_microsecond(
    served: tuple[Projection, pb_grpc.OrderViewsServiceStub],
) -> None:
    copy, stub = served
    for _, _, fact in order_life("o-1", at=0.123457):
        copy.apply(fact)

    view = stub.GetOrderView(pb.GetOrderViewRequest(order_id="o-1"), timeout=5).view
    placed = BASE + datetime.timedelta(seconds=1.123457)
    expected = timestamp_pb2.Timestamp(seconds=int(placed.timestamp()), nanos=123_457_000)
    assert view.summary.created_at == expected
    assert view.timeline[0].occurred_at == expected
    assert view.summary.updated_at.ToDatetime(datetime.UTC) == BASE + datetime.timedelta(
        seconds=6.123457
    )
