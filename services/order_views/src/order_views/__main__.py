"""``python -m order_views``: run the order views service (ORDER_VIEWS_* variables)."""

import sys

from meshkit.server import run_service
from order_views.bootstrap import build
from order_views.config import PREFIX, Settings

if __name__ == "__main__":
    sys.exit(
        run_service(
            "order_views",
            PREFIX,
            Settings,
            build,
            description="Order views: the CQRS read side (shop.order_views.v1).",
        )
    )
