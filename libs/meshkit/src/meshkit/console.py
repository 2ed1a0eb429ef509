"""The edge every console command of the mesh shares: a closed stdout ends it quietly.

``mesh ps | head -3`` closes the pipe while ``mesh`` still writes; Python ignores SIGPIPE, so
the next write raises BrokenPipeError, and without a guard the user reads a traceback (and, at
interpreter exit, "Exception ignored ... BrokenPipeError") for doing nothing wrong.
``quiet_on_closed_stdout`` wraps an entry point's ``main``: when the error comes from stdout
(its pipe has no reader any more), stdout is pointed at /dev/null so the interpreter's last
flush succeeds, and the command exits 141 (128 + SIGPIPE), the status a shell reports for
``yes | head -1``'s ``yes``: ``set -o pipefail`` scripts see what any Unix tool gives them, and
0 would claim the whole output was written. A BrokenPipeError from anything else (a socket, a
child's pipe) is a real failure and propagates.

Why not restore SIGPIPE's default action instead: ``mesh up`` in the foreground must stop the
components it started when its output goes away (it catches BrokenPipeError to do so), and a
process killed by a signal runs no cleanup at all.
"""

from __future__ import annotations

import contextlib
import functools
import os
import select
import signal
import sys
from collections.abc import Callable
from typing import ParamSpec

P = ParamSpec("P")

#: The exit status of a command whose stdout was closed by its reader (128 + SIGPIPE).
CLOSED_STDOUT_EXIT = 128 + signal.SIGPIPE.value


def stdout_closed() -> bool:
    """True when stdout is a pipe (or socket) whose reading end is gone."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    # A pipe's writing end polls POLLERR once no reader is left (a socket's POLLHUP).
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def silence_stdout() -> None:
    """Point stdout's file descriptor at /dev/null, dropping what is still buffered, so that
    later writes and the interpreter's final flush succeed and print nothing."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


def quiet_on_closed_stdout(main: Callable[P, int]) -> Callable[P, int]:
    """Wrap a console entry point: a BrokenPipeError caused by a closed stdout (also one raised
    by argparse's --help, or by the final flush) becomes exit status CLOSED_STDOUT_EXIT, with no
    traceback; everything else passes through unchanged."""

    @functools.wraps(main)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> int:
        try:
            try:
                return main(*args, **kwargs)
            finally:
                # What print() left in the buffer fails here, inside the guard, not at exit.
                with contextlib.suppress(ValueError):  # a stdout closed by the command itself
                    sys.stdout.flush()
        except BrokenPipeError:
            if not stdout_closed():
                raise
            silence_stdout()
            return CLOSED_STDOUT_EXIT

    return guarded
