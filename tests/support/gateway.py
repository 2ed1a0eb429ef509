"""The whole shop behind its gateway, for the tests that use it as a browser or an app does."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.identity import TEST_CLIENTS, Identity, login, register
from support.mesh import mesh_tokens, mesh_up, write_moved_mesh_toml

PASSWORD = "correct horse battery staple 42"
# The tests' rate limits: roomy, but PUT /v1/stock/{sku} (admins only, which no other test calls
# through the gateway: set stock with gRPC) allows 3 a minute, so a test can reach its 429.
TEST_LIMITS = """
[[default]]
name = "default"
capacity = 1000
per_seconds = 60

[[route."PUT /v1/stock/{sku}"]]
name = "stock-write"
capacity = 3
per_seconds = 60
"""
# A fresh order_views replays the shared broker's whole history first (every earlier run's
# events): read-your-writes waits are bounded by a call's deadline, so the tests start once it
# has caught up.
CATCH_UP_S = 300.0


@dataclass(frozen=True)
class Shop:
    """Where the shop's mesh listens: the gateway's base URL, identity, every component's port."""

    root: Path
    gateway: str  # http://127.0.0.1:<port>
    identity: Identity
    ports: dict[str, int]
    env: dict[str, str]

    def customer(self) -> tuple[str, str, str]:
        """A new customer account: (email, password, access token)."""
        email = f"shopper-{uuid.uuid4().hex[:10]}@example.com"
        register(self.identity, email, PASSWORD)
        return email, PASSWORD, login(self.identity, email, PASSWORD)["access_token"]


@contextmanager
def running_shop(root: Path, kafka_bootstrap: str) -> Iterator[Shop]:
    """`mesh up -d` of every component on free ports, identity's shop-web client allowed back to
    this gateway's page. `mesh down` when the block ends."""
    ports = write_moved_mesh_toml(root)
    gateway = f"http://127.0.0.1:{ports['gateway:http']}"
    clients = root / "clients.toml"
    clients.write_text(
        TEST_CLIENTS.replace(
            'redirect_uris = ["http://127.0.0.1:8765/callback"]',
            f'redirect_uris = ["{gateway}/", "http://127.0.0.1:8765/callback"]',
        )
    )
    limits = root / "ratelimits.toml"
    limits.write_text(TEST_LIMITS)
    env = {
        **os.environ,
        "GATEWAY_RATE_LIMITS_FILE": str(limits),
        "SCHEMA_REGISTRY_URL": f"http://127.0.0.1:{ports['schema-registry']}",
        "IDENTITY_CLIENTS_FILE": str(clients),
        "IDENTITY_DEVICE_INTERVAL": "1",
        "IDENTITY_CORS_ORIGINS": gateway,
        "GATEWAY_CORS_ORIGINS": gateway,
    }
    for key in ("MESH_KAFKA_BOOTSTRAP", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        env.pop(key, None)
    with mesh_up(root, kafka_bootstrap, env):
        wait_for_order_views(root, f"127.0.0.1:{ports['order_views']}")
        yield Shop(root, gateway, Identity.at(root, ports, env), ports, env)


def wait_for_order_views(root: Path, address: str, timeout: float = CATCH_UP_S) -> None:
    """Return once order_views at ``address`` has no lag on any partition (asked as support,
    whom its policy lets see the projections' lag)."""
    import grpc

    from shop.order_views.v1 import order_views_pb2, order_views_pb2_grpc

    support = mesh_tokens(root).metadata("support")
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = order_views_pb2_grpc.OrderViewsServiceStub(channel)
        while True:
            status = stub.GetProjectionStatus(
                order_views_pb2.GetProjectionStatusRequest(), metadata=support, timeout=10
            )
            lags = [p.lag for p in status.partitions]
            if lags and not any(lags):
                return
            assert time.monotonic() < deadline, f"order_views still behind after {timeout}s"
            time.sleep(0.5)  # poll interval within the deadline loop


@pytest.fixture(scope="session")
def shop_mesh(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> Iterator[Shop]:
    """The whole shop on free ports, gateway included, shared by the tests that use it."""
    with running_shop(tmp_path_factory.mktemp("shop-mesh"), kafka_bootstrap) as shop:
        yield shop
