"""SQLite storage for shipping: shipments, their items, idempotency records and the outbox."""

from __future__ import annotations

import datetime
import json
import sqlite3
import time
from typing import Any

from meshkit.address import Address
from meshkit.db import UnitOfWork
from meshkit.events import OUTBOX_MIGRATION
from meshkit.ports import IdempotentResult
from meshkit.timestamps import from_micros, to_millis
from shipping.domain.model import Item, ServiceLevel, Shipment, ShipmentStatus

MIGRATIONS = (
    """
    CREATE TABLE shipments (
        shipment_id     TEXT PRIMARY KEY,
        order_id        TEXT NOT NULL,
        name            TEXT NOT NULL,
        line1           TEXT NOT NULL,
        line2           TEXT NOT NULL,
        city            TEXT NOT NULL,
        postal_code     TEXT NOT NULL,
        country_code    TEXT NOT NULL CHECK (length(country_code) = 2),
        tracking_number TEXT NOT NULL UNIQUE,
        status          TEXT NOT NULL CHECK (status IN ('BOOKED', 'CANCELLED')),
        created_at_ms   INTEGER NOT NULL,
        updated_at_ms   INTEGER NOT NULL
    );
    CREATE INDEX shipments_by_order ON shipments (order_id);
    CREATE TABLE shipment_items (
        shipment_id TEXT NOT NULL REFERENCES shipments (shipment_id),
        position    INTEGER NOT NULL,
        sku         TEXT NOT NULL,
        quantity    INTEGER NOT NULL CHECK (quantity > 0),
        PRIMARY KEY (shipment_id, position)
    );
    -- One row per idempotency key that succeeded; written in the same transaction as the effect,
    -- so after a crash either both exist or neither does. result is the shipment as the first
    -- call returned it (JSON), which is what a replay answers.
    CREATE TABLE idempotency_keys (
        idempotency_key TEXT PRIMARY KEY,
        operation       TEXT NOT NULL,
        fingerprint     TEXT NOT NULL,
        result          TEXT NOT NULL,
        created_at      REAL NOT NULL
    );
    """,
    OUTBOX_MIGRATION,
    # The service level (feature flag checkout.express-shipping); shipments booked before it
    # were all standard.
    """
    ALTER TABLE shipments ADD COLUMN service_level TEXT NOT NULL DEFAULT 'STANDARD'
        CHECK (service_level IN ('STANDARD', 'EXPRESS'));
    """,
)


def _from_ms(ms: int) -> datetime.datetime:
    return from_micros(ms * 1000)


class SqliteShipments:
    """ShipmentRepository over one open transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def get(self, shipment_id: str) -> Shipment | None:
        """The shipment, or None."""
        row = self._conn.execute(
            "SELECT * FROM shipments WHERE shipment_id = ?", (shipment_id,)
        ).fetchone()
        if row is None:
            return None
        items = self._conn.execute(
            "SELECT sku, quantity FROM shipment_items WHERE shipment_id = ? ORDER BY position",
            (shipment_id,),
        ).fetchall()
        return Shipment(
            shipment_id=row["shipment_id"],
            order_id=row["order_id"],
            address=Address.from_record(dict(row)),
            items=tuple(Item(item["sku"], item["quantity"]) for item in items),
            tracking_number=row["tracking_number"],
            status=ShipmentStatus(row["status"]),
            created_at=_from_ms(row["created_at_ms"]),
            updated_at=_from_ms(row["updated_at_ms"]),
            service_level=ServiceLevel(row["service_level"]),
        )

    def add(self, shipment: Shipment) -> None:
        """Store a new shipment with its items."""
        self._conn.execute(
            "INSERT INTO shipments (shipment_id, order_id, name, line1, line2, city, postal_code,"
            " country_code, tracking_number, status, created_at_ms, updated_at_ms, service_level)"
            " VALUES (:shipment_id, :order_id, :name, :line1, :line2, :city, :postal_code,"
            " :country_code, :tracking_number, :status, :created_at_ms, :updated_at_ms,"
            " :service_level)",
            {
                **shipment.address.to_record(),
                "shipment_id": shipment.shipment_id,
                "order_id": shipment.order_id,
                "tracking_number": shipment.tracking_number,
                "status": shipment.status.value,
                "created_at_ms": to_millis(shipment.created_at),
                "updated_at_ms": to_millis(shipment.updated_at),
                "service_level": shipment.service_level.value,
            },
        )
        self._conn.executemany(
            "INSERT INTO shipment_items (shipment_id, position, sku, quantity) VALUES (?, ?, ?, ?)",
            [
                (shipment.shipment_id, position, item.sku, item.quantity)
                for position, item in enumerate(shipment.items)
            ],
        )

    def save(self, shipment: Shipment) -> None:
        """Store a changed shipment's status and update time (nothing else ever changes)."""
        self._conn.execute(
            "UPDATE shipments SET status = ?, updated_at_ms = ? WHERE shipment_id = ?",
            (shipment.status.value, to_millis(shipment.updated_at), shipment.shipment_id),
        )

    def tracking_number_taken(self, tracking_number: str) -> bool:
        """True when some shipment already has ``tracking_number``."""
        row = self._conn.execute(
            "SELECT 1 FROM shipments WHERE tracking_number = ?", (tracking_number,)
        ).fetchone()
        return row is not None


class SqliteIdempotency:
    """IdempotencyStore over one open transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def get(self, key: str) -> IdempotentResult[Shipment] | None:
        """The record of ``key``, or None."""
        row = self._conn.execute(
            "SELECT operation, fingerprint, result FROM idempotency_keys WHERE idempotency_key = ?",
            (key,),
        ).fetchone()
        if row is None:
            return None
        return IdempotentResult(
            key, row["operation"], row["fingerprint"], _shipment_from_json(row["result"])
        )

    def add(self, record: IdempotentResult[Shipment]) -> None:
        """Store a new record."""
        self._conn.execute(
            "INSERT INTO idempotency_keys (idempotency_key, operation, fingerprint, result,"
            " created_at) VALUES (?, ?, ?, ?, ?)",
            (
                record.key,
                record.operation,
                record.fingerprint,
                _shipment_to_json(record.result),
                time.time(),
            ),
        )


def _shipment_to_json(shipment: Shipment) -> str:
    data: dict[str, Any] = {
        "shipment_id": shipment.shipment_id,
        "order_id": shipment.order_id,
        "address": shipment.address.to_record(),
        "items": [[item.sku, item.quantity] for item in shipment.items],
        "tracking_number": shipment.tracking_number,
        "status": shipment.status.value,
        "created_at_ms": to_millis(shipment.created_at),
        "updated_at_ms": to_millis(shipment.updated_at),
        "service_level": shipment.service_level.value,
    }
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def _shipment_from_json(text: str) -> Shipment:
    data = json.loads(text)
    return Shipment(
        shipment_id=data["shipment_id"],
        order_id=data["order_id"],
        address=Address.from_record(data["address"]),
        items=tuple(Item(sku, quantity) for sku, quantity in data["items"]),
        tracking_number=data["tracking_number"],
        status=ShipmentStatus(data["status"]),
        created_at=_from_ms(data["created_at_ms"]),
        updated_at=_from_ms(data["updated_at_ms"]),
        # Records stored before service levels have none: those shipments were standard.
        service_level=ServiceLevel(data.get("service_level", "STANDARD")),
    )


class SqliteUnitOfWork(UnitOfWork):
    """Shipping's unit of work: one ``BEGIN IMMEDIATE`` transaction per ``with`` block, in which
    the state change, its idempotency record and its events (``publish``, through the outbox)
    commit together or not at all."""

    shipments: SqliteShipments
    idempotency: SqliteIdempotency

    def bind(self, conn: sqlite3.Connection) -> None:
        """Repositories over the transaction's connection."""
        self.shipments = SqliteShipments(conn)
        self.idempotency = SqliteIdempotency(conn)
