"""SQLite storage for payments: payments, idempotency records and the event outbox, in one file.

Amounts are stored as one INTEGER of nanos (exact), timestamps as INTEGER microseconds since the
epoch (exact, so a replayed result equals the first one to the microsecond).
"""

from __future__ import annotations

import sqlite3

from meshkit.db import UnitOfWork
from meshkit.events import OUTBOX_MIGRATION
from meshkit.money import Money
from meshkit.timestamps import from_micros, to_micros
from payments.app.ports import PaymentResult
from payments.domain.model import Payment, PaymentStatus

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


_COLUMNS = (
    "p.payment_id, p.order_id, p.amount_nanos, p.currency_code, p.status, p.decline_reason,"
    " p.created_us, p.updated_us"
)


def _payment(row: sqlite3.Row) -> Payment:
    return Payment(
        row["payment_id"],
        row["order_id"],
        Money(row["currency_code"], row["amount_nanos"]),
        PaymentStatus(row["status"]),
        row["decline_reason"],
        from_micros(row["created_us"]),
        from_micros(row["updated_us"]),
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
                to_micros(payment.created_at),
                to_micros(payment.updated_at),
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
                to_micros(payment.updated_at),
                payment.payment_id,
            ),
        )


class SqliteIdempotency:
    """IdempotencyStore over one open transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def get(self, key: str) -> PaymentResult | None:
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
        return PaymentResult(key, row["operation"], row["fingerprint"], _payment(row))

    def add(self, result: PaymentResult) -> None:
        """Record the first result of a key (the key must be new)."""
        payment = result.result
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
                to_micros(payment.updated_at),
                to_micros(payment.updated_at) / 1e6,
            ),
        )


class SqliteUnitOfWork(UnitOfWork):
    """Payments' unit of work: payments, idempotency records and their events (``publish``,
    through the outbox) in one SQLite transaction."""

    payments: SqlitePayments
    idempotency: SqliteIdempotency

    def bind(self, conn: sqlite3.Connection) -> None:
        """Repositories over the transaction's connection."""
        self.payments = SqlitePayments(conn)
        self.idempotency = SqliteIdempotency(conn)
