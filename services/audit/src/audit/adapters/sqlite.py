"""The audit trail in SQLite: entries, checkpoints and the retention anchor, beside the consumer's
inbox in one database file (so an entry and its inbox mark commit together).

Tables (``mesh audit verify`` reads them directly, so they are a contract of their own):

- ``audit_entry``: ``seq`` (1, 2, 3... no gaps), ``audit_id`` (UNIQUE), ``canonical`` (the bytes
  hashed), ``prev_hash`` and ``entry_hash`` (32 bytes each), when it was recorded, and columns
  copied from the record for searching (occurred_at, service, action, outcome, actor subject,
  on_behalf_of, resource type and id), each indexed with seq for newest-first pages. The columns
  are NOT covered by the hash; the verifier checks them against ``canonical``.
- ``audit_checkpoint``: ``seq``, ``entry_hash``, ``signed_at``, ``key_id``, the signed
  ``statement`` (canonical JSON) and its Ed25519 ``signature``.
- ``audit_anchor``: one row once retention has pruned: the seq and entry_hash of the checkpoint
  pruned through (that checkpoint row is kept).

Triggers make the tables append-only as far as SQLite can: no UPDATE of an entry or checkpoint,
entries only appended at the next seq, deletions only at or below the anchor (retention), and
the anchor only moving forward. They stop mistakes, not an attacker with the file (who can drop
them): that is what the hash chain and the signed checkpoints are for.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from audit.app.ports import AuditStore, EntryFilter, StoreTransaction
from audit.domain.chain import EMPTY, ChainEntry, Checkpoint, Head
from meshkit import timestamps
from meshkit.db import Database
from meshkit.events import INBOX_MIGRATION

TRAIL_MIGRATION = """
CREATE TABLE audit_entry (
    seq                INTEGER PRIMARY KEY,
    audit_id           TEXT NOT NULL UNIQUE,
    canonical          BLOB NOT NULL,
    prev_hash          BLOB NOT NULL,
    entry_hash         BLOB NOT NULL,
    recorded_at_micros INTEGER NOT NULL,
    occurred_at_micros INTEGER NOT NULL,
    service            TEXT NOT NULL,
    action             TEXT NOT NULL,
    outcome            TEXT NOT NULL,
    actor_subject      TEXT NOT NULL,
    on_behalf_of       TEXT NOT NULL,
    resource_type      TEXT NOT NULL,
    resource_id        TEXT NOT NULL
);
CREATE INDEX audit_entry_actor ON audit_entry (actor_subject, seq);
CREATE INDEX audit_entry_on_behalf_of ON audit_entry (on_behalf_of, seq);
CREATE INDEX audit_entry_action ON audit_entry (action, seq);
CREATE INDEX audit_entry_resource ON audit_entry (resource_type, resource_id, seq);
CREATE INDEX audit_entry_occurred ON audit_entry (occurred_at_micros, seq);
CREATE TABLE audit_checkpoint (
    seq              INTEGER PRIMARY KEY,
    entry_hash       BLOB NOT NULL,
    signed_at_micros INTEGER NOT NULL,
    key_id           TEXT NOT NULL,
    statement        BLOB NOT NULL,
    signature        BLOB NOT NULL
);
CREATE TABLE audit_anchor (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    seq        INTEGER NOT NULL,
    entry_hash BLOB NOT NULL
);
CREATE TRIGGER audit_entry_append_only BEFORE UPDATE ON audit_entry
BEGIN
    SELECT RAISE(ABORT, 'audit entries are append-only');
END;
CREATE TRIGGER audit_entry_in_order BEFORE INSERT ON audit_entry
WHEN NEW.seq <> COALESCE(
    (SELECT MAX(seq) FROM audit_entry), (SELECT seq FROM audit_anchor), 0) + 1
BEGIN
    SELECT RAISE(ABORT, 'audit entries are appended at the next seq only');
END;
CREATE TRIGGER audit_entry_pruned_only BEFORE DELETE ON audit_entry
WHEN OLD.seq > COALESCE((SELECT seq FROM audit_anchor), 0)
BEGIN
    SELECT RAISE(ABORT, 'audit entries are deleted by retention only, up to its anchor');
END;
CREATE TRIGGER audit_checkpoint_append_only BEFORE UPDATE ON audit_checkpoint
BEGIN
    SELECT RAISE(ABORT, 'audit checkpoints are append-only');
END;
CREATE TRIGGER audit_checkpoint_pruned_only BEFORE DELETE ON audit_checkpoint
WHEN OLD.seq >= COALESCE((SELECT seq FROM audit_anchor), 0)
BEGIN
    SELECT RAISE(ABORT, 'audit checkpoints are deleted by retention only, below its anchor');
END;
CREATE TRIGGER audit_anchor_forward BEFORE UPDATE ON audit_anchor
WHEN NEW.seq < OLD.seq
BEGIN
    SELECT RAISE(ABORT, 'the retention anchor only moves forward');
END;
"""

MIGRATIONS = (TRAIL_MIGRATION, INBOX_MIGRATION)

_ENTRY_COLUMNS = "seq, audit_id, canonical, prev_hash, entry_hash, recorded_at_micros"
_CHECKPOINT_COLUMNS = "seq, entry_hash, signed_at_micros, key_id, statement, signature"


def _entry(row: sqlite3.Row) -> ChainEntry:
    canonical = bytes(row["canonical"])
    return ChainEntry(
        seq=int(row["seq"]),
        audit_id=str(row["audit_id"]),
        canonical=canonical,
        prev_hash=bytes(row["prev_hash"]),
        entry_hash=bytes(row["entry_hash"]),
        record=json.loads(canonical),
        recorded_at=timestamps.from_micros(int(row["recorded_at_micros"])),
    )


def _checkpoint(row: sqlite3.Row | None) -> Checkpoint | None:
    if row is None:
        return None
    return Checkpoint(
        seq=int(row["seq"]),
        entry_hash=bytes(row["entry_hash"]),
        signed_at=timestamps.from_micros(int(row["signed_at_micros"])),
        key_id=str(row["key_id"]),
        statement=bytes(row["statement"]),
        signature=bytes(row["signature"]),
    )


def _text(mapping: Any, key: str) -> str:
    value = mapping.get(key, "") if isinstance(mapping, Mapping) else ""
    return value if isinstance(value, str) else ""


def _micros(value: Any) -> int:
    if isinstance(value, datetime.datetime):
        return timestamps.to_micros(value)
    raise ValueError("an audit record needs occurred_at as a timestamp")


class SqliteAuditStore(AuditStore):
    """AuditStore over one open transaction (or snapshot) of ``conn``."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def head(self) -> Head:
        """The last entry, else the anchor, else the empty chain."""
        row = self._conn.execute(
            "SELECT seq, entry_hash FROM audit_entry ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        if row is None:
            row = self._conn.execute("SELECT seq, entry_hash FROM audit_anchor").fetchone()
        if row is None:
            return EMPTY
        return Head(int(row[0]), bytes(row[1]))

    def contains(self, audit_id: str) -> bool:
        """True when an unpruned entry has this audit_id."""
        found = self._conn.execute(
            "SELECT 1 FROM audit_entry WHERE audit_id = ?", (audit_id,)
        ).fetchone()
        return found is not None

    def append(self, entry: ChainEntry) -> None:
        """Insert ``entry`` with its search columns (the triggers refuse a wrong seq)."""
        record = entry.record
        actor = record.get("actor", {})
        self._conn.execute(
            "INSERT INTO audit_entry (seq, audit_id, canonical, prev_hash, entry_hash,"
            " recorded_at_micros, occurred_at_micros, service, action, outcome, actor_subject,"
            " on_behalf_of, resource_type, resource_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                entry.seq,
                entry.audit_id,
                entry.canonical,
                entry.prev_hash,
                entry.entry_hash,
                timestamps.to_micros(entry.recorded_at),
                _micros(record.get("occurred_at")),
                _text(record, "service"),
                _text(record, "action"),
                _text(record, "outcome"),
                _text(actor, "subject"),
                _text(actor, "on_behalf_of"),
                _text(record, "resource_type"),
                _text(record, "resource_id"),
            ),
        )

    def entry(self, seq: int) -> ChainEntry | None:
        """The entry at ``seq``, or None."""
        row = self._conn.execute(
            f"SELECT {_ENTRY_COLUMNS} FROM audit_entry WHERE seq = ?", (seq,)
        ).fetchone()
        return None if row is None else _entry(row)

    def last_checkpoint(self) -> Checkpoint | None:
        """The checkpoint with the highest seq, or None."""
        return _checkpoint(
            self._conn.execute(
                f"SELECT {_CHECKPOINT_COLUMNS} FROM audit_checkpoint ORDER BY seq DESC LIMIT 1"
            ).fetchone()
        )

    def add_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Insert ``checkpoint``."""
        self._conn.execute(
            f"INSERT INTO audit_checkpoint ({_CHECKPOINT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
            (
                checkpoint.seq,
                checkpoint.entry_hash,
                timestamps.to_micros(checkpoint.signed_at),
                checkpoint.key_id,
                checkpoint.statement,
                checkpoint.signature,
            ),
        )

    def anchor(self) -> Checkpoint | None:
        """The checkpoint retention pruned through, or None."""
        return _checkpoint(
            self._conn.execute(
                f"SELECT {', '.join('c.' + c.strip() for c in _CHECKPOINT_COLUMNS.split(','))}"
                " FROM audit_anchor a JOIN audit_checkpoint c ON c.seq = a.seq"
            ).fetchone()
        )

    def first_seq_since(self, cutoff: datetime.datetime) -> int | None:
        """The lowest seq whose action occurred at or after ``cutoff``."""
        # By seq from the start: it reads about as many rows as it will let retention prune,
        # where MIN(seq) over the occurred_at range would read every recent entry.
        row = self._conn.execute(
            "SELECT seq FROM audit_entry WHERE occurred_at_micros >= ? ORDER BY seq LIMIT 1",
            (timestamps.to_micros(cutoff),),
        ).fetchone()
        return None if row is None else int(row[0])

    def checkpoint_before(self, seq: int) -> Checkpoint | None:
        """The checkpoint with the highest seq below ``seq``."""
        return _checkpoint(
            self._conn.execute(
                f"SELECT {_CHECKPOINT_COLUMNS} FROM audit_checkpoint WHERE seq < ?"
                " ORDER BY seq DESC LIMIT 1",
                (seq,),
            ).fetchone()
        )

    def prune_through(self, checkpoint: Checkpoint) -> int:
        """Anchor at ``checkpoint``, then delete what it covers (the triggers allow no more)."""
        self._conn.execute(
            "INSERT INTO audit_anchor (id, seq, entry_hash) VALUES (1, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, entry_hash = excluded.entry_hash",
            (checkpoint.seq, checkpoint.entry_hash),
        )
        pruned = self._conn.execute(
            "DELETE FROM audit_entry WHERE seq <= ?", (checkpoint.seq,)
        ).rowcount
        self._conn.execute("DELETE FROM audit_checkpoint WHERE seq < ?", (checkpoint.seq,))
        return int(pruned)

    def search(self, query: EntryFilter) -> Sequence[ChainEntry]:
        """The matching entries by descending seq (each filter an indexed column)."""
        where: list[str] = []
        args: list[Any] = []
        if query.actor:
            where.append("(actor_subject = ? OR on_behalf_of = ?)")
            args += [query.actor, query.actor]
        if query.action.endswith("*"):
            prefix = query.action[:-1]
            if prefix:
                # A range, so the action index serves it (LIKE would need escaping and ASCII).
                where.append("action >= ? AND action < ?")
                args += [prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)]
        elif query.action:
            where.append("action = ?")
            args.append(query.action)
        if query.resource_type:
            where.append("resource_type = ?")
            args.append(query.resource_type)
        if query.resource_id:
            where.append("resource_id = ?")
            args.append(query.resource_id)
        if query.since is not None:
            where.append("occurred_at_micros >= ?")
            args.append(timestamps.to_micros(query.since))
        if query.until is not None:
            where.append("occurred_at_micros < ?")
            args.append(timestamps.to_micros(query.until))
        if query.before_seq is not None:
            where.append("seq < ?")
            args.append(query.before_seq)
        sql = f"SELECT {_ENTRY_COLUMNS} FROM audit_entry"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC LIMIT ?"
        args.append(query.limit)
        return [_entry(row) for row in self._conn.execute(sql, args)]


def transactions(db: Database) -> StoreTransaction:
    """Write transactions on ``db``, each yielding the store over it."""

    @contextlib.contextmanager
    def transaction() -> Iterator[AuditStore]:
        with db.transaction() as conn:
            yield SqliteAuditStore(conn)

    return transaction


def snapshots(db: Database) -> StoreTransaction:
    """Read snapshots of ``db``, each yielding the store over it (searches only)."""

    @contextlib.contextmanager
    def snapshot() -> Iterator[AuditStore]:
        with db.snapshot() as conn:
            yield SqliteAuditStore(conn)

    return snapshot
