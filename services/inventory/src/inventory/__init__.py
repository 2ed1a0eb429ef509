"""Inventory: stock levels and reservations for the reference shop."""
