"""Components' logs are bounded: processes.spawn writes through mesh_runner.logpipe, which
rotates LOG -> LOG.1 -> ... -> LOG.K by size while the component runs, and at its start."""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import pytest

from mesh_runner.processes import is_alive, spawn, terminate

LINE = re.compile(r"^line \d+ x+$")

WRITER = """
import os, signal, sys, time
print(f"pid {os.getpid()}", flush=True)
for i in range(int(sys.argv[1])):
    print(f"line {i} " + "x" * 90, flush=True)
def bye(*_):
    print("stopped cleanly", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
print("waiting", flush=True)
while True:
    time.sleep(1)
"""


def _wait_for(what: str, done: object, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not (callable(done) and done()):
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.05)  # poll interval within the deadline loop


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_a_log_is_rotated_while_the_component_runs_and_keeps_its_last_lines(
    tmp_path: Path,
) -> None:
    log = tmp_path / "demo.log"
    env = {**os.environ, "MESH_LOG_MAX_BYTES": "4096", "MESH_LOG_KEEP": "2"}
    record = spawn(
        "demo", [sys.executable, "-c", WRITER, "200"], port=0, env=env, cwd=tmp_path, log_path=log
    )
    _wait_for("the writer waiting", lambda: "waiting" in log.read_text())
    files = [log, log.with_name("demo.log.1"), log.with_name("demo.log.2")]
    assert all(f.exists() for f in files)
    assert not log.with_name("demo.log.3").exists()  # only 2 older files are kept
    for f in files:
        assert f.stat().st_size <= 4096, f
        assert all(LINE.match(x) for x in _lines(f) if x.startswith("line")), f  # none split
    kept = [x for f in reversed(files) for x in _lines(f)]
    assert kept[-2:] == [f"line 199 {'x' * 90}", "waiting"]  # the newest, in order
    assert f"pid {record.pid}" not in kept  # rotated away: 20 KB were written into 3 x 4 KB

    assert is_alive(record)
    assert terminate(record, grace=10)
    # The writer outlives the SIGTERM of the group: the component's last line is in the file.
    _wait_for("the last line", lambda: "stopped cleanly" in log.read_text())


def test_the_recorded_pid_is_the_command_and_a_full_log_rotates_at_start(
    tmp_path: Path,
) -> None:
    log = tmp_path / "demo.log"
    log.write_text("old line\n" * 1000)  # 9 KB, over the limit
    env = {**os.environ, "MESH_LOG_MAX_BYTES": "8192"}
    record = spawn(
        "demo", [sys.executable, "-c", WRITER, "0"], port=0, env=env, cwd=tmp_path, log_path=log
    )
    try:
        _wait_for("the writer waiting", lambda: "waiting" in log.read_text())
        assert _lines(log)[0] == f"pid {record.pid}"
        assert record.log_offset == 0
        assert _lines(log.with_name("demo.log.1")) == ["old line"] * 1000
    finally:
        terminate(record)


def test_a_command_that_does_not_exist_says_so_in_its_log(tmp_path: Path) -> None:
    log = tmp_path / "demo.log"
    record = spawn(
        "demo", ["no-such-command-here"], port=0, env=os.environ, cwd=tmp_path, log_path=log
    )
    _wait_for("the process gone", lambda: not is_alive(record))
    _wait_for("the reason in the log", lambda: "cannot run no-such-command-here" in log.read_text())


@pytest.mark.parametrize("value", ["ten", "100"])
def test_bad_limits_are_refused_with_the_variable_named(value: str) -> None:
    from mesh_runner.logpipe import limits

    with pytest.raises(ValueError, match="MESH_LOG_MAX_BYTES"):
        limits({"MESH_LOG_MAX_BYTES": value})
