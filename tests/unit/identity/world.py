"""For identity's unit tests: its use cases over a real SQLite store, with a sink that records
what each unit of work published (identity events and audit entries alike), a clock the test
moves, argon2's cheapest parameters, an in-memory signing key and the shipped OAuth clients."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from identity.adapters import recovery, totp
from identity.adapters.clients import load_clients
from identity.adapters.hashing import PasswordHasher
from identity.adapters.keys import MemoryKeyStore, SigningKeys
from identity.adapters.sqlite import MIGRATIONS, SqliteUnitOfWork
from identity.app.accounts import Accounts
from identity.app.oauth import AuthorizationServer
from identity.domain.passwords import PasswordPolicy
from meshkit.audit import AuditEntry
from meshkit.db import Database

ISSUER = "http://127.0.0.1:8090"
AUDIENCE = "meshkit"


class Clock:
    """Wall-clock seconds the test sets and moves."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Recorder:
    """The event sink of every unit of work: what was published, in order, and the number of
    the unit of work that published it (``units`` counts them as they begin)."""

    published: list[Any] = field(default_factory=list)
    unit_of: list[int] = field(default_factory=list)
    units: int = 0

    def publish(self, conn: object, event: Any, *, event_id: str | None = None) -> None:
        self.published.append(event)
        self.unit_of.append(self.units)

    def unit(self, event: Any) -> int:
        """The number of the unit of work that published ``event``."""
        return self.unit_of[next(i for i, e in enumerate(self.published) if e is event)]

    def audits(self, action: str | None = None) -> list[AuditEntry]:
        """The audit entries published (of ``action`` only, when given)."""
        return [
            e
            for e in self.published
            if isinstance(e, AuditEntry) and (action is None or e.action == action)
        ]


@dataclass
class World:
    """Identity's use cases over one database."""

    db: Database
    sink: Recorder
    clock: Clock
    accounts: Accounts
    oauth: AuthorizationServer
    keys: SigningKeys


class _Counted(SqliteUnitOfWork):
    """A write unit of work that tells the recorder it began."""

    _events: Recorder

    def bind(self, conn: sqlite3.Connection) -> None:
        self._events.units += 1
        super().bind(conn)


def make_world(path: Path) -> World:
    """A world over a new database at ``path`` (close ``world.db`` after)."""
    db = Database(path, MIGRATIONS)
    sink, clock = Recorder(), Clock()

    def uow() -> SqliteUnitOfWork:
        return _Counted(db, sink)

    def snapshot() -> SqliteUnitOfWork:
        return SqliteUnitOfWork(db, sink, read_only=True)

    accounts = Accounts(
        uow,
        snapshot,
        hasher=PasswordHasher.for_tests(),
        totp=totp,
        recovery=recovery,
        policy=PasswordPolicy(),
        totp_issuer="test",
        clock=clock,
    )
    keys = SigningKeys(MemoryKeyStore(), issuer=ISSUER, clock=clock)
    oauth = AuthorizationServer(
        uow,
        snapshot,
        accounts=accounts,
        signer=keys,
        clients=load_clients(env={}),
        issuer=ISSUER,
        audience=AUDIENCE,
        clock=clock,
    )
    return World(db, sink, clock, accounts, oauth, keys)
