"""SQLite storage for orders: the event store (+ snapshots), saga state, request ids, the outbox.

Event store: ``order_events`` is keyed by (order_id, version), so two writers appending the same
version cannot both commit; ``save`` also checks the expected version first and raises meshkit
Aborted. Every appended event gets its outbox row (meshkit.events) in the same transaction.
Snapshots of the whole order are written every ``snapshot_every`` versions, so a load reads at
most that many events after the latest snapshot (``as_of`` reads use the latest snapshot taken
before that instant).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable

from meshkit.db import Database, UnitOfWork
from meshkit.errors import Aborted
from meshkit.events import OUTBOX_MIGRATION
from orders.adapters.records import (
    event_type,
    from_record,
    order_from_snapshot,
    snapshot_json,
    to_record,
)
from orders.domain.events import OrderEvent
from orders.domain.model import Order
from orders.domain.saga import Saga, SagaStatus, Step

MIGRATIONS = (
    """
    CREATE TABLE order_events (
        order_id    TEXT NOT NULL,
        version     INTEGER NOT NULL CHECK (version >= 1),
        type        TEXT NOT NULL,      -- Avro full name, e.g. shop.orders.v1.OrderPlaced
        data        TEXT NOT NULL,      -- the Avro record as JSON
        occurred_at REAL NOT NULL,      -- unix seconds
        PRIMARY KEY (order_id, version)
    ) WITHOUT ROWID;
    CREATE TABLE order_snapshots (
        order_id    TEXT NOT NULL,
        version     INTEGER NOT NULL,
        state       TEXT NOT NULL,      -- the folded order as JSON
        occurred_at REAL NOT NULL,      -- time of the snapshot's last event
        PRIMARY KEY (order_id, version)
    ) WITHOUT ROWID;
    CREATE TABLE order_requests (
        request_id  TEXT PRIMARY KEY,
        order_id    TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        created_at  REAL NOT NULL
    );
    CREATE TABLE sagas (
        order_id        TEXT PRIMARY KEY,
        status          TEXT NOT NULL
                        CHECK (status IN ('RUNNING', 'COMPENSATING', 'CONFIRMED', 'CANCELLED')),
        step            TEXT,
        attempt         INTEGER NOT NULL,
        compensations   TEXT NOT NULL,  -- JSON list of steps still to run
        reason          TEXT NOT NULL,
        last_error      TEXT NOT NULL,
        payment_token   TEXT NOT NULL,
        started_at      REAL NOT NULL,
        step_started_at REAL NOT NULL,
        next_attempt_at REAL NOT NULL,
        updated_at      REAL NOT NULL
    );
    CREATE INDEX sagas_due ON sagas (next_attempt_at)
        WHERE status IN ('RUNNING', 'COMPENSATING');
    """,
    OUTBOX_MIGRATION,
    # The PlaceOrder's W3C trace context, so every saga step joins the order's trace.
    "ALTER TABLE sagas ADD COLUMN traceparent TEXT NOT NULL DEFAULT '';",
    # Finished sagas forget the payment token (the domain now blanks it when a saga ends);
    # this wipes the ones that ended before.
    "UPDATE sagas SET payment_token = '' WHERE status IN ('CONFIRMED', 'CANCELLED');",
)

DEFAULT_SNAPSHOT_EVERY = 5

EventSink = Callable[[sqlite3.Connection, OrderEvent, int], None]
"""Publishes one stored event (with its version) inside the open transaction: the outbox."""


def open_database(path: str) -> Database:
    """The orders database at ``path``, migrated to the current schema."""
    return Database(path, MIGRATIONS)


class SqliteOrders:
    """OrderRepository (the event store) over one open transaction."""

    def __init__(
        self, conn: sqlite3.Connection, publish: EventSink | None, snapshot_every: int
    ) -> None:
        self._conn = conn
        self._publish = publish
        self._every = snapshot_every

    def get(self, order_id: str, *, as_of: float | None = None) -> Order | None:
        """The order from its latest usable snapshot plus the events after it."""
        snap_sql = "SELECT version, state FROM order_snapshots WHERE order_id = ?"
        args: tuple[object, ...] = (order_id,)
        if as_of is not None:
            snap_sql += " AND occurred_at <= ?"
            args += (as_of,)
        snap = self._conn.execute(snap_sql + " ORDER BY version DESC LIMIT 1", args).fetchone()
        base = order_from_snapshot(snap["state"]) if snap else None
        after = snap["version"] if snap else 0
        events = []
        for row in self._conn.execute(
            "SELECT type, data, occurred_at FROM order_events"
            " WHERE order_id = ? AND version > ? ORDER BY version",
            (order_id, after),
        ):
            if as_of is not None and row["occurred_at"] > as_of:
                break
            events.append(from_record(row["type"], json.loads(row["data"]), row["occurred_at"]))
        if base is None and not events:
            return None
        return Order.from_history(order_id, events, base)

    def save(self, order: Order) -> None:
        """Append the pending events at the expected version (Aborted if taken), publish each
        through the outbox, snapshot when a multiple of ``snapshot_every`` is crossed."""
        pending = list(order.pending)
        if not pending:
            return
        expected = order.version - len(pending)
        current = self._conn.execute(
            "SELECT coalesce(max(version), 0) FROM order_events WHERE order_id = ?",
            (order.order_id,),
        ).fetchone()[0]
        if current != expected:
            raise Aborted(
                f"order {order.order_id!r} is at version {current}, not {expected}:"
                " it changed concurrently; retry",
                reason="ORDER_VERSION_CONFLICT",
            )
        for version, event in enumerate(pending, start=expected + 1):
            try:
                self._conn.execute(
                    "INSERT INTO order_events (order_id, version, type, data, occurred_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (
                        order.order_id,
                        version,
                        event_type(event),
                        json.dumps(to_record(event), sort_keys=True),
                        event.occurred_at,
                    ),
                )
            except sqlite3.IntegrityError:
                raise Aborted(
                    f"order {order.order_id!r} version {version} was written concurrently",
                    reason="ORDER_VERSION_CONFLICT",
                ) from None
            if self._publish is not None:
                self._publish(self._conn, event, version)
        if order.version // self._every > expected // self._every:
            self._conn.execute(
                "INSERT OR REPLACE INTO order_snapshots (order_id, version, state, occurred_at)"
                " VALUES (?, ?, ?, ?)",
                (order.order_id, order.version, snapshot_json(order), order.updated_at),
            )
        order.pending.clear()

    def history(self, order_id: str) -> list[tuple[int, OrderEvent]]:
        """Every event with its version, oldest first."""
        rows = self._conn.execute(
            "SELECT version, type, data, occurred_at FROM order_events"
            " WHERE order_id = ? ORDER BY version",
            (order_id,),
        ).fetchall()
        return [
            (row["version"], from_record(row["type"], json.loads(row["data"]), row["occurred_at"]))
            for row in rows
        ]


_SAGA_COLUMNS = (
    "order_id, status, step, attempt, compensations, reason, last_error, payment_token,"
    " started_at, step_started_at, next_attempt_at, updated_at, traceparent"
)


def _saga(row: sqlite3.Row) -> Saga:
    return Saga(
        order_id=row["order_id"],
        status=SagaStatus(row["status"]),
        step=Step(row["step"]) if row["step"] else None,
        attempt=row["attempt"],
        compensations=tuple(Step(s) for s in json.loads(row["compensations"])),
        reason=row["reason"],
        last_error=row["last_error"],
        payment_token=row["payment_token"],
        started_at=row["started_at"],
        step_started_at=row["step_started_at"],
        next_attempt_at=row["next_attempt_at"],
        updated_at=row["updated_at"],
        traceparent=row["traceparent"],
    )


class SqliteSagas:
    """SagaRepository over one open transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def get(self, order_id: str) -> Saga | None:
        """The saga, or None."""
        row = self._conn.execute(
            f"SELECT {_SAGA_COLUMNS} FROM sagas WHERE order_id = ?", (order_id,)
        ).fetchone()
        return _saga(row) if row else None

    def save(self, saga: Saga) -> None:
        """Insert or replace the saga's row."""
        self._conn.execute(
            f"INSERT OR REPLACE INTO sagas ({_SAGA_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                saga.order_id,
                saga.status.value,
                saga.step.value if saga.step else None,
                saga.attempt,
                json.dumps([s.value for s in saga.compensations]),
                saga.reason,
                saga.last_error,
                saga.payment_token,
                saga.started_at,
                saga.step_started_at,
                saga.next_attempt_at,
                saga.updated_at,
                saga.traceparent,
            ),
        )

    def due(self, now: float, limit: int) -> list[str]:
        """Live sagas due at ``now``, the longest waiting first."""
        rows = self._conn.execute(
            "SELECT order_id FROM sagas WHERE status IN ('RUNNING', 'COMPENSATING')"
            " AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?",
            (now, limit),
        ).fetchall()
        return [row["order_id"] for row in rows]

    def live(self) -> list[Saga]:
        """Every saga still RUNNING or COMPENSATING."""
        rows = self._conn.execute(
            f"SELECT {_SAGA_COLUMNS} FROM sagas WHERE status IN ('RUNNING', 'COMPENSATING')"
        ).fetchall()
        return [_saga(row) for row in rows]

    def recent(self, *, include_finished: bool, limit: int) -> list[Saga]:
        """Live sagas (and finished ones if asked), oldest first."""
        where = "" if include_finished else " WHERE status IN ('RUNNING', 'COMPENSATING')"
        rows = self._conn.execute(
            f"SELECT {_SAGA_COLUMNS} FROM sagas{where} ORDER BY started_at LIMIT ?", (limit,)
        ).fetchall()
        return [_saga(row) for row in rows]


class SqliteRequests:
    """RequestRepository over one open transaction."""

    def __init__(self, conn: sqlite3.Connection, now: float) -> None:
        self._conn = conn
        self._now = now

    def get(self, request_id: str) -> tuple[str, str] | None:
        """``(order_id, fingerprint)`` of the request, or None."""
        row = self._conn.execute(
            "SELECT order_id, fingerprint FROM order_requests WHERE request_id = ?",
            (request_id,),
        ).fetchone()
        return (row["order_id"], row["fingerprint"]) if row else None

    def add(self, request_id: str, order_id: str, fingerprint: str) -> None:
        """Remember the request."""
        self._conn.execute(
            "INSERT INTO order_requests (request_id, order_id, fingerprint, created_at)"
            " VALUES (?, ?, ?, ?)",
            (request_id, order_id, fingerprint, self._now),
        )


class SqliteUnitOfWork(UnitOfWork):
    """Orders' unit of work: one ``BEGIN IMMEDIATE`` transaction per ``with`` block.

    ``publish`` (the outbox) is called for every event appended, inside the transaction, so an
    event is published exactly when it is stored.
    """

    orders: SqliteOrders
    sagas: SqliteSagas
    requests: SqliteRequests

    def __init__(
        self,
        db: Database,
        publish: EventSink | None = None,
        *,
        snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(db)
        self._publish = publish
        self._every = snapshot_every
        self._clock = clock or time.time

    def bind(self, conn: sqlite3.Connection) -> None:
        """Repositories over the transaction's connection."""
        self.orders = SqliteOrders(conn, self._publish, self._every)
        self.sagas = SqliteSagas(conn)
        self.requests = SqliteRequests(conn, self._clock())
