"""The OrderViewsService servicer: translates wire messages to query calls and back.

Errors are not caught here: they propagate to meshkit's edge, which maps them once. The only
transport concern handled here is the wait budget of a consistency token: the RPC's remaining
deadline, less a margin to send the answer and what the deadline's rounding on the wire may
have added, capped. Money, addresses and times go out through
meshkit's own mappings (``Money.to_wire``: any currency's ISO 4217 decimals; ``to_timestamp``:
exact to the microsecond); no request of this service carries a Money or a Timestamp.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc

from meshkit.errors import FieldViolation, InvalidArgument
from meshkit.timestamps import to_timestamp
from order_views.app.ports import PartitionPosition
from order_views.app.queries import OrderQueries, Page
from order_views.domain.consistency import ConsistencyToken
from order_views.domain.model import OrderRecord, OrderStatus, OrderView
from shop.common.v1 import common_pb2
from shop.order_views.v1 import order_views_pb2 as pb
from shop.order_views.v1 import order_views_pb2_grpc as pb_grpc
from shop.orders.v1 import orders_pb2

# Waiting for a consistency token: up to the deadline less what the answer needs, never longer
# than MAX_WAIT_S; a call without a deadline waits DEFAULT_WAIT_S.
DEFAULT_WAIT_S = 5.0
MAX_WAIT_S = 30.0
ANSWER_MARGIN_S = 0.05
# The grpc-timeout header carries 3 significant figures, rounded up (gRPC core), so the server
# may see up to 1 % more time than the caller has left: 10.01 s arrives as 10.1 s.
DEADLINE_ROUNDING = 0.02
NO_DEADLINE_S = 86_400.0

_STATUS_IN = {
    orders_pb2.ORDER_STATUS_PENDING: OrderStatus.PENDING,
    orders_pb2.ORDER_STATUS_CONFIRMED: OrderStatus.CONFIRMED,
    orders_pb2.ORDER_STATUS_CANCELLED: OrderStatus.CANCELLED,
}
_STATUS_OUT = {status: wire for wire, status in _STATUS_IN.items()}
_STATUS_BY_NUMBER: dict[int, OrderStatus] = {int(wire): s for wire, s in _STATUS_IN.items()}


def wait_budget(context: grpc.ServicerContext) -> float:
    """Seconds a query may wait for its consistency token within the RPC's deadline."""
    remaining = float(context.time_remaining())
    if remaining > NO_DEADLINE_S:  # grpcio reports "no deadline" as a deadline years away
        return DEFAULT_WAIT_S
    budget = remaining * (1 - DEADLINE_ROUNDING) - ANSWER_MARGIN_S
    return max(0.0, min(budget, MAX_WAIT_S))


def status_filter(wire: int) -> OrderStatus | None:
    """The status a ListOrders asks for (None: any); InvalidArgument naming ``status`` for a
    number the contract does not define (a newer client's, or garbage): never a dropped filter."""
    if wire == orders_pb2.ORDER_STATUS_UNSPECIFIED:
        return None
    status = _STATUS_BY_NUMBER.get(wire)
    if status is None:
        known = ", ".join(orders_pb2.OrderStatus.keys())
        raise InvalidArgument(
            violations=[FieldViolation("status", f"unknown OrderStatus {wire}; one of {known}")]
        )
    return status


class OrderViewsServicer(pb_grpc.OrderViewsServiceServicer):
    """shop.order_views.v1.OrderViewsService over the query use cases. Stateless."""

    def __init__(
        self, queries: OrderQueries, status: Callable[[], list[PartitionPosition]]
    ) -> None:
        self._queries = queries
        self._status = status

    def ListOrders(
        self, request: pb.ListOrdersRequest, context: grpc.ServicerContext
    ) -> pb.ListOrdersResponse:
        """See the contract in proto/shop/order_views/v1/order_views.proto."""
        page = self._queries.list_orders(
            request.customer_id,
            status_filter(request.status),
            request.page_size,
            request.page_token,
            consistency=ConsistencyToken.parse(request.consistency_token),
            wait_s=wait_budget(context),
        )
        orders, token = _page(page)
        return pb.ListOrdersResponse(orders=orders, next_page_token=token)

    def SearchOrders(
        self, request: pb.SearchOrdersRequest, context: grpc.ServicerContext
    ) -> pb.SearchOrdersResponse:
        """See the contract in proto/shop/order_views/v1/order_views.proto."""
        page = self._queries.search_orders(
            request.query,
            request.page_size,
            request.page_token,
            consistency=ConsistencyToken.parse(request.consistency_token),
            wait_s=wait_budget(context),
        )
        orders, token = _page(page)
        return pb.SearchOrdersResponse(orders=orders, next_page_token=token)

    def GetOrderView(
        self, request: pb.GetOrderViewRequest, context: grpc.ServicerContext
    ) -> pb.GetOrderViewResponse:
        """See the contract in proto/shop/order_views/v1/order_views.proto."""
        view = self._queries.get_order_view(
            request.order_id,
            consistency=ConsistencyToken.parse(request.consistency_token),
            wait_s=wait_budget(context),
        )
        return pb.GetOrderViewResponse(view=_view(view))

    def GetProjectionStatus(
        self, request: pb.GetProjectionStatusRequest, context: grpc.ServicerContext
    ) -> pb.GetProjectionStatusResponse:
        """See the contract in proto/shop/order_views/v1/order_views.proto."""
        return pb.GetProjectionStatusResponse(
            partitions=[
                pb.PartitionStatus(
                    topic=p.topic, partition=p.partition, position=p.position, lag=p.lag
                )
                for p in self._status()
            ]
        )


def _page(page: Page) -> tuple[list[pb.OrderSummary], str]:
    return [_summary(record) for record in page.orders], page.next_page_token


def _summary(record: OrderRecord) -> pb.OrderSummary:
    return pb.OrderSummary(
        order_id=record.order_id,
        customer_id=record.customer_id,
        status=_STATUS_OUT[record.status],
        total=record.total.to_wire(common_pb2.Money) if record.total else None,
        line_count=len(record.lines),
        created_at=to_timestamp(record.created_at),
        updated_at=to_timestamp(record.updated_at),
        cancellation_reason=record.cancellation_reason,
    )


def _view(view: OrderView) -> pb.OrderView:
    record = view.record
    address = record.shipping_address
    return pb.OrderView(
        summary=_summary(record),
        timeline=[
            pb.TimelineEntry(
                occurred_at=to_timestamp(entry.occurred_at),
                event_type=entry.event_type,
                description=entry.description,
            )
            for entry in view.timeline
        ],
        payment_state=record.payment_state,
        shipment_state=record.shipment_state,
        lines=[
            orders_pb2.OrderLine(
                sku=line.sku,
                quantity=line.quantity,
                unit_price=line.unit_price.to_wire(common_pb2.Money),
            )
            for line in record.lines
        ],
        shipping_address=address.to_wire(common_pb2.Address) if address else None,
    )
