"""The composition root: builds orders's server from its settings."""

from __future__ import annotations

from meshkit.server import MeshServer, ServiceBinding, create_server
from orders.config import Settings
from orders.entrypoints.grpc_api import OrdersServiceServicer
from shop.orders.v1 import orders_pb2, orders_pb2_grpc

SERVICE_NAME = orders_pb2.DESCRIPTOR.services_by_name["OrdersService"].full_name


def build(settings: Settings) -> MeshServer:
    """A ready-to-start orders server."""
    binding = ServiceBinding(
        OrdersServiceServicer(),  # type: ignore[abstract]  # implemented by the saga issue
        orders_pb2_grpc.add_OrdersServiceServicer_to_server,
        SERVICE_NAME,
    )
    return create_server("orders", settings, [binding])
