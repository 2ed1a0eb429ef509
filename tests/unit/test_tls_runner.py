"""How the mesh runner turns TLS on: `mesh up --tls` refuses to mix with a mesh already running
in plaintext, notes the running mesh's TLS so that later commands adopt it (until `mesh down`),
and gives each component its certificate name and, for spans sent to the mesh's own receiver,
the OTLP exporter's https endpoint and certificates."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mesh_runner import certs
from mesh_runner.cli import component_env
from mesh_runner.config import load_mesh
from mesh_runner.kafka import KafkaChoice
from mesh_runner.processes import spawn, terminate

MESH_TOML = """
[[component]]
name = "trace-receiver"
command = ["python", "-m", "mesh_runner.receiver"]
port = 4317
health = "grpc"
traced = false

[[component]]
name = "inventory"
command = ["sleep", "30"]
port = 50052
health = "grpc"
"""


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "mesh.toml").write_text(MESH_TOML)
    for key in ("MESH_TLS_DIR", "MESH_TLS_NAME", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    return tmp_path


def _choice() -> KafkaChoice:
    return KafkaChoice("external", "127.0.0.1:9092", managed=False)


def test_without_tls_nothing_is_added(root: Path) -> None:
    mesh = load_mesh(root)
    env = component_env(mesh, _choice(), mesh.component("inventory"))
    assert "MESH_TLS_DIR" not in env
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:4317"


def test_up_tls_issues_records_and_gives_each_component_its_certificate(root: Path) -> None:
    mesh = load_mesh(root)  # enable() sets MESH_TLS_*: the fixture's delenv restores them
    said: list[str] = []
    assert certs.enable(mesh, said.append)
    directory = root / ".mesh" / "certs"
    assert certs.recorded(mesh.run_dir) == directory
    assert any(line.startswith("certs: inventory: issued") for line in said)
    env = component_env(mesh, _choice(), mesh.component("inventory"))
    assert env["MESH_TLS_DIR"] == str(directory)
    assert env["MESH_TLS_NAME"] == "inventory"
    # Spans go to the mesh's own receiver, a kit server: over mTLS as well.
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "https://127.0.0.1:4317"
    assert env["OTEL_EXPORTER_OTLP_CERTIFICATE"] == str(directory / "ca.pem")
    assert env["OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"] == str(directory / "inventory.pem")
    assert env["OTEL_EXPORTER_OTLP_CLIENT_KEY"] == str(directory / "inventory-key.pem")
    receiver = component_env(mesh, _choice(), mesh.component("trace-receiver"))
    assert receiver["MESH_TLS_NAME"] == "trace-receiver"


def test_a_users_own_otlp_endpoint_is_left_alone(root: Path) -> None:
    mesh = load_mesh(root)
    env = {"MESH_TLS_DIR": "/x", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4317"}
    assert certs.component_env(mesh, mesh.component("inventory"), env) == {
        "MESH_TLS_NAME": "inventory"
    }


def test_later_commands_adopt_the_running_meshs_tls_until_down(root: Path) -> None:
    mesh = load_mesh(root)
    environ: dict[str, str] = {}
    certs.adopt(root, environ)
    assert environ == {}
    certs.record(mesh.run_dir, root / ".mesh" / "certs")
    certs.adopt(root, environ)
    assert environ == {"MESH_TLS_DIR": str(root / ".mesh" / "certs"), "MESH_TLS_NAME": "client"}
    certs.forget(mesh.run_dir)
    assert certs.recorded(mesh.run_dir) is None


def test_up_tls_refuses_a_mesh_already_running_in_plaintext(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mesh = load_mesh(root)
    record = spawn(
        "inventory",
        ["sleep", "30"],
        port=50052,
        env=dict(os.environ),
        cwd=root,
        log_path=root / "inventory.log",
    )
    record.save(mesh.run_dir)
    try:
        assert not certs.enable(mesh, lambda _line: None)
    finally:
        terminate(record, grace=2)
    assert "already runs without TLS (inventory): `mesh down` first" in capsys.readouterr().err
    assert certs.recorded(mesh.run_dir) is None
