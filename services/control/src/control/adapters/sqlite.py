"""SQLite storage for control: its Namespace resources and its outbox, in one database file."""

from __future__ import annotations

import sqlite3

from control.domain.model import Namespace
from meshkit import timestamps
from meshkit.db import UnitOfWork
from meshkit.events import OUTBOX_MIGRATION

MIGRATIONS = (
    """
    CREATE TABLE namespace (
        namespace_id TEXT PRIMARY KEY,
        display_name TEXT NOT NULL,
        created_at_micros INTEGER NOT NULL
    );
    """,
    OUTBOX_MIGRATION,
)


class SqliteNamespaceRepository:
    """NamespaceRepository over one open transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def get(self, namespace_id: str) -> Namespace | None:
        """The Namespace, or None."""
        row = self._conn.execute(
            "SELECT namespace_id, display_name, created_at_micros FROM namespace WHERE namespace_id = ?",
            (namespace_id,),
        ).fetchone()
        if row is None:
            return None
        return Namespace(row[0], row[1], timestamps.from_micros(row[2]))

    def add(self, namespace: Namespace) -> None:
        """Store a new Namespace."""
        self._conn.execute(
            "INSERT INTO namespace (namespace_id, display_name, created_at_micros) VALUES (?, ?, ?)",
            (
                namespace.namespace_id,
                namespace.display_name,
                timestamps.to_micros(namespace.created_at),
            ),
        )


class SqliteUnitOfWork(UnitOfWork):
    """Control's unit of work: its Namespace resources and their events in one SQLite transaction."""

    repository: SqliteNamespaceRepository

    def bind(self, conn: sqlite3.Connection) -> None:
        """Repositories over the transaction's connection."""
        self.repository = SqliteNamespaceRepository(conn)
