"""The OrdersService servicer: translates wire messages to use-case calls and back, nothing else.

Errors are not caught here: domain errors propagate to meshkit's edge, which maps them to
gRPC statuses once.
"""

from __future__ import annotations

import datetime
import json

import grpc
from google.protobuf import struct_pb2

from meshkit.errors import Violations
from meshkit.timestamps import from_timestamp, to_millis, to_timestamp
from orders.app.orders import Orders, PlaceOrder
from orders.app.ports import EventRecords
from orders.domain.model import LineRequest, Order, OrderStatus
from shop.common.v1 import common_pb2
from shop.orders.v1 import orders_pb2 as pb
from shop.orders.v1 import orders_pb2_grpc as pb_grpc

_STATUS = {
    OrderStatus.PENDING: pb.ORDER_STATUS_PENDING,
    OrderStatus.CONFIRMED: pb.ORDER_STATUS_CONFIRMED,
    OrderStatus.CANCELLED: pb.ORDER_STATUS_CANCELLED,
}


class OrdersServicer(pb_grpc.OrdersServiceServicer):
    """shop.orders.v1.OrdersService over the Orders use cases. Stateless.

    ``records`` maps an event to its contract's record, for ListOrderEvents (the service's
    EventMap, handed over by the composition root).
    """

    def __init__(self, orders: Orders, records: EventRecords) -> None:
        self._orders = orders
        self._records = records

    def PlaceOrder(
        self, request: pb.PlaceOrderRequest, context: grpc.ServicerContext
    ) -> pb.PlaceOrderResponse:
        """See the contract in proto/shop/orders/v1/orders.proto."""
        placed = self._orders.place(
            PlaceOrder(
                request_id=request.request_id,
                customer_id=request.customer_id,
                lines=tuple(
                    LineRequest(line.sku, line.quantity, line.unit_price) for line in request.lines
                ),
                payment_token=request.payment_token,
                shipping_address=(
                    request.shipping_address if request.HasField("shipping_address") else None
                ),
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
        as_of = None
        if request.HasField("as_of"):
            violations = Violations()
            as_of = from_timestamp(request.as_of, violations, "as_of")
            violations.raise_if_any()
        return pb.GetOrderResponse(order=order_pb(self._orders.get(request.order_id, as_of)))

    def ListOrderEvents(
        self, request: pb.ListOrderEventsRequest, context: grpc.ServicerContext
    ) -> pb.ListOrderEventsResponse:
        """See the contract in proto/shop/orders/v1/orders.proto."""
        events = []
        for version, event in self._orders.history(request.order_id):
            data = struct_pb2.Struct()
            # The record as on Kafka: its times are Avro timestamp-millis numbers.
            data.update(json.loads(json.dumps(self._records.to_record(event), default=_millis)))
            events.append(
                pb.OrderEvent(
                    version=version,
                    type=self._records.type_of(event),
                    occurred_at=to_timestamp(event.occurred_at),
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
                sku=line.sku,
                quantity=line.quantity,
                unit_price=line.unit_price.to_wire(common_pb2.Money),
            )
            for line in order.lines
        ],
        total=order.total.to_wire(common_pb2.Money),
        status=_STATUS[order.status],
        cancellation_reason=order.cancellation_reason,
        created_at=to_timestamp(order.created_at),
        updated_at=to_timestamp(order.updated_at),
        shipping_address=order.shipping_address.to_wire(common_pb2.Address),
        version=order.version,
    )


def _millis(value: object) -> int:
    if isinstance(value, datetime.datetime):
        return to_millis(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
