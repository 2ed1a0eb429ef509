"""`mesh dlq`: where its bootstrap comes from, and its help."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mesh_runner import cli
from mesh_runner.config import ConfigError
from mesh_runner.dlq import resolve_bootstrap


def test_dlq_bootstrap_comes_from_the_flag_the_env_or_the_running_mesh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MESH_KAFKA_BOOTSTRAP", raising=False)
    with pytest.raises(ConfigError, match="--bootstrap"):
        resolve_bootstrap(None, tmp_path)
    run_dir = tmp_path / ".mesh" / "run"
    run_dir.mkdir(parents=True)
    (run_dir / "kafka-choice.json").write_text(
        json.dumps({"mode": "local", "bootstrap": "127.0.0.1:9092", "managed": True})
    )
    assert resolve_bootstrap(None, tmp_path) == "127.0.0.1:9092"
    monkeypatch.setenv("MESH_KAFKA_BOOTSTRAP", "10.0.0.1:9092")
    assert resolve_bootstrap(None, tmp_path) == "10.0.0.1:9092"
    assert resolve_bootstrap("h:1", tmp_path) == "h:1"


def test_mesh_dlq_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["dlq", "--help"], ["dlq", "ls", "--help"], ["dlq", "replay", "--help"]):
        with pytest.raises(SystemExit) as exited:
            cli.main(argv)
        assert exited.value.code == 0
    assert "TOPIC" in capsys.readouterr().out
