"""`mesh logs [SERVICE] --tail N|all --since AGE|TIME -f`: the last lines of each log (200 by
default, saying so when it leaves some out), reaching back into the rotated files (NAME.log.1,
...) as needed; only those at or after a time, a traceback kept or left out with the JSON line
before it; and -f across the writer's rotations without losing a line."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from support.mesh import MESH, mesh_cli, write_moved_mesh_toml


def _logs(root: Path) -> None:
    write_moved_mesh_toml(root, ["trace-receiver", "schema-registry"])
    logs = root / ".mesh" / "logs"
    logs.mkdir(parents=True)
    (logs / "schema-registry.log.2").write_text("".join(f"a{i}\n" for i in range(150)))
    (logs / "schema-registry.log.1").write_text("".join(f"b{i}\n" for i in range(150)))
    (logs / "schema-registry.log").write_text("c0\nc1\n")
    (logs / "trace-receiver.log").write_text("r0\n")


def test_tail_reaches_into_the_rotated_files(tmp_path: Path) -> None:
    _logs(tmp_path)
    three = mesh_cli(tmp_path, "logs", "schema-registry", "--tail", "3")
    assert three.returncode == 0, three.stderr
    assert three.stdout.splitlines() == ["b149", "c0", "c1"]
    assert "--tail all" in three.stderr

    every = mesh_cli(tmp_path, "logs", "schema-registry", "--tail", "all")
    assert every.stdout.splitlines() == [
        *(f"a{i}" for i in range(150)),
        *(f"b{i}" for i in range(150)),
        "c0",
        "c1",
    ]
    assert every.stderr == ""


def test_the_default_is_the_last_200_lines_of_each_log(tmp_path: Path) -> None:
    _logs(tmp_path)
    result = mesh_cli(tmp_path, "logs")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    registry = [x for x in lines if x.startswith("schema-registry | ")]
    assert len(registry) == 200
    assert registry[0] == "schema-registry | a102"
    assert registry[-1] == "schema-registry | c1"
    assert [x for x in lines if x.startswith("trace-receiver")] == ["trace-receiver  | r0"]
    assert "the last 200 lines of each log" in result.stderr


def test_a_bad_tail_is_a_usage_error(tmp_path: Path) -> None:
    _logs(tmp_path)
    result = mesh_cli(tmp_path, "logs", "--tail", "lots")
    assert result.returncode == 2
    assert "a number of lines, or all" in result.stderr


def _record(ts: datetime | str, msg: str) -> str:
    """A line as meshkit.logs writes it."""
    if isinstance(ts, datetime):
        ts = ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    fields = {"ts": ts, "level": "INFO", "service": "schema-registry", "logger": "t", "msg": msg}
    return json.dumps(fields, separators=(",", ":"))


def _write(path: Path, lines: list[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines))


def _rotated_logs(root: Path) -> Path:
    """schema-registry's log in three files, with lines that have no time of their own."""
    write_moved_mesh_toml(root, ["trace-receiver", "schema-registry"])
    logs = root / ".mesh" / "logs"
    logs.mkdir(parents=True)
    _write(
        logs / "schema-registry.log.2",
        [
            "schema-registry listening on http://127.0.0.1:8081",  # before any timestamp
            _record("2026-01-02T10:00:00.000Z", "a"),
            "Traceback (most recent call last):",
            "ValueError: a",
        ],
    )
    _write(
        logs / "schema-registry.log.1",
        [
            _record("2026-01-02T10:05:00.000Z", "b"),
            "%4|1767348300.000|GETPID|rdkafka#producer-1| b's librdkafka line",
            _record("2026-01-02T10:10:00.000Z", "c"),
            "c's traceback",
        ],
    )
    _write(
        logs / "schema-registry.log",
        ["c's traceback, continued after the rotation", _record("2026-01-02T10:15:00.000Z", "d")],
    )
    return logs


def _msgs(stdout: str) -> list[str]:
    """Each printed line: a JSON line's msg, any other line as it is."""
    return [json.loads(x)["msg"] if x.startswith("{") else x for x in stdout.splitlines()]


def test_since_a_time_reads_across_the_rotated_files_and_keeps_tracebacks_with_their_line(
    tmp_path: Path,
) -> None:
    _rotated_logs(tmp_path)
    at_c = mesh_cli(tmp_path, "logs", "schema-registry", "--since", "2026-01-02T10:10:00Z")
    assert at_c.returncode == 0, at_c.stderr
    assert _msgs(at_c.stdout) == [
        "c",
        "c's traceback",
        "c's traceback, continued after the rotation",
        "d",
    ]
    after_a = mesh_cli(tmp_path, "logs", "schema-registry", "--since", "2026-01-02T10:00:00.001Z")
    assert _msgs(after_a.stdout)[:2] == [
        "b",
        "%4|1767348300.000|GETPID|rdkafka#producer-1| b's librdkafka line",
    ]
    # Lines before any timestamp go with the first one after them: kept from 10:00 on.
    every = mesh_cli(tmp_path, "logs", "schema-registry", "--since", "2026-01-02T10:00:00+00:00")
    assert _msgs(every.stdout)[:3] == [
        "schema-registry listening on http://127.0.0.1:8081",
        "a",
        "Traceback (most recent call last):",
    ]
    assert len(every.stdout.splitlines()) == 10

    # --tail counts what --since kept; every log, prefixed, when no SERVICE is named.
    both = mesh_cli(tmp_path, "logs", "--since", "2026-01-02T10:10:00Z", "--tail", "2")
    assert both.returncode == 0, both.stderr
    assert [x.split(" | ", 1)[0].strip() for x in both.stdout.splitlines()] == [
        "schema-registry"
    ] * 2
    assert _msgs("\n".join(x.split(" | ", 1)[1] for x in both.stdout.splitlines())) == [
        "c's traceback, continued after the rotation",
        "d",
    ]
    assert "the last 2 lines of each log since 2026-01-02T10:10:00Z" in both.stderr


def test_since_an_age_counts_back_from_now(tmp_path: Path) -> None:
    logs = _rotated_logs(tmp_path)
    now = datetime.now(UTC)
    _write(
        logs / "schema-registry.log",
        [
            _record(now - timedelta(hours=3), "3h ago"),
            _record(now - timedelta(minutes=90), "90m ago"),
            "a traceback of 90m ago",
            _record(now - timedelta(minutes=5), "5m ago"),
            _record(now - timedelta(seconds=10), "10s ago"),
        ],
    )
    for since, expected in [
        ("2h", ["90m ago", "a traceback of 90m ago", "5m ago", "10s ago"]),
        ("1h30m", ["5m ago", "10s ago"]),  # 90m ago, by the time mesh runs, is a bit more
        ("1m", ["10s ago"]),
        ("1d", ["3h ago", "90m ago", "a traceback of 90m ago", "5m ago", "10s ago"]),
    ]:
        result = mesh_cli(tmp_path, "logs", "schema-registry", "--since", since)
        assert result.returncode == 0, result.stderr
        assert _msgs(result.stdout) == expected, since


def test_a_time_without_a_zone_is_local_time(tmp_path: Path) -> None:
    _rotated_logs(tmp_path)
    two_hours_east = {**os.environ, "TZ": "EAST-2"}  # POSIX: local = UTC + 2 h
    result = mesh_cli(
        tmp_path, "logs", "schema-registry", "--since", "2026-01-02T12:10", env=two_hours_east
    )
    assert result.returncode == 0, result.stderr
    assert _msgs(result.stdout)[0] == "c"  # 12:10 local is 10:10 UTC


def test_a_bad_since_is_one_sentence_and_exit_2(tmp_path: Path) -> None:
    _rotated_logs(tmp_path)
    for value in ("yesterday", "10 minutes", "-5m", "2026-13-01"):
        result = mesh_cli(tmp_path, "logs", f"--since={value}")
        assert result.returncode == 2, value
        assert result.stdout == ""
        assert result.stderr.count("\n") == 1, result.stderr
        assert f"--since {value!r}: expected an age (30s, 10m, 2h, 1d)" in result.stderr


ECHO = """
import sys
while line := sys.stdin.readline():
    sys.stdout.write(line)
    sys.stdout.flush()
"""


def _reader(stream: subprocess.Popen[str]) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert stream.stdout is not None
        for line in stream.stdout:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _until(lines: queue.Queue[str], last: str, timeout: float = 20) -> list[str]:
    """What the follower printed up to and including ``last``."""
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while not got or got[-1] != last:
        left = deadline - time.monotonic()
        assert left > 0, f"{last!r} not printed within {timeout}s; printed {got}"
        try:
            got.append(lines.get(timeout=left))
        except queue.Empty:
            continue
    return got


def test_follow_loses_no_line_when_the_writer_rotates(tmp_path: Path) -> None:
    """Bursts written through the real logpipe writer, each rotating its 1 KB log once or
    twice between two polls of the follower: every line is printed once, in order (and as
    it is: one SERVICE named, no prefix, as in the lines printed before following)."""
    write_moved_mesh_toml(tmp_path, ["schema-registry"])
    logs = tmp_path / ".mesh" / "logs"
    logs.mkdir(parents=True)
    log = logs / "schema-registry.log"
    pipe = [sys.executable, "-m", "mesh_runner.logpipe", "--max-bytes", "1024", "--keep", "3"]
    writer = subprocess.Popen(
        [*pipe, str(log), "--", sys.executable, "-c", ECHO], stdin=subprocess.PIPE, text=True
    )
    assert writer.stdin is not None
    writer.stdin.write("first\n")
    writer.stdin.flush()
    deadline = time.monotonic() + 20
    while not (log.exists() and log.read_text() == "first\n"):
        assert time.monotonic() < deadline, "the writer wrote no first line in 20s"
        time.sleep(0.05)  # poll interval within the deadline loop
    follower = subprocess.Popen(
        [MESH, "--root", str(tmp_path), "logs", "schema-registry", "-f", "--tail", "1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        printed = _reader(follower)
        # mesh logs -f opens the log before printing its last lines: once "first" is printed,
        # everything written after it is followed.
        assert _until(printed, "first") == ["first"]
        for burst in range(5):
            lines = [f"burst {burst} line {i:02d} " + "x" * 80 for i in range(16)]  # 1.6 KB
            writer.stdin.write("".join(f"{line}\n" for line in lines))
            writer.stdin.flush()
            assert _until(printed, lines[-1]) == lines, f"burst {burst}"
        assert log.with_name("schema-registry.log.3").exists()  # it did rotate, several times
    finally:
        follower.terminate()
        follower.wait(timeout=10)
        writer.stdin.close()  # end of input: the echo ends, then the writer at end of file
        writer.wait(timeout=10)
