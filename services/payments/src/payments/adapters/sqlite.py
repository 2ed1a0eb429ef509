"""SQLite storage for payments: payments, idempotency records and the event outbox, in one file.

Amounts are stored as one INTEGER of nanos (exact), timestamps as INTEGER microseconds since the
epoch (exact, so a replayed result equals the first one to the microsecond).
"""

from __future__ import annotations

import datetime
import sqlite3
from typing import Any, Protocol

from meshkit.db import Database, UnitOfWork
from meshkit.events import OUTBOX_MIGRATION
from payments.adapters.avro import to_record
from payments.app.ports import IdempotentResult
from payments.domain.events import PaymentEvent
from payments.domain.model import Payment, PaymentStatus
from payments.domain.money import Money

MIGRATIONS = (
    """
    CREATE TABLE payments (
        payment_id     TEXT PRIMARY KEY,
        order_id       TEXT NOT NULL,
        amount_nanos   INTEGER NOT NULL CHECK (amount_nanos > 0),
        currency_code  TEXT NOT NULL CHECK (length(currency_code) = 3),
        status         TEXT NOT NULL CHECK (status IN
                           ('AUTHORIZED', 'DECLINED', 'CAPTURED', 'VOIDED', 'REFUNDED')),
        decline_reason TEXT NOT NULL DEFAULT '',
        created_us     INTEGER NOT NULL,
        updated_us     INTEGER NOT NULL,
        CHECK ((status = 'DECLINED') = (decline_reason != ''))
    );
    CREATE INDEX payments_by_order ON payments (order_id);
    -- The first result under each key. The payment's immutable fields come from payments; the
    -- ones a later call may change are kept here as they were when this key's call returned.
    CREATE TABLE idempotency_keys (
        idempotency_key TEXT PRIMARY KEY,
        operation       TEXT NOT NULL,
        fingerprint     TEXT NOT NULL,
        payment_id      TEXT NOT NULL REFERENCES payments (payment_id),
        status          TEXT NOT NULL,
        decline_reason  TEXT NOT NULL,
        updated_us      INTEGER NOT NULL,
        created_at      REAL NOT NULL
    ) WITHOUT ROWID;
    """,
    OUTBOX_MIGRATION,
)


class OutboxWriter(Protocol):
    """What the adapter needs of ``meshkit.events.Outbox``: append inside an open transaction."""

    def append(
        self, conn: sqlite3.Connection, event_type: str, data: dict[str, Any], *, key: str
    ) -> str:
        """Append one event in ``conn``'s transaction; returns its ce_id."""


def open_database(path: str) -> Database:
    """The payments database at ``path``, migrated to the current schema."""
    return Database(path, MIGRATIONS)


def _micros(moment: datetime.datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _moment(micros: int) -> datetime.datetime:
    return _EPOCH + datetime.timedelta(microseconds=micros)


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)

_COLUMNS = (
    "p.payment_id, p.order_id, p.amount_nanos, p.currency_code, p.status, p.decline_reason,"
    " p.created_us, p.updated_us"
)


def _payment(row: sqlite3.Row) -> Payment:
    return Payment(
        row["payment_id"],
        row["order_id"],
        Money(row["amount_nanos"], row["currency_code"]),
        PaymentStatus(row["status"]),
        row["decline_reason"],
        _moment(row["created_us"]),
        _moment(row["updated_us"]),
    )


class SqlitePayments:
    """PaymentRepository over one open transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def get(self, payment_id: str) -> Payment | None:
        """The payment, or None."""
        row = self._conn.execute(
            f"SELECT {_COLUMNS} FROM payments p WHERE p.payment_id = ?", (payment_id,)
        ).fetchone()
        return _payment(row) if row else None

    def add(self, payment: Payment) -> None:
        """Store a new payment."""
        self._conn.execute(
            "INSERT INTO payments (payment_id, order_id, amount_nanos, currency_code, status,"
            " decline_reason, created_us, updated_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                payment.payment_id,
                payment.order_id,
                payment.amount.total_nanos,
                payment.amount.currency_code,
                payment.status.value,
                payment.decline_reason,
                _micros(payment.created_at),
                _micros(payment.updated_at),
            ),
        )

    def save(self, payment: Payment) -> None:
        """Store a changed payment's status and updated_at."""
        self._conn.execute(
            "UPDATE payments SET status = ?, decline_reason = ?, updated_us = ?"
            " WHERE payment_id = ?",
            (
                payment.status.value,
                payment.decline_reason,
                _micros(payment.updated_at),
                payment.payment_id,
            ),
        )


class SqliteIdempotency:
    """IdempotencyStore over one open transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def get(self, key: str) -> IdempotentResult | None:
        """The first result recorded under ``key``, or None."""
        row = self._conn.execute(
            "SELECT k.operation, k.fingerprint, p.payment_id, p.order_id, p.amount_nanos,"
            " p.currency_code, k.status, k.decline_reason, p.created_us, k.updated_us"
            " FROM idempotency_keys k JOIN payments p ON p.payment_id = k.payment_id"
            " WHERE k.idempotency_key = ?",
            (key,),
        ).fetchone()
        if row is None:
            return None
        return IdempotentResult(key, row["operation"], row["fingerprint"], _payment(row))

    def add(self, result: IdempotentResult) -> None:
        """Record the first result of a key (the key must be new)."""
        payment = result.payment
        self._conn.execute(
            "INSERT INTO idempotency_keys (idempotency_key, operation, fingerprint, payment_id,"
            " status, decline_reason, updated_us, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                result.key,
                result.operation,
                result.fingerprint,
                payment.payment_id,
                payment.status.value,
                payment.decline_reason,
                _micros(payment.updated_at),
                _micros(payment.updated_at) / 1e6,
            ),
        )


class SqliteEvents:
    """EventOutbox over one open transaction: each event becomes an outbox row in it."""

    def __init__(self, conn: sqlite3.Connection, writer: OutboxWriter) -> None:
        self._conn = conn
        self._writer = writer

    def add(self, event: PaymentEvent) -> None:
        """Append ``event`` to the outbox in this transaction."""
        event_type, record, key = to_record(event)
        self._writer.append(self._conn, event_type, record, key=key)


class SqliteUnitOfWork(UnitOfWork):
    """Payments' unit of work: payments, idempotency records and events (through the outbox) in
    one SQLite transaction."""

    payments: SqlitePayments
    idempotency: SqliteIdempotency
    events: SqliteEvents

    def __init__(self, db: Database, outbox: OutboxWriter) -> None:
        super().__init__(db)
        self._outbox = outbox

    def bind(self, conn: sqlite3.Connection) -> None:
        """Repositories over the transaction's connection."""
        self.payments = SqlitePayments(conn)
        self.idempotency = SqliteIdempotency(conn)
        self.events = SqliteEvents(conn, self._outbox)
