"""Components' logs are bounded: processes.spawn writes through mesh_runner.logpipe, which
rotates LOG -> LOG.1 -> ... -> LOG.K by size while the component runs, and at its start."""

from __future__ import annotations

import os
import re
import sys
import threading
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
    try:
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
    finally:
        stopped = terminate(record, grace=10)  # a failed assertion leaves nothing running
    assert stopped
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


def test_a_burst_larger_than_a_file_is_spread_over_files_at_line_ends(tmp_path: Path) -> None:
    """The component may write faster than the writer reads (a loaded machine): one read then
    holds many files' worth, and each file still ends at a line and stays under the limit."""
    from mesh_runner.logpipe import _write

    log = tmp_path / "burst.log"
    lines = [f"line {i} " + "x" * 90 for i in range(200)] + ["a very long line " + "y" * 5000]
    read, write = os.pipe()
    data = "\n".join(lines).encode() + b"\n"  # 25 KB: one read of the pipe takes it whole
    writer = threading.Thread(target=lambda: (os.write(write, data), os.close(write)))
    writer.start()
    _write(read, log, max_bytes=4096, keep=9)
    writer.join()
    os.close(read)
    # oldest first: burst.log.N ... burst.log.1, then burst.log
    files = sorted(
        tmp_path.glob("burst.log*"), key=lambda f: -int(f.name[len("burst.log.") :] or 0)
    )
    # ~20 KB of short lines need at least 5 files of 4 KB; the long line has one of its own
    assert len(files) >= 6
    assert files[-1].read_text() == lines[-1] + "\n"
    for f in files:
        text = f.read_bytes()
        assert text.endswith(b"\n"), f
        assert f.stat().st_size <= 4096 or text.count(b"\n") == 1, f
    assert [x for f in files for x in f.read_text().splitlines()] == lines
