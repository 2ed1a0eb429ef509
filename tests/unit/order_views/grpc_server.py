"""A real gRPC server (port 0) for order_views' unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import grpc

from meshkit.server import ServiceBinding, create_server
from meshkit.settings import ServerSettings


@contextmanager
def serving(*bindings: ServiceBinding) -> Iterator[grpc.Channel]:
    """A real gRPC server (port 0) of ``bindings``, and a channel to it; stopped after."""
    server = create_server("order_views", ServerSettings(port=0, log_level="WARNING"), bindings)
    port = server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        server.stop(0)
