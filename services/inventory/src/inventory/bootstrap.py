"""The composition root: builds inventory's database, outbox, relay, use cases and server."""

from __future__ import annotations

from inventory.adapters.events import OutboxPublisher
from inventory.adapters.sqlite import SqliteUnitOfWork, open_database
from inventory.app.inventory import Inventory
from inventory.config import Settings
from inventory.entrypoints.grpc_api import InventoryServicer
from meshkit.events import EventCatalog, Outbox, OutboxRelay
from meshkit.server import MeshServer, ServiceBinding, create_server
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc

SERVICE_NAME = inventory_pb2.DESCRIPTOR.services_by_name["InventoryService"].full_name
SOURCE = "/meshkit/inventory"


def event_catalog() -> EventCatalog:
    """Inventory's event contracts, shipped inside the generated contracts package."""
    return EventCatalog.from_package("shop.inventory.v1")


def build(settings: Settings) -> MeshServer:
    """A ready-to-start inventory server.

    Refuses (raises SchemaRegistrationError naming the subjects) when an event schema is not
    registered as it is here. Starting runs the outbox relay; stopping drains RPCs, stops the
    relay, then closes the database.
    """
    catalog = event_catalog()
    outbox = Outbox(catalog, settings.schema_registry_url, source=SOURCE)
    outbox.verify()
    db = open_database(str(settings.db_path))
    publisher = OutboxPublisher(outbox)
    inventory = Inventory(lambda: SqliteUnitOfWork(db, publisher))
    relay = OutboxRelay(
        db,
        settings.kafka_bootstrap,
        topics=catalog.topics,
        create_topics=settings.kafka_create_topics,
    )
    binding = ServiceBinding(
        InventoryServicer(inventory),
        inventory_pb2_grpc.add_InventoryServiceServicer_to_server,
        SERVICE_NAME,
    )
    server = create_server("inventory", settings, [binding])
    server.add_worker("outbox-relay", relay.run_forever)
    server.on_stop(relay.close)
    server.on_stop(db.close)
    return server
