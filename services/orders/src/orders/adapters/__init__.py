"""Adapters of the orders service."""
