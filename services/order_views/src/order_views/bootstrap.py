"""The composition root: builds order_views' server from its settings."""

from __future__ import annotations

from meshkit.server import MeshServer, ServiceBinding, create_server
from order_views.config import Settings
from order_views.entrypoints.grpc_api import OrderViewsServiceServicer
from shop.order_views.v1 import order_views_pb2, order_views_pb2_grpc

SERVICE_NAME = order_views_pb2.DESCRIPTOR.services_by_name["OrderViewsService"].full_name


def build(settings: Settings) -> MeshServer:
    """A ready-to-start order_views server."""
    binding = ServiceBinding(
        OrderViewsServiceServicer(),  # type: ignore[abstract]  # implemented by the CQRS issue
        order_views_pb2_grpc.add_OrderViewsServiceServicer_to_server,
        SERVICE_NAME,
    )
    return create_server("order_views", settings, [binding])
