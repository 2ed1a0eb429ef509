"""In-process fan-out of stored versions to the open watch streams.

Writers tell the feed a namespace's newest version after they commit it (``published``);
streams wait on the feed for a version above the last one they sent, then read what is new
from the store themselves. The feed carries no documents, only a number per namespace, so:

- nothing is skipped when notifications coalesce (ten commits during one wake-up are ten
  versions the stream reads in order), nor when a commit lands between a stream's read and its
  wait (the wait is for a state, "newest > mine", not for a signal);
- a slow watcher never holds a writer up: ``published`` only sets a number and wakes waiters,
  whatever the watchers do with it.

Commits by another process on the same database (a replica) reach the feed through
``FeedPoller``, a worker that reads every namespace's current version every ``poll_s``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from control.app.ports import StoreTransaction

log = logging.getLogger("control.feed")


class ChangeFeed:
    """The newest version of each namespace, and a wait for it to move. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: dict[str, int] = {}
        self._changed: dict[str, threading.Condition] = {}
        self._closed = False

    def _condition(self, namespace: str) -> threading.Condition:
        condition = self._changed.get(namespace)
        if condition is None:
            condition = self._changed[namespace] = threading.Condition(self._lock)
        return condition

    def published(self, namespace: str, version: int) -> None:
        """``namespace`` has ``version`` stored (committed): wake its waiters if it is new."""
        with self._lock:
            if version <= self._latest.get(namespace, 0):
                return
            self._latest[namespace] = version
            self._condition(namespace).notify_all()

    def latest(self, namespace: str) -> int:
        """The newest version the feed has heard of (0: none)."""
        with self._lock:
            return self._latest.get(namespace, 0)

    def wait(
        self,
        namespace: str,
        beyond: int,
        timeout: float | None,
        done: Callable[[], bool] = lambda: False,
    ) -> bool:
        """Wait until the feed knows a version of ``namespace`` above ``beyond``, or it is
        closed, or ``done()`` (checked at every wake-up, see ``wake``), or ``timeout`` seconds.
        True when there is a newer version."""
        with self._lock:
            self._condition(namespace).wait_for(
                lambda: self._closed or done() or self._latest.get(namespace, 0) > beyond,
                timeout,
            )
            return self._latest.get(namespace, 0) > beyond

    def wake(self, namespace: str) -> None:
        """Wake the waiters of ``namespace`` to look at their ``done`` (a stream was cancelled)."""
        with self._lock:
            self._condition(namespace).notify_all()

    @property
    def closed(self) -> bool:
        """True once ``close`` ran: every stream ends."""
        return self._closed

    def close(self) -> None:
        """End every wait, now and later (the service is stopping)."""
        with self._lock:
            self._closed = True
            for condition in self._changed.values():
                condition.notify_all()


class FeedPoller:
    """A worker that tells the feed of versions committed by other processes sharing the
    database: ``run_once`` reads every namespace's current version (one indexed query) and
    returns how many namespaces moved; ``run_forever`` repeats it every ``poll_s``."""

    def __init__(self, snapshot: StoreTransaction, feed: ChangeFeed, poll_s: float = 1.0) -> None:
        self._snapshot = snapshot
        self._feed = feed
        self._poll_s = poll_s

    def run_once(self) -> int:
        """One look at the store."""
        with self._snapshot() as store:
            latest = store.latest()
        moved = 0
        for namespace, version in latest.items():
            if version > self._feed.latest(namespace):
                self._feed.published(namespace, version)
                moved += 1
        return moved

    def run_forever(self, stop: threading.Event) -> None:
        """``run_once`` every ``poll_s`` until ``stop`` is set; a failed look is logged and
        retried at the next tick."""
        while not stop.is_set():
            try:
                self.run_once()
            except Exception:
                log.exception("control: reading the current versions failed; retrying")
            stop.wait(self._poll_s)
