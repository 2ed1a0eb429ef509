"""``python -m shipping``: run the shipping service (``--help`` lists its settings)."""

import sys

from shipping.bootstrap import SERVICE

if __name__ == "__main__":
    sys.exit(SERVICE.main())
