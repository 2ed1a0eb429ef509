"""Registers the shared fixture plugins in tests/support (importable via pythonpath = tests),
and keeps a leaked worker thread from hanging the run after the last test."""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from collections.abc import Iterator

import pytest

pytest_plugins = [
    "support.kafka",
    "support.mesh",
    "support.events",
    "support.tracing",
    "support.identity",
    "support.gateway",
]

# How long the leftover non-daemon threads get to finish once every test has run.
LEFTOVER_GRACE_S = 15.0
EXIT_STATUS = pytest.StashKey[int]()


def _leftover_threads() -> list[threading.Thread]:
    return [
        t
        for t in threading.enumerate()
        if t is not threading.main_thread() and not t.daemon and t.is_alive()
    ]


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Python joins non-daemon threads at exit, so one a test forgot to stop (a relay looping on
    a closed database, say) would hang CI until its time limit. Name them, then exit for real."""
    deadline = time.monotonic() + LEFTOVER_GRACE_S
    while (leftover := _leftover_threads()) and time.monotonic() < deadline:
        leftover[0].join(timeout=max(0.0, deadline - time.monotonic()))
    if not (leftover := _leftover_threads()):
        return
    frames = sys._current_frames()
    print(f"\ntests left {len(leftover)} thread(s) running; exiting anyway:", file=sys.stderr)
    for thread in leftover:
        print(f"--- {thread.name}", file=sys.stderr)
        if (frame := frames.get(thread.ident or -1)) is not None:
            traceback.print_stack(frame, file=sys.stderr)
    sys.stderr.flush()
    sys.stdout.flush()
    # A leaked thread is a failure even when every test passed.
    os._exit(config.stash.get(EXIT_STATUS, 1) or 1)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[EXIT_STATUS] = int(exitstatus)


@pytest.fixture(autouse=True)
def _environment_restored() -> Iterator[None]:
    """Each test gets the process environment as the previous one found it. Code under test may
    set variables for its process on purpose (`mesh up --tls` and every mesh command adopt a TLS
    mesh through MESH_TLS_DIR, for the components they start); run in-process by a test, that
    would make every later test in the session dial TLS to plaintext servers."""
    saved = dict(os.environ)
    yield
    if dict(os.environ) != saved:
        os.environ.clear()
        os.environ.update(saved)
