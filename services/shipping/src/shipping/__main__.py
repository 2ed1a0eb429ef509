"""``python -m shipping``: run the shipping service (settings from SHIPPING_* variables)."""

import sys

from meshkit.server import run_service
from shipping.bootstrap import build
from shipping.config import PREFIX, Settings

if __name__ == "__main__":
    sys.exit(
        run_service(
            "shipping",
            PREFIX,
            Settings,
            build,
            description="Shipping: books and cancels shipments (shop.shipping.v1).",
        )
    )
