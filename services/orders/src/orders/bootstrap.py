"""The composition root: orders' event store, saga worker, use cases and servicers, on the kit."""

from __future__ import annotations

import datetime

from mesh.sagas.v1 import sagas_pb2_grpc
from meshkit import authz, telemetry
from meshkit.server import ServiceBinding
from meshkit.service import Service, ServiceContext, binding
from meshkit.settings import SettingsError
from orders.adapters.events import EVENTS
from orders.adapters.live_config import DEFAULTS, NAMESPACE, line_limit, parse_orders_config
from orders.adapters.participants import GrpcParticipants
from orders.adapters.secrets import TokenSealer
from orders.adapters.sqlite import MIGRATIONS, SqliteUnitOfWork
from orders.app.orders import Orders
from orders.app.saga_worker import SagaWorker
from orders.config import Settings
from orders.domain.saga import RetryPolicy
from orders.entrypoints.grpc_api import OrdersServicer
from orders.entrypoints.saga_admin import SagaAdminServicer
from shop.orders.v1 import orders_pb2_grpc


def build(ctx: ServiceContext[Settings]) -> list[ServiceBinding]:
    """OrdersService and SagaAdminService over the use cases, and the saga worker (which first
    resumes every saga in flight) driving inventory, payments and shipping. PlaceOrder's line
    limit is the config namespace "orders", pushed live by the control plane."""
    settings = ctx.settings
    try:
        sealer = (
            TokenSealer.from_setting(settings.payment_token_key)
            if settings.payment_token_key
            else None
        )
    except ValueError as exc:
        raise SettingsError(str(exc)) from None

    def unit_of_work() -> SqliteUnitOfWork:
        return SqliteUnitOfWork(
            ctx.db, ctx.events, snapshot_every=settings.snapshot_every, sealer=sealer
        )

    def read_only() -> SqliteUnitOfWork:
        return SqliteUnitOfWork(
            ctx.db, snapshot_every=settings.snapshot_every, read_only=True, sealer=sealer
        )

    policy = RetryPolicy(
        step_timeout_s=settings.step_timeout_s,
        call_timeout_s=settings.call_timeout_s,
        stuck_after_s=settings.stuck_after_s,
        park_limit_s=settings.park_limit_s,
    )
    participants = GrpcParticipants(
        ctx.connect("inventory"), ctx.connect("payments"), ctx.connect("shipping")
    )
    worker = SagaWorker(
        unit_of_work,
        participants,
        policy,
        parallelism=settings.saga_parallelism,
        read_only=read_only,
        step_span=lambda name, parent, attributes: telemetry.span(
            name, attributes=dict(attributes), parent=parent or None
        ),
        acting_for=authz.acting_for,
    )
    ctx.add_worker("saga-worker", worker.run_forever)
    # Read on every PlaceOrder: `mesh config set orders max_lines_per_order=N` applies to the
    # next order, no restart.
    live = ctx.config(NAMESPACE, parse=parse_orders_config, default=DEFAULTS)
    orders = Orders(
        unit_of_work,
        line_limit=line_limit(live),
        on_placed=worker.wake,
        policy=policy,
        trace_context=telemetry.current_traceparent,
        request_retention=datetime.timedelta(seconds=settings.request_retention_s),
        read_only=read_only,
    )
    # "A customer reads their own orders": the policy needs each order's customer.
    ctx.authz.owners["order_id"] = authz.by_id(orders.owner_of)
    return [
        binding(
            OrdersServicer(orders, EVENTS), orders_pb2_grpc.add_OrdersServiceServicer_to_server
        ),
        binding(SagaAdminServicer(orders), sagas_pb2_grpc.add_SagaAdminServiceServicer_to_server),
    ]


SERVICE = Service[Settings](
    "orders",
    build,
    settings=Settings,
    migrations=MIGRATIONS,
    events=EVENTS,
    peers=("inventory", "payments", "shipping"),
)
