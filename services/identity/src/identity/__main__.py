"""``python -m identity``: run the identity service (``--help`` lists its settings)."""

import sys

from identity.bootstrap import SERVICE

if __name__ == "__main__":
    sys.exit(SERVICE.main())
