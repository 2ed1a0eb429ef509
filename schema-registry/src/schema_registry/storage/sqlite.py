"""SQLite storage: the source of truth shared by every worker process of a server.

WAL mode lets readers run beside the one writer; `BEGIN IMMEDIATE` serialises writers across
processes, so id allocation and the compatibility check see the state they write against.
Workers cache rendered responses; a commit bumps an 8-byte counter in a memory-mapped side file
(`<db>-changes`) right after COMMIT, and every worker compares it before answering from cache:
that is how a read on any worker sees a write made on another at once, at the cost of one
memory load per request (PRAGMA data_version would cost a SQLite call).

The outbox is meshkit's table, `meshkit_outbox`, column for column (meshkit.events'
OUTBOX_MIGRATION, with its `error` column), so meshkit's OutboxRelay publishes the registry's
audit records exactly as it publishes a service's events (`schema_registry.audit`).
"""

from __future__ import annotations

import json
import mmap
import os
import sqlite3
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from schema_registry.errors import ErrorCode, RegistryError
from schema_registry.storage.base import (
    OutboxRow,
    Reference,
    Storage,
    StoredSchema,
    SubjectVersion,
    Transaction,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schemas (
    id          INTEGER PRIMARY KEY,
    fingerprint TEXT NOT NULL UNIQUE,
    schema_type TEXT NOT NULL,
    schema      TEXT NOT NULL,
    refs        TEXT NOT NULL,   -- JSON list of {name, subject, version}
    metadata    TEXT,            -- JSON, verbatim from the request
    rule_set    TEXT             -- JSON, verbatim from the request
);
CREATE TABLE IF NOT EXISTS schema_refs (
    schema_id INTEGER NOT NULL REFERENCES schemas(id),
    subject   TEXT NOT NULL,
    version   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS schema_refs_target ON schema_refs(subject, version);
CREATE TABLE IF NOT EXISTS versions (
    subject   TEXT NOT NULL,
    version   INTEGER NOT NULL,
    schema_id INTEGER NOT NULL REFERENCES schemas(id),
    deleted   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (subject, version)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS versions_schema_id ON versions(schema_id);
CREATE TABLE IF NOT EXISTS configs (subject TEXT PRIMARY KEY, body TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS modes (subject TEXT PRIMARY KEY, mode TEXT NOT NULL) WITHOUT ROWID;
-- Facts the registry keeps about its stored data, e.g. which rule computed the fingerprints.
CREATE TABLE IF NOT EXISTS registry_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meshkit_outbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    topic        TEXT NOT NULL,
    key          TEXT NOT NULL,
    value        BLOB NOT NULL,     -- Confluent wire format: 0x00, schema id, Avro body
    headers      TEXT NOT NULL,     -- JSON [[name, value], ...], CloudEvents + traceparent
    created_at   REAL NOT NULL,     -- unix seconds
    published_at REAL,              -- NULL until the broker acknowledged it
    error        TEXT               -- why Kafka can never take it (the row is parked); else NULL
);
CREATE INDEX IF NOT EXISTS meshkit_outbox_pending ON meshkit_outbox (id)
    WHERE published_at IS NULL;
"""

_COUNTER = struct.Struct("<Q")


def _dump(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _now() -> float:
    return time.time()


def _load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _version(row: tuple[Any, ...]) -> SubjectVersion:
    return SubjectVersion(row[0], row[1], row[2], bool(row[3]))


class _SqliteTransaction(Transaction):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._c = conn

    def _one(self, sql: str, *args: Any) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self._c.execute(sql, args).fetchone()
        return row

    def schema(self, schema_id: int) -> StoredSchema | None:
        row = self._one(
            "SELECT id, fingerprint, schema_type, schema, refs, metadata, rule_set"
            " FROM schemas WHERE id = ?",
            schema_id,
        )
        if row is None:
            return None
        refs = tuple(Reference(r["name"], r["subject"], r["version"]) for r in json.loads(row[4]))
        return StoredSchema(row[0], row[1], row[2], row[3], refs, _load(row[5]), _load(row[6]))

    def schema_id_by_fingerprint(self, fingerprint: str) -> int | None:
        row = self._one("SELECT id FROM schemas WHERE fingerprint = ?", fingerprint)
        return None if row is None else int(row[0])

    def max_schema_id(self) -> int:
        row = self._one("SELECT max(id) FROM schemas")
        return int(row[0]) if row and row[0] is not None else 0

    def add_schema(self, schema: StoredSchema) -> None:
        self._c.execute(
            "INSERT INTO schemas (id, fingerprint, schema_type, schema, refs, metadata, rule_set)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                schema.id,
                schema.fingerprint,
                schema.schema_type,
                schema.text,
                _dump([r.to_json() for r in schema.references]),
                _dump(schema.metadata),
                _dump(schema.rule_set),
            ),
        )
        self._c.executemany(
            "INSERT INTO schema_refs (schema_id, subject, version) VALUES (?, ?, ?)",
            [(schema.id, r.subject, r.version) for r in schema.references],
        )

    def all_schemas(self) -> Iterator[StoredSchema]:
        rows = self._c.execute("SELECT id FROM schemas ORDER BY id").fetchall()
        for (schema_id,) in rows:
            found = self.schema(schema_id)
            if found is not None:
                yield found

    def set_fingerprint(self, schema_id: int, fingerprint: str) -> None:
        self._c.execute("UPDATE schemas SET fingerprint = ? WHERE id = ?", (fingerprint, schema_id))

    def meta(self, key: str) -> str | None:
        row = self._one("SELECT value FROM registry_meta WHERE key = ?", key)
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._c.execute(
            "INSERT OR REPLACE INTO registry_meta (key, value) VALUES (?, ?)", (key, value)
        )

    _VERSION_COLUMNS = "SELECT subject, version, schema_id, deleted FROM versions"

    def versions(self, subject: str, *, include_deleted: bool) -> list[SubjectVersion]:
        sql = self._VERSION_COLUMNS + " WHERE subject = ?"
        if not include_deleted:
            sql += " AND deleted = 0"
        return [_version(r) for r in self._c.execute(sql + " ORDER BY version", (subject,))]

    def version(self, subject: str, version: int) -> SubjectVersion | None:
        row = self._one(
            self._VERSION_COLUMNS + " WHERE subject = ? AND version = ?", subject, version
        )
        return None if row is None else _version(row)

    def max_version(self, subject: str) -> int:
        row = self._one("SELECT max(version) FROM versions WHERE subject = ?", subject)
        return int(row[0]) if row and row[0] is not None else 0

    def add_version(self, version: SubjectVersion) -> None:
        self._c.execute(
            "INSERT INTO versions (subject, version, schema_id, deleted) VALUES (?, ?, ?, ?)",
            (version.subject, version.version, version.schema_id, int(version.deleted)),
        )

    def set_deleted(self, subject: str, version: int) -> None:
        self._c.execute(
            "UPDATE versions SET deleted = 1 WHERE subject = ? AND version = ?", (subject, version)
        )

    def remove_version(self, subject: str, version: int) -> None:
        self._c.execute(
            "DELETE FROM versions WHERE subject = ? AND version = ?", (subject, version)
        )

    def subjects(self, *, include_deleted: bool) -> list[str]:
        sql = "SELECT DISTINCT subject FROM versions"
        if not include_deleted:
            sql += " WHERE deleted = 0"
        return [r[0] for r in self._c.execute(sql + " ORDER BY subject")]

    def usages(self, schema_id: int) -> list[SubjectVersion]:
        sql = self._VERSION_COLUMNS + " WHERE schema_id = ? ORDER BY subject, version"
        return [_version(r) for r in self._c.execute(sql, (schema_id,))]

    def referrers(self, subject: str, version: int) -> list[SubjectVersion]:
        sql = (
            "SELECT v.subject, v.version, v.schema_id, v.deleted FROM schema_refs r"
            " JOIN versions v ON v.schema_id = r.schema_id"
            " WHERE r.subject = ? AND r.version = ? ORDER BY v.subject, v.version"
        )
        return [_version(r) for r in self._c.execute(sql, (subject, version))]

    def all_versions(self) -> Iterator[SubjectVersion]:
        sql = self._VERSION_COLUMNS + " ORDER BY subject, version"
        return iter([_version(r) for r in self._c.execute(sql)])

    def config(self, subject: str) -> dict[str, Any] | None:
        row = self._one("SELECT body FROM configs WHERE subject = ?", subject)
        return None if row is None else dict(json.loads(row[0]))

    def set_config(self, subject: str, config: dict[str, Any]) -> None:
        self._c.execute(
            "INSERT OR REPLACE INTO configs (subject, body) VALUES (?, ?)", (subject, _dump(config))
        )

    def delete_config(self, subject: str) -> None:
        self._c.execute("DELETE FROM configs WHERE subject = ?", (subject,))

    def mode(self, subject: str) -> str | None:
        row = self._one("SELECT mode FROM modes WHERE subject = ?", subject)
        return None if row is None else str(row[0])

    def set_mode(self, subject: str, mode: str) -> None:
        self._c.execute(
            "INSERT OR REPLACE INTO modes (subject, mode) VALUES (?, ?)", (subject, mode)
        )

    def delete_mode(self, subject: str) -> None:
        self._c.execute("DELETE FROM modes WHERE subject = ?", (subject,))

    def mode_subjects(self) -> list[str]:
        return [r[0] for r in self._c.execute("SELECT subject FROM modes WHERE subject != ''")]

    def add_outbox(self, row: OutboxRow) -> None:
        self._c.execute(
            "INSERT INTO meshkit_outbox (topic, key, value, headers, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (row.topic, row.key, row.value, json.dumps([list(h) for h in row.headers]), _now()),
        )


class SqliteStorage(Storage):
    """A SQLite file (created with its folder when missing) plus its `-changes` counter file."""

    shared_across_processes = True

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout_ms: int = 30_000) -> None:
        self.path = Path(path)
        self._busy_timeout_ms = busy_timeout_ms
        self._lock = threading.RLock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = self._connect()
        with self._lock:
            self._conn.executescript(_SCHEMA)
        self._counter_file, self._counter = self._map_counter()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
        conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode: a commit survives a crash of this process (the registry's failure
        # mode), may be lost on power loss; FULL would fsync every register.
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def _map_counter(self) -> tuple[int, mmap.mmap]:
        fd = os.open(f"{self.path}-changes", os.O_RDWR | os.O_CREAT, 0o644)
        if os.fstat(fd).st_size < _COUNTER.size:
            os.ftruncate(fd, _COUNTER.size)
        return fd, mmap.mmap(fd, _COUNTER.size)

    @contextmanager
    def read(self) -> Iterator[Transaction]:
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                yield _ReadOnly(self._conn)
            finally:
                self._conn.execute("ROLLBACK")

    @contextmanager
    def write(self) -> Iterator[Transaction]:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise RegistryError(ErrorCode.OPERATION_TIMEOUT, f"Store busy: {exc}") from exc
            before = self._conn.total_changes
            try:
                yield _SqliteTransaction(self._conn)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
            if self._conn.total_changes != before:
                self._bump()

    def _bump(self) -> None:
        # After COMMIT, never before: a reader that sees the new value must find the data.
        # Two writers racing here may both store n+1; harmless, because each bumps after its own
        # commit, so whoever observes either value reloads a state holding both commits.
        value = _COUNTER.unpack_from(self._counter, 0)[0]
        _COUNTER.pack_into(self._counter, 0, (value + 1) & 0xFFFF_FFFF_FFFF_FFFF)

    def change_counter(self) -> int:
        value: int = _COUNTER.unpack_from(self._counter, 0)[0]
        return value

    def append_outbox(self, row: OutboxRow) -> None:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise RegistryError(ErrorCode.OPERATION_TIMEOUT, f"Store busy: {exc}") from exc
            try:
                _SqliteTransaction(self._conn).add_outbox(row)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")  # no _bump(): nothing a reader sees has changed

    def pending_outbox(self) -> list[OutboxRow]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT topic, key, value, headers FROM meshkit_outbox"
                " WHERE published_at IS NULL ORDER BY id"
            ).fetchall()
        return [
            OutboxRow(r[0], r[1], bytes(r[2]), tuple((str(k), str(v)) for k, v in json.loads(r[3])))
            for r in rows
        ]

    def close(self) -> None:
        with self._lock:
            self._conn.close()
            self._counter.close()
            os.close(self._counter_file)

    def reopen(self) -> None:
        # A connection must not cross fork(): open fresh ones in the child.
        with self._lock:
            self._conn = self._connect()
            self._counter_file, self._counter = self._map_counter()


class _ReadOnly(_SqliteTransaction):
    """Reads of a snapshot; mutators refuse, as the memory store's do."""

    def add_schema(self, schema: StoredSchema) -> None:
        raise RuntimeError("write attempted in a read transaction")

    def add_version(self, version: SubjectVersion) -> None:
        raise RuntimeError("write attempted in a read transaction")

    def set_fingerprint(self, schema_id: int, fingerprint: str) -> None:
        raise RuntimeError("write attempted in a read transaction")

    def set_meta(self, key: str, value: str) -> None:
        raise RuntimeError("write attempted in a read transaction")

    def set_deleted(self, subject: str, version: int) -> None:
        raise RuntimeError("write attempted in a read transaction")

    def remove_version(self, subject: str, version: int) -> None:
        raise RuntimeError("write attempted in a read transaction")

    def set_config(self, subject: str, config: dict[str, Any]) -> None:
        raise RuntimeError("write attempted in a read transaction")

    def delete_config(self, subject: str) -> None:
        raise RuntimeError("write attempted in a read transaction")

    def set_mode(self, subject: str, mode: str) -> None:
        raise RuntimeError("write attempted in a read transaction")

    def delete_mode(self, subject: str) -> None:
        raise RuntimeError("write attempted in a read transaction")

    def add_outbox(self, row: OutboxRow) -> None:
        raise RuntimeError("write attempted in a read transaction")
