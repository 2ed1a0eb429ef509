"""Entrypoints of the orders service."""
