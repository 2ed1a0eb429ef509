"""``python -m orders``: run the orders service (``--help`` lists its settings)."""

import sys

from orders.bootstrap import SERVICE

if __name__ == "__main__":
    sys.exit(SERVICE.main())
