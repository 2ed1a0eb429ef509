"""The ConfigService servicer: translates wire messages to use-case calls and back, nothing else.

Who may call what is declared in the contract (proto/mesh/control/v1/control.proto) and checked
by meshkit's interceptor against policy.cedar before a handler runs. Errors are not caught here:
meshkit's edge maps them to gRPC statuses once.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from control.app.config import ConfigUseCases
from control.domain.model import ClientReport, ConfigVersion, NamespaceSchema, NamespaceSummary
from mesh.control.v1 import control_pb2 as pb
from mesh.control.v1 import control_pb2_grpc as pb_grpc
from meshkit import authz, timestamps


def author() -> str:
    """Who is making the current change: the verified caller's subject (a user id, or the
    service calling as itself)."""
    principal = authz.current_principal()
    return principal.subject if principal is not None else ""


class ConfigServicer(pb_grpc.ConfigServiceServicer):
    """mesh.control.v1.ConfigService over the config use cases. Stateless."""

    def __init__(self, use_cases: ConfigUseCases) -> None:
        self._use_cases = use_cases

    def GetConfig(
        self, request: pb.GetConfigRequest, context: grpc.ServicerContext
    ) -> pb.GetConfigResponse:
        """See the contract in proto/mesh/control/v1/control.proto."""
        found = self._use_cases.get(request.namespace, request.version)
        return pb.GetConfigResponse(config=wire_version(found))

    def SetConfig(
        self, request: pb.SetConfigRequest, context: grpc.ServicerContext
    ) -> pb.SetConfigResponse:
        """See the contract in proto/mesh/control/v1/control.proto."""
        stored = self._use_cases.set(
            request.namespace,
            request.document,
            author=author(),
            reason=request.reason,
            expected_version=(
                request.expected_version if request.HasField("expected_version") else None
            ),
        )
        return pb.SetConfigResponse(config=wire_version(stored))

    def Rollback(
        self, request: pb.RollbackRequest, context: grpc.ServicerContext
    ) -> pb.RollbackResponse:
        """See the contract in proto/mesh/control/v1/control.proto."""
        stored = self._use_cases.rollback(
            request.namespace, request.to_version, author=author(), reason=request.reason
        )
        return pb.RollbackResponse(config=wire_version(stored))

    def ListHistory(
        self, request: pb.ListHistoryRequest, context: grpc.ServicerContext
    ) -> pb.ListHistoryResponse:
        """See the contract in proto/mesh/control/v1/control.proto."""
        versions = self._use_cases.history(
            request.namespace, request.page_size, request.before_version
        )
        return pb.ListHistoryResponse(versions=[wire_version(v) for v in versions])

    def ListNamespaces(
        self, request: pb.ListNamespacesRequest, context: grpc.ServicerContext
    ) -> pb.ListNamespacesResponse:
        """See the contract in proto/mesh/control/v1/control.proto."""
        return pb.ListNamespacesResponse(
            namespaces=[_wire_summary(s) for s in self._use_cases.namespaces()]
        )

    def Watch(
        self, request: pb.WatchRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.WatchResponse]:
        """See the contract in proto/mesh/control/v1/control.proto. The stream holds a worker
        thread while it is open (grpcio's sync server); it ends as soon as the caller leaves or
        the server cancels it at the end of its stop's grace."""
        stream = self._use_cases.watch(
            request.namespace,
            request.since_version,
            client=request.client,
            active=context.is_active,
        )
        if not context.add_callback(stream.cancel):
            return  # the call has ended already
        # Headers now: a watcher resuming with nothing new learns at once that it is connected
        # (else it would hear nothing until the next change).
        context.send_initial_metadata(())
        for event in stream:
            yield pb.WatchResponse(config=wire_version(event.config), snapshot=event.snapshot)

    def SetSchema(
        self, request: pb.SetSchemaRequest, context: grpc.ServicerContext
    ) -> pb.SetSchemaResponse:
        """See the contract in proto/mesh/control/v1/control.proto."""
        registered = self._use_cases.set_schema(request.namespace, request.schema, author=author())
        return pb.SetSchemaResponse(schema=_wire_schema(registered))

    def GetSchema(
        self, request: pb.GetSchemaRequest, context: grpc.ServicerContext
    ) -> pb.GetSchemaResponse:
        """See the contract in proto/mesh/control/v1/control.proto."""
        return pb.GetSchemaResponse(
            schema=_wire_schema(self._use_cases.get_schema(request.namespace))
        )

    def ReportStatus(
        self, request: pb.ReportStatusRequest, context: grpc.ServicerContext
    ) -> pb.ReportStatusResponse:
        """See the contract in proto/mesh/control/v1/control.proto."""
        self._use_cases.report(
            request.namespace,
            request.client,
            request.version,
            accepted=request.accepted,
            error=request.error,
            running_version=request.running_version,
        )
        return pb.ReportStatusResponse()

    def ListClientStatus(
        self, request: pb.ListClientStatusRequest, context: grpc.ServicerContext
    ) -> pb.ListClientStatusResponse:
        """See the contract in proto/mesh/control/v1/control.proto."""
        return pb.ListClientStatusResponse(
            clients=[_wire_report(r) for r in self._use_cases.client_status(request.namespace)]
        )


def wire_version(version: ConfigVersion) -> pb.ConfigVersion:
    """A version on the wire (no create_time for version 0, which nobody stored)."""
    wire = pb.ConfigVersion(
        namespace=version.namespace,
        version=version.version,
        document=version.document,
        author=version.author,
        reason=version.reason,
        rollback_of=version.rollback_of,
    )
    if version.created_at is not None:
        wire.create_time.CopyFrom(timestamps.to_timestamp(version.created_at))
    return wire


def _wire_summary(summary: NamespaceSummary) -> pb.NamespaceSummary:
    wire = pb.NamespaceSummary(
        namespace=summary.namespace, version=summary.version, has_schema=summary.has_schema
    )
    if summary.updated_at is not None:
        wire.update_time.CopyFrom(timestamps.to_timestamp(summary.updated_at))
    return wire


def _wire_schema(schema: NamespaceSchema) -> pb.NamespaceSchema:
    return pb.NamespaceSchema(
        namespace=schema.namespace,
        schema=schema.schema,
        author=schema.author,
        update_time=timestamps.to_timestamp(schema.updated_at),
    )


def _wire_report(report: ClientReport) -> pb.ClientStatus:
    return pb.ClientStatus(
        client=report.client,
        version=report.version,
        accepted=report.accepted,
        error=report.error,
        running_version=report.running_version,
        report_time=timestamps.to_timestamp(report.reported_at),
    )
