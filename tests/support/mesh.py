"""Fixtures for tests that run real services: free ports, the real grpcurl, in-process servers."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh_runner.processes import port_open

REPO = Path(__file__).resolve().parents[2]
GRPCURL = REPO / ".cache" / "bin" / "grpcurl"
MESH = str(Path(sys.executable).parent / "mesh")
# The mesh's default ports (mesh.toml): gRPC services, the schema registry, the OTLP receiver.
DEFAULT_PORTS = (50051, 50052, 50053, 50054, 50055, 8081, 4317)


def mesh_cli(root: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run the real `mesh --root ROOT ARGS...` and capture its output."""
    return subprocess.run(
        [MESH, "--root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def mesh_ps(root: Path) -> dict[str, dict[str, object]]:
    """`mesh ps --json`, by component name."""
    result = mesh_cli(root, "ps", "--json")
    assert result.returncode == 0, result.stderr
    return {str(row["name"]): row for row in json.loads(result.stdout)}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int) -> bool:
    """True when something accepts connections on 127.0.0.1:port (the runner's probe, which a
    connection of the probe to itself, possible on ports in the ephemeral range, cannot fool)."""
    return port_open("127.0.0.1", port, timeout=0.2)


class Grpcurl:
    """The real grpcurl binary (installed by `make tools`), plaintext, against 127.0.0.1."""

    def __init__(self, binary: Path) -> None:
        self.binary = binary

    def run(self, *args: str, data: object | None = None) -> subprocess.CompletedProcess[str]:
        """Run grpcurl with ``args``; ``data`` is sent as the JSON request (-d)."""
        argv = [str(self.binary), "-plaintext", "-max-time", "10"]
        if data is not None:
            argv += ["-d", json.dumps(data)]
        return subprocess.run(
            [*argv, *args], capture_output=True, text=True, timeout=30, check=False
        )

    def call(self, address: str, method: str, data: object) -> dict[str, object]:
        """Invoke ``method`` and return the JSON response; fails the test on a non-zero exit."""
        result = self.run(address, method, data=data)
        assert result.returncode == 0, f"grpcurl {method} failed: {result.stderr}"
        parsed: dict[str, object] = json.loads(result.stdout or "{}")
        return parsed


@pytest.fixture(scope="session")
def grpcurl() -> Grpcurl:
    """The real grpcurl; `make tools` installs it (the test fails loudly when it is missing)."""
    binary = GRPCURL if GRPCURL.exists() else shutil.which("grpcurl")
    assert binary, "grpcurl not found: run `make tools` (installs it into .cache/bin)"
    return Grpcurl(Path(binary))


@pytest.fixture
def tmp_mesh_root(tmp_path: Path) -> Iterator[Path]:
    """A scratch checkout for `mesh --root`: the repo's mesh.toml, proto/ and .cache/ linked in
    (.cache/kafka holds the jars `mesh up --kafka local` would otherwise fetch again).

    State (.mesh/) lands in the scratch directory, so tests never touch a developer's own mesh.
    At teardown `mesh down` runs whatever happened (a failed `up` included), so nothing a test
    started outlives it.
    """
    for name in ("mesh.toml", "proto", ".cache"):
        (tmp_path / name).symlink_to(REPO / name)
    yield tmp_path
    mesh_cli(tmp_path, "down")


@pytest.fixture
def running_mesh(tmp_mesh_root: Path, kafka_bootstrap: str) -> Iterator[Path]:
    """`mesh up -d` on the real Kafka in a scratch root (torn down by ``tmp_mesh_root``)."""
    busy = [p for p in DEFAULT_PORTS if port_in_use(p)]
    assert not busy, f"ports {busy} are in use: stop your own mesh (`mesh down`) first"
    result = mesh_cli(tmp_mesh_root, "up", "-d", "--kafka", kafka_bootstrap)
    assert result.returncode == 0, result.stderr
    yield tmp_mesh_root
