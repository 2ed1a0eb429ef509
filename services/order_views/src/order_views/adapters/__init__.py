"""Adapters of the order_views service."""
