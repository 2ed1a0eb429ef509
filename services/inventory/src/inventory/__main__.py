"""``python -m inventory``: run the inventory service (settings from INVENTORY_* variables)."""

import sys

from inventory.bootstrap import build
from inventory.config import PREFIX, Settings
from meshkit.server import run_service

if __name__ == "__main__":
    sys.exit(
        run_service(
            "inventory",
            PREFIX,
            Settings,
            build,
            description="Inventory: stock levels and reservations (shop.inventory.v1).",
        )
    )
