"""``python -m orders``: run the orders service (settings from ORDERS_* variables)."""

import sys

from meshkit.server import run_service
from orders.bootstrap import build
from orders.config import PREFIX, Settings

if __name__ == "__main__":
    sys.exit(
        run_service(
            "orders",
            PREFIX,
            Settings,
            build,
            description="Orders: the event-sourced order aggregate and its saga (shop.orders.v1).",
        )
    )
