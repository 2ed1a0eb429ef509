"""The OrderViewsService servicer (every RPC answers UNIMPLEMENTED until its issue lands)."""

from __future__ import annotations

from shop.order_views.v1 import order_views_pb2_grpc as pb_grpc


class OrderViewsServiceServicer(pb_grpc.OrderViewsServiceServicer):
    """shop.order_views.v1.OrderViewsService; the generated base class answers UNIMPLEMENTED."""
