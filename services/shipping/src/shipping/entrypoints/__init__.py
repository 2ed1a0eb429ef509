"""Shipping's entrypoints: the gRPC servicer."""
