"""The composition root: builds payments's server from its settings."""

from __future__ import annotations

from meshkit.server import MeshServer, ServiceBinding, create_server
from payments.config import Settings
from payments.entrypoints.grpc_api import PaymentsServiceServicer
from shop.payments.v1 import payments_pb2, payments_pb2_grpc

SERVICE_NAME = payments_pb2.DESCRIPTOR.services_by_name["PaymentsService"].full_name


def build(settings: Settings) -> MeshServer:
    """A ready-to-start payments server."""
    binding = ServiceBinding(
        PaymentsServiceServicer(),
        payments_pb2_grpc.add_PaymentsServiceServicer_to_server,
        SERVICE_NAME,
    )
    return create_server("payments", settings, [binding])
