"""`mesh --port-offset N`: the whole mesh moves by N (every declared port, and the same ports
inside URLs and arguments), into a state dir of its own, its local broker too (issue 19)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from mesh_runner.config import ConfigError, load_mesh
from mesh_runner.kafka import local_paths
from meshkit.addresses import http_url_of, port_of

REPO = Path(__file__).resolve().parents[3]
OFFSET = 100


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A scratch mesh root with the repository's mesh.toml (and proto/ linked)."""
    for name in ("MESH_PORT_OFFSET", "KAFKA_DATA_DIR", "KAFKA_PORT", "KAFKA_CONTROLLER_PORT"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "mesh.toml").write_text((REPO / "mesh.toml").read_text())
    (tmp_path / "proto").symlink_to(REPO / "proto")
    return tmp_path


def numbers_in(component: object) -> set[int]:
    return {int(n) for n in re.findall(r"\b\d+\b", repr(component))}


def test_every_port_of_every_component_moves(checkout: Path) -> None:
    plain = load_mesh(checkout)
    moved = load_mesh(checkout, OFFSET)
    assert [c.name for c in moved.components] == [c.name for c in plain.components]
    declared = {c.port for c in plain.components}
    declared |= {c.http_port for c in plain.components if c.http_port is not None}
    for before, after in zip(plain.components, moved.components, strict=True):
        assert after.port == before.port + OFFSET
        if before.http_port is not None:
            assert after.http_port == before.http_port + OFFSET
        # No default port is left in a URL or an argument: the registry's --port 8081 and
        # register-all's http://127.0.0.1:8081, the receiver's --port 4317, ...
        assert not numbers_in((after.command, after.env, after.after_start)) & declared, after
        expected = (before.command, before.env, before.after_start)
        assert repr((after.command, after.env, after.after_start)) == re.sub(
            r"\b\d+\b",
            lambda m: str(int(m[0]) + OFFSET) if int(m[0]) in declared else m[0],
            repr(expected),
        )
    assert moved.port_offset == OFFSET


def test_the_moved_mesh_has_its_own_state_and_is_what_the_services_read(checkout: Path) -> None:
    moved = load_mesh(checkout, OFFSET)
    assert moved.root == checkout / ".mesh" / f"offset-{OFFSET}"
    assert moved.state_dir != load_mesh(checkout).state_dir
    assert (moved.root / "proto").resolve() == (REPO / "proto").resolve()
    # The services find their peers in MESH_CONFIG (the moved mesh.toml), as meshkit does.
    env = {"MESH_CONFIG": str(moved.root / "mesh.toml")}
    for component in moved.components:
        assert port_of(component.name, env) == component.port
    identity = moved.component("identity")
    assert http_url_of("identity", env) == f"http://127.0.0.1:{identity.http_port}"
    # Loading the moved mesh again (its own root, or the env) does not move it twice.
    assert load_mesh(moved.root).components == moved.components
    assert load_mesh(moved.root, OFFSET).components == moved.components


def test_the_offset_comes_from_the_environment(
    checkout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESH_PORT_OFFSET", str(OFFSET))
    assert load_mesh(checkout).port_offset == OFFSET
    monkeypatch.setenv("MESH_PORT_OFFSET", "ten")
    with pytest.raises(ConfigError, match="MESH_PORT_OFFSET must be a whole number"):
        load_mesh(checkout)


def test_an_offset_past_the_last_port_is_refused(checkout: Path) -> None:
    with pytest.raises(ConfigError, match="past 65535"):
        load_mesh(checkout, 20000)


def test_the_local_broker_moves_with_its_own_data_dir(checkout: Path) -> None:
    plain, moved = local_paths(load_mesh(checkout)), local_paths(load_mesh(checkout, OFFSET))
    assert (plain.port, plain.controller_port) == (9092, 9093)
    assert (moved.port, moved.controller_port) == (9092 + OFFSET, 9093 + OFFSET)
    assert moved.data != plain.data
    assert moved.cache == plain.cache  # the jars are fetched once per checkout


def test_mesh_takes_the_offset_globally_and_after_up(checkout: Path) -> None:
    mesh = str(Path(sys.executable).parent / "mesh")
    ps = subprocess.run(
        [mesh, "--root", str(checkout), "--port-offset", str(OFFSET), "ps", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ps.returncode == 0, ps.stderr
    declared = tomllib.loads((REPO / "mesh.toml").read_text())["component"]
    rows = {row["name"]: row for row in json.loads(ps.stdout)}
    assert all(rows[c["name"]]["port"] == c["port"] + OFFSET for c in declared)
    usage = subprocess.run([mesh, "up", "--help"], capture_output=True, text=True, check=False)
    assert "--port-offset N" in usage.stdout
    bad = subprocess.run(
        [mesh, "--root", str(checkout), "--port-offset", "-3", "ps"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode != 0
    assert "Traceback" not in bad.stderr
