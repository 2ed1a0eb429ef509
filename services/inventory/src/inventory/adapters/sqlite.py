"""SQLite storage for inventory: stock, reservations and their lines, in one database file."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable

from inventory.domain.model import Line, Reservation, ReservationStatus, StockItem
from meshkit.db import UnitOfWork
from meshkit.events import OUTBOX_MIGRATION

MIGRATIONS = (
    """
    CREATE TABLE stock (
        sku        TEXT PRIMARY KEY,
        on_hand    INTEGER NOT NULL CHECK (on_hand >= 0),
        reserved   INTEGER NOT NULL DEFAULT 0 CHECK (reserved >= 0 AND reserved <= on_hand),
        updated_at REAL NOT NULL
    );
    CREATE TABLE reservations (
        reservation_id TEXT PRIMARY KEY,
        status         TEXT NOT NULL CHECK (status IN ('RESERVED', 'RELEASED', 'COMMITTED')),
        created_at     REAL NOT NULL,
        updated_at     REAL NOT NULL
    );
    CREATE TABLE reservation_lines (
        reservation_id TEXT NOT NULL REFERENCES reservations (reservation_id),
        sku            TEXT NOT NULL,
        quantity       INTEGER NOT NULL CHECK (quantity > 0),
        PRIMARY KEY (reservation_id, sku)
    );
    """,
    OUTBOX_MIGRATION,
)


class SqliteStock:
    """StockRepository over one open transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def get(self, sku: str) -> StockItem | None:
        """The item, or None for an unknown SKU."""
        row = self._conn.execute(
            "SELECT sku, on_hand, reserved FROM stock WHERE sku = ?", (sku,)
        ).fetchone()
        return StockItem(row["sku"], row["on_hand"], row["reserved"]) if row else None

    def get_many(self, skus: Iterable[str]) -> dict[str, StockItem]:
        """The known items among ``skus``, by SKU."""
        wanted = sorted(set(skus))
        placeholders = ",".join("?" * len(wanted))
        rows = self._conn.execute(
            f"SELECT sku, on_hand, reserved FROM stock WHERE sku IN ({placeholders})", wanted
        ).fetchall()
        return {row["sku"]: StockItem(row["sku"], row["on_hand"], row["reserved"]) for row in rows}

    def save(self, item: StockItem) -> None:
        """Insert or update ``item``."""
        self._conn.execute(
            "INSERT INTO stock (sku, on_hand, reserved, updated_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (sku) DO UPDATE SET on_hand = excluded.on_hand,"
            " reserved = excluded.reserved, updated_at = excluded.updated_at",
            (item.sku, item.on_hand, item.reserved, time.time()),
        )


class SqliteReservations:
    """ReservationRepository over one open transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def get(self, reservation_id: str) -> Reservation | None:
        """The reservation, or None."""
        row = self._conn.execute(
            "SELECT status FROM reservations WHERE reservation_id = ?", (reservation_id,)
        ).fetchone()
        if row is None:
            return None
        lines = self._conn.execute(
            "SELECT sku, quantity FROM reservation_lines WHERE reservation_id = ? ORDER BY sku",
            (reservation_id,),
        ).fetchall()
        return Reservation(
            reservation_id,
            tuple(Line(line["sku"], line["quantity"]) for line in lines),
            ReservationStatus(row["status"]),
        )

    def add(self, reservation: Reservation) -> None:
        """Store a new reservation with its lines."""
        now = time.time()
        self._conn.execute(
            "INSERT INTO reservations (reservation_id, status, created_at, updated_at)"
            " VALUES (?, ?, ?, ?)",
            (reservation.reservation_id, reservation.status.value, now, now),
        )
        self._conn.executemany(
            "INSERT INTO reservation_lines (reservation_id, sku, quantity) VALUES (?, ?, ?)",
            [(reservation.reservation_id, line.sku, line.quantity) for line in reservation.lines],
        )

    def save(self, reservation: Reservation) -> None:
        """Store a changed reservation's status."""
        self._conn.execute(
            "UPDATE reservations SET status = ?, updated_at = ? WHERE reservation_id = ?",
            (reservation.status.value, time.time(), reservation.reservation_id),
        )


class SqliteUnitOfWork(UnitOfWork):
    """Inventory's unit of work: stock, reservations and their events (``publish``, through the
    outbox) in one SQLite transaction."""

    stock: SqliteStock
    reservations: SqliteReservations

    def bind(self, conn: sqlite3.Connection) -> None:
        """Repositories over the transaction's connection."""
        self.stock = SqliteStock(conn)
        self.reservations = SqliteReservations(conn)
