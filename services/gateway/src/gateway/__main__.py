"""``python -m gateway``: run the gateway (``--help`` lists its settings)."""

import sys

from gateway.bootstrap import SERVICE

if __name__ == "__main__":
    sys.exit(SERVICE.main())
