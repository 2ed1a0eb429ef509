"""Inventory's adapters: SQLite storage."""
