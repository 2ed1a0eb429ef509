"""A condition the projector signals each time the read model advances.

Queries that must read their own write wait on it instead of polling: ``wait_for`` re-checks its
predicate only when the projector (or a swap) says something changed, or when its time is up.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Progress:
    """A change counter under a condition variable.

    Thread safety: ``advance`` and ``wait_for`` may be called from any threads. A wake-up is never
    lost: ``wait_for`` notes the counter before it evaluates the predicate and sleeps only while
    the counter has not moved since.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._changes = 0

    def advance(self) -> None:
        """Say the read model changed (after the change is committed)."""
        with self._cond:
            self._changes += 1
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` is true (True) or ``timeout`` seconds passed (False).
        ``predicate`` runs outside the lock, so it may do IO. The time is kept however busy the
        projector is: a change during every evaluation never extends the wait."""
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            with self._cond:
                seen = self._changes
            if predicate():
                return True
            if time.monotonic() >= deadline:
                return False
            with self._cond:
                while self._changes == seen:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._cond.wait(remaining)
