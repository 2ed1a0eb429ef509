"""Shared pytest fixtures and helpers, loaded as plugins from tests/conftest.py."""
