"""The copies of the read model on disk and which one serves: a small catalog database (the
service's ``db_path``) points at the serving copy, a file beside it (``<stem>.g<N>.db``).

Each copy has its own consumer group, ``order_views.<catalog id>.g<N>``. Generation numbers are
never reused (the catalog keeps the last one given), and a rebuild's fresh copy sets its group's
offsets to 0 before it reads (the kit's replay mode, meshkit.events.Consumers), so no copy ever
inherits another's offsets.
The catalog id (random, made with the catalog) keeps a fresh ``.mesh/`` apart from an older one
that used the same broker.

The swap is one catalog transaction (the fresh copy serves, the old one retires) plus a pointer
assignment in memory; queries hold a lease on the copy they read.

Several processes may share one catalog (replicas on one directory). Each holds a shared lock
(``flock``) on ``<stem>.g<N>.lock`` for every copy it has open, from before the copy is recorded
until it lets the copy go; a copy's files are deleted only under an exclusive lock, i.e. by the
last process out, never under another one's feet. So a starting process deletes only the copies
nobody holds (left building or retired by a process that died), and a swap in one process leaves
the old copy to the others still serving it. Every process follows the catalog (``refresh``,
run by ``run`` a few times a second): when another process swapped, it opens the new serving
copy, starts its consumer, and lets the old one go. It also wakes its read-your-writes waiters
when another process's consumer changed the serving copy (SQLite's ``data_version``).
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple, Protocol

from meshkit.db import Database
from meshkit.errors import Aborted
from meshkit.timestamps import now, to_micros
from order_views.adapters.sqlite import SqliteReadModel, open_copy
from order_views.app.ports import Copy, Positions
from order_views.app.progress import Progress

log = logging.getLogger("order_views.copies")

CATALOG_MIGRATIONS = (
    """
    CREATE TABLE catalog (
        id          INTEGER PRIMARY KEY CHECK (id = 1),
        catalog_id  TEXT NOT NULL
    );
    CREATE TABLE generations (
        generation     INTEGER PRIMARY KEY,
        file           TEXT NOT NULL,        -- beside the catalog
        consumer_group TEXT NOT NULL,
        state          TEXT NOT NULL CHECK (state IN ('building', 'serving', 'retired')),
        created_at     REAL NOT NULL,
        swapped_at     REAL
    );
    """,
    # Times in exact integer microseconds (meshkit.timestamps), not float seconds. A REAL column
    # would read integers back as floats, so the table is rebuilt with INTEGER ones.
    """
    CREATE TABLE generations_us (
        generation     INTEGER PRIMARY KEY,
        file           TEXT NOT NULL,
        consumer_group TEXT NOT NULL,
        state          TEXT NOT NULL CHECK (state IN ('building', 'serving', 'retired')),
        created_at_us  INTEGER NOT NULL,
        swapped_at_us  INTEGER
    );
    INSERT INTO generations_us
        SELECT generation, file, consumer_group, state,
               CAST(round(created_at * 1000000) AS INTEGER),
               CAST(round(swapped_at * 1000000) AS INTEGER)
        FROM generations;
    DROP TABLE generations;
    ALTER TABLE generations_us RENAME TO generations;
    """,
    # Generation numbers are never reused: a number (and so a consumer group) given to a copy
    # that was later discarded used to come back with the group's committed offsets, and the
    # "fresh" copy skipped everything before them (issue 20).
    """
    ALTER TABLE catalog ADD COLUMN last_generation INTEGER NOT NULL DEFAULT 0;
    UPDATE catalog SET last_generation = (SELECT COALESCE(MAX(generation), 0) FROM generations);
    """,
)
DRAIN_TIMEOUT_S = 30.0
WATCH_S = 0.05  # how often ``run`` looks at the catalog and the serving copy
OPEN_ATTEMPTS = 20  # swaps by other processes an open may race with before it gives up


class Runner(Protocol):
    """A consumer loop step by step (meshkit's EventConsumer)."""

    def run_once(self, timeout: float = 1.0) -> int:
        """Settle up to one batch; the number settled."""

    def close(self) -> None:
        """Commit and leave the group."""


class RunnerFactory(Protocol):
    """Builds the consumer of a copy (meshkit.events.Consumers)."""

    def __call__(self, db: Database, group: str, *, replay: bool = False) -> Runner:
        """The consumer of ``group`` writing ``db``. ``replay``: read every partition from
        offset 0, and stop (never skip ahead) where the log no longer starts there."""


class _Row(NamedTuple):
    generation: int
    file: str
    group: str
    state: str


def _lock(path: Path, *, exclusive: bool) -> int | None:
    """An open descriptor holding a shared (or exclusive) flock on ``path``, or None when
    another holder's lock is in the way. Closing the descriptor releases the lock, as the
    kernel does when a process dies."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


class SqliteCopy:
    """One copy: its database file, its read model, its consumer group and consumer thread, and
    this process's hold on it (the shared lock that keeps other processes from deleting it).

    Thread safety: every method may be called from any thread.
    """

    def __init__(
        self,
        generation: int,
        path: Path,
        group: str,
        runners: RunnerFactory,
        progress: Progress,
        *,
        hold: int,
    ) -> None:
        self.generation = generation
        self.path = path
        self.group = group
        self._hold: int | None = hold
        self.db = open_copy(str(path))
        self.model = SqliteReadModel(self.db)
        self._runners = runners
        self._progress = progress
        self._lock = threading.Condition()
        self._leases = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # -- consuming -------------------------------------------------------------------------

    def start(self, *, replay: bool = False) -> None:
        """Start the consumer thread unless it runs; ``replay``: from offset 0 of every
        partition, never skipping ahead (a rebuild's fresh copy)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop = threading.Event()
            runner = self._runners(self.db, self.group, replay=replay)
            self._thread = threading.Thread(
                target=self._loop,
                args=(runner, self._stop),
                name=f"order-views-g{self.generation}",
                daemon=True,
            )
            self._thread.start()

    def _loop(self, runner: Runner, stop: threading.Event) -> None:
        # meshkit's run_forever, plus a signal after each batch: the batch's transactions have
        # committed by then, so a woken query sees what it waits for.
        backoff = 0.1
        try:
            while not stop.is_set():
                try:
                    if runner.run_once(0.5):
                        self._progress.advance()
                    backoff = 0.1
                except Exception:
                    log.exception("generation %d consumer: error; backing off", self.generation)
                    stop.wait(backoff)
                    backoff = min(5.0, backoff * 2)
        finally:
            try:
                runner.close()
            except Exception:
                log.exception("generation %d consumer: close failed", self.generation)

    def stop(self) -> None:
        """Stop the consumer thread and wait for it (it commits and leaves the group)."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._stop.set()
        if thread is not None:
            thread.join(60)

    def positions(self) -> Positions:
        """Next offset per partition this copy has applied."""
        return self.model.positions(self.group)

    def applied(self) -> int:
        """Events this copy has settled."""
        return self.model.applied(self.group)

    def data_version(self) -> int:
        """SQLite's ``data_version`` on this thread's connection: it moves when another
        connection (another thread's, or another process's) commits to the copy."""
        with self.db.snapshot() as conn:
            return int(conn.execute("PRAGMA data_version").fetchone()[0])

    # -- leases ----------------------------------------------------------------------------

    def acquire(self) -> None:
        """Count a query reading this copy."""
        with self._lock:
            self._leases += 1

    def release(self) -> None:
        """A query is done with this copy."""
        with self._lock:
            self._leases -= 1
            self._lock.notify_all()

    def close(self) -> None:
        """Stop consuming, wait for the queries still reading (bounded), close the database and
        let go of this process's hold (the files stay; see SqliteCopies.collect)."""
        self.stop()
        with self._lock:
            self._lock.wait_for(lambda: self._leases == 0, DRAIN_TIMEOUT_S)
        self.db.close()
        hold, self._hold = self._hold, None
        if hold is not None:
            os.close(hold)


class SqliteCopies:
    """The catalog and the copies this process has open (the serving one, a building one during
    a rebuild).

    Thread safety: safe to share; ``lease`` and ``swap`` are atomic with respect to each other.
    """

    def __init__(self, catalog_path: Path, runners: RunnerFactory, progress: Progress) -> None:
        self._dir = catalog_path.parent
        self._stem = catalog_path.stem
        self._runners = runners
        self._progress = progress
        self._catalog = Database(catalog_path, CATALOG_MIGRATIONS)
        self._lock = threading.Lock()
        self._copies: list[SqliteCopy] = []
        with self._catalog.transaction() as conn:
            row = conn.execute("SELECT catalog_id FROM catalog").fetchone()
            if row is None:
                self._catalog_id = uuid.uuid4().hex[:8]
                conn.execute(
                    "INSERT INTO catalog (id, catalog_id) VALUES (1, ?)", (self._catalog_id,)
                )
            else:
                self._catalog_id = row[0]
        self.collect()
        self._active = self._open_serving()
        self._versions = (self._catalog_version(), self._active.data_version())

    # -- the catalog -----------------------------------------------------------------------

    def _file(self, generation: int) -> str:
        return f"{self._stem}.g{generation}.db"

    def _lock_path(self, file: str) -> Path:
        return self._dir / f"{Path(file).stem}.lock"

    def _rows(self, conn: sqlite3.Connection, where: str = "1") -> list[_Row]:
        return [
            _Row(int(r[0]), str(r[1]), str(r[2]), str(r[3]))
            for r in conn.execute(
                "SELECT generation, file, consumer_group, state FROM generations"
                f" WHERE {where} ORDER BY generation"
            )
        ]

    def _catalog_version(self) -> int:
        with self._catalog.snapshot() as conn:
            return int(conn.execute("PRAGMA data_version").fetchone()[0])

    def _serving(self) -> _Row | None:
        with self._catalog.snapshot() as conn:
            rows = self._rows(conn, "state = 'serving'")
        return rows[0] if rows else None

    def _new(self, conn: sqlite3.Connection, state: str) -> tuple[_Row, int]:
        """A new generation recorded as ``state`` in ``conn``'s transaction, with this process's
        hold on it taken before the row is visible to any other process."""
        conn.execute(
            "UPDATE catalog SET last_generation ="
            " MAX(last_generation, (SELECT COALESCE(MAX(generation), 0) FROM generations)) + 1"
        )
        generation = int(conn.execute("SELECT last_generation FROM catalog").fetchone()[0])
        row = _Row(generation, self._file(generation), self._group(generation), state)
        hold = _lock(self._lock_path(row.file), exclusive=False)
        assert hold is not None, "nobody else knows this generation yet"
        for suffix in ("", "-wal", "-shm"):  # a stray file of an older catalog, never ours
            (self._dir / f"{row.file}{suffix}").unlink(missing_ok=True)
        conn.execute(
            "INSERT INTO generations (generation, file, consumer_group, state, created_at_us)"
            " VALUES (?, ?, ?, ?, ?)",
            (*row, to_micros(now())),
        )
        return row, hold

    def _group(self, generation: int) -> str:
        return f"order_views.{self._catalog_id}.g{generation}"

    def _copy(self, row: _Row, hold: int) -> SqliteCopy:
        try:
            copy = SqliteCopy(
                row.generation,
                self._dir / row.file,
                row.group,
                self._runners,
                self._progress,
                hold=hold,
            )
        except BaseException:
            os.close(hold)
            raise
        with self._lock:
            self._copies.append(copy)
        return copy

    def _open_serving(self) -> SqliteCopy:
        """The catalog's serving copy, held by this process (made, when there is none yet)."""
        for _ in range(OPEN_ATTEMPTS):
            with self._catalog.transaction() as conn:  # one writer: one first copy, not two
                rows = self._rows(conn, "state = 'serving'")
                if not rows:
                    made, hold = self._new(conn, "serving")
            if not rows:
                return self._copy(made, hold)
            row = rows[0]
            with self._lock:
                for copy in self._copies:
                    if copy.generation == row.generation:
                        return copy
            held = _lock(self._lock_path(row.file), exclusive=False)
            if held is None:
                continue  # being deleted: it stopped serving meanwhile
            # Held now, so nobody deletes it; but it may have been swapped out before that.
            with self._catalog.snapshot() as conn:
                still = self._rows(conn, f"generation = {row.generation} AND state = 'serving'")
            if still:
                return self._copy(row, held)
            os.close(held)
        raise Aborted("the serving copy kept changing while opening it; try again")

    def collect(self) -> list[int]:
        """Delete every copy that does not serve and that no process holds (left building or
        retired by a process that died, or let go by the last process that served it); returns
        their generations."""
        with self._catalog.snapshot() as conn:
            candidates = self._rows(conn, "state != 'serving'")
        with self._lock:
            mine = {copy.generation for copy in self._copies}
        deleted = []
        for row in candidates:
            if row.generation in mine:
                continue
            lock_path = self._lock_path(row.file)
            fd = _lock(lock_path, exclusive=True)
            if fd is None:
                continue  # another process holds it: it goes when that one lets go
            try:
                for suffix in ("", "-wal", "-shm"):
                    (self._dir / f"{row.file}{suffix}").unlink(missing_ok=True)
                with self._catalog.transaction() as conn:
                    conn.execute(
                        "DELETE FROM generations WHERE generation = ? AND state != 'serving'",
                        (row.generation,),
                    )
                lock_path.unlink(missing_ok=True)
            finally:
                os.close(fd)
            log.info("deleted generation %d (no process holds it)", row.generation)
            deleted.append(row.generation)
        return deleted

    # -- the copies --------------------------------------------------------------------------

    def active(self) -> SqliteCopy:
        """The copy that serves queries."""
        with self._lock:
            return self._active

    def create(self) -> SqliteCopy:
        """A new empty copy, recorded as building (with a generation never given before)."""
        with self._catalog.transaction() as conn:
            row, hold = self._new(conn, "building")
        return self._copy(row, hold)

    def swap(self, fresh: Copy) -> SqliteCopy:
        """Make ``fresh`` serve: the catalog first (durable), then the in-memory pointer.
        Raises Aborted when another process swapped in a copy of its own meanwhile."""
        if not isinstance(fresh, SqliteCopy):
            raise TypeError(f"not one of these copies: {fresh!r}")
        with self._lock:
            old = self._active
            with self._catalog.transaction() as conn:
                retired = conn.execute(
                    "UPDATE generations SET state = 'retired'"
                    " WHERE generation = ? AND state = 'serving'",
                    (old.generation,),
                ).rowcount
                if retired != 1:
                    raise Aborted(
                        f"generation {old.generation} no longer serves: another process swapped"
                        " in a copy of its own meanwhile"
                    )
                conn.execute(
                    "UPDATE generations SET state = 'serving', swapped_at_us = ?"
                    " WHERE generation = ?",
                    (to_micros(now()), fresh.generation),
                )
            self._active = fresh
        return old

    def discard(self, copy: Copy) -> None:
        """Let go of a copy that does not serve (waiting for its leases to end first); its files
        are deleted unless another process still holds it (the last one out deletes them)."""
        if not isinstance(copy, SqliteCopy):
            raise TypeError(f"not one of these copies: {copy!r}")
        with self._lock:
            if copy is self._active:
                raise ValueError("the serving copy cannot be discarded")
        with self._catalog.transaction() as conn:
            conn.execute(
                "UPDATE generations SET state = 'retired'"
                " WHERE generation = ? AND state != 'serving'",
                (copy.generation,),
            )
        self._let_go(copy)

    def _let_go(self, copy: SqliteCopy) -> None:
        copy.close()
        with self._lock:
            if copy in self._copies:
                self._copies.remove(copy)
        self.collect()

    @contextmanager
    def lease(self) -> Iterator[SqliteReadModel]:
        """The serving copy's read model, held for the block (a swap meanwhile does not delete
        it until the block ends)."""
        with self._lock:
            copy = self._active
            copy.acquire()
        try:
            yield copy.model
        finally:
            copy.release()

    # -- following other processes -----------------------------------------------------------

    def refresh(self) -> None:
        """Follow the catalog: when another process swapped in a new serving copy, open it,
        start its consumer, serve from it, and let the old copy go; when another process's
        consumer changed the serving copy, wake the waiters (``Progress``)."""
        catalog_version = self._catalog_version()
        if catalog_version != self._versions[0]:
            serving = self._serving()
            if serving is not None and serving.generation != self.active().generation:
                self._follow()
        active = self.active()
        version = active.data_version()
        if (catalog_version, version) != self._versions:
            self._progress.advance()
        self._versions = (catalog_version, version)

    def _follow(self) -> None:
        new = self._open_serving()
        with self._lock:
            old = self._active
            if new is old:
                return
            self._active = new
        new.start()
        self._progress.advance()
        log.info(
            "generation %d serves (swapped in by another process); letting generation %d go",
            new.generation,
            old.generation,
        )
        self._let_go(old)

    def run(self, stop: threading.Event) -> None:
        """The projection worker: run the serving copy's consumer, and ``refresh`` every
        WATCH_S seconds until ``stop`` is set."""
        self.active().start()
        while not stop.wait(WATCH_S):
            try:
                self.refresh()
            except Exception:
                log.exception("following the catalog failed; retrying")

    def close(self) -> None:
        """Stop every copy's consumer, close every database and let go of every copy (their
        files stay, except those no other process holds that no longer serve)."""
        with self._lock:
            copies = list(self._copies)
            self._copies.clear()
        for copy in copies:
            copy.stop()
        for copy in copies:
            copy.close()
        try:
            self.collect()
        finally:
            self._catalog.close()
