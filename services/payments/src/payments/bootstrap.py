"""The composition root: builds payments's database, outbox, relay, use cases and server."""

from __future__ import annotations

from meshkit.events import EventCatalog, Outbox, OutboxRelay
from meshkit.server import MeshServer, ServiceBinding, create_server
from payments.adapters.avro import SOURCE
from payments.adapters.sqlite import SqliteUnitOfWork, open_database
from payments.app.payments import Payments
from payments.config import Settings
from payments.entrypoints.grpc_api import PaymentsServicer
from shop.payments.v1 import payments_pb2, payments_pb2_grpc

SERVICE_NAME = payments_pb2.DESCRIPTOR.services_by_name["PaymentsService"].full_name


def event_catalog() -> EventCatalog:
    """Payments's event contracts, shipped inside the generated contracts package."""
    return EventCatalog.from_package("shop.payments.v1")


def build(settings: Settings) -> MeshServer:
    """A ready-to-start payments server.

    Refuses (raises SchemaRegistrationError naming the subjects) when an event schema is not
    registered as it is here. Starting runs the outbox relay; stopping drains RPCs, stops the
    relay, then closes the database.
    """
    catalog = event_catalog()
    outbox = Outbox(catalog, settings.schema_registry_url, source=SOURCE)
    outbox.verify()
    db = open_database(str(settings.db_path))
    payments = Payments(lambda: SqliteUnitOfWork(db, outbox))
    relay = OutboxRelay(
        db,
        settings.kafka_bootstrap,
        topics=catalog.topics,
        create_topics=settings.kafka_create_topics,
    )
    binding = ServiceBinding(
        PaymentsServicer(payments),
        payments_pb2_grpc.add_PaymentsServiceServicer_to_server,
        SERVICE_NAME,
    )
    server = create_server("payments", settings, [binding])
    server.add_worker("outbox-relay", relay.run_forever)
    server.on_stop(relay.close)
    server.on_stop(db.close)
    return server
