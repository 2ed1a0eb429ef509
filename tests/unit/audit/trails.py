"""A trail over a fresh store, built from the audit service's own adapters (SQLite, Ed25519),
with a clock the test moves, records to put in it, and what an attacker with the file can do
(``tamper``: drop the append-only triggers, then change rows)."""

from __future__ import annotations

import datetime
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audit.adapters.signing import Ed25519Signer, public_key_file, publish
from audit.adapters.sqlite import MIGRATIONS, SqliteAuditStore, transactions
from audit.app.trail import AuditTrail, Maintenance
from audit.domain.chain import ChainEntry, Checkpoint
from mesh_runner.audit import Report, load_public_keys, verify_store
from meshkit import Database

T0 = datetime.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=datetime.UTC)


class Clock:
    """A clock that moves only when told to."""

    def __init__(self, now: datetime.datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += datetime.timedelta(**delta)


def record(n: int, **fields: Any) -> dict[str, Any]:
    """An AuditRecorded as the consumer decodes it (occurred_at an aware datetime)."""
    base: dict[str, Any] = {
        "audit_id": f"00000000-0000-4000-8000-{n:012d}",
        "occurred_at": T0 + datetime.timedelta(seconds=n),
        "service": "orders",
        "action": "orders.place",
        "outcome": "SUCCESS",
        "reason": "",
        "resource_type": "Order",
        "resource_id": f"order-{n}",
        "actor": {
            "subject": f"customer-{n % 3}",
            "roles": ["customer"],
            "client_id": "shop",
            "service": "",
            "on_behalf_of": "",
        },
        "source_address": "ipv4:127.0.0.1:5555",
        "trace_id": f"{n:032x}",
        "details": {"sku": "SKU-1", "quantity": "2"},
    }
    base.update(fields)
    return base


@dataclass
class Trail:
    """A trail on ``path`` and its maintenance worker, signed by ``signer``, timed by ``clock``."""

    path: Path
    db: Database
    signer: Ed25519Signer
    clock: Clock
    trail: AuditTrail
    maintenance: Maintenance

    def append(self, *records: Mapping[str, Any]) -> list[ChainEntry | None]:
        """Append each record in one transaction (as a consumer batch does)."""
        with transactions(self.db)() as store:
            return [self.trail.append(store, r) for r in records]

    def fill(self, count: int, start: int = 1) -> None:
        """Append records ``start`` .. ``start + count - 1``, one transaction each."""
        for n in range(start, start + count):
            self.append(record(n))

    def checkpoint(self) -> Checkpoint | None:
        with transactions(self.db)() as store:
            return self.trail.checkpoint(store)

    def rows(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        with self.db.snapshot() as conn:
            return list(conn.execute(sql, args))

    def keys(self) -> dict[str, Any]:
        return load_public_keys(public_key_file(self.path).read_text())

    def verify(self) -> Report:
        return verify_store(self.path, self.keys())

    def store(self) -> SqliteAuditStore:
        """A store over a connection of this thread, outside any transaction (reads only)."""
        conn = sqlite3.connect(self.path)
        conn.row_factory = sqlite3.Row
        return SqliteAuditStore(conn)


def make_trail(
    tmp_path: Path,
    *,
    every: int = 100,
    after_s: float = 10.0,
    retention: datetime.timedelta | None = None,
    name: str = "audit.db",
) -> Trail:
    path = tmp_path / name
    db = Database(path, MIGRATIONS)
    signer = Ed25519Signer.beside(path)
    publish(path, signer)
    clock = Clock()
    trail = AuditTrail(
        signer,
        checkpoint_every=every,
        checkpoint_after=datetime.timedelta(seconds=after_s),
        clock=clock,
    )
    maintenance = Maintenance(transactions(db), trail, retention=retention, clock=clock)
    return Trail(path, db, signer, clock, trail, maintenance)


def tamper(path: Path, *statements: str | tuple[str, tuple[Any, ...]]) -> None:
    """What someone with write access to the file can do: drop the triggers, change rows."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        triggers = [
            r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        ]
        for name in triggers:
            conn.execute(f"DROP TRIGGER {name}")
        for statement in statements:
            sql, args = (statement, ()) if isinstance(statement, str) else statement
            conn.execute(sql, args)
        conn.execute("COMMIT")
    finally:
        conn.close()
