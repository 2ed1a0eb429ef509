"""The composition root: builds shipping's database, outbox, relay, use cases and server."""

from __future__ import annotations

from meshkit.events import EventCatalog, Outbox, OutboxRelay
from meshkit.server import MeshServer, ServiceBinding, create_server
from shipping.adapters.events import OutboxPublisher
from shipping.adapters.sqlite import SqliteUnitOfWork, open_database
from shipping.app.shipping import Shipping
from shipping.config import Settings
from shipping.entrypoints.grpc_api import ShippingServiceServicer
from shop.shipping.v1 import shipping_pb2, shipping_pb2_grpc

SERVICE_NAME = shipping_pb2.DESCRIPTOR.services_by_name["ShippingService"].full_name
SOURCE = "/meshkit/shipping"


def event_catalog() -> EventCatalog:
    """Shipping's event contracts, shipped inside the generated contracts package."""
    return EventCatalog.from_package("shop.shipping.v1")


def build(settings: Settings) -> MeshServer:
    """A ready-to-start shipping server.

    Refuses (raises SchemaRegistrationError naming the subjects) when an event schema is not
    registered as it is here. Starting runs the outbox relay; stopping drains RPCs, stops the
    relay, then closes the database.
    """
    catalog = event_catalog()
    outbox = Outbox(catalog, settings.schema_registry_url, source=SOURCE)
    outbox.verify()
    db = open_database(str(settings.db_path))
    publisher = OutboxPublisher(outbox)
    shipping = Shipping(
        lambda: SqliteUnitOfWork(db, publisher),
        unserved_countries=settings.unserved_country_codes,
    )
    relay = OutboxRelay(
        db,
        settings.kafka_bootstrap,
        topics=catalog.topics,
        create_topics=settings.kafka_create_topics,
    )
    binding = ServiceBinding(
        ShippingServiceServicer(shipping),
        shipping_pb2_grpc.add_ShippingServiceServicer_to_server,
        SERVICE_NAME,
    )
    server = create_server("shipping", settings, [binding])
    server.add_worker("outbox-relay", relay.run_forever)
    server.on_stop(relay.close)
    server.on_stop(db.close)
    return server
