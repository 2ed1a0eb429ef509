"""SQLite storage for orders: the event store (+ snapshots), saga state, request ids.

Event store: ``order_events`` is keyed by (order_id, version), so two writers appending the same
version cannot both commit; ``save`` also checks the expected version first and raises meshkit
Aborted. Every appended event is published through the unit of work (meshkit's outbox) in the
same transaction, with ``<order_id>:<version>`` as its event id. Snapshots of the whole order are
written every ``snapshot_every`` versions, so a load reads at most that many events after the
latest snapshot (``as_of`` reads use the latest snapshot taken before that instant).

Times are stored exactly, as INTEGER microseconds since the Unix epoch (meshkit.timestamps), so
``as_of`` compares integers and an event is visible at its own timestamp.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from meshkit.audit import AuditEntry
from meshkit.db import Database, EventSink, UnitOfWork
from meshkit.errors import Aborted
from meshkit.events import OUTBOX_MIGRATION, as_record, from_record
from meshkit.timestamps import from_micros, to_micros
from orders.adapters.events import EVENTS, event_id, from_json, to_json
from orders.adapters.secrets import TokenSealer
from orders.app.ports import Conversion, SeenRequest
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
    # Every time as exact INTEGER microseconds since the epoch, not REAL seconds: a float cannot
    # hold today's instants to the microsecond, so `as_of` could miss an event at its own time.
    # SQLite cannot change a column's type: each table is rebuilt. Request ids get an index on
    # their time, for forgetting them after the retention window.
    """
    CREATE TABLE order_events_micros (
        order_id    TEXT NOT NULL,
        version     INTEGER NOT NULL CHECK (version >= 1),
        type        TEXT NOT NULL,      -- Avro full name, e.g. shop.orders.v1.OrderPlaced
        data        TEXT NOT NULL,      -- the Avro record as JSON (times in milliseconds)
        occurred_at INTEGER NOT NULL,   -- microseconds since the Unix epoch, exact
        PRIMARY KEY (order_id, version)
    ) WITHOUT ROWID;
    INSERT INTO order_events_micros (order_id, version, type, data, occurred_at)
        SELECT order_id, version, type, data, CAST(round(occurred_at * 1000000) AS INTEGER)
        FROM order_events;
    DROP TABLE order_events;
    ALTER TABLE order_events_micros RENAME TO order_events;

    CREATE TABLE order_snapshots_micros (
        order_id    TEXT NOT NULL,
        version     INTEGER NOT NULL,
        state       TEXT NOT NULL,      -- the folded order as JSON (times in microseconds)
        occurred_at INTEGER NOT NULL,   -- time of the snapshot's last event, microseconds
        PRIMARY KEY (order_id, version)
    ) WITHOUT ROWID;
    INSERT INTO order_snapshots_micros (order_id, version, state, occurred_at)
        SELECT order_id, version,
               json_set(state,
                   '$.created_at',
                   CAST(round(json_extract(state, '$.created_at') * 1000000) AS INTEGER),
                   '$.updated_at',
                   CAST(round(json_extract(state, '$.updated_at') * 1000000) AS INTEGER)),
               CAST(round(occurred_at * 1000000) AS INTEGER)
        FROM order_snapshots;
    DROP TABLE order_snapshots;
    ALTER TABLE order_snapshots_micros RENAME TO order_snapshots;

    CREATE TABLE order_requests_micros (
        request_id  TEXT PRIMARY KEY,
        order_id    TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        created_at  INTEGER NOT NULL    -- microseconds since the Unix epoch
    );
    INSERT INTO order_requests_micros (request_id, order_id, fingerprint, created_at)
        SELECT request_id, order_id, fingerprint, CAST(round(created_at * 1000000) AS INTEGER)
        FROM order_requests;
    DROP TABLE order_requests;
    ALTER TABLE order_requests_micros RENAME TO order_requests;
    CREATE INDEX order_requests_created ON order_requests (created_at);

    CREATE TABLE sagas_micros (
        order_id        TEXT PRIMARY KEY,
        status          TEXT NOT NULL
                        CHECK (status IN ('RUNNING', 'COMPENSATING', 'CONFIRMED', 'CANCELLED')),
        step            TEXT,
        attempt         INTEGER NOT NULL,
        compensations   TEXT NOT NULL,  -- JSON list of steps still to run
        reason          TEXT NOT NULL,
        last_error      TEXT NOT NULL,
        payment_token   TEXT NOT NULL,
        started_at      INTEGER NOT NULL,   -- microseconds since the Unix epoch, as every time
        step_started_at INTEGER NOT NULL,
        next_attempt_at INTEGER NOT NULL,
        updated_at      INTEGER NOT NULL,
        traceparent     TEXT NOT NULL DEFAULT ''
    );
    INSERT INTO sagas_micros (order_id, status, step, attempt, compensations, reason, last_error,
                              payment_token, started_at, step_started_at, next_attempt_at,
                              updated_at, traceparent)
        SELECT order_id, status, step, attempt, compensations, reason, last_error, payment_token,
               CAST(round(started_at * 1000000) AS INTEGER),
               CAST(round(step_started_at * 1000000) AS INTEGER),
               CAST(round(next_attempt_at * 1000000) AS INTEGER),
               CAST(round(updated_at * 1000000) AS INTEGER),
               traceparent
        FROM sagas;
    DROP TABLE sagas;
    ALTER TABLE sagas_micros RENAME TO sagas;
    CREATE INDEX sagas_due ON sagas (next_attempt_at)
        WHERE status IN ('RUNNING', 'COMPENSATING');
    """,
    # Saga workers' heartbeats: a starting worker resumes (restarts the step clocks of) the
    # sagas in flight only when no other worker is alive on this database.
    """
    CREATE TABLE saga_runners (
        runner_id        TEXT PRIMARY KEY,
        heartbeat_micros INTEGER NOT NULL,
        host             TEXT NOT NULL,
        pid              INTEGER NOT NULL
    );
    """,
    # Saga claims (orders.app.saga_worker): which worker carries a saga now, and until when, so
    # two orders processes on this database never carry one saga at once. A claim of a worker
    # that died expires (or goes at once when it ran on this host: SqliteSagas.beat).
    """
    CREATE TABLE saga_claims (
        order_id     TEXT PRIMARY KEY,
        runner_id    TEXT NOT NULL,
        until_micros INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX saga_claims_runner ON saga_claims (runner_id);
    """,
)

DEFAULT_SNAPSHOT_EVERY = 5


class SqliteOrders:
    """OrderRepository (the event store) over one open transaction.

    ``publish(event, event_id)`` is called for every event appended, inside the transaction.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        publish: Callable[[OrderEvent, str], None],
        snapshot_every: int,
    ) -> None:
        self._conn = conn
        self._publish = publish
        self._every = snapshot_every

    def get(self, order_id: str, *, as_of: datetime.datetime | None = None) -> Order | None:
        """The order from its latest usable snapshot plus the events after it."""
        until = None if as_of is None else to_micros(as_of)
        snap_sql = "SELECT version, state FROM order_snapshots WHERE order_id = ?"
        args: tuple[object, ...] = (order_id,)
        if until is not None:
            snap_sql += " AND occurred_at <= ?"
            args += (until,)
        snap = self._conn.execute(snap_sql + " ORDER BY version DESC LIMIT 1", args).fetchone()
        base = order_from_snapshot(snap["state"]) if snap else None
        after = snap["version"] if snap else 0
        events_sql = (
            "SELECT type, data, occurred_at FROM order_events WHERE order_id = ? AND version > ?"
        )
        args = (order_id, after)
        if until is not None:
            events_sql += " AND occurred_at <= ?"
            args += (until,)
        events = [_event(row) for row in self._conn.execute(events_sql + " ORDER BY version", args)]
        if base is None and not events:
            return None
        return Order.from_history(order_id, events, base)

    def save(self, order: Order) -> None:
        """Append the pending events at the expected version (Aborted if taken), publish each,
        snapshot when a multiple of ``snapshot_every`` is crossed."""
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
                        EVENTS.type_of(event),
                        to_json(event),
                        to_micros(event.occurred_at),
                    ),
                )
            except sqlite3.IntegrityError:
                raise Aborted(
                    f"order {order.order_id!r} version {version} was written concurrently",
                    reason="ORDER_VERSION_CONFLICT",
                ) from None
            self._publish(event, event_id(order.order_id, version))
        if order.version // self._every > expected // self._every:
            self._conn.execute(
                "INSERT OR REPLACE INTO order_snapshots (order_id, version, state, occurred_at)"
                " VALUES (?, ?, ?, ?)",
                (
                    order.order_id,
                    order.version,
                    snapshot_json(order),
                    to_micros(order.updated_at),
                ),
            )
        order.pending.clear()

    def history(self, order_id: str) -> list[tuple[int, OrderEvent]]:
        """Every event with its version, oldest first."""
        rows = self._conn.execute(
            "SELECT version, type, data, occurred_at FROM order_events"
            " WHERE order_id = ? ORDER BY version",
            (order_id,),
        ).fetchall()
        return [(row["version"], _event(row)) for row in rows]


def _event(row: sqlite3.Row) -> OrderEvent:
    return from_json(row["type"], row["data"], from_micros(row["occurred_at"]))


def snapshot_json(order: Order) -> str:
    """The order's state (without pending events) as JSON, times in microseconds."""
    state = as_record(replace(order, pending=[]))
    del state["pending"]
    return json.dumps(state, sort_keys=True, default=_micros)


def order_from_snapshot(text: str) -> Order:
    """The order a ``snapshot_json`` text describes."""
    state = json.loads(text)
    for name in ("created_at", "updated_at"):
        state[name] = from_micros(state[name])
    order: Order = from_record(Order, state)
    return order


def _micros(value: object) -> int:
    if isinstance(value, datetime.datetime):
        return to_micros(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


_SAGA_COLUMNS = (
    "order_id, status, step, attempt, compensations, reason, last_error, payment_token,"
    " started_at, step_started_at, next_attempt_at, updated_at, traceparent"
)


def _saga(row: sqlite3.Row, sealer: TokenSealer) -> Saga:
    return Saga(
        order_id=row["order_id"],
        status=SagaStatus(row["status"]),
        step=Step(row["step"]) if row["step"] else None,
        attempt=row["attempt"],
        compensations=tuple(Step(s) for s in json.loads(row["compensations"])),
        reason=row["reason"],
        last_error=row["last_error"],
        payment_token=sealer.open(row["order_id"], row["payment_token"]),
        started_at=from_micros(row["started_at"]),
        step_started_at=from_micros(row["step_started_at"]),
        next_attempt_at=from_micros(row["next_attempt_at"]),
        updated_at=from_micros(row["updated_at"]),
        traceparent=row["traceparent"],
    )


class SqliteSagas:
    """SagaRepository over one open transaction; the payment token is stored sealed
    (orders.adapters.secrets).

    Also ``SagaClaims`` (orders.app.saga_worker): rows of ``saga_claims`` say which worker
    carries a saga until when, so workers in several processes sharing the file never carry one
    saga at once. ``claim`` takes a row only when it is free, expired or the worker's own, in
    the caller's write transaction (under SQLite's write lock: two workers claiming at once are
    serialized, and the second sees the first's row).
    """

    def __init__(self, conn: sqlite3.Connection, sealer: TokenSealer) -> None:
        self._conn = conn
        self._sealer = sealer

    def get(self, order_id: str) -> Saga | None:
        """The saga, or None."""
        row = self._conn.execute(
            f"SELECT {_SAGA_COLUMNS} FROM sagas WHERE order_id = ?", (order_id,)
        ).fetchone()
        return _saga(row, self._sealer) if row else None

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
                self._sealer.seal(saga.order_id, saga.payment_token),
                to_micros(saga.started_at),
                to_micros(saga.step_started_at),
                to_micros(saga.next_attempt_at),
                to_micros(saga.updated_at),
                saga.traceparent,
            ),
        )

    def due(self, now: datetime.datetime, limit: int) -> list[str]:
        """Live sagas due at ``now``, the longest waiting first."""
        rows = self._conn.execute(
            "SELECT order_id FROM sagas WHERE status IN ('RUNNING', 'COMPENSATING')"
            " AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?",
            (to_micros(now), limit),
        ).fetchall()
        return [row["order_id"] for row in rows]

    def live(self) -> list[Saga]:
        """Every saga still RUNNING or COMPENSATING."""
        rows = self._conn.execute(
            f"SELECT {_SAGA_COLUMNS} FROM sagas WHERE status IN ('RUNNING', 'COMPENSATING')"
        ).fetchall()
        return [_saga(row, self._sealer) for row in rows]

    def recent(self, *, include_finished: bool, limit: int) -> list[Saga]:
        """Live sagas (and finished ones if asked), oldest first."""
        where = "" if include_finished else " WHERE status IN ('RUNNING', 'COMPENSATING')"
        rows = self._conn.execute(
            f"SELECT {_SAGA_COLUMNS} FROM sagas{where} ORDER BY started_at LIMIT ?", (limit,)
        ).fetchall()
        return [_saga(row, self._sealer) for row in rows]

    def beat(self, runner_id: str, now: datetime.datetime) -> None:
        """Record that the saga worker ``runner_id`` is alive at ``now``; drop the claims of
        workers of this host whose process is gone (killed: their sagas need not wait for the
        claims to expire)."""
        self._conn.execute(
            "INSERT INTO saga_runners (runner_id, heartbeat_micros, host, pid) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (runner_id) DO UPDATE SET heartbeat_micros = excluded.heartbeat_micros",
            (runner_id, to_micros(now), socket.gethostname(), os.getpid()),
        )
        # Forget workers silent for an hour: they are long gone.
        self._conn.execute(
            "DELETE FROM saga_runners WHERE heartbeat_micros < ?", (to_micros(now) - 3600_000_000,)
        )
        holders = self._conn.execute(
            "SELECT DISTINCT c.runner_id, r.pid FROM saga_claims c"
            " JOIN saga_runners r ON r.runner_id = c.runner_id"
            " WHERE c.runner_id != ? AND r.host = ?",
            (runner_id, socket.gethostname()),
        ).fetchall()
        for row in holders:
            if not _process_exists(row["pid"]):
                self._conn.execute(
                    "DELETE FROM saga_claims WHERE runner_id = ?", (row["runner_id"],)
                )

    def others_alive(self, runner_id: str, since: datetime.datetime) -> bool:
        """True when a saga worker other than ``runner_id`` was alive after ``since`` and, if it
        ran on this host, its process still exists (one killed a moment ago is not alive)."""
        rows = self._conn.execute(
            "SELECT host, pid FROM saga_runners WHERE runner_id != ? AND heartbeat_micros > ?",
            (runner_id, to_micros(since)),
        ).fetchall()
        here = socket.gethostname()
        return any(row["host"] != here or _process_exists(row["pid"]) for row in rows)

    def due_unclaimed(self, runner_id: str, now: datetime.datetime, limit: int) -> list[str]:
        """Like ``due``, leaving out the sagas another worker has a claim on that lasts past
        ``now``."""
        rows = self._conn.execute(
            "SELECT s.order_id FROM sagas s LEFT JOIN saga_claims c ON c.order_id = s.order_id"
            " WHERE s.status IN ('RUNNING', 'COMPENSATING') AND s.next_attempt_at <= ?"
            " AND (c.order_id IS NULL OR c.runner_id = ? OR c.until_micros <= ?)"
            " ORDER BY s.next_attempt_at LIMIT ?",
            (to_micros(now), runner_id, to_micros(now), limit),
        ).fetchall()
        return [row["order_id"] for row in rows]

    def claim(
        self,
        runner_id: str,
        order_ids: Sequence[str],
        now: datetime.datetime,
        until: datetime.datetime,
    ) -> list[str]:
        """Claim for ``runner_id``, until ``until``, those of ``order_ids`` that no other worker
        holds past ``now``; returns them (in the order given)."""
        claimed = []
        for order_id in order_ids:
            cursor = self._conn.execute(
                "INSERT INTO saga_claims (order_id, runner_id, until_micros) VALUES (?, ?, ?)"
                " ON CONFLICT (order_id) DO UPDATE SET runner_id = excluded.runner_id,"
                " until_micros = excluded.until_micros"
                " WHERE saga_claims.runner_id = excluded.runner_id"
                " OR saga_claims.until_micros <= ?",
                (order_id, runner_id, to_micros(until), to_micros(now)),
            )
            if cursor.rowcount == 1:
                claimed.append(order_id)
        return claimed

    def renew(
        self, runner_id: str, order_ids: Sequence[str], until: datetime.datetime
    ) -> list[str]:
        """Extend ``runner_id``'s claims on ``order_ids`` to ``until``; returns those it still
        held (a claim another worker took over after it expired is not renewed)."""
        renewed = []
        for order_id in order_ids:
            cursor = self._conn.execute(
                "UPDATE saga_claims SET until_micros = ? WHERE order_id = ? AND runner_id = ?",
                (to_micros(until), order_id, runner_id),
            )
            if cursor.rowcount == 1:
                renewed.append(order_id)
        return renewed

    def release(self, runner_id: str, order_ids: Sequence[str] | None = None) -> None:
        """Drop ``runner_id``'s claims on ``order_ids`` (None: all of them)."""
        if order_ids is None:
            self._conn.execute("DELETE FROM saga_claims WHERE runner_id = ?", (runner_id,))
            return
        self._conn.executemany(
            "DELETE FROM saga_claims WHERE order_id = ? AND runner_id = ?",
            [(order_id, runner_id) for order_id in order_ids],
        )


def _process_exists(pid: int) -> bool:
    """True when a live process ``pid`` exists on this host (signal 0 checks without
    signalling). A killed process nobody has reaped yet (a zombie: its parent, ``mesh up``, has
    long exited) answers signal 0 too, so Linux's /proc state is read where there is one."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:  # "pid (comm) S ..."
            state = stat.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in (b"Z", b"X")


class SqliteRequests:
    """RequestRepository over one open transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def get(self, request_id: str) -> SeenRequest | None:
        """The request, or None."""
        row = self._conn.execute(
            "SELECT order_id, fingerprint, created_at FROM order_requests WHERE request_id = ?",
            (request_id,),
        ).fetchone()
        if row is None:
            return None
        return SeenRequest(row["order_id"], row["fingerprint"], from_micros(row["created_at"]))

    def add(self, request_id: str, seen: SeenRequest) -> None:
        """Remember the request (replacing an expired one of the same id)."""
        self._conn.execute(
            "INSERT OR REPLACE INTO order_requests (request_id, order_id, fingerprint, created_at)"
            " VALUES (?, ?, ?, ?)",
            (request_id, seen.order_id, seen.fingerprint, to_micros(seen.created_at)),
        )

    def prune(self, before: datetime.datetime, limit: int) -> int:
        """Forget up to ``limit`` requests made before ``before``, the oldest first."""
        cursor = self._conn.execute(
            "DELETE FROM order_requests WHERE request_id IN (SELECT request_id FROM"
            " order_requests WHERE created_at < ? ORDER BY created_at LIMIT ?)",
            (to_micros(before), limit),
        )
        return cursor.rowcount


_DEVELOPMENT_SEALERS: dict[str, TokenSealer] = {}


def _development_sealer(db_path: str) -> TokenSealer:
    """The sealer of a database without a configured key: one per database file, its key kept
    beside it; for an in-memory database, one per process."""
    sealer = _DEVELOPMENT_SEALERS.get(db_path)
    if sealer is None:
        sealer = (
            TokenSealer(os.urandom(32))
            if db_path == ":memory:"
            else TokenSealer.beside(Path(db_path))
        )
        sealer = _DEVELOPMENT_SEALERS.setdefault(db_path, sealer)
    return sealer


class SqliteUnitOfWork(UnitOfWork):
    """Orders' unit of work: orders (the event store), sagas and request ids in one SQLite
    transaction. The event store publishes every event it appends through ``publish`` (meshkit's
    outbox), so an event is published exactly when it is stored; built without ``events`` (tests,
    tools), it stores without publishing. ``read_only=True``: a snapshot for reads, which takes
    no write lock (and must not write).
    """

    orders: SqliteOrders
    sagas: SqliteSagas
    requests: SqliteRequests

    def __init__(
        self,
        db: Database,
        events: EventSink | None = None,
        *,
        snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
        read_only: bool = False,
        sealer: TokenSealer | None = None,
    ) -> None:
        super().__init__(db, events, read_only=read_only)
        # Default: the development key kept beside the database (see orders.adapters.secrets).
        self._sealer = sealer or _development_sealer(db.path)
        self._publishes = events is not None
        self._every = snapshot_every

    def bind(self, conn: sqlite3.Connection) -> None:
        """Repositories over the transaction's connection."""
        self.orders = SqliteOrders(conn, self._publish_stored, self._every)
        self.sagas = SqliteSagas(conn, self._sealer)
        self.requests = SqliteRequests(conn)

    def _publish_stored(self, event: OrderEvent, event_id: str) -> None:
        self.publish(event, event_id=event_id)

    def publish(
        self, event: OrderEvent | Conversion | AuditEntry, *, event_id: str | None = None
    ) -> None:
        """Append ``event`` (or an audit entry) to the outbox; built without an event sink
        (tools, tests of the store) it publishes nothing."""
        if self._publishes:
            super().publish(event, event_id=event_id)
