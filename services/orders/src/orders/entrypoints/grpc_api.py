"""The OrdersService servicer: translates wire messages to use-case calls and back, nothing else.

Errors are not caught here: domain errors propagate to meshkit's edge, which maps them to
gRPC statuses once.
"""

from __future__ import annotations

import grpc
from google.protobuf import struct_pb2, timestamp_pb2

from orders.adapters.records import event_type, to_record
from orders.app.orders import Orders, PlaceOrder
from orders.domain.model import Order, OrderStatus
from orders.domain.values import Address, Money, OrderLine
from shop.common.v1 import common_pb2
from shop.orders.v1 import orders_pb2 as pb
from shop.orders.v1 import orders_pb2_grpc as pb_grpc

_STATUS = {
    OrderStatus.PENDING: pb.ORDER_STATUS_PENDING,
    OrderStatus.CONFIRMED: pb.ORDER_STATUS_CONFIRMED,
    OrderStatus.CANCELLED: pb.ORDER_STATUS_CANCELLED,
}


class OrdersServicer(pb_grpc.OrdersServiceServicer):
    """shop.orders.v1.OrdersService over the Orders use cases. Stateless."""

    def __init__(self, orders: Orders) -> None:
        self._orders = orders

    def PlaceOrder(
        self, request: pb.PlaceOrderRequest, context: grpc.ServicerContext
    ) -> pb.PlaceOrderResponse:
        """See the contract in proto/shop/orders/v1/orders.proto."""
        address = request.shipping_address if request.HasField("shipping_address") else None
        placed = self._orders.place(
            PlaceOrder(
                request_id=request.request_id,
                customer_id=request.customer_id,
                lines=tuple(
                    OrderLine(line.sku, line.quantity, _money(line.unit_price))
                    for line in request.lines
                ),
                payment_token=request.payment_token,
                shipping_address=_address(address) if address is not None else None,
            )
        )
        order = placed.order
        return pb.PlaceOrderResponse(
            order_id=order.order_id,
            status=_STATUS[order.status],
            consistency_token=f"{order.order_id}@{order.version}",
        )

    def GetOrder(
        self, request: pb.GetOrderRequest, context: grpc.ServicerContext
    ) -> pb.GetOrderResponse:
        """See the contract in proto/shop/orders/v1/orders.proto."""
        as_of = request.as_of.ToNanoseconds() / 1e9 if request.HasField("as_of") else None
        return pb.GetOrderResponse(order=order_pb(self._orders.get(request.order_id, as_of)))

    def ListOrderEvents(
        self, request: pb.ListOrderEventsRequest, context: grpc.ServicerContext
    ) -> pb.ListOrderEventsResponse:
        """See the contract in proto/shop/orders/v1/orders.proto."""
        events = []
        for version, event in self._orders.history(request.order_id):
            data = struct_pb2.Struct()
            data.update(to_record(event))
            events.append(
                pb.OrderEvent(
                    version=version,
                    type=event_type(event),
                    occurred_at=_timestamp(event.occurred_at),
                    data=data,
                )
            )
        return pb.ListOrderEventsResponse(events=events)


def order_pb(order: Order) -> pb.Order:
    """The wire form of an order."""
    assert order.total is not None and order.shipping_address is not None
    return pb.Order(
        order_id=order.order_id,
        customer_id=order.customer_id,
        lines=[
            pb.OrderLine(
                sku=line.sku, quantity=line.quantity, unit_price=_money_pb(line.unit_price)
            )
            for line in order.lines
        ],
        total=_money_pb(order.total),
        status=_STATUS[order.status],
        cancellation_reason=order.cancellation_reason,
        created_at=_timestamp(order.created_at),
        updated_at=_timestamp(order.updated_at),
        shipping_address=common_pb2.Address(
            name=order.shipping_address.name,
            line1=order.shipping_address.line1,
            line2=order.shipping_address.line2,
            city=order.shipping_address.city,
            postal_code=order.shipping_address.postal_code,
            country_code=order.shipping_address.country_code,
        ),
        version=order.version,
    )


def _money(money: common_pb2.Money) -> Money:
    return Money(money.currency_code, money.units, money.nanos)


def _money_pb(money: Money) -> common_pb2.Money:
    return common_pb2.Money(currency_code=money.currency_code, units=money.units, nanos=money.nanos)


def _address(address: common_pb2.Address) -> Address:
    return Address(
        name=address.name,
        line1=address.line1,
        line2=address.line2,
        city=address.city,
        postal_code=address.postal_code,
        country_code=address.country_code,
    )


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(round(seconds * 1e9))
    return stamp
