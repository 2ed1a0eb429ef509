"""The copies of the read model on disk and which one serves: a small catalog database (the
service's ``db_path``) points at the serving copy, a file beside it (``<stem>.g<N>.db``).

Each copy has its own consumer group, ``order_views.<catalog id>.g<N>``: a new copy's group has
no committed offsets, so it reads every topic from the beginning. The catalog id (random, made
with the catalog) keeps a fresh ``.mesh/`` from inheriting the offsets of an older one that used
the same broker.

The swap is one catalog transaction (the fresh copy serves, the old one retires) plus a pointer
assignment in memory; queries hold a lease on the copy they read, and a retired copy's file is
deleted only after its last lease ends. At start-up, copies left building or retired by a
process that died mid-rebuild are deleted.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from meshkit.db import Database
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
)
DRAIN_TIMEOUT_S = 30.0


class Runner(Protocol):
    """A consumer loop step by step (meshkit's EventConsumer)."""

    def run_once(self, timeout: float = 1.0) -> int:
        """Settle up to one batch; the number settled."""

    def close(self) -> None:
        """Commit and leave the group."""


RunnerFactory = Callable[[Database, str], Runner]
"""Builds the consumer of a copy: (its database, its consumer group)."""


class SqliteCopy:
    """One copy: its database file, its read model, its consumer group and consumer thread.

    Thread safety: every method may be called from any thread.
    """

    def __init__(
        self,
        generation: int,
        path: Path,
        group: str,
        runners: RunnerFactory,
        progress: Progress,
    ) -> None:
        self.generation = generation
        self.path = path
        self.group = group
        self.db = open_copy(str(path))
        self.model = SqliteReadModel(self.db)
        self._runners = runners
        self._progress = progress
        self._lock = threading.Condition()
        self._leases = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # -- consuming -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the consumer thread unless it runs."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop = threading.Event()
            runner = self._runners(self.db, self.group)
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

    def destroy(self) -> None:
        """Stop consuming, wait for the queries still reading (bounded), delete the files."""
        self.stop()
        with self._lock:
            self._lock.wait_for(lambda: self._leases == 0, DRAIN_TIMEOUT_S)
        self.db.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)


class SqliteCopies:
    """The catalog and the live copies (the serving one, a building one during a rebuild).

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
            leftovers = conn.execute(
                "SELECT generation, file FROM generations WHERE state != 'serving'"
            ).fetchall()
            serving = conn.execute(
                "SELECT generation FROM generations WHERE state = 'serving'"
            ).fetchone()
        for generation, file in leftovers:
            log.info("deleting generation %d left over by an earlier process", generation)
            for suffix in ("", "-wal", "-shm"):
                (self._dir / f"{file}{suffix}").unlink(missing_ok=True)
        with self._catalog.transaction() as conn:
            conn.execute("DELETE FROM generations WHERE state != 'serving'")
        if serving is None:
            self._active = self._new_copy("serving")
        else:
            self._active = self._open(int(serving[0]))

    def _file(self, generation: int) -> str:
        return f"{self._stem}.g{generation}.db"

    def _group(self, generation: int) -> str:
        return f"order_views.{self._catalog_id}.g{generation}"

    def _open(self, generation: int) -> SqliteCopy:
        copy = SqliteCopy(
            generation,
            self._dir / self._file(generation),
            self._group(generation),
            self._runners,
            self._progress,
        )
        with self._lock:
            self._copies.append(copy)
        return copy

    def _new_copy(self, state: str) -> SqliteCopy:
        with self._catalog.transaction() as conn:
            top = conn.execute("SELECT MAX(generation) FROM generations").fetchone()[0]
            generation = int(top or 0) + 1
            conn.execute(
                "INSERT INTO generations (generation, file, consumer_group, state, created_at_us)"
                " VALUES (?, ?, ?, ?, ?)",
                (
                    generation,
                    self._file(generation),
                    self._group(generation),
                    state,
                    to_micros(now()),
                ),
            )
        return self._open(generation)

    def active(self) -> SqliteCopy:
        """The copy that serves queries."""
        with self._lock:
            return self._active

    def create(self) -> SqliteCopy:
        """A new empty copy, recorded as building."""
        return self._new_copy("building")

    def swap(self, fresh: Copy) -> SqliteCopy:
        """Make ``fresh`` serve: the catalog first (durable), then the in-memory pointer."""
        if not isinstance(fresh, SqliteCopy):
            raise TypeError(f"not one of these copies: {fresh!r}")
        with self._lock:
            old = self._active
            with self._catalog.transaction() as conn:
                conn.execute(
                    "UPDATE generations SET state = 'retired' WHERE generation = ?",
                    (old.generation,),
                )
                conn.execute(
                    "UPDATE generations SET state = 'serving', swapped_at_us = ?"
                    " WHERE generation = ?",
                    (to_micros(now()), fresh.generation),
                )
            self._active = fresh
        return old

    def discard(self, copy: Copy) -> None:
        """Delete a copy that does not serve: its files, its catalog row."""
        if not isinstance(copy, SqliteCopy):
            raise TypeError(f"not one of these copies: {copy!r}")
        with self._lock:
            if copy is self._active:
                raise ValueError("the serving copy cannot be discarded")
        copy.destroy()
        with self._catalog.transaction() as conn:
            conn.execute("DELETE FROM generations WHERE generation = ?", (copy.generation,))
        with self._lock:
            if copy in self._copies:
                self._copies.remove(copy)

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

    def close(self) -> None:
        """Stop every copy's consumer and close every database (the files stay)."""
        with self._lock:
            copies = list(self._copies)
        for copy in copies:
            copy.stop()
        for copy in copies:
            copy.db.close()
        self._catalog.close()
