"""Entrypoints of the payments service."""
