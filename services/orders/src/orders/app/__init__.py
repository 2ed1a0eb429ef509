"""App of the orders service."""
