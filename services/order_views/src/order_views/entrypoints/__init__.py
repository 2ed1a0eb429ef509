"""Entrypoints of the order_views service."""
