"""Domain of the order_views service."""
