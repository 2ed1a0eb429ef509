"""The config store in SQLite: namespaces (with their schema and current version), every
version of their documents, and the watching clients' latest reports, in the service's one
database file.

Tables:

- ``config_namespace``: one row per namespace with a schema or a document: its
  ``current_version`` (0: none yet) and when that was stored, its JSON Schema (NULL: none), who
  registered it and when.
- ``config_version``: ``(namespace, version)`` unique, version 1, 2, 3... per namespace; the
  document text, author, reason, when, and ``rollback_of`` (0 unless a rollback).
- ``config_client_status``: the latest report of each ``(namespace, client)``.

Triggers keep the history honest as far as SQLite can: versions are appended at the next
number only, never updated, never deleted; and the namespace's ``current_version`` only moves
to a version that exists.
"""

from __future__ import annotations

import contextlib
import datetime
import sqlite3
from collections.abc import Iterator, Sequence

from control.app.ports import ConfigStore, StoreTransaction
from control.domain.model import ClientReport, ConfigVersion, NamespaceSchema, NamespaceSummary
from meshkit import timestamps
from meshkit.db import Database

CONFIG_MIGRATION = """
CREATE TABLE config_namespace (
    namespace             TEXT PRIMARY KEY,
    current_version       INTEGER NOT NULL DEFAULT 0,
    updated_micros        INTEGER NOT NULL DEFAULT 0,
    schema                TEXT,
    schema_author         TEXT NOT NULL DEFAULT '',
    schema_updated_micros INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE config_version (
    id             INTEGER PRIMARY KEY,
    namespace      TEXT NOT NULL REFERENCES config_namespace (namespace),
    version        INTEGER NOT NULL,
    document       TEXT NOT NULL,
    author         TEXT NOT NULL,
    reason         TEXT NOT NULL,
    created_micros INTEGER NOT NULL,
    rollback_of    INTEGER NOT NULL DEFAULT 0,
    UNIQUE (namespace, version)
);
CREATE TRIGGER config_version_in_order BEFORE INSERT ON config_version
WHEN NEW.version <> COALESCE(
    (SELECT MAX(version) FROM config_version WHERE namespace = NEW.namespace), 0) + 1
BEGIN
    SELECT RAISE(ABORT, 'config versions are appended at the next version only');
END;
CREATE TRIGGER config_version_append_only BEFORE UPDATE ON config_version
BEGIN
    SELECT RAISE(ABORT, 'config versions are never rewritten');
END;
CREATE TRIGGER config_version_kept BEFORE DELETE ON config_version
BEGIN
    SELECT RAISE(ABORT, 'config versions are never deleted');
END;
CREATE TRIGGER config_namespace_current_exists BEFORE UPDATE OF current_version ON config_namespace
WHEN NEW.current_version <> 0 AND NOT EXISTS (
    SELECT 1 FROM config_version WHERE namespace = NEW.namespace AND version = NEW.current_version)
BEGIN
    SELECT RAISE(ABORT, 'a namespace''s current version must be a stored version');
END;
CREATE TABLE config_client_status (
    namespace       TEXT NOT NULL,
    client          TEXT NOT NULL,
    version         INTEGER NOT NULL,
    accepted        INTEGER NOT NULL,
    error           TEXT NOT NULL,
    running_version INTEGER NOT NULL,
    reported_micros INTEGER NOT NULL,
    PRIMARY KEY (namespace, client)
);
CREATE INDEX config_client_status_reported ON config_client_status (reported_micros);
"""

MIGRATIONS: tuple[str, ...] = (CONFIG_MIGRATION,)
"""The config half's migrations. The experiments half's follow them (bootstrap), and a database
counts the migrations it applied by position: a later config migration must therefore go after
the experiments' ones, never at the end of this tuple."""

_VERSION_COLUMNS = "namespace, version, document, author, reason, created_micros, rollback_of"


def _version(row: sqlite3.Row | None) -> ConfigVersion | None:
    if row is None:
        return None
    return ConfigVersion(
        namespace=str(row["namespace"]),
        version=int(row["version"]),
        document=str(row["document"]),
        author=str(row["author"]),
        reason=str(row["reason"]),
        created_at=timestamps.from_micros(int(row["created_micros"])),
        rollback_of=int(row["rollback_of"]),
    )


class SqliteConfigStore(ConfigStore):
    """ConfigStore over one open transaction (or snapshot) of ``conn``."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def current(self, namespace: str) -> ConfigVersion | None:
        """The newest version of the namespace, or None."""
        return _version(
            self._conn.execute(
                f"SELECT {_VERSION_COLUMNS} FROM config_version WHERE namespace = ?"
                " ORDER BY version DESC LIMIT 1",
                (namespace,),
            ).fetchone()
        )

    def version(self, namespace: str, version: int) -> ConfigVersion | None:
        """Version ``version`` of the namespace, or None."""
        return _version(
            self._conn.execute(
                f"SELECT {_VERSION_COLUMNS} FROM config_version"
                " WHERE namespace = ? AND version = ?",
                (namespace, version),
            ).fetchone()
        )

    def append(self, version: ConfigVersion) -> None:
        """Insert ``version`` (the trigger refuses any but the next) and make it current."""
        created = timestamps.to_micros(version.created_at or timestamps.now())
        self._conn.execute(
            "INSERT INTO config_namespace (namespace) VALUES (?) ON CONFLICT DO NOTHING",
            (version.namespace,),
        )
        self._conn.execute(
            f"INSERT INTO config_version ({_VERSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                version.namespace,
                version.version,
                version.document,
                version.author,
                version.reason,
                created,
                version.rollback_of,
            ),
        )
        self._conn.execute(
            "UPDATE config_namespace SET current_version = ?, updated_micros = ?"
            " WHERE namespace = ?",
            (version.version, created, version.namespace),
        )

    def history(self, namespace: str, before: int, limit: int) -> Sequence[ConfigVersion]:
        """Up to ``limit`` versions below ``before`` (0: all), newest first."""
        rows = self._conn.execute(
            f"SELECT {_VERSION_COLUMNS} FROM config_version WHERE namespace = ? AND version < ?"
            " ORDER BY version DESC LIMIT ?",
            (namespace, before if before > 0 else 1 << 62, limit),
        )
        return [v for v in map(_version, rows) if v is not None]

    def after(self, namespace: str, version: int, limit: int) -> Sequence[ConfigVersion]:
        """Up to ``limit`` versions above ``version``, oldest first."""
        rows = self._conn.execute(
            f"SELECT {_VERSION_COLUMNS} FROM config_version WHERE namespace = ? AND version > ?"
            " ORDER BY version LIMIT ?",
            (namespace, version, limit),
        )
        return [v for v in map(_version, rows) if v is not None]

    def schema(self, namespace: str) -> NamespaceSchema | None:
        """The namespace's registered schema, or None."""
        row = self._conn.execute(
            "SELECT schema, schema_author, schema_updated_micros FROM config_namespace"
            " WHERE namespace = ? AND schema IS NOT NULL",
            (namespace,),
        ).fetchone()
        if row is None:
            return None
        return NamespaceSchema(
            namespace,
            str(row["schema"]),
            str(row["schema_author"]),
            timestamps.from_micros(int(row["schema_updated_micros"])),
        )

    def set_schema(self, schema: NamespaceSchema) -> None:
        """Register or replace the namespace's schema."""
        self._conn.execute(
            "INSERT INTO config_namespace (namespace, schema, schema_author, schema_updated_micros)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (namespace) DO UPDATE SET schema = excluded.schema,"
            " schema_author = excluded.schema_author,"
            " schema_updated_micros = excluded.schema_updated_micros",
            (
                schema.namespace,
                schema.schema,
                schema.author,
                timestamps.to_micros(schema.updated_at),
            ),
        )

    def namespaces(self) -> Sequence[NamespaceSummary]:
        """Every namespace row, by name."""
        rows = self._conn.execute(
            "SELECT namespace, current_version, updated_micros, schema IS NOT NULL AS has_schema"
            " FROM config_namespace ORDER BY namespace"
        )
        return [
            NamespaceSummary(
                str(row["namespace"]),
                int(row["current_version"]),
                bool(row["has_schema"]),
                timestamps.from_micros(int(row["updated_micros"]))
                if row["current_version"]
                else None,
            )
            for row in rows
        ]

    def latest(self) -> dict[str, int]:
        """Every namespace's current version."""
        rows = self._conn.execute("SELECT namespace, current_version FROM config_namespace")
        return {str(row[0]): int(row[1]) for row in rows}

    def report(self, report: ClientReport) -> None:
        """Insert or replace the client's report on the namespace."""
        self._conn.execute(
            "INSERT INTO config_client_status (namespace, client, version, accepted, error,"
            " running_version, reported_micros) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (namespace, client) DO UPDATE SET version = excluded.version,"
            " accepted = excluded.accepted, error = excluded.error,"
            " running_version = excluded.running_version,"
            " reported_micros = excluded.reported_micros",
            (
                report.namespace,
                report.client,
                report.version,
                int(report.accepted),
                report.error,
                report.running_version,
                timestamps.to_micros(report.reported_at),
            ),
        )

    def reports(self, namespace: str) -> Sequence[ClientReport]:
        """The reports on the namespace, by client."""
        rows = self._conn.execute(
            "SELECT namespace, client, version, accepted, error, running_version, reported_micros"
            " FROM config_client_status WHERE namespace = ? ORDER BY client",
            (namespace,),
        )
        return [
            ClientReport(
                str(row["namespace"]),
                str(row["client"]),
                int(row["version"]),
                bool(row["accepted"]),
                str(row["error"]),
                int(row["running_version"]),
                timestamps.from_micros(int(row["reported_micros"])),
            )
            for row in rows
        ]

    def prune_reports(self, before: datetime.datetime) -> int:
        """Delete reports made before ``before``."""
        return int(
            self._conn.execute(
                "DELETE FROM config_client_status WHERE reported_micros < ?",
                (timestamps.to_micros(before),),
            ).rowcount
        )


def transactions(db: Database) -> StoreTransaction:
    """Write transactions on ``db`` (durable when they return), each yielding the store."""

    @contextlib.contextmanager
    def transaction() -> Iterator[ConfigStore]:
        with db.transaction() as conn:
            yield SqliteConfigStore(conn)

    return transaction


def snapshots(db: Database) -> StoreTransaction:
    """Read snapshots of ``db``, each yielding the store over it (reads only)."""

    @contextlib.contextmanager
    def snapshot() -> Iterator[ConfigStore]:
        with db.snapshot() as conn:
            yield SqliteConfigStore(conn)

    return snapshot
