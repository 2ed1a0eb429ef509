"""``python -m audit``: run the audit service (``--help`` lists its settings)."""

import sys

from audit.bootstrap import SERVICE

if __name__ == "__main__":
    sys.exit(SERVICE.main())
