"""Adapters of the payments service."""
