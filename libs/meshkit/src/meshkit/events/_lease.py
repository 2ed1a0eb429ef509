"""A named lease in a service's SQLite database: at most one holder at a time among every
process (and thread) using the file, so replicas of a service can share a job that must run once
(the outbox relay: ``meshkit.events.relay``).

The lease is a row of ``meshkit_leases`` (created when missing, so no service needs a migration):
its holder, the holder's host, pid and process start time, and when it expires. Taking or
renewing it is one write transaction that reads the row and writes it only when it is free,
expired, already ours, or held by a process of this host that no longer exists (kill -9: its
restart takes over at once instead of waiting out the lease). The holder renews it while it
works; a holder that dies without releasing it is taken over at expiry.

Time: expiry is wall-clock seconds (``time.time``), compared by every process on the machine;
the holder itself counts its lease on the monotonic clock from *before* its write, so it always
believes it holds the lease for less time than the others grant it.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from pathlib import Path
from typing import NamedTuple

from meshkit.db import Database

log = logging.getLogger("meshkit.events.lease")

LEASE_TABLE = """
CREATE TABLE IF NOT EXISTS meshkit_leases (
    name        TEXT PRIMARY KEY,   -- what is held, e.g. 'outbox-relay'
    owner       TEXT NOT NULL,      -- the holder: host:pid:random
    host        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    pid_started INTEGER NOT NULL,   -- the holder's start, clock ticks since boot (-1: unknown)
    expires_at  REAL NOT NULL       -- unix seconds
)
"""


class Holder(NamedTuple):
    """Who holds a lease and until when (unix seconds)."""

    owner: str
    host: str
    pid: int
    expires_at: float


class Lease:
    """One named lease in ``db`` for this object (its ``owner`` id is unique per instance).

    ``acquire()`` takes or renews it (one write transaction) and says whether this instance
    holds it now; ``held_for()`` is how long it surely still does without renewing (no IO);
    ``release()`` gives it up (only if this instance still holds it). ``term`` counts the times
    this instance took it afresh (not by renewing its own row): a holder whose term changed
    had lost it meanwhile, and another may have done its work. Thread safety: one thread drives
    one Lease; any number of Leases, in any processes, may contend for one name.
    """

    def __init__(self, db: Database, name: str, *, duration_s: float) -> None:
        if duration_s <= 0:
            raise ValueError("a lease lasts more than 0 s")
        self.name = name
        self.duration_s = duration_s
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._db = db
        self._valid_until = 0.0  # monotonic; 0: not held
        self.term = 0
        with db.transaction(durable=False) as conn:
            conn.execute(LEASE_TABLE)

    def held_for(self) -> float:
        """Seconds this instance surely still holds the lease (0 when it does not)."""
        return max(0.0, self._valid_until - time.monotonic())

    def acquire(self) -> bool:
        """Take the lease, or renew it, for ``duration_s``; True when this instance holds it.

        Taken when nobody holds it, when its holder's time is up, or when the holder was a
        process of this host that is gone. Renewed only while the row is still this instance's
        (after a lapse nobody used, too); once another took it over, False.
        """
        started = time.monotonic()
        now = time.time()
        host, pid = socket.gethostname(), os.getpid()
        # Not synced: a lease lost to a power failure is one nobody holds after the restart.
        with self._db.transaction(durable=False) as conn:
            row = conn.execute(
                "SELECT owner, host, pid, pid_started, expires_at FROM meshkit_leases"
                " WHERE name = ?",
                (self.name,),
            ).fetchone()
            why = None
            if row is not None and row["owner"] != self.owner:
                if row["expires_at"] < now:
                    why = f"its lease expired {now - row['expires_at']:.1f}s ago"
                elif row["host"] == host and not _alive(row["pid"], row["pid_started"]):
                    why = f"its process {row['pid']} is gone"
                else:
                    self._valid_until = 0.0
                    return False
            conn.execute(
                "INSERT OR REPLACE INTO meshkit_leases"
                " (name, owner, host, pid, pid_started, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                (self.name, self.owner, host, pid, _started(pid), now + self.duration_s),
            )
        renewed = row is not None and row["owner"] == self.owner
        if not renewed:
            self.term += 1
        self._valid_until = started + self.duration_s
        if why is not None:
            log.warning(
                "%s lease on %s taken over from %s (%s)",
                self.name,
                self._db.path,
                row["owner"],
                why,
            )
        elif not renewed:
            log.info("%s lease on %s taken by %s", self.name, self._db.path, self.owner)
        return True

    def holder(self) -> Holder | None:
        """The lease's row as stored now (it may have expired), or None."""
        with self._db.snapshot() as conn:
            row = conn.execute(
                "SELECT owner, host, pid, expires_at FROM meshkit_leases WHERE name = ?",
                (self.name,),
            ).fetchone()
        if row is None:
            return None
        return Holder(row["owner"], row["host"], int(row["pid"]), float(row["expires_at"]))

    def release(self) -> None:
        """Give the lease up now, if this instance still holds it (a standby takes it at once)."""
        if self._valid_until == 0.0:
            return
        self._valid_until = 0.0
        with self._db.transaction(durable=False) as conn:
            conn.execute(
                "DELETE FROM meshkit_leases WHERE name = ? AND owner = ?", (self.name, self.owner)
            )
        log.info("%s lease on %s released by %s", self.name, self._db.path, self.owner)

    def lost(self) -> None:
        """Forget holding it (the holder found out another took it over)."""
        self._valid_until = 0.0


def _started(pid: int) -> int:
    """When process ``pid`` started, in clock ticks since boot (Linux /proc), or -1."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return -1


def _alive(pid: int, started: int) -> bool:
    """True while ``pid`` is a live process of this host, the one that started at ``started``
    (a recycled pid is not; without /proc, any process of that pid counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, as another user's
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return True
    if fields[0] in ("Z", "X"):  # killed, not reaped yet by its parent
        return False
    return started < 0 or int(fields[19]) == started
