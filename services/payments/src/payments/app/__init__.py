"""App of the payments service."""
