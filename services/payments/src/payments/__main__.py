"""``python -m payments``: run the payments service (``--help`` lists its settings)."""

import sys

from payments.bootstrap import SERVICE

if __name__ == "__main__":
    sys.exit(SERVICE.main())
