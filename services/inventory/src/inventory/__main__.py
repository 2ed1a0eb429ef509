"""``python -m inventory``: run the inventory service (``--help`` lists its settings)."""

import sys

from inventory.bootstrap import SERVICE

if __name__ == "__main__":
    sys.exit(SERVICE.main())
