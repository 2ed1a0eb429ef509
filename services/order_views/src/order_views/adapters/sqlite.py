"""SQLite storage of one copy of the read model: the order summary, the timeline, the FTS5 search
index, and the consumer's inbox, in one database file.

Times are stored as integer microseconds since the epoch (``meshkit.timestamps.to_micros``), so
they round-trip exactly and keyset cursors compare exactly. The first schema stored milliseconds
(``*_ms``); migration 4 renames those columns and scales them, so existing copies keep serving.
"""

from __future__ import annotations

import json
import math
import sqlite3
from typing import Any

from meshkit.address import FIELDS, Address
from meshkit.db import Database
from meshkit.events import INBOX_MIGRATION
from meshkit.money import Money
from meshkit.timestamps import from_micros, to_micros
from order_views.app.ports import BadCursor, Cursor, Positions
from order_views.domain.model import (
    Line,
    OrderRecord,
    OrderStatus,
    OrderView,
    TimelineEntry,
)

MIGRATIONS = (
    """
    CREATE TABLE order_summary (
        seq                 INTEGER PRIMARY KEY,   -- rowid; also the search index's rowid
        order_id            TEXT NOT NULL UNIQUE,
        placed              INTEGER NOT NULL,      -- 0 until OrderPlaced is projected
        customer_id         TEXT NOT NULL,
        status              TEXT NOT NULL CHECK (status IN ('PENDING', 'CONFIRMED', 'CANCELLED')),
        currency_code       TEXT,
        total_units         INTEGER,
        total_nanos         INTEGER,
        line_count          INTEGER NOT NULL,
        lines               TEXT NOT NULL,         -- JSON [[sku, quantity, [cur, units, nanos]]]
        shipping_address    TEXT,                  -- JSON [name, line1, line2, city, zip, country]
        created_at_ms       INTEGER NOT NULL,
        updated_at_ms       INTEGER NOT NULL,
        cancellation_reason TEXT NOT NULL,
        version             INTEGER NOT NULL,      -- orders stream version applied
        payment_state       TEXT NOT NULL,
        shipment_state      TEXT NOT NULL
    );
    -- ListOrders: newest first, per customer or for everyone, optionally by status; keyset pages.
    CREATE INDEX summary_by_customer
        ON order_summary (customer_id, created_at_ms DESC, order_id DESC) WHERE placed = 1;
    CREATE INDEX summary_by_customer_status
        ON order_summary (customer_id, status, created_at_ms DESC, order_id DESC) WHERE placed = 1;
    CREATE INDEX summary_by_time
        ON order_summary (created_at_ms DESC, order_id DESC) WHERE placed = 1;
    CREATE INDEX summary_by_status
        ON order_summary (status, created_at_ms DESC, order_id DESC) WHERE placed = 1;
    CREATE TABLE order_timeline (
        order_id       TEXT NOT NULL,
        event_id       TEXT NOT NULL,
        occurred_at_ms INTEGER NOT NULL,
        sequence       INTEGER NOT NULL,
        event_type     TEXT NOT NULL,
        description    TEXT NOT NULL,
        PRIMARY KEY (order_id, event_id)
    ) WITHOUT ROWID;
    CREATE VIRTUAL TABLE order_search USING fts5 (
        order_id, customer_id, skus, address, tokenize = 'unicode61 remove_diacritics 2'
    );
    """,
    INBOX_MIGRATION,
    # Positions per partition (GetProjectionStatus, rebuild) without scanning the whole inbox.
    'CREATE INDEX inbox_positions ON meshkit_inbox (consumer_group, topic, partition, "offset");',
    # Times in exact microseconds (meshkit.timestamps), not milliseconds. RENAME COLUMN also
    # renames them in the indexes; ms * 1000 is exact.
    """
    ALTER TABLE order_summary RENAME COLUMN created_at_ms TO created_at_us;
    ALTER TABLE order_summary RENAME COLUMN updated_at_ms TO updated_at_us;
    UPDATE order_summary
        SET created_at_us = created_at_us * 1000, updated_at_us = updated_at_us * 1000;
    ALTER TABLE order_timeline RENAME COLUMN occurred_at_ms TO occurred_at_us;
    UPDATE order_timeline SET occurred_at_us = occurred_at_us * 1000;
    """,
)


INT64 = (-(2**63), 2**63 - 1)


def _int64(value: Any) -> int:
    # bool is an int to Python, never to a cursor; SQLite integers are 64-bit.
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadCursor("not an integer")
    if not INT64[0] <= value <= INT64[1]:
        raise BadCursor("not a 64-bit integer")
    return value


def _list_cursor(after: Cursor) -> tuple[int, str]:
    """``[created_at_us, order_id]``, checked: a page token is the client's to forge."""
    if len(after) != 2 or not isinstance(after[1], str):
        raise BadCursor("a list cursor is [created_at_us, order_id]")
    return _int64(after[0]), after[1]


def _search_cursor(after: Cursor) -> tuple[float, int]:
    """``[rank, seq]``, checked: a finite number and a 64-bit integer."""
    if len(after) != 2:
        raise BadCursor("a search cursor is [rank, seq]")
    rank = after[0]
    if isinstance(rank, bool) or not isinstance(rank, int | float):
        raise BadCursor("a search cursor's rank is a number")
    try:
        value = float(rank)
    except OverflowError:
        raise BadCursor("a search cursor's rank is a finite number") from None
    if not math.isfinite(value):
        raise BadCursor("a search cursor's rank is a finite number")
    return value, _int64(after[1])


def open_copy(path: str) -> Database:
    """The read-model database at ``path``, migrated to the current schema."""
    return Database(path, MIGRATIONS)


def _address_json(address: Address | None) -> str | None:
    # [name, line1, line2, city, postal_code, country_code]: meshkit.address.FIELDS' order.
    return json.dumps(list(address.to_record().values())) if address else None


def _address_from_json(text: str | None) -> Address | None:
    return Address.from_record(dict(zip(FIELDS, json.loads(text), strict=True))) if text else None


def _lines_json(lines: tuple[Line, ...]) -> str:
    return json.dumps([[line.sku, line.quantity, _money_json(line.unit_price)] for line in lines])


def _money_json(money: Money) -> list[object]:
    return [money.currency_code, money.units, money.nanos]


def _record(row: sqlite3.Row) -> OrderRecord:
    total = (
        Money.of(row["currency_code"], row["total_units"], row["total_nanos"])
        if row["currency_code"] is not None
        else None
    )
    return OrderRecord(
        order_id=row["order_id"],
        placed=bool(row["placed"]),
        customer_id=row["customer_id"],
        status=OrderStatus(row["status"]),
        total=total,
        lines=tuple(
            Line(sku, quantity, Money.of(*price))
            for sku, quantity, price in json.loads(row["lines"])
        ),
        shipping_address=_address_from_json(row["shipping_address"]),
        created_at=from_micros(row["created_at_us"]),
        updated_at=from_micros(row["updated_at_us"]),
        cancellation_reason=row["cancellation_reason"],
        version=row["version"],
        payment_state=row["payment_state"],
        shipment_state=row["shipment_state"],
    )


def _address_text(address: Address | None) -> str:
    if address is None:
        return ""
    return " ".join(
        part
        for part in (
            address.name,
            address.line1,
            address.line2,
            address.postal_code,
            address.city,
            address.country_code,
        )
        if part
    )


class SqliteViewStore:
    """ViewStore over one open transaction (the consumer's)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def get(self, order_id: str) -> OrderRecord | None:
        """The order's record, or None."""
        row = self._conn.execute(
            "SELECT * FROM order_summary WHERE order_id = ?", (order_id,)
        ).fetchone()
        return _record(row) if row else None

    def save(self, record: OrderRecord, *, reindex: bool) -> None:
        """Upsert the record; with ``reindex`` replace its search entry."""
        total = record.total
        row = self._conn.execute(
            "INSERT INTO order_summary (order_id, placed, customer_id, status, currency_code,"
            " total_units, total_nanos, line_count, lines, shipping_address, created_at_us,"
            " updated_at_us, cancellation_reason, version, payment_state, shipment_state)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (order_id) DO UPDATE SET placed = excluded.placed,"
            " customer_id = excluded.customer_id, status = excluded.status,"
            " currency_code = excluded.currency_code, total_units = excluded.total_units,"
            " total_nanos = excluded.total_nanos, line_count = excluded.line_count,"
            " lines = excluded.lines, shipping_address = excluded.shipping_address,"
            " created_at_us = excluded.created_at_us, updated_at_us = excluded.updated_at_us,"
            " cancellation_reason = excluded.cancellation_reason, version = excluded.version,"
            " payment_state = excluded.payment_state, shipment_state = excluded.shipment_state"
            " RETURNING seq",
            (
                record.order_id,
                int(record.placed),
                record.customer_id,
                record.status.value,
                total.currency_code if total else None,
                total.units if total else None,
                total.nanos if total else None,
                len(record.lines),
                _lines_json(record.lines),
                _address_json(record.shipping_address),
                to_micros(record.created_at),
                to_micros(record.updated_at),
                record.cancellation_reason,
                record.version,
                record.payment_state,
                record.shipment_state,
            ),
        ).fetchone()
        if reindex:
            seq = row[0]
            self._conn.execute("DELETE FROM order_search WHERE rowid = ?", (seq,))
            self._conn.execute(
                "INSERT INTO order_search (rowid, order_id, customer_id, skus, address)"
                " VALUES (?, ?, ?, ?, ?)",
                (
                    seq,
                    record.order_id,
                    record.customer_id,
                    " ".join(record.skus),
                    _address_text(record.shipping_address),
                ),
            )

    def add_timeline(self, entry: TimelineEntry) -> None:
        """Add the entry unless the order has one with its event id already."""
        self._conn.execute(
            "INSERT OR IGNORE INTO order_timeline (order_id, event_id, occurred_at_us, sequence,"
            " event_type, description) VALUES (?, ?, ?, ?, ?, ?)",
            (
                entry.order_id,
                entry.event_id,
                to_micros(entry.occurred_at),
                entry.sequence,
                entry.event_type,
                entry.description,
            ),
        )


class SqliteReadModel:
    """ReadModel over one copy's database: each call reads one snapshot. Thread-safe."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def list_orders(
        self, customer_id: str, status: OrderStatus | None, limit: int, after: Cursor | None
    ) -> list[tuple[OrderRecord, Cursor]]:
        """Placed orders newest first (created_at, then order id, descending), after ``after``
        (``[created_at_us, order_id]``; BadCursor when it is not one)."""
        where = ["placed = 1"]
        args: list[Any] = []
        if customer_id:
            where.append("customer_id = ?")
            args.append(customer_id)
        if status is not None:
            where.append("status = ?")
            args.append(status.value)
        if after is not None:
            where.append("(created_at_us, order_id) < (?, ?)")
            args += list(_list_cursor(after))
        sql = (
            f"SELECT * FROM order_summary WHERE {' AND '.join(where)}"
            " ORDER BY created_at_us DESC, order_id DESC LIMIT ?"
        )
        with self._db.snapshot() as conn:
            rows = conn.execute(sql, [*args, limit]).fetchall()
        return [(_record(row), [row["created_at_us"], row["order_id"]]) for row in rows]

    def search(
        self, match: str, limit: int, after: Cursor | None
    ) -> list[tuple[OrderRecord, Cursor]]:
        """Placed orders matching ``match`` (an FTS5 expression), best bm25 rank first, then by
        row; after ``after`` (``[rank, seq]``; BadCursor when it is not one)."""
        args: list[Any] = [match]
        keyset = ""
        if after is not None:
            rank, seq = _search_cursor(after)
            keyset = " AND (s.rank > ? OR (s.rank = ? AND s.rowid > ?))"
            args += [rank, rank, seq]
        sql = (
            "SELECT v.*, s.rank AS score FROM order_search AS s"
            " JOIN order_summary AS v ON v.seq = s.rowid"
            f" WHERE order_search MATCH ? AND v.placed = 1{keyset}"
            " ORDER BY s.rank, s.rowid LIMIT ?"
        )
        with self._db.snapshot() as conn:
            rows = conn.execute(sql, [*args, limit]).fetchall()
        return [(_record(row), [row["score"], row["seq"]]) for row in rows]

    def view(self, order_id: str) -> OrderView | None:
        """The placed order and its timeline (by time, then stream sequence, then event id)."""
        with self._db.snapshot() as conn:
            row = conn.execute(
                "SELECT * FROM order_summary WHERE order_id = ? AND placed = 1", (order_id,)
            ).fetchone()
            if row is None:
                return None
            entries = conn.execute(
                "SELECT * FROM order_timeline WHERE order_id = ?"
                " ORDER BY occurred_at_us, sequence, event_id",
                (order_id,),
            ).fetchall()
        return OrderView(
            _record(row),
            tuple(
                TimelineEntry(
                    e["order_id"],
                    e["event_id"],
                    from_micros(e["occurred_at_us"]),
                    e["event_type"],
                    e["description"],
                    e["sequence"],
                )
                for e in entries
            ),
        )

    def version(self, order_id: str) -> int:
        """The order's projected orders-stream version (0 when unseen)."""
        with self._db.snapshot() as conn:
            row = conn.execute(
                "SELECT version FROM order_summary WHERE order_id = ?", (order_id,)
            ).fetchone()
        return int(row[0]) if row else 0

    def positions(self, group: str) -> Positions:
        """Next offset per partition, from ``group``'s inbox marks (same transactions as the
        projection, so exactly what this copy holds)."""
        with self._db.snapshot() as conn:
            rows = conn.execute(
                'SELECT topic, partition, MAX("offset") + 1 FROM meshkit_inbox'
                " WHERE consumer_group = ? GROUP BY topic, partition",
                (group,),
            ).fetchall()
        return {(topic, partition): offset for topic, partition, offset in rows}

    def applied(self, group: str) -> int:
        """Events ``group`` has settled into this copy (handled or skipped)."""
        with self._db.snapshot() as conn:
            row = conn.execute(
                "SELECT COUNT(*) FROM meshkit_inbox WHERE consumer_group = ?", (group,)
            ).fetchone()
        return int(row[0])
