"""`mesh ps | head -1`: a reader that leaves early ends the command quietly (exit 141, no
traceback), through the real `mesh` command with a pipe whose reading end is already closed."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from support.mesh import MESH, write_moved_mesh_toml

from meshkit.console import CLOSED_STDOUT_EXIT


def _with_closed_stdout(*argv: str) -> subprocess.CompletedProcess[str]:
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line: every write fails
    try:
        return subprocess.run(
            argv, stdout=write, stderr=subprocess.PIPE, text=True, timeout=120, check=False
        )
    finally:
        os.close(write)


@pytest.mark.parametrize("args", [("ps",), ("ps", "--json"), ("logs",)], ids=" ".join)
def test_mesh_with_a_closed_stdout_exits_141_without_a_traceback(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    write_moved_mesh_toml(tmp_path, ["trace-receiver", "schema-registry"])
    logs = tmp_path / ".mesh" / "logs"
    logs.mkdir(parents=True)
    (logs / "schema-registry.log").write_text("a line\n" * 5000)
    result = _with_closed_stdout(MESH, "--root", str(tmp_path), *args)
    assert result.stderr == ""
    assert result.returncode == CLOSED_STDOUT_EXIT


def test_mesh_help_into_a_pipe_read_to_the_end_still_exits_0() -> None:
    result = subprocess.run(
        [MESH, "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0
    assert result.stdout.startswith("usage: mesh")
