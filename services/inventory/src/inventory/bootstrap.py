"""The composition root: builds inventory's database, use cases and server from its settings."""

from __future__ import annotations

from inventory.adapters.sqlite import SqliteUnitOfWork, open_database
from inventory.app.inventory import Inventory
from inventory.config import Settings
from inventory.entrypoints.grpc_api import InventoryServicer
from meshkit.server import MeshServer, ServiceBinding, create_server
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc

SERVICE_NAME = inventory_pb2.DESCRIPTOR.services_by_name["InventoryService"].full_name


def build(settings: Settings) -> MeshServer:
    """A ready-to-start inventory server; stopping it closes the database."""
    db = open_database(str(settings.db_path))
    inventory = Inventory(lambda: SqliteUnitOfWork(db))
    binding = ServiceBinding(
        InventoryServicer(inventory),
        inventory_pb2_grpc.add_InventoryServiceServicer_to_server,
        SERVICE_NAME,
    )
    return create_server("inventory", settings, [binding], on_stop=[db.close])
