"""A running identity (with its schema registry) for the tests that log in to it for real."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.mesh import write_moved_mesh_toml

REPO = Path(__file__).resolve().parents[2]
MESH = str(Path(sys.executable).parent / "mesh")

# A client file for the tests: the shipped clients plus a legacy one that may use the implicit
# and password grants (off for everyone else), and a confidential one allowed to introspect.
TEST_CLIENTS = """
[[client]]
client_id = "shop-web"
type = "public"
grant_types = ["authorization_code", "refresh_token"]
response_types = ["code"]
redirect_uris = ["http://127.0.0.1:8765/callback"]
scopes = ["orders", "offline_access"]

[[client]]
client_id = "shop-tv"
type = "public"
grant_types = ["urn:ietf:params:oauth:grant-type:device_code", "refresh_token"]
scopes = ["orders", "offline_access"]

[[client]]
client_id = "shop-backend"
type = "confidential"
grant_types = ["client_credentials"]
scopes = ["orders", "inventory.admin"]
roles = ["service"]
secret_env = "SHOP_BACKEND_CLIENT_SECRET"
secret_default = "dev-shop-backend-secret"

[[client]]
client_id = "legacy-app"
type = "public"
grant_types = ["authorization_code", "password", "refresh_token"]
response_types = ["code", "token"]
redirect_uris = ["http://127.0.0.1:8766/legacy"]
scopes = ["orders"]
"""


@dataclass(frozen=True)
class Identity:
    """Where the test identity listens, and its scratch root (logs in .mesh/logs/)."""

    root: Path
    grpc: str  # host:port
    issuer: str  # http://127.0.0.1:<port>
    registry: str
    env: dict[str, str]


def _mesh(root: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MESH, "--root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        check=False,
    )


@pytest.fixture(scope="session")
def identity(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> Iterator[Identity]:
    """`mesh up -d` of the schema registry and identity on free ports, with the real argon2
    parameters, a 1-second device polling interval and the test clients above."""
    root = tmp_path_factory.mktemp("identity-mesh")
    for name in ("proto", "scripts"):
        (root / name).symlink_to(REPO / name)
    clients = root / "clients.toml"
    clients.write_text(TEST_CLIENTS)
    ports = write_moved_mesh_toml(root, ("trace-receiver", "schema-registry", "identity"))
    env = {
        **os.environ,
        "SCHEMA_REGISTRY_URL": f"http://127.0.0.1:{ports['schema-registry']}",
        "IDENTITY_CLIENTS_FILE": str(clients),
        "IDENTITY_DEVICE_INTERVAL": "1",
    }
    for key in ("MESH_KAFKA_BOOTSTRAP", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        env.pop(key, None)
    up = _mesh(root, "up", "-d", "--kafka", kafka_bootstrap, env=env)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield Identity(
            root,
            f"127.0.0.1:{ports['identity']}",
            f"http://127.0.0.1:{ports['identity:http']}",
            env["SCHEMA_REGISTRY_URL"],
            env,
        )
    finally:
        down = _mesh(root, "down", env=env)
        assert down.returncode == 0, down.stderr
