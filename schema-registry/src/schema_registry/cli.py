"""The `schema-registry` command (placeholder until the registry issue lands)."""

import sys


def main() -> int:
    """Entry point of the `schema-registry` command."""
    sys.stderr.write("schema-registry: not built yet\n")
    return 2
