"""Domain of the orders service."""
