"""The composition root: payments' use cases and servicer, on the service kit."""

from __future__ import annotations

from meshkit.server import ServiceBinding
from meshkit.service import Service, ServiceContext, binding
from meshkit.settings import ServiceSettings
from payments.adapters.events import EVENTS
from payments.adapters.sqlite import MIGRATIONS, SqliteUnitOfWork
from payments.app.payments import Payments
from payments.entrypoints.grpc_api import PaymentsServicer
from shop.payments.v1 import payments_pb2_grpc


def build(ctx: ServiceContext[ServiceSettings]) -> list[ServiceBinding]:
    """The PaymentsService servicer over the payment use cases (one unit of work per call)."""
    payments = Payments(lambda: SqliteUnitOfWork(ctx.db, ctx.events))
    return [
        binding(PaymentsServicer(payments), payments_pb2_grpc.add_PaymentsServiceServicer_to_server)
    ]


SERVICE = Service[ServiceSettings]("payments", build, migrations=MIGRATIONS, events=EVENTS)
