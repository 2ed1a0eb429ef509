"""Run a command with its output written to a log file that is rotated by size.

    python -m mesh_runner.logpipe [--max-bytes N] [--keep K] LOG -- COMMAND [ARG...]

Why a writer process of its own: a component's log must hold everything it prints (JSON
lines, tracebacks, librdkafka's and gRPC core's lines from C), it must be bounded, and `mesh
up -d` returns while the components run on, so no `mesh` process is there to rotate. A file
that the component writes itself (its stdout) cannot be rotated safely by anyone else: after a
rename it writes on into the renamed file. So the component writes into a pipe, and one writer,
the only one with the file open, rotates it: LOG -> LOG.1 -> ... -> LOG.K, the oldest dropped.

How: this process forks the writer, points its own stdout and stderr at the pipe and execs
COMMAND, so COMMAND keeps this process's pid (the pid `mesh` records, signals and checks) and
session. The writer ignores SIGTERM, SIGINT and SIGHUP (`mesh down` signals the whole process
group) and exits when the pipe reaches end of file, once COMMAND and whatever it started have
exited, so the last lines a stopping component writes reach the file.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

#: The size at which a log is rotated, unless MESH_LOG_MAX_BYTES says otherwise.
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
#: How many rotated files are kept (LOG.1 ... LOG.3), unless MESH_LOG_KEEP says otherwise.
DEFAULT_KEEP = 3
MAX_BYTES_ENV = "MESH_LOG_MAX_BYTES"
KEEP_ENV = "MESH_LOG_KEEP"


def limits(env: Mapping[str, str] = os.environ) -> tuple[int, int]:
    """(max bytes, kept files) from MESH_LOG_MAX_BYTES and MESH_LOG_KEEP, else the defaults;
    ValueError naming the variable when one is not a whole number (bytes >= 1024, keep >= 1)."""
    values = []
    wanted = ((MAX_BYTES_ENV, DEFAULT_MAX_BYTES, 1024), (KEEP_ENV, DEFAULT_KEEP, 1))
    for name, default, least in wanted:
        raw = env.get(name, "").strip()
        try:
            value = int(raw) if raw else default
        except ValueError:
            raise ValueError(f"{name}={raw!r}: expected a whole number") from None
        if value < least:
            raise ValueError(f"{name}={value}: at least {least}")
        values.append(value)
    return values[0], values[1]


def rotated(path: Path, k: int) -> Path:
    """The k-th older file of ``path`` (``orders.log.2``)."""
    return path.with_name(f"{path.name}.{k}")


def rotate(path: Path, keep: int) -> None:
    """LOG -> LOG.1, LOG.1 -> LOG.2, ... LOG.(keep-1) -> LOG.keep (the oldest is replaced)."""
    for k in range(keep - 1, 0, -1):
        if rotated(path, k).exists():
            rotated(path, k).replace(rotated(path, k + 1))
    if path.exists():
        path.replace(rotated(path, 1))


def rotate_if_full(path: Path, max_bytes: int, keep: int) -> None:
    """Rotate ``path`` when it has reached ``max_bytes`` (before a component starts on it)."""
    try:
        full = path.stat().st_size >= max_bytes
    except OSError:
        return
    if full:
        rotate(path, keep)


def _write(source: int, path: Path, max_bytes: int, keep: int) -> None:
    """Copy ``source`` to ``path`` until end of file, rotating at ``max_bytes``; a rotation
    waits for the end of a line, so a line is never split between two files. A burst larger
    than a file (the component wrote faster than this process read) is spread over as many
    files as it needs; only a single line longer than ``max_bytes`` makes a file larger."""
    log = path.open("ab", buffering=0)
    size = log.tell()
    at_line_end = True  # an appended file ends with a whole line, or is empty
    try:
        while chunk := os.read(source, 65536):
            while size + len(chunk) > max_bytes:
                if not at_line_end:  # finish the file's last line first
                    end = chunk.find(b"\n") + 1
                    if end == 0:
                        break  # the line goes on past this chunk
                    log.write(chunk[:end])
                    size, chunk, at_line_end = size + end, chunk[end:], True
                    continue
                cut = chunk.rfind(b"\n", 0, max(max_bytes - size, 0)) + 1  # whole lines that fit
                if cut == 0 and size == 0:  # one line longer than a file: it gets one alone
                    cut = chunk.find(b"\n") + 1 or len(chunk)
                log.write(chunk[:cut])
                if cut == len(chunk):  # it all went into this file (one very long line)
                    size, at_line_end, chunk = size + cut, chunk.endswith(b"\n"), b""
                    break
                chunk = chunk[cut:]
                log.close()
                rotate(path, keep)
                log = path.open("ab", buffering=0)
                size, at_line_end = 0, True
            if chunk:
                log.write(chunk)
                size += len(chunk)
                at_line_end = chunk.endswith(b"\n")
    finally:
        log.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: fork the writer, exec the command (returns only when that fails)."""
    parser = argparse.ArgumentParser(
        prog="python -m mesh_runner.logpipe",
        description="Run COMMAND with stdout and stderr appended to LOG, rotated by size.",
    )
    max_bytes, keep = limits()
    parser.add_argument("--max-bytes", type=int, default=max_bytes, help="rotate at this size")
    parser.add_argument("--keep", type=int, default=keep, help="rotated files kept")
    parser.add_argument("log", type=Path, help="the log file")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARG...]")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no COMMAND given after --")
    read, write = os.pipe()
    if os.fork() == 0:  # the writer
        os.close(write)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        os.dup2(os.open(os.devnull, os.O_RDWR), 0)
        try:
            _write(read, args.log, max(args.max_bytes, 1024), max(args.keep, 1))
        finally:
            os._exit(0)
    os.close(read)
    os.dup2(write, 1)
    os.dup2(write, 2)
    os.close(write)
    # Python ignores these; an ignored signal stays ignored across exec: give COMMAND defaults.
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_DFL)
    try:
        os.execvp(command[0], command)  # noqa: S606 - an argv, as subprocess would run it
    except OSError as exc:
        print(f"logpipe: cannot run {command[0]}: {exc.strerror}", file=sys.stderr, flush=True)
    return 127


if __name__ == "__main__":
    sys.exit(main())
