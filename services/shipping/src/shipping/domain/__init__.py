"""Domain of the shipping service."""
