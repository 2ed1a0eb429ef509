"""``python -m control``: run the control service (``--help`` lists its settings)."""

import sys

from control.bootstrap import SERVICE

if __name__ == "__main__":
    sys.exit(SERVICE.main())
