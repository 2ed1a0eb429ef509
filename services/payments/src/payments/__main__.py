"""``python -m payments``: run the payments service (settings from PAYMENTS_* variables)."""

import sys

from meshkit.server import run_service
from payments.bootstrap import build
from payments.config import PREFIX, Settings

if __name__ == "__main__":
    sys.exit(
        run_service(
            "payments",
            PREFIX,
            Settings,
            build,
            description="Payments: a simulated card processor (shop.payments.v1).",
        )
    )
