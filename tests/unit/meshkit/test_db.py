"""meshkit.Database: migrations once, atomic transactions, a connection per thread."""

from __future__ import annotations

import sqlite3
import threading
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
