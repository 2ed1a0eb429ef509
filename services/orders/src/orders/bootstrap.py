"""The composition root: orders' event store, saga worker, use cases and servicers, on the kit."""

from __future__ import annotations

import contextlib
import datetime
import logging
from collections.abc import Callable, Iterator, Mapping

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from mesh.sagas.v1 import sagas_pb2_grpc
from meshkit import authz, telemetry
from meshkit.events import SchemaRegistrationError
from meshkit.server import ServiceBinding
from meshkit.service import Service, ServiceContext, binding
from meshkit.settings import SettingsError
from orders.adapters.events import EVENTS
from orders.adapters.live_config import DEFAULTS, NAMESPACE, line_limit, parse_orders_config
from orders.adapters.participants import GrpcParticipants
from orders.adapters.secrets import TokenSealer
from orders.adapters.sqlite import MIGRATIONS, SqliteUnitOfWork
from orders.app.orders import Orders
from orders.app.ports import Conversion
from orders.app.saga_worker import SagaWorker, StepTrace
from orders.config import Settings
from orders.domain.model import Order
from orders.domain.saga import RetryPolicy
from orders.entrypoints.grpc_api import OrdersServicer
from orders.entrypoints.saga_admin import SagaAdminServicer
from shop.orders.v1 import orders_pb2_grpc

log = logging.getLogger("orders")

ORDER_CONFIRMED = "order_confirmed"
"""The experiments metric a confirmed order counts (the checkout experiment's conversion)."""


def build(ctx: ServiceContext[Settings]) -> list[ServiceBinding]:
    """OrdersService and SagaAdminService over the use cases, and the saga worker (which first
    resumes every saga in flight) driving inventory, payments and shipping. PlaceOrder's line
    limit is the config namespace "orders", pushed live by the control plane; a confirmed order
    is its customer's conversion (metric ``order_confirmed``) for the shop's experiments."""
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
    conversions = _conversions(ctx)

    participants = GrpcParticipants(
        ctx.connect("inventory"), ctx.connect("payments"), ctx.connect("shipping")
    )
    worker = SagaWorker(
        unit_of_work,
        participants,
        policy,
        parallelism=settings.saga_parallelism,
        read_only=read_only,
        step_span=step_span,
        acting_for=authz.acting_for,
        conversions=conversions,
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


class _StepSpan:
    """A saga step's span, told when the participant refused (saga_worker.StepTrace)."""

    def __init__(self, span: trace.Span) -> None:
        self._span = span

    def rejected(self, reason: str) -> None:
        # Like an out-of-stock call's span, the step is an error; for a decline (an OK answer
        # on the wire) this is the only place a trace says the payment was declined, and why.
        self._span.set_attribute("error.type", "rejected")
        self._span.set_attribute("saga.rejected_reason", reason)
        self._span.set_status(Status(StatusCode.ERROR, reason))


@contextlib.contextmanager
def step_span(name: str, parent: str, attributes: Mapping[str, str]) -> Iterator[StepTrace]:
    """The span around one saga step, continuing the PlaceOrder's trace (``parent``)."""
    with telemetry.span(name, attributes=dict(attributes), parent=parent or None) as span:
        yield _StepSpan(span)


def _conversions(ctx: ServiceContext[Settings]) -> Callable[[Order], list[Conversion]]:
    """What a confirmed order publishes for the shop's experiments: its customer's conversion.

    Counting conversions is not worth an order: when the registry lacks the experiments'
    contracts (a mesh that never registered them), orders runs without, and says so once."""
    try:
        experiments = ctx.experiments
    except SchemaRegistrationError as exc:
        log.warning("orders counts no experiment conversions: %s", exc)
        return lambda _order: []

    def conversions(order: Order) -> list[Conversion]:
        # The unit is the customer: the shop page's checkout experiment assigns by the signed-in
        # subject, which is the order's customer_id (the gateway sets it from the token).
        value = order.total.total_nanos / 1e9 if order.total is not None else 0.0
        return [experiments.conversion(ORDER_CONFIRMED, order.customer_id, value)]

    return conversions


SERVICE = Service[Settings](
    "orders",
    build,
    settings=Settings,
    migrations=MIGRATIONS,
    events=EVENTS,
    peers=("inventory", "payments", "shipping"),
)
