"""mesh_runner.local_kafka: where it keeps jars and state (the mesh root, not the script's
location), and the scripts/kafka wrapper's command line, which CI and tests call."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mesh_runner.local_kafka import KAFKA_VERSION, Paths

REPO = Path(__file__).resolve().parents[3]
WRAPPER = REPO / "scripts" / "kafka"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MESH_ROOT", "KAFKA_DATA_DIR")}
    return {**env, **extra}


def test_paths_follow_the_mesh_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAFKA_DATA_DIR", raising=False)
    paths = Paths.for_root(tmp_path)
    assert paths.libs == tmp_path.resolve() / ".cache" / "kafka" / KAFKA_VERSION / "libs"
    assert paths.pid == tmp_path.resolve() / ".mesh" / "kafka" / "kafka.pid"
    monkeypatch.setenv("KAFKA_DATA_DIR", str(tmp_path / "elsewhere"))
    assert Paths.for_root(tmp_path).config == tmp_path / "elsewhere" / "server.properties"


def test_the_wrapper_runs_on_the_standard_library_alone() -> None:
    # -I -S: no site-packages, as on a CI machine before .venv exists.
    result = subprocess.run(
        [sys.executable, "-I", "-S", str(WRAPPER), "--help"],
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
        env=_env(),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: scripts/kafka")
    assert str(REPO / ".cache" / "kafka" / KAFKA_VERSION / "libs") in result.stdout


def test_the_wrapper_keeps_its_usage_error() -> None:
    result = subprocess.run(
        [str(WRAPPER), "restart"], capture_output=True, text=True, check=False, env=_env()
    )
    assert result.returncode == 2
    assert "invalid choice: 'restart'" in result.stderr


def test_the_module_finds_its_mesh_root_from_the_working_directory(tmp_path: Path) -> None:
    module = [sys.executable, "-m", "mesh_runner.local_kafka"]
    lost = subprocess.run(
        [*module, "logs"], capture_output=True, text=True, check=False, cwd=tmp_path, env=_env()
    )
    assert lost.returncode == 1
    assert "no mesh.toml" in lost.stderr
    (tmp_path / "mesh.toml").write_text("")
    (tmp_path / "sub").mkdir()
    found = subprocess.run(
        [*module, "logs"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path / "sub",
        env=_env(),
    )
    assert found.returncode == 3, "not running: no broker log yet"
    assert str(tmp_path.resolve() / ".mesh" / "kafka" / "kafka.log") in found.stderr
