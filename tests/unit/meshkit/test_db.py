"""meshkit.Database: migrations once, atomic transactions, a connection per thread."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from meshkit import Database
from meshkit.db import UnitOfWork

MIGRATIONS = (
    "CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER NOT NULL);",
    "ALTER TABLE t ADD COLUMN note TEXT;\nCREATE INDEX t_v ON t (v);",
)


def test_migrations_apply_once_and_resume(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    db = Database(path, MIGRATIONS[:1])
    with db.transaction() as conn:
        conn.execute("INSERT INTO t (k, v) VALUES ('a', 1)")
    db.close()
    db = Database(path, MIGRATIONS)  # only the second migration runs now
    with db.snapshot() as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
        assert conn.execute("SELECT k, v, note FROM t").fetchall()[0][:] == ("a", 1, None)
    db.close()


def test_a_raising_transaction_leaves_nothing(tmp_path: Path) -> None:
    db = Database(tmp_path / "a.db", MIGRATIONS)

    class Boom(Exception):
        pass

    with pytest.raises(Boom), db.transaction() as conn:
        conn.execute("INSERT INTO t (k, v) VALUES ('a', 1)")
        raise Boom
    with db.snapshot() as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 0
    db.close()


def test_concurrent_writers_from_threads_all_commit(tmp_path: Path) -> None:
    db = Database(tmp_path / "a.db", MIGRATIONS)
    with db.transaction() as conn:
        conn.execute("INSERT INTO t (k, v) VALUES ('counter', 0)")

    def bump() -> None:
        for _ in range(50):
            with db.transaction() as conn:
                (value,) = conn.execute("SELECT v FROM t WHERE k = 'counter'").fetchone()
                conn.execute("UPDATE t SET v = ? WHERE k = 'counter'", (value + 1,))

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with db.snapshot() as conn:
        assert conn.execute("SELECT v FROM t WHERE k = 'counter'").fetchone()[0] == 200
    db.close()


def test_closed_database_refuses_new_connections(tmp_path: Path) -> None:
    db = Database(tmp_path / "a.db", MIGRATIONS)
    db.close()
    errors: list[Exception] = []

    def use() -> None:
        try:
            with db.snapshot():
                pass
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=use)
    thread.start()
    thread.join()
    assert errors and "closed" in str(errors[0])


class Counter(UnitOfWork):
    """A unit of work whose 'repository' is the raw connection."""

    def bind(self, conn: sqlite3.Connection) -> None:
        self.table = conn


def test_unit_of_work_commits_on_success_and_rolls_back_on_error(tmp_path: Path) -> None:
    db = Database(tmp_path / "a.db", MIGRATIONS)
    with Counter(db) as uow:
        uow.table.execute("INSERT INTO t (k, v) VALUES ('kept', 1)")
    with pytest.raises(KeyError), Counter(db) as uow:
        uow.table.execute("INSERT INTO t (k, v) VALUES ('dropped', 2)")
        raise KeyError("boom")
    with db.snapshot() as conn:
        assert [r[0] for r in conn.execute("SELECT k FROM t")] == ["kept"]
    with pytest.raises(RuntimeError, match="outside"):
        _ = Counter(db).connection
    db.close()


def _open_at_once(path: str, barrier: object, errors: object) -> None:
    """A process that opens (and so migrates) ``path`` the moment its twin does."""
    try:
        barrier.wait()  # type: ignore[attr-defined]
        Database(path, MIGRATIONS).close()
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which asserts on it
        errors.put(f"{type(exc).__name__}: {exc}")  # type: ignore[attr-defined]


def test_two_processes_starting_on_one_fresh_file_both_succeed(tmp_path: Path) -> None:
    """Replicas (or a restart racing a straggler) open one database at once. Before the fix one
    of them often failed: the WAL switch got "database is locked", or both read version 0 and
    both ran the same migration ("duplicate column"). Thirty fresh files, two processes each."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    errors = context.Queue()
    for attempt in range(30):
        path = str(tmp_path / f"fresh-{attempt}.db")
        barrier = context.Barrier(2)
        twins = [
            context.Process(target=_open_at_once, args=(path, barrier, errors)) for _ in range(2)
        ]
        for twin in twins:
            twin.start()
        for twin in twins:
            twin.join(timeout=30)
            assert twin.exitcode == 0
        db = Database(path, MIGRATIONS)
        with db.snapshot() as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        db.close()
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert found == []


def test_a_commit_is_durable_by_default_and_relaxed_only_when_asked(tmp_path: Path) -> None:
    # SQLite: in WAL mode with synchronous=NORMAL "a transaction committed ... might roll back
    # following a power loss or system crash"; FULL syncs the WAL at every commit. A service
    # tells others about its commits (events published, Kafka offsets committed, replies sent),
    # so by default a commit must survive power loss.
    durable = Database(tmp_path / "a.db", MIGRATIONS)
    relaxed = Database(tmp_path / "b.db", MIGRATIONS, durable=False)
    try:
        with durable.snapshot() as conn:
            assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2, "FULL"
        with relaxed.snapshot() as conn:
            assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1, "NORMAL"
    finally:
        durable.close()
        relaxed.close()


@contextmanager
def _held_write_lock(db: Database, key: str, value: int) -> Iterator[None]:
    """Another thread holds a write transaction (with an uncommitted row ``key``) meanwhile."""
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with db.transaction() as conn:
            conn.execute("INSERT INTO t (k, v) VALUES (?, ?)", (key, value))
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(10)
    try:
        yield
    finally:
        release.set()
        holder.join(10)


def test_a_writer_of_this_process_waits_its_turn_and_gives_up_after_busy_timeout(
    tmp_path: Path,
) -> None:
    db = Database(tmp_path / "a.db", MIGRATIONS, busy_timeout_ms=200)
    with (
        _held_write_lock(db, "first", 1),
        pytest.raises(sqlite3.OperationalError, match="locked"),
        db.transaction(),
    ):
        pass
    with db.transaction() as conn:  # the lock is free again: the next writer goes on
        conn.execute("INSERT INTO t (k, v) VALUES ('second', 2)")
    with db.snapshot() as conn:
        assert [r[0] for r in conn.execute("SELECT k FROM t ORDER BY v")] == ["first", "second"]
    db.close()


def test_a_read_only_unit_of_work_reads_while_a_writer_holds_the_lock(tmp_path: Path) -> None:
    db = Database(tmp_path / "a.db", MIGRATIONS, busy_timeout_ms=200)

    class Reader(UnitOfWork):
        def bind(self, conn: sqlite3.Connection) -> None:
            self.rows = conn.execute("SELECT k FROM t").fetchall()

    with db.transaction() as conn:
        conn.execute("INSERT INTO t (k, v) VALUES ('committed', 1)")
    # A write lock would time out in the block; a snapshot reads the last commit.
    with _held_write_lock(db, "uncommitted", 2), Reader(db, read_only=True) as reader:
        assert [r[0] for r in reader.rows] == ["committed"]
    db.close()


def test_wait_for_commit_wakes_on_a_commit_of_another_thread_and_not_on_a_rollback(
    tmp_path: Path,
) -> None:
    db = Database(tmp_path / "w.db", MIGRATIONS)
    seen = db.commits()
    # Nothing committed: the wait runs out and reports the same count.
    assert db.wait_for_commit(seen, 0.05) == seen
    with pytest.raises(RuntimeError), db.transaction() as conn:
        conn.execute("INSERT INTO t (k, v) VALUES ('x', 1)")
        raise RuntimeError("rolled back")
    assert db.commits() == seen  # a rollback is no commit

    woke: list[int] = []
    waiter = threading.Thread(target=lambda: woke.append(db.wait_for_commit(seen, 30)))
    waiter.start()
    with db.transaction() as conn:
        conn.execute("INSERT INTO t (k, v) VALUES ('y', 2)")
    waiter.join(30)
    assert woke == [seen + 1]  # woken by the commit, long before its 30 s ran out
    # A commit made before the wait began is not missed.
    assert db.wait_for_commit(seen, 30) == seen + 1
    db.close()


def test_a_transaction_may_skip_its_sync_and_the_next_one_is_durable_again(
    tmp_path: Path,
) -> None:
    db = Database(tmp_path / "s.db", MIGRATIONS)
    full, normal = 2, 1  # PRAGMA synchronous values
    with db.transaction(durable=False) as conn:
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == normal
        conn.execute("INSERT INTO t (k, v) VALUES ('a', 1)")
    with pytest.raises(RuntimeError), db.transaction(durable=False) as conn:
        raise RuntimeError("rolled back")
    with db.transaction() as conn:
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == full
        assert conn.execute("SELECT v FROM t WHERE k = 'a'").fetchone()[0] == 1
    relaxed = Database(tmp_path / "r.db", MIGRATIONS, durable=False)
    with relaxed.transaction() as conn:  # a relaxed database stays relaxed
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == normal
    db.close()
    relaxed.close()


def test_close_waits_for_a_transaction_in_progress_on_another_thread(tmp_path: Path) -> None:
    db = Database(tmp_path / "c.db", MIGRATIONS)
    inside, release = threading.Event(), threading.Event()
    got: list[object] = []

    def reader() -> None:
        with db.snapshot() as conn:
            inside.set()
            assert release.wait(30)
            # Still usable: close() has not closed this connection under the running block.
            got.append(conn.execute("SELECT count(*) FROM t").fetchone()[0])

    thread = threading.Thread(target=reader)
    thread.start()
    assert inside.wait(30)
    closer = threading.Thread(target=db.close)
    closer.start()
    closer.join(0.2)
    assert closer.is_alive(), "close() returned while a snapshot was open on another thread"
    assert db.closed  # new work is refused at once meanwhile
    with pytest.raises(RuntimeError, match="is closed"), db.transaction():
        pass
    release.set()
    thread.join(30)
    closer.join(30)
    assert not closer.is_alive() and got == [0]
