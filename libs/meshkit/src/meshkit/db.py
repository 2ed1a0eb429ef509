"""SQLite, the embedded default store of every service (one database per service).

``Database`` hands each thread its own connection (SQLite connections are not to be shared across
threads mid-transaction), runs in WAL mode so readers never block the writer, and applies the
service's migrations once, tracked by ``PRAGMA user_version``.

Durability, decided on purpose: ``synchronous=FULL`` by default. SQLite's documentation: in WAL mode
with ``synchronous=NORMAL`` "a transaction committed ... might roll back following a power loss or
system crash" (only the process crashing, kill -9 included, is survived); with FULL the WAL is
synced at every commit, so a commit that returned survives power loss too. A service acts on its
commits outside the file right away: the relay publishes the outbox rows (consumers then hold an
event whose state change the producer may forget, and a later, different event can reuse its
``<aggregate>:<version>`` id, which consumers drop as a duplicate), a consumer commits its Kafka
offset after its inbox mark (a lost mark then means a lost event), and callers get their reply. An
exactly-once pipeline therefore needs FULL. Its price is one fsync of the WAL per commit: about
0.15-0.4 ms more per write transaction on this project's test VM (median 22 us -> 150-370 us), and
more on disks without a write cache. ``durable=False`` (NORMAL) is for data nobody else has seen
yet and that can be rebuilt, e.g. a scratch copy.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self


class EventSink(Protocol):
    """Where a unit of work's events go: the outbox (``meshkit.events.EventPublisher``), or a
    recorder in tests."""

    def publish(self, conn: sqlite3.Connection, event: Any, *, event_id: str | None = None) -> Any:
        """Append ``event`` in ``conn``'s open transaction."""


class Database:
    """A SQLite database file shared by the threads of one process.

    Thread safety: every method may be called from any thread; each thread gets its own
    connection. ``transaction()`` takes the write lock at BEGIN (``BEGIN IMMEDIATE``), so two
    writers never deadlock upgrading a read lock; other writers wait up to ``busy_timeout_ms``.
    The writers of one process queue on an in-process lock first, so the next one starts the
    moment the one before commits: SQLite's own busy handler polls with sleeps of 1, 2, 5 ... up
    to 100 ms, which under contention left writers asleep on a free lock (profiled in issue 11).
    Writers in other processes still meet through ``busy_timeout_ms``.
    Durability: a commit that returned survives power loss (``synchronous=FULL``) unless
    ``durable=False`` (see the module docstring).
    """

    def __init__(
        self,
        path: str | Path,
        migrations: Sequence[str] = (),
        *,
        durable: bool = True,
        busy_timeout_ms: int = 10_000,
    ) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._migrations = tuple(migrations)
        self._durable = durable
        self._busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._lock = threading.Lock()
        self._write_lock = threading.RLock()  # reentrant: a nested BEGIN fails as it always did
        self._connections: list[sqlite3.Connection] = []
        self._closed = False
        self._active = 0  # transactions and snapshots open now (close waits for none)
        self._idle = threading.Condition(self._lock)
        self._commits = 0
        self._committed = threading.Condition(threading.Lock())
        self.migrate()

    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            raise RuntimeError(f"database {self.path} is closed")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            # isolation_level=None: we issue BEGIN ourselves, so transactions are explicit.
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            self._enable_wal(conn)
            conn.execute(f"PRAGMA synchronous = {'FULL' if self._durable else 'NORMAL'}")
            conn.execute("PRAGMA foreign_keys = ON")
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        """Switch the file to WAL (it stays so). The switch needs the file to itself and SQLite
        does not wait for that through busy_timeout, so a process opening the file while another
        does gets "database is locked": retry until busy_timeout has passed."""
        deadline = time.monotonic() + self._busy_timeout_ms / 1000
        while True:
            try:
                mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
            else:
                if mode in ("wal", "memory"):
                    return
            if time.monotonic() > deadline:
                raise sqlite3.OperationalError(f"{self.path}: could not switch to WAL (locked)")
            time.sleep(0.005)  # poll interval within the busy_timeout deadline

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """A write transaction: commits when the block ends, rolls back if it raises.

        ``durable=False`` commits this one transaction without syncing it (``synchronous=NORMAL``
        for its commit): for bookkeeping whose loss on power failure only makes work be redone,
        such as the relay marking rows published (lost, they are sent again, and consumers drop
        the duplicates). It stays atomic and consistent; the next durable commit syncs it too.
        It spares the fsync while the write lock is held, which every other writer waits on."""
        relaxed = self._durable and not durable
        with self._in_use() as conn:
            if not self._write_lock.acquire(timeout=self._busy_timeout_ms / 1000):
                raise sqlite3.OperationalError(f"{self.path}: database is locked (by this process)")
            try:
                if relaxed:
                    conn.execute("PRAGMA synchronous = NORMAL")
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            finally:
                if relaxed:
                    conn.execute("PRAGMA synchronous = FULL")
                self._write_lock.release()
        with self._committed:
            self._commits += 1
            self._committed.notify_all()

    def commits(self) -> int:
        """How many write transactions of this process have committed so far (for
        ``wait_for_commit``)."""
        return self._commits

    def wait_for_commit(self, after: int, timeout: float) -> int:
        """Wait until this process has committed a write transaction since ``commits()``
        returned ``after``, or ``timeout`` seconds; returns ``commits()``. How the outbox relay
        hears of a new event at once instead of at its next poll (writers in other processes
        are still seen only by polling)."""
        with self._committed:
            self._committed.wait_for(lambda: self._commits != after, timeout)
            return self._commits

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query in the block sees one consistent state."""
        with self._in_use() as conn:
            conn.execute("BEGIN DEFERRED")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    @contextmanager
    def _in_use(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection, counted in use until the block ends: ``close`` waits for
        it (closing a connection while another thread runs a statement on it can crash the
        interpreter: the sqlite3 module does not guard against it)."""
        with self._lock:
            if self._closed:
                raise RuntimeError(f"database {self.path} is closed")
            self._active += 1
        try:
            yield self._connection()
        finally:
            with self._lock:
                self._active -= 1
                if not self._active:
                    self._idle.notify_all()

    def migrate(self) -> None:
        """Apply the migrations not applied yet, each in its own transaction.

        The version is read in the transaction that applies the next migration (under the write
        lock), so processes migrating one file at once apply each migration exactly once.
        """
        while True:
            with self.transaction() as conn:
                applied = int(conn.execute("PRAGMA user_version").fetchone()[0])
                if applied >= len(self._migrations):
                    return
                for statement in _statements(self._migrations[applied]):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {applied + 1}")

    @property
    def closed(self) -> bool:
        """True once ``close()`` ran: a background loop on this database should end."""
        return self._closed

    def close(self) -> None:
        """Close every thread's connection, once no transaction is open on any (waiting up to
        ``busy_timeout_ms`` for them to end; past it, they are left to the garbage collector
        rather than closed under a running statement). Further use raises."""
        with self._lock:
            self._closed = True
            if self._idle.wait_for(lambda: not self._active, self._busy_timeout_ms / 1000):
                for conn in self._connections:
                    conn.close()
            self._connections.clear()


class UnitOfWork:
    """Base of a service's SQLite unit of work: one ``BEGIN IMMEDIATE`` transaction per ``with``
    (``read_only=True``: a snapshot, ``BEGIN DEFERRED``, that takes no write lock and must not
    write).

    ``with uow:`` begins and calls ``bind(conn)``, where a subclass builds its repositories over
    the open connection; leaving the block normally commits, an exception rolls back. Everything
    done through the repositories, and every event ``publish``ed (an outbox row, through
    ``events``), therefore commits together or not at all. Not reentrant; build one per use-case
    call.
    """

    def __init__(
        self, db: Database, events: EventSink | None = None, *, read_only: bool = False
    ) -> None:
        self._db = db
        self._events = events
        self._read_only = read_only
        self._tx: AbstractContextManager[sqlite3.Connection] | None = None
        self._conn: sqlite3.Connection | None = None

    def bind(self, conn: sqlite3.Connection) -> None:
        """Build the repositories over ``conn``, the transaction's connection."""
        raise NotImplementedError

    @property
    def connection(self) -> sqlite3.Connection:
        """The open transaction's connection (only inside the ``with`` block)."""
        if self._conn is None:
            raise RuntimeError("used outside its `with` block")
        return self._conn

    def publish(self, event: Any, *, event_id: str | None = None) -> None:
        """Append ``event`` to the outbox in this transaction: it is published exactly when this
        unit of work commits. ``event_id`` fixes its ``ce_id`` (consumers dedupe on it)."""
        if self._events is None:
            raise RuntimeError(f"{type(self).__name__} was built without an event sink")
        self._events.publish(self.connection, event, event_id=event_id)

    def __enter__(self) -> Self:
        self._tx = self._db.snapshot() if self._read_only else self._db.transaction()
        self._conn = self._tx.__enter__()
        try:
            self.bind(self._conn)
        except BaseException as exc:
            self.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._tx is None:
            raise RuntimeError("unit of work exited without being entered")
        tx, self._tx, self._conn = self._tx, None, None
        tx.__exit__(exc_type, exc, tb)


def _statements(script: str) -> list[str]:
    """Split a migration script into statements (executescript would commit our transaction)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip():
        statements.append(current.strip())
    return statements
