"""The composition root: order_views' copies of the read model, their consumers, the query and
rebuild use cases and their servicers, on the service kit."""

from __future__ import annotations

from mesh.projections.v1 import projections_pb2_grpc
from meshkit.events import Consumers, EventCatalog
from meshkit.server import ServiceBinding
from meshkit.service import Service, ServiceContext, binding
from order_views.adapters.copies import SqliteCopies
from order_views.adapters.kafka import CONTRACT_PACKAGES, KafkaLag
from order_views.adapters.sqlite import SqliteViewStore
from order_views.app.ports import PartitionPosition
from order_views.app.progress import Progress
from order_views.app.queries import OrderQueries
from order_views.app.rebuild import Rebuilder
from order_views.config import Settings
from order_views.domain.consistency import ConsistencyToken
from order_views.entrypoints.admin import ProjectionAdminServicer
from order_views.entrypoints.events import handlers
from order_views.entrypoints.grpc_api import OrderViewsServicer
from shop.order_views.v1 import order_views_pb2_grpc


def build(
    ctx: ServiceContext[Settings], catalog: EventCatalog | None = None
) -> list[ServiceBinding]:
    """The OrderViewsService and ProjectionAdminService servicers over the serving copy.

    ``catalog`` is what it consumes: by default every event contract of the four contexts
    (``consumes``, checked against the registry by the kit); tests give the same contracts on
    topics of their own (checked here). Starting runs the serving copy's consumer; stopping
    drains RPCs, aborts a rebuild in progress (the serving copy stays), stops the consumers, then
    closes the databases.
    """
    settings = ctx.settings
    apply = handlers(SqliteViewStore)
    if catalog is None:
        consumers = ctx.consumers(apply)
    else:
        catalog.verify(settings.schema_registry_url, readers=True)
        consumers = Consumers(
            settings.kafka_bootstrap, settings.schema_registry_url, catalog, apply
        )
    progress = Progress()
    copies = SqliteCopies(settings.db_path, consumers, progress)
    lag = KafkaLag(settings.kafka_bootstrap, consumers.topics)
    rebuilder = Rebuilder(copies, progress, lag, timeout_s=settings.rebuild_timeout_s)

    def status() -> list[PartitionPosition]:
        copy = copies.active()
        return lag.partitions(copy.group, copy.positions())

    # The serving copy's consumer runs on a thread of the copy's own, since a rebuild replaces
    # it; this worker starts it, then follows swaps other processes on the same directory make
    # and wakes waiters for their writes. The closers below stop every copy.
    ctx.add_worker("projection", copies.run)
    ctx.on_stop(rebuilder.close)
    ctx.on_stop(copies.close)
    ctx.on_stop(lag.close)
    queries = OrderQueries(copies.lease, progress)
    # "A customer reads their own orders": the policy needs each order's customer. A caller
    # holding the consistency token of their own write is waited for (within the call's
    # deadline) like the query itself would, so a customer reads the order they just placed.
    ctx.authz.owners["order_id"] = lambda order_id, request, seconds_left: queries.owner_of(
        order_id,
        consistency=ConsistencyToken.parse(getattr(request, "consistency_token", "")),
        wait_s=max(0.0, seconds_left or 0.0),
    )
    return [
        binding(
            OrderViewsServicer(queries, status),
            order_views_pb2_grpc.add_OrderViewsServiceServicer_to_server,
        ),
        binding(
            ProjectionAdminServicer(rebuilder),
            projections_pb2_grpc.add_ProjectionAdminServiceServicer_to_server,
        ),
    ]


# It publishes nothing, and its db_path is the catalog of the read model's copies, which it
# manages itself (SqliteCopies): no database, outbox or relay of the kit's.
SERVICE = Service[Settings](
    "order_views", build, settings=Settings, consumes=CONTRACT_PACKAGES, database=False
)
