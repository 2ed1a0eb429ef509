"""The runner's process records: recognise our process right away, never a recycled pid."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from mesh_runner.processes import ProcessRecord, is_alive, spawn, terminate


def script(tmp_path: Path) -> Path:
    """A shebang script whose child keeps running: the shape of a console-script component."""
    path = tmp_path / "component"
    path.write_text("#!/bin/sh\nsleep 30 &\nexec sleep 30\n")
    path.chmod(0o755)
    return path


def test_a_just_started_script_is_alive_and_stops_with_its_children(tmp_path: Path) -> None:
    # Right after exec of a script /proc/PID/cmdline can read empty; start time cannot.
    for attempt in range(10):
        record = spawn(
            "c",
            [str(script(tmp_path))],
            port=0,
            env=os.environ,
            cwd=tmp_path,
            log_path=tmp_path / f"{attempt}.log",
        )
        assert is_alive(record), f"attempt {attempt}: a live process was taken for dead"
        assert terminate(record, grace=5)
        assert not is_alive(record)
        assert not Path(f"/proc/{record.pid}").exists() or not is_alive(record)


def test_a_recycled_pid_is_not_ours(tmp_path: Path) -> None:
    record = spawn(
        "c", [str(script(tmp_path))], port=0, env=os.environ, cwd=tmp_path, log_path=tmp_path / "l"
    )
    impostor = dataclasses.replace(record, start_ticks=record.start_ticks - 1)
    assert is_alive(record) and not is_alive(impostor)
    terminate(record, grace=5)


def test_records_round_trip_and_can_be_forgotten(tmp_path: Path) -> None:
    record = ProcessRecord("x", 123, 80, ["a", "b"], 1.5, "log", 42)
    record.save(tmp_path)
    assert ProcessRecord.load(tmp_path, "x") == record
    ProcessRecord.forget(tmp_path, "x")
    assert ProcessRecord.load(tmp_path, "x") is None
