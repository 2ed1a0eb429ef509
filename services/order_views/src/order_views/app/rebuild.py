"""Rebuilding the read model without downtime: replay into a fresh copy, then swap it in.

The steps, while the serving copy keeps answering queries throughout:

0. check that every partition of every topic still starts at offset 0: a replay can only rebuild
   what the topics still hold, so when retention (or an operator) deleted the beginning of a
   log, the rebuild is refused (FailedPrecondition naming the topic, partition and first offset
   left) and nothing changes;
1. create a fresh copy (a new database, a new consumer group) and start it in replay mode: its
   group reads every partition from offset 0 and, should records be deleted before it read
   them, stops there instead of skipping ahead;
2. wait until it has caught up with the serving copy's positions (which keep moving), checking
   the logs' starts again on the way: a partition whose records were deleted before the fresh
   copy read them, or one that appeared meanwhile, fails the rebuild;
3. stop the serving copy's consumer, so its positions are final, and wait for the fresh copy to
   reach them too (a few events at most): from here the two copies hold the same events;
4. swap: the fresh copy serves (durably, atomically), its consumer goes on in normal mode,
   waiters are woken, the old copy is deleted once no query (and no other process) holds it.

A rebuild that fails or times out discards the fresh copy and restarts the serving copy's
consumer: the service ends as it started. At most one rebuild runs at a time per process.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from meshkit.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    MeshError,
    PreconditionViolation,
    Unavailable,
)
from order_views.app.ports import Copies, Copy, Positions, TopicLog
from order_views.app.progress import Progress

log = logging.getLogger("order_views.rebuild")


class RebuildPhase(enum.Enum):
    """Where a rebuild stands."""

    CATCHING_UP = "CATCHING_UP"
    SWAPPING = "SWAPPING"
    SWAPPED = "SWAPPED"
    FAILED = "FAILED"


@dataclass(frozen=True)
class RebuildStatus:
    """One report of a rebuild; ``error`` is set exactly when ``phase`` is FAILED."""

    phase: RebuildPhase
    generation: int
    applied: int = 0
    behind: int = 0
    message: str = ""
    error: MeshError | None = None

    @property
    def final(self) -> bool:
        """True once the rebuild has swapped or failed."""
        return self.phase in (RebuildPhase.SWAPPED, RebuildPhase.FAILED)


def behind(fresh: Positions, target: Positions) -> int:
    """Offsets ``fresh`` still has to apply to reach ``target`` in every partition."""
    return sum(max(0, offset - fresh.get(key, 0)) for key, offset in target.items())


def truncated(starts: Positions, read: Positions) -> Positions:
    """The partitions whose log now starts past what a copy that has ``read`` up to those
    positions has seen (every partition starting above 0, for a copy that has read nothing)."""
    return {key: first for key, first in starts.items() if first > read.get(key, 0)}


def history_lost(lost: Positions, *, during: bool) -> FailedPrecondition:
    """The refusal of a rebuild that cannot see the whole history of ``lost``'s partitions."""
    ordered = sorted(lost.items())
    shown = ", ".join(f"{t}[{p}] now starts at offset {first}" for (t, p), first in ordered[:4])
    more = f" (and {len(ordered) - 4} more partitions)" if len(ordered) > 4 else ""
    when = "were deleted before the fresh copy read them" if during else "were deleted"
    (topic, partition), first = ordered[0]
    return FailedPrecondition(
        f"cannot rebuild from the topics: {shown}{more}, not 0; the records before it {when}"
        " (retention, or by hand), so a replay would lose them. The serving copy is kept. Keep"
        " the full history of the topics the read model is rebuilt from (retention.ms=-1 in"
        " their topic.json; see the README)",
        violations=[
            PreconditionViolation("TOPIC_HISTORY", f"{t}[{p}]", f"the log starts at offset {o}")
            for (t, p), o in ordered
        ],
        reason="TOPIC_HISTORY_TRUNCATED",
        metadata={"topic": topic, "partition": str(partition), "first_offset": str(first)},
    )


class Rebuild:
    """One rebuild, run on a thread of its own; any number of callers may ``follow`` it.

    Thread safety: every method may be called from any thread.
    """

    def __init__(
        self,
        copies: Copies,
        progress: Progress,
        history: TopicLog,
        *,
        timeout_s: float,
        on_done: Callable[[Rebuild], None],
    ) -> None:
        self._copies = copies
        self._progress = progress
        self._history = history
        self._partitions: set[tuple[str, int]] = set()
        self._timeout_s = timeout_s
        self._on_done = on_done
        self._cond = threading.Condition()
        self._abort = threading.Event()
        self._status = RebuildStatus(RebuildPhase.CATCHING_UP, 0, message="starting")
        self._thread = threading.Thread(target=self._run, name="order-views-rebuild", daemon=True)
        self._fresh: Copy | None = None

    def start(self) -> None:
        """Check the topics still hold their whole history and create the fresh copy (errors,
        FailedPrecondition among them, raise here), then rebuild it in the background."""
        try:
            starts = self._history.starts()
        except Exception as exc:
            raise Unavailable(f"cannot tell where the topics start: {exc}") from exc
        lost = truncated(starts, {})
        if lost:
            raise history_lost(lost, during=False)
        self._partitions = set(starts)
        old = self._copies.active()
        self._fresh = self._copies.create()
        self._report(
            generation=self._fresh.generation,
            message=f"replaying every topic into generation {self._fresh.generation}"
            f" (generation {old.generation} serves meanwhile)",
        )
        self._thread.start()

    @property
    def status(self) -> RebuildStatus:
        """The latest report."""
        with self._cond:
            return self._status

    def follow(self, heartbeat_s: float = 5.0) -> Iterator[RebuildStatus]:
        """Every report from now on: the current one, then each change (and the unchanged one
        again after ``heartbeat_s`` seconds without any); ends with the final one (SWAPPED or
        FAILED)."""
        last: RebuildStatus | None = None
        while True:
            with self._cond:
                if self._status == last:
                    self._cond.wait(heartbeat_s)  # _report notifies on every change
                status = self._status
            last = status
            yield status
            if status.final:
                return

    def abort(self, timeout_s: float = 30.0) -> None:
        """Stop the rebuild (if it has not swapped yet, the fresh copy is discarded); wait."""
        self._abort.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    def _report(self, **changes: object) -> None:
        with self._cond:
            status = replace(self._status, **changes)  # type: ignore[arg-type]
            if status != self._status:
                self._status = status
                self._cond.notify_all()

    def _check_history(self, fresh: Copy) -> None:
        """Fail when a log lost records the fresh copy has not read, or a partition appeared
        (its replay consumer has no offset 0 set there: run the rebuild again)."""
        starts = self._history.starts()
        lost = truncated(starts, fresh.positions())
        if lost:
            raise history_lost(lost, during=True)
        appeared = sorted(set(starts) - self._partitions)
        if appeared:
            names = ", ".join(f"{t}[{p}]" for t, p in appeared)
            raise Unavailable(
                f"partitions appeared during the rebuild ({names}); the serving copy is kept:"
                " run the rebuild again"
            )

    def _catch_up(self, fresh: Copy, target: Callable[[], Positions], deadline: float) -> None:
        """Wait until ``fresh`` has reached ``target()``, reporting about once a second and
        checking the logs' starts each time."""
        while True:
            goal = target()
            missing = behind(fresh.positions(), goal)
            self._report(applied=fresh.applied(), behind=missing)
            self._check_history(fresh)
            if missing == 0:
                return
            if self._abort.is_set():
                raise Unavailable("the rebuild was aborted (the service is stopping)")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineExceeded(
                    f"the fresh copy (generation {fresh.generation}) is still {missing} events"
                    f" behind after {self._timeout_s:.0f}s; the serving copy is kept"
                )
            self._progress.wait_for(
                lambda g=goal: behind(fresh.positions(), g) == 0,  # type: ignore[misc]
                min(1.0, remaining),
            )

    def _run(self) -> None:
        deadline = time.monotonic() + self._timeout_s
        old = self._copies.active()
        fresh = self._fresh
        assert fresh is not None, "start() creates it"
        old_stopped = False
        try:
            log.info("rebuild: generation %d replaying", fresh.generation)
            fresh.start(replay=True)
            self._catch_up(fresh, old.positions, deadline)
            self._report(
                phase=RebuildPhase.SWAPPING,
                message=f"caught up with generation {old.generation}; stopping its consumer"
                " and taking its last events",
            )
            old.stop()
            old_stopped = True
            final = old.positions()
            self._catch_up(fresh, lambda: final, deadline)
            previous = self._copies.swap(fresh)
            self._progress.advance()
            log.info("rebuild: generation %d serves", fresh.generation)
            # Caught up: from here it consumes like any serving copy (a partition that appears
            # later starts at its beginning instead of stopping the replay consumer).
            fresh.stop()
            fresh.start()
            self._copies.discard(previous)
            self._report(
                phase=RebuildPhase.SWAPPED,
                applied=fresh.applied(),
                behind=0,
                message=f"generation {fresh.generation} serves; generation"
                f" {previous.generation} deleted",
            )
        except Exception as exc:
            error = exc if isinstance(exc, MeshError) else Unavailable(f"rebuild failed: {exc}")
            log.exception("rebuild failed; generation %d keeps serving", old.generation)
            if fresh is not self._copies.active():
                try:
                    fresh.stop()
                    self._copies.discard(fresh)
                except Exception:
                    log.exception("rebuild: could not discard generation %d", fresh.generation)
            if old_stopped and old is self._copies.active():
                old.start()
            self._report(phase=RebuildPhase.FAILED, message=error.message, error=error)
        finally:
            self._on_done(self)


class Rebuilder:
    """Starts rebuilds, one at a time: asking while one runs follows that one.

    Thread safety: safe to share.
    """

    def __init__(
        self, copies: Copies, progress: Progress, history: TopicLog, *, timeout_s: float = 600.0
    ) -> None:
        self._copies = copies
        self._progress = progress
        self._history = history
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._running: Rebuild | None = None
        self._closed = False

    def rebuild(self) -> Rebuild:
        """The rebuild in progress, or a new one, started."""
        with self._lock:
            if self._closed:
                raise Unavailable("the service is stopping")
            if self._running is None:
                rebuild = Rebuild(
                    self._copies,
                    self._progress,
                    self._history,
                    timeout_s=self._timeout_s,
                    on_done=self._done,
                )
                rebuild.start()
                self._running = rebuild
            return self._running

    def _done(self, rebuild: Rebuild) -> None:
        with self._lock:
            if self._running is rebuild:
                self._running = None

    def close(self) -> None:
        """Abort a running rebuild (the serving copy stays) and refuse new ones."""
        with self._lock:
            self._closed = True
            running = self._running
        if running is not None:
            running.abort()
