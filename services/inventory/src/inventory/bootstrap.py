"""The composition root: inventory's use cases and servicer, on the service kit."""

from __future__ import annotations

from inventory.adapters.events import EVENTS
from inventory.adapters.sqlite import MIGRATIONS, SqliteUnitOfWork
from inventory.app.inventory import Inventory
from inventory.entrypoints.grpc_api import InventoryServicer
from meshkit.server import ServiceBinding
from meshkit.service import Service, ServiceContext, binding
from meshkit.settings import ServiceSettings
from shop.inventory.v1 import inventory_pb2_grpc


def build(ctx: ServiceContext[ServiceSettings]) -> list[ServiceBinding]:
    """Inventory's servicer over its use cases, each call one unit of work on ``ctx.db``."""
    inventory = Inventory(lambda: SqliteUnitOfWork(ctx.db, ctx.events))
    return [
        binding(
            InventoryServicer(inventory), inventory_pb2_grpc.add_InventoryServiceServicer_to_server
        )
    ]


SERVICE = Service[ServiceSettings]("inventory", build, migrations=MIGRATIONS, events=EVENTS)
