"""The ControlService servicer: translates wire messages to use-case calls and back, nothing else.

Errors are not caught here: meshkit's edge maps them to gRPC statuses once.
"""

from __future__ import annotations

import grpc

from control.app.control import ControlUseCases
from control.domain.model import Namespace
from mesh.control.v1 import control_pb2 as pb
from mesh.control.v1 import control_pb2_grpc as pb_grpc
from meshkit import timestamps


class ControlServicer(pb_grpc.ControlServiceServicer):
    """mesh.control.v1.ControlService over the Control use cases. Stateless."""

    def __init__(self, use_cases: ControlUseCases) -> None:
        self._use_cases = use_cases

    def CreateNamespace(
        self, request: pb.CreateNamespaceRequest, context: grpc.ServicerContext
    ) -> pb.CreateNamespaceResponse:
        """See the contract in proto/mesh/control/v1/control.proto."""
        return pb.CreateNamespaceResponse(
            namespace=_wire(self._use_cases.create(request.display_name))
        )

    def GetNamespace(
        self, request: pb.GetNamespaceRequest, context: grpc.ServicerContext
    ) -> pb.GetNamespaceResponse:
        """See the contract in proto/mesh/control/v1/control.proto."""
        return pb.GetNamespaceResponse(namespace=_wire(self._use_cases.get(request.namespace_id)))


def _wire(namespace: Namespace) -> pb.Namespace:
    return pb.Namespace(
        namespace_id=namespace.namespace_id,
        display_name=namespace.display_name,
        create_time=timestamps.to_timestamp(namespace.created_at),
    )
