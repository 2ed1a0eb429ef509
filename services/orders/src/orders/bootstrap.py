"""The composition root: builds orders' database, outbox, relay, saga worker, use cases, server."""

from __future__ import annotations

from mesh.sagas.v1 import sagas_pb2, sagas_pb2_grpc
from meshkit import telemetry
from meshkit.client import connect
from meshkit.events import EventCatalog, Outbox, OutboxRelay
from meshkit.server import MeshServer, ServiceBinding, create_server
from orders.adapters.events import OutboxPublisher
from orders.adapters.participants import GrpcParticipants
from orders.adapters.sqlite import SqliteUnitOfWork, open_database
from orders.app.orders import Orders
from orders.app.saga_worker import SagaWorker
from orders.config import Settings
from orders.domain.saga import RetryPolicy
from orders.entrypoints.grpc_api import OrdersServicer
from orders.entrypoints.saga_admin import SagaAdminServicer
from shop.orders.v1 import orders_pb2, orders_pb2_grpc

SERVICE_NAME = orders_pb2.DESCRIPTOR.services_by_name["OrdersService"].full_name
ADMIN_SERVICE_NAME = sagas_pb2.DESCRIPTOR.services_by_name["SagaAdminService"].full_name
SOURCE = "/meshkit/orders"


def event_catalog() -> EventCatalog:
    """Orders's event contracts, shipped inside the generated contracts package."""
    return EventCatalog.from_package("shop.orders.v1")


def build(settings: Settings) -> MeshServer:
    """A ready-to-start orders server.

    Refuses (SchemaRegistrationError naming the subjects) when an event schema is not registered
    as it is here. Starting runs the saga worker (which first resumes every saga in flight) and
    the outbox relay; stopping drains RPCs, stops both, closes the channels, then the database.
    """
    catalog = event_catalog()
    outbox = Outbox(catalog, settings.schema_registry_url, source=SOURCE)
    outbox.verify()
    db = open_database(str(settings.db_path))
    publisher = OutboxPublisher(outbox)

    def unit_of_work() -> SqliteUnitOfWork:
        return SqliteUnitOfWork(db, publisher, snapshot_every=settings.snapshot_every)

    channels = [
        connect(settings.inventory_target),
        connect(settings.payments_target),
        connect(settings.shipping_target),
    ]
    policy = RetryPolicy(
        step_timeout_s=settings.step_timeout_s,
        call_timeout_s=settings.call_timeout_s,
        stuck_after_s=settings.stuck_after_s,
    )
    worker = SagaWorker(
        unit_of_work,
        GrpcParticipants(*channels),
        policy,
        parallelism=settings.saga_parallelism,
        step_span=lambda name, parent, attributes: telemetry.span(
            name, attributes=dict(attributes), parent=parent or None
        ),
    )
    orders = Orders(
        unit_of_work,
        on_placed=worker.wake,
        policy=policy,
        trace_context=telemetry.current_traceparent,
    )
    relay = OutboxRelay(
        db,
        settings.kafka_bootstrap,
        topics=catalog.topics,
        create_topics=settings.kafka_create_topics,
    )
    bindings = [
        ServiceBinding(
            OrdersServicer(orders),
            orders_pb2_grpc.add_OrdersServiceServicer_to_server,
            SERVICE_NAME,
        ),
        ServiceBinding(
            SagaAdminServicer(orders),
            sagas_pb2_grpc.add_SagaAdminServiceServicer_to_server,
            ADMIN_SERVICE_NAME,
        ),
    ]
    server = create_server("orders", settings, bindings)
    server.add_worker("saga-worker", worker.run_forever)
    server.add_worker("outbox-relay", relay.run_forever)
    server.on_stop(relay.close)
    for channel in channels:
        server.on_stop(channel.close)
    server.on_stop(db.close)
    return server
