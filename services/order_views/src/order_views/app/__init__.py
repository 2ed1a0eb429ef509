"""App of the order_views service."""
