"""App of the shipping service."""
