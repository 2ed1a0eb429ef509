"""SQLite storage of one copy of the read model: the order summary, the timeline, the FTS5 search
index, and the consumer's inbox, in one database file.

Times are stored as integer microseconds since the epoch (``meshkit.timestamps.to_micros``), so
they round-trip exactly and keyset cursors compare exactly. The first schema stored milliseconds
(``*_ms``); migration 4 renames those columns and scales them, so existing copies keep serving.
"""

from __future__ import annotations

import itertools
import json
import math
import sqlite3
import threading
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


COLUMNS = (
    "order_id",
    "placed",
    "customer_id",
    "status",
    "currency_code",
    "total_units",
    "total_nanos",
    "line_count",
    "lines",
    "shipping_address",
    "created_at_us",
    "updated_at_us",
    "cancellation_reason",
    "version",
    "payment_state",
    "shipment_state",
)
"""The summary's columns (all but ``seq``), in the order of a ``Values`` tuple."""

Values = tuple[Any, ...]
"""One summary row's ``COLUMNS``, as SQLite returns them."""

_LINES, _ADDRESS, _CREATED, _UPDATED = (
    COLUMNS.index(name) for name in ("lines", "shipping_address", "created_at_us", "updated_at_us")
)


def _record(row: sqlite3.Row) -> OrderRecord:
    return _record_of(tuple(row[name] for name in COLUMNS))


def _record_of(values: Values) -> OrderRecord:
    (order_id, placed, customer_id, status, currency_code, total_units, total_nanos, _,
     lines, address, created_at_us, updated_at_us, cancellation_reason, version,
     payment_state, shipment_state) = values  # fmt: skip
    return OrderRecord(
        order_id=order_id,
        placed=bool(placed),
        customer_id=customer_id,
        status=OrderStatus(status),
        total=Money.of(currency_code, total_units, total_nanos)
        if currency_code is not None
        else None,
        lines=tuple(
            Line(sku, quantity, Money.of(*price)) for sku, quantity, price in json.loads(lines)
        ),
        shipping_address=_address_from_json(address),
        created_at=from_micros(created_at_us),
        updated_at=from_micros(updated_at_us),
        cancellation_reason=cancellation_reason,
        version=version,
        payment_state=payment_state,
        shipment_state=shipment_state,
    )


def _values(record: OrderRecord, like: tuple[Values, OrderRecord] | None = None) -> Values:
    """``record`` as the summary's column values. The JSON and times of ``like`` (a row and its
    record) are reused for the fields ``record`` shares with it (the same objects)."""
    total = record.total
    lines = address = created = updated = None
    if like is not None:
        values, old = like
        lines = values[_LINES] if record.lines is old.lines else None
        address = values[_ADDRESS] if record.shipping_address is old.shipping_address else None
        created = values[_CREATED] if record.created_at is old.created_at else None
        updated = values[_UPDATED] if record.updated_at is old.updated_at else None
    return (
        record.order_id,
        int(record.placed),
        record.customer_id,
        record.status.value,
        total.currency_code if total else None,
        total.units if total else None,
        total.nanos if total else None,
        len(record.lines),
        _lines_json(record.lines) if lines is None else lines,
        _address_json(record.shipping_address) if address is None else address,
        to_micros(record.created_at) if created is None else created,
        to_micros(record.updated_at) if updated is None else updated,
        record.cancellation_reason,
        record.version,
        record.payment_state,
        record.shipment_state,
    )


class _Recent:
    """The records the projector wrote or read last, by order id, each with the column values
    it was read from or written as: a read whose row has exactly those values reuses the record
    instead of parsing the row again (JSON, money, times). Content-checked, so never stale: a
    write rolled back, or made by another process, just makes the values differ.

    Thread safety: safe to share (each consumer thread projects its own copy)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: dict[str, tuple[Values, OrderRecord]] = {}
        self._lock = threading.Lock()

    def record(self, values: Values) -> OrderRecord:
        """The record of a row with ``values``."""
        known = self._items.get(values[0])
        if known is not None and known[0] == values:
            return known[1]
        record = _record_of(values)
        self.put(values, record)
        return record

    def put(self, values: Values, record: OrderRecord) -> None:
        """Remember that a row with ``values`` is ``record``."""
        with self._lock:
            items = self._items
            items.pop(values[0], None)
            items[values[0]] = (values, record)
            if len(items) > self._size:  # forget the least recently written half
                for order_id in list(itertools.islice(items, self._size // 2)):
                    del items[order_id]


_RECENT = _Recent(8192)
_SELECT = f"SELECT seq, {', '.join(COLUMNS)} FROM order_summary WHERE order_id = ?"
_INSERT = (
    f"INSERT INTO order_summary ({', '.join(COLUMNS)})"
    f" VALUES ({', '.join('?' * len(COLUMNS))}) RETURNING seq"
)
_UPSERT = (
    _INSERT.removesuffix(" RETURNING seq")
    + " ON CONFLICT (order_id) DO UPDATE SET "
    + ", ".join(f"{name} = excluded.{name}" for name in COLUMNS[1:])
    + " RETURNING seq"
)
_UPDATES: dict[tuple[int, ...], str] = {}


def _update(changed: tuple[int, ...]) -> str:
    """``UPDATE`` of just the ``changed`` columns (by index in COLUMNS) of one row, by seq:
    indexes over the other columns are left alone."""
    sql = _UPDATES.get(changed)
    if sql is None:
        sets = ", ".join(f"{COLUMNS[i]} = ?" for i in changed)
        sql = _UPDATES[changed] = f"UPDATE order_summary SET {sets} WHERE seq = ?"
    return sql


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
    """ViewStore over one open transaction (the consumer's), for one event: ``save`` writes
    only the columns that changed since ``get`` read the row (an UPDATE that leaves the indexes
    of the others alone), or inserts the row when there was none."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._read: dict[str, tuple[int, Values, OrderRecord]] = {}
        self._absent: set[str] = set()

    def get(self, order_id: str) -> OrderRecord | None:
        """The order's record, or None."""
        row = self._conn.execute(_SELECT, (order_id,)).fetchone()
        if row is None:
            self._absent.add(order_id)
            return None
        values: Values = row[1:]
        record = _RECENT.record(values)
        self._read[order_id] = (row[0], values, record)
        return record

    def save(self, record: OrderRecord, *, reindex: bool) -> None:
        """Upsert the record; with ``reindex`` replace its search entry."""
        order_id = record.order_id
        read = self._read.get(order_id)
        existed = True
        if read is not None:
            seq, old_values, old = read
            values = _values(record, (old_values, old))
            changed = tuple(
                i for i, (new, was) in enumerate(zip(values, old_values, strict=True)) if new != was
            )
            if changed:
                self._conn.execute(_update(changed), [*(values[i] for i in changed), seq])
        else:
            values = _values(record)
            if order_id in self._absent:  # read as absent in this transaction: a new row
                seq = int(self._conn.execute(_INSERT, values).fetchone()[0])
                existed = False
                self._absent.discard(order_id)
            else:  # not read through this store: it may exist
                seq = int(self._conn.execute(_UPSERT, values).fetchone()[0])
        self._read[order_id] = (seq, values, record)
        _RECENT.put(values, record)
        if reindex:
            if existed:
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
            keyset = " AND (rank > ? OR (rank = ? AND rowid > ?))"
            args += [rank, rank, seq]
        # The page is chosen from the search index alone, and only its rows are joined: the
        # index holds placed orders only (an order is indexed when OrderPlaced places it, and
        # never unplaced), so the join's placed check is a guard, and joining every match of a
        # common word (thousands for a city) first cost as much as ranking them.
        sql = (
            "SELECT v.*, s.score FROM ("
            " SELECT rowid AS seq, rank AS score FROM order_search"
            f" WHERE order_search MATCH ?{keyset} ORDER BY rank, rowid LIMIT ?"
            ") AS s JOIN order_summary AS v ON v.seq = s.seq WHERE v.placed = 1"
            " ORDER BY s.score, s.seq"
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
