"""The composition root: builds shipping's server from its settings."""

from __future__ import annotations

from meshkit.server import MeshServer, ServiceBinding, create_server
from shipping.config import Settings
from shipping.entrypoints.grpc_api import ShippingServiceServicer
from shop.shipping.v1 import shipping_pb2, shipping_pb2_grpc

SERVICE_NAME = shipping_pb2.DESCRIPTOR.services_by_name["ShippingService"].full_name


def build(settings: Settings) -> MeshServer:
    """A ready-to-start shipping server."""
    binding = ServiceBinding(
        ShippingServiceServicer(),
        shipping_pb2_grpc.add_ShippingServiceServicer_to_server,
        SERVICE_NAME,
    )
    return create_server("shipping", settings, [binding])
