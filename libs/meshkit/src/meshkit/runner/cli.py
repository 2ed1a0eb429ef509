"""The `mesh` command (placeholder)."""

import sys


def main() -> int:
    """Entry point of the `mesh` command."""
    sys.stderr.write("mesh: not built yet\n")
    return 2
