"""Reading the components' logs for ``mesh logs``: which files, which lines are recent, what is new.

A log is ``NAME.log`` plus the files mesh_runner.logpipe rotated it into, ``NAME.log.1`` (the
newest) ... ``NAME.log.K`` (the oldest). Its lines are JSON objects whose ``ts`` is the record's
time (meshkit.logs: RFC 3339, UTC, milliseconds), or whatever else the process printed: a
traceback, a C library's line, a crash. Such a line has no time of its own; it belongs to the
timestamped line before it, as a traceback belongs to the record that logged it, and is kept or
left out with that line.

Read only, and never in the way: the writer (logpipe) renames and drops these files at any
moment, so every read here tolerates a file renamed or gone under it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

#: How many lines of each log `mesh logs` prints unless --tail says otherwise.
DEFAULT_TAIL = 200

_AGE = re.compile(r"(?:\d+[smhd])+")
_AGE_PART = re.compile(r"(\d+)([smhd])")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_TS_FIRST = '{"ts":"'  # how meshkit.logs starts every line: the fast path through 10 MB files


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """The moment ``--since VALUE`` names, timezone-aware: an age before ``now`` (``30s``,
    ``10m``, ``2h``, ``1d``, ``1h30m``) or an ISO 8601 time; a time without ``Z`` or an offset
    is this machine's local time (as ``docker logs --since`` and ``journalctl --since`` read
    it). ValueError with one sentence for anything else."""
    text = value.strip()
    if _AGE.fullmatch(text):
        seconds = sum(int(n) * _SECONDS[unit] for n, unit in _AGE_PART.findall(text))
        return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"--since {value!r}: expected an age (30s, 10m, 2h, 1d) or an ISO 8601 time"
            " (2026-12-06T19:35, local unless it ends in Z or an offset such as +01:00)"
        ) from None
    return moment if moment.tzinfo else moment.astimezone()


def line_time(line: str) -> datetime | None:
    """The ``ts`` of a JSON log line, timezone-aware (UTC when it names no zone); None for a
    line that has none (not JSON, no ``ts``, or one that is not a time)."""
    if not line.startswith("{"):
        return None
    if line.startswith(_TS_FIRST):
        raw = line[len(_TS_FIRST) : line.find('"', len(_TS_FIRST))]
    else:
        try:
            record = json.loads(line)
        except ValueError:
            return None
        value = record.get("ts") if isinstance(record, dict) else None
        if not isinstance(value, str):
            return None
        raw = value
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class SinceFilter:
    """Which lines of one log, fed in order, are at or after ``since`` (None: every line).

    A timestamped line is judged by its ``ts``; any other line goes with the timestamped line
    before it. Before the first timestamped line, lines are kept: in a followed log they were
    just written. Not thread safe; one per log."""

    def __init__(self, since: datetime | None) -> None:
        self.since = since
        self._keep: bool | None = None  # the verdict on the last timestamped line, if any

    def keep(self, line: str) -> bool:
        """Whether ``line``, the next line of the log, is at or after ``since``."""
        if self.since is None:
            return True
        moment = line_time(line)
        if moment is not None:
            self._keep = moment >= self.since
        return self._keep is not False

    def older(self) -> None:
        """The lines that follow, until a timestamped one, go with a line before ``since``."""
        self._keep = False


def log_files(log_dir: Path, name: str) -> list[Path]:
    """``name``'s log files, oldest first: the rotated ones (``NAME.log.K`` ... ``.1``), then
    ``NAME.log``; only those that exist."""
    path = log_dir / f"{name}.log"
    older = [p for p in log_dir.glob(f"{name}.log.*") if p.suffix[1:].isdigit()]
    files = sorted(older, key=lambda p: -int(p.suffix[1:]))
    return [*files, path] if path.exists() else files


def last_lines(
    log_dir: Path, name: str, tail: int | None, since: datetime | None = None
) -> tuple[list[str], bool]:
    """The last ``tail`` lines (all when None) of ``name``'s log, of those at or after ``since``
    (all when None), reading rotated files only as far back as needed; and whether lines that
    pass ``since`` were left out by ``tail``."""
    files = log_files(log_dir, name)
    if since is not None:
        lines = lines_since(files, since)
        if tail is None or len(lines) <= tail:
            return lines, False
        return lines[len(lines) - tail :], True
    lines = []
    for index, path in enumerate(reversed(files)):
        try:
            lines = path.read_text(errors="replace").splitlines() + lines
        except OSError:
            continue  # rotated away while we read
        if tail is not None and len(lines) >= tail:
            return lines[len(lines) - tail :], len(lines) > tail or index < len(files) - 1
    return lines, False


def lines_since(files: Iterable[Path], since: datetime) -> list[str]:
    """The lines of ``files`` (one log, oldest first) at or after ``since``, each line without a
    time of its own kept or left out with the timestamped line before it.

    Lines with no timestamped line before them at all (the start of the oldest file kept, a
    plain-text start-up line) go with the first timestamped line after them, the closest
    bound on when they were written; a file with no timestamp at all, by its modification
    time. A file last written before ``since`` is skipped unread: all its lines are older."""
    kept: list[str] = []
    verdict = SinceFilter(since)
    pending: list[str] = []  # lines before any timestamped line: judged by the next one
    seen_time = False
    for path in files:
        try:
            if path.stat().st_mtime < since.timestamp():
                seen_time = True
                verdict.older()  # the next file's first lines go with this one's last: old
                continue
            text = path.read_text(errors="replace")
        except OSError:
            continue  # rotated away (dropped) while we read
        for line in text.splitlines():
            keep = verdict.keep(line)
            if seen_time:
                if keep:
                    kept.append(line)
            elif line_time(line) is None:
                pending.append(line)
            else:
                seen_time = True
                kept += [*pending, line] if keep else []
                pending = []
        # No timestamp in the whole file: it was written at or after since (mtime), so keep.
        kept += pending
        pending = []
    return kept


class LogFollower:
    """The new complete lines of one log as they are written, across rotations.

    Holds the file open rather than following its name: when the writer renames ``NAME.log``
    to ``NAME.log.1`` and starts a new ``NAME.log``, the follower first reads the rest of the
    file it has open (the same inode, whatever its name now), then any file rotated in
    between that it never opened, then the new ``NAME.log`` from its start. So no line
    written just before a rotation is lost. Not thread safe; one per log; ``close`` when done.
    """

    def __init__(self, path: Path, start: int | None = None) -> None:
        """Follow ``path`` from byte ``start``, None: from its current end (a file smaller
        than ``start`` was replaced since: from its beginning; a file not there yet: all of
        it when it appears)."""
        self.path = path
        self._file: BinaryIO | None = None
        self._partial = b""  # the start of a line not yet complete
        self._open(start)

    def read(self) -> list[str]:
        """The lines completed since the last call, without their newlines."""
        if self._file is None:
            self._open(0)
            if self._file is None:
                return []
        data = self._file.read()
        mine = os.fstat(self._file.fileno())
        now = _identity(self.path)
        if now is not None and now != (mine.st_dev, mine.st_ino):
            # Rotated: the writer finished this file before renaming it, so one more read
            # gets all of it; then the files rotated between two reads; then the new one.
            data += self._file.read() + self._rotated_since(mine)
            self._file.close()
            self._open(0)
            if self._file is not None:
                data += self._file.read()
        elif mine.st_size < self._file.tell():  # truncated in place: start over
            self._file.seek(0)
            data += self._file.read()
        data = self._partial + data
        cut = data.rfind(b"\n") + 1
        self._partial = data[cut:]
        return data[:cut].decode(errors="replace").splitlines()

    def close(self) -> None:
        """Let go of the open file."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def _open(self, start: int | None) -> None:
        try:
            log = self.path.open("rb")
        except OSError:
            self._file = None  # not written yet, or between a rotation's rename and reopen
            return
        size = os.fstat(log.fileno()).st_size
        log.seek(size if start is None else start if start <= size else 0)
        self._file = log

    def _rotated_since(self, mine: os.stat_result) -> bytes:
        """Whole files rotated after ``mine`` (now NAME.log.k): NAME.log.(k-1) ... .1. Empty
        when ``mine`` is no longer among them (more rotations than files kept)."""
        older = [p for p in log_files(self.path.parent, self.path.stem) if p != self.path]
        names = [_identity(p) for p in older]
        if (mine.st_dev, mine.st_ino) not in names:
            return b""
        data = b""
        for path in older[names.index((mine.st_dev, mine.st_ino)) + 1 :]:
            try:
                data += path.read_bytes()
            except OSError:
                continue  # dropped by yet another rotation meanwhile
        return data


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino
