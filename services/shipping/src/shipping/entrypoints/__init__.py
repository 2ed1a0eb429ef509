"""Entrypoints of the shipping service."""
