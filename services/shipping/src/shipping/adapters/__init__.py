"""Adapters of the shipping service."""
