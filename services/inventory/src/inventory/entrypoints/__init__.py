"""Inventory's entrypoints: the gRPC servicer."""
