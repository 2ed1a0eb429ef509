"""mesh.sagas.v1.SagaAdminService served by orders: the operator's view of order sagas."""

from __future__ import annotations

import grpc
from google.protobuf import duration_pb2

from mesh.sagas.v1 import sagas_pb2 as pb
from mesh.sagas.v1 import sagas_pb2_grpc as pb_grpc
from meshkit.timestamps import to_timestamp
from orders.app.orders import Orders, SagaSummary
from orders.domain.saga import SagaStatus

DEFAULT_LIMIT = 100
_STATE = {
    SagaStatus.RUNNING: pb.SAGA_STATE_RUNNING,
    SagaStatus.COMPENSATING: pb.SAGA_STATE_COMPENSATING,
    SagaStatus.CONFIRMED: pb.SAGA_STATE_SUCCEEDED,
    SagaStatus.CANCELLED: pb.SAGA_STATE_COMPENSATED,
}


class SagaAdminServicer(pb_grpc.SagaAdminServiceServicer):
    """Lists order sagas with their step, state, age and whether they look stuck. Stateless."""

    def __init__(self, orders: Orders) -> None:
        self._orders = orders

    def ListSagas(
        self, request: pb.ListSagasRequest, context: grpc.ServicerContext
    ) -> pb.ListSagasResponse:
        """See the contract in proto/mesh/sagas/v1/sagas.proto."""
        limit = request.limit if request.limit > 0 else DEFAULT_LIMIT
        summaries = self._orders.sagas(include_finished=request.include_finished, limit=limit)
        return pb.ListSagasResponse(sagas=[_saga(s) for s in summaries])


def _saga(summary: SagaSummary) -> pb.Saga:
    saga = summary.saga
    age = duration_pb2.Duration()
    age.FromTimedelta(summary.age)
    return pb.Saga(
        saga_id=saga.order_id,
        kind="order",
        state=_STATE[saga.status],
        step=saga.step.value if saga.step else "",
        attempt=saga.attempt,
        started_at=to_timestamp(saga.started_at),
        updated_at=to_timestamp(saga.updated_at),
        next_attempt_at=to_timestamp(saga.next_attempt_at) if saga.is_live else None,
        age=age,
        stuck=summary.stuck,
        last_error=saga.last_error,
        reason=saga.reason,
    )
