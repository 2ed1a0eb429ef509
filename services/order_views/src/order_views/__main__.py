"""``python -m order_views``: run the order views service (``--help`` lists its settings)."""

import sys

from order_views.bootstrap import SERVICE

if __name__ == "__main__":
    sys.exit(SERVICE.main())
