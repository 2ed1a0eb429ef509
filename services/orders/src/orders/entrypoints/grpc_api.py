"""The OrdersService servicer (every RPC answers UNIMPLEMENTED until its issue lands)."""

from __future__ import annotations

from shop.orders.v1 import orders_pb2_grpc as pb_grpc


class OrdersServiceServicer(pb_grpc.OrdersServiceServicer):
    """shop.orders.v1.OrdersService; the generated base class answers UNIMPLEMENTED."""
