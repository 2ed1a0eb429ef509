"""Domain of the payments service."""
