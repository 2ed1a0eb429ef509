"""End to end: `mesh up --registry-replicas 3` on the real broker.

The mesh is the repository's registry component alone (moved to free ports, the three
instances on consecutive ones). `mesh ps` shows three instances, one of them the primary; a
schema registered through one URL (a follower: it forwards) is read through another; after
kill -9 of the primary a write through a survivor goes through (once the group has elected
another: ~6-8 s) and `mesh ps` names the new primary; `mesh down` stops every instance.

Run under ``flock /tmp/meshkit-mesh.lock``: the instances share the broker's `_schemas` topic
and its group with any other mesh started with --registry-replicas.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from support.mesh import mesh_cli, mesh_ps, write_moved_mesh_toml
from support.tracing import poll

from mesh_runner.processes import port_open

INSTANCES = ("schema-registry", "schema-registry#2", "schema-registry#3")
CONTENT = "application/vnd.schemaregistry.v1+json"
# A write waits up to 10 s for a primary (then 50004); failover takes ~6-8 s.
FAILOVER_S = 30.0


def _registry_root(root: Path) -> int:
    """Write the scratch mesh.toml (the registry alone) until its port and the next two are
    free; returns its port."""
    for _ in range(20):
        port = write_moved_mesh_toml(root, ["schema-registry"])["schema-registry"]
        if not any(port_open("127.0.0.1", port + k) or not _bindable(port + k) for k in (1, 2)):
            return port
    raise AssertionError("no three consecutive free ports for the registry instances")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture(scope="module")
def registry_mesh(
    tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str
) -> Iterator[tuple[Path, list[str]]]:
    root = tmp_path_factory.mktemp("registry-replicas")
    (root / "proto").symlink_to(Path(__file__).resolve().parents[2] / "proto")
    port = _registry_root(root)
    env = {k: v for k, v in os.environ.items() if k != "SCHEMA_REGISTRY_URL"}
    up = mesh_cli(root, "up", "-d", "--kafka", kafka_bootstrap, "--registry-replicas", "3", env=env)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield root, [f"http://127.0.0.1:{port + k}" for k in range(3)]
    finally:
        down = mesh_cli(root, "down", env=env)
        assert down.returncode == 0, down.stderr


def _register(url: str, subject: str, schema: dict[str, object]) -> int:
    response = requests.post(
        f"{url}/subjects/{subject}/versions",
        data=json.dumps({"schema": json.dumps(schema)}),
        headers={"Content-Type": CONTENT},
        timeout=15,
    )
    assert response.status_code == 200, response.text
    return int(response.json()["id"])


def _latest(url: str, subject: str) -> dict[str, object]:
    response = requests.get(f"{url}/subjects/{subject}/versions/latest", timeout=5)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _schema(name: str, *fields: str) -> dict[str, object]:
    return {
        "type": "record",
        "name": name,
        "namespace": "test.replicas",
        "fields": [{"name": f, "type": "string", "default": ""} for f in fields],
    }


def test_three_instances_one_primary_and_a_write_after_the_primary_dies(
    registry_mesh: tuple[Path, list[str]],
) -> None:
    root, urls = registry_mesh
    rows = mesh_ps(root)
    assert [rows[name]["state"] for name in INSTANCES] == ["running"] * 3
    assert [rows[name]["port"] for name in INSTANCES] == [int(u.rpartition(":")[2]) for u in urls]
    roles = {name: str(rows[name]["role"]) for name in INSTANCES}
    primaries = [name for name, role in roles.items() if role == "primary"]
    assert len(primaries) == 1, roles
    assert sorted(roles.values()) == ["follower", "follower", "primary"]
    # register-all ran against them: the gRPC contracts are there, read from any instance.
    assert requests.get(f"{urls[2]}/subjects", timeout=5).json()

    name = f"R{uuid.uuid4().hex[:10]}"
    subject = f"replicas-{name}-value"
    followers = [u for n, u in zip(INSTANCES, urls, strict=True) if n not in primaries]
    first = _register(followers[0], subject, _schema(name, "a"))
    read = _latest(followers[1], subject)
    assert (read["id"], read["version"]) == (first, 1)

    os.kill(int(str(rows[primaries[0]]["pid"])), signal.SIGKILL)

    def write() -> int | None:
        response = requests.post(
            f"{followers[1]}/subjects/{subject}/versions",
            data=json.dumps({"schema": json.dumps(_schema(name, "a", "b"))}),
            headers={"Content-Type": CONTENT},
            timeout=15,
        )
        return int(response.json()["id"]) if response.status_code == 200 else None

    second = poll(write, FAILOVER_S, "a write through a survivor after kill -9 of the primary")
    read = _latest(followers[0], subject)
    assert (read["id"], read["version"]) == (second, 2)
    assert second != first

    def new_primary() -> str | None:
        now = mesh_ps(root)
        assert now[primaries[0]]["state"] == "stopped"
        found = [n for n in INSTANCES if now[n].get("role") == "primary"]
        return found[0] if found else None

    assert poll(new_primary, 10, "mesh ps naming the new primary") != primaries[0]

    down = mesh_cli(root, "down")
    assert down.returncode == 0, down.stderr
    assert not any(port_open("127.0.0.1", int(u.rpartition(":")[2])) for u in urls)
    assert not list((root / ".mesh" / "run").glob("schema-registry*.json"))
