"""Control's entrypoints: the gRPC servicer."""
