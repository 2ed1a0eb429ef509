"""The ShippingService servicer (every RPC answers UNIMPLEMENTED until its issue lands)."""

from __future__ import annotations

from shop.shipping.v1 import shipping_pb2_grpc as pb_grpc


class ShippingServiceServicer(pb_grpc.ShippingServiceServicer):
    """shop.shipping.v1.ShippingService; the generated base class answers UNIMPLEMENTED."""
