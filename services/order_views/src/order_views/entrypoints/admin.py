"""The ProjectionAdminService servicer (`mesh rebuild order_views`): starts or follows a rebuild
and streams its progress until the swap."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from mesh.projections.v1 import projections_pb2 as pb
from mesh.projections.v1 import projections_pb2_grpc as pb_grpc
from meshkit.errors import FieldViolation, InvalidArgument, NotFound, quoted
from order_views.app.rebuild import Rebuilder, RebuildPhase

PROJECTION = "order_views"
MAX_PROJECTION_LENGTH = 64

_PHASES = {
    RebuildPhase.CATCHING_UP: pb.REBUILD_PHASE_CATCHING_UP,
    RebuildPhase.SWAPPING: pb.REBUILD_PHASE_SWAPPING,
    RebuildPhase.SWAPPED: pb.REBUILD_PHASE_SWAPPED,
}


class ProjectionAdminServicer(pb_grpc.ProjectionAdminServiceServicer):
    """mesh.projections.v1.ProjectionAdminService over the Rebuilder. Stateless."""

    def __init__(self, rebuilder: Rebuilder) -> None:
        self._rebuilder = rebuilder

    def Rebuild(
        self, request: pb.RebuildRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.RebuildResponse]:
        """See the contract in proto/mesh/projections/v1/projections.proto."""
        if len(request.projection) > MAX_PROJECTION_LENGTH:
            raise InvalidArgument(
                violations=[
                    FieldViolation("projection", f"at most {MAX_PROJECTION_LENGTH} characters")
                ]
            )
        if request.projection not in ("", PROJECTION):
            raise NotFound(
                f"no projection {quoted(request.projection)} here; this service has {PROJECTION!r}",
                reason="PROJECTION_NOT_FOUND",
            )
        rebuild = self._rebuilder.rebuild()
        for status in rebuild.follow():
            if not context.is_active():
                return  # the caller left; the rebuild goes on without it
            if status.error is not None:
                raise status.error
            yield pb.RebuildResponse(
                phase=_PHASES[status.phase],
                generation=status.generation,
                applied=status.applied,
                behind=status.behind,
                message=status.message,
            )
