"""The composition root: control's use cases and servicer, on the service kit.

Who may call which RPC is not decided here. Each RPC declares the permission it needs in
proto/mesh/control/v1/control.proto;
policy.cedar beside this file grants it, and the kit checks both before every RPC.
"""

from __future__ import annotations

from control.adapters.events import EVENTS
from control.adapters.sqlite import MIGRATIONS, SqliteUnitOfWork
from control.app.control import ControlUseCases
from control.entrypoints.grpc_api import ControlServicer
from mesh.control.v1 import control_pb2_grpc
from meshkit.server import ServiceBinding
from meshkit.service import Service, ServiceContext, binding
from meshkit.settings import ServiceSettings


def build(ctx: ServiceContext[ServiceSettings]) -> list[ServiceBinding]:
    """Control's servicer over its use cases, each call one unit of work on ``ctx.db``."""
    use_cases = ControlUseCases(lambda: SqliteUnitOfWork(ctx.db, ctx.events))
    return [
        binding(ControlServicer(use_cases), control_pb2_grpc.add_ControlServiceServicer_to_server)
    ]


SERVICE = Service[ServiceSettings]("control", build, migrations=MIGRATIONS, events=EVENTS)
