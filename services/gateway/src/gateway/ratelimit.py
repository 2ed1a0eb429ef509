"""Rate limiting at the edge: token buckets per key, limits per route, the IETF RateLimit headers.

Contract
--------
Every request is checked against buckets named by (key, policy): the caller passes the keys it
knows (``client:<client_id>``, ``user:<sub>``, or ``ip:<address>`` when anonymous) and the route's
name (``POST /v1/orders``, as ``gateway.routing.Route.name`` spells it). Every ``[[default]]``
policy applies to every route, per key; a route's own policies apply on top of them. A request
passes only when every bucket of every key has a token for it.

A policy is a token bucket of ``capacity`` tokens refilled at ``capacity / per_seconds`` tokens a
second: a client may spend the whole capacity at once (a burst) and then one request every
``per_seconds / capacity`` seconds. One policy name is one bucket per key, so the ``default``
bucket counts a key's requests on all routes together, and two routes that list the same name
(with the same numbers) share one bucket.

Configuration (TOML; the shipped one is ``ratelimits.toml`` next to this module)::

    [[default]]                 # every route, per client and per user
    name = "default"            # letters, digits, ".", "_", "-"; one name = one bucket
    capacity = 600              # tokens: the burst
    per_seconds = 60            # seconds to refill an empty bucket to full

    [[route."POST /v1/orders"]] # "<METHOD> <path template>", as the route table names it
    name = "orders-write"
    capacity = 60
    per_seconds = 60

``Limits.from_toml`` rejects unknown keys, wrong types, a route policy reusing a default name
(that bucket would be charged twice per request) and one name given two sizes, with a
``ValueError`` that names the offending key.

Where the counts live (the issue's question)
--------------------------------------------
``MemoryStore`` keeps the buckets in the process: with several gateway replicas, each replica
admits the full limit on its own (N replicas, N times the limit), as Kong's ``local`` policy and
Envoy's local rate limit do. ``SqliteStore`` keeps them in one SQLite file that every replica on
the host opens, so the limit holds for all of them together. A deployment across hosts needs a
network store instead: Redis (Kong's ``redis`` policy) or Envoy's global rate limit service;
writing one means implementing ``Store`` (``take`` and ``refund``) over it.

Headers follow draft-ietf-httpapi-ratelimit-headers-11 (May 2026), sections 3 and 4:
``RateLimit-Policy: "default";q=600;w=60`` and ``RateLimit: "default";r=42;t=1``, plus
``Retry-After`` (delay-seconds) on a refusal.
"""

from __future__ import annotations

import logging
import math
import re
import sqlite3
import threading
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Protocol

log = logging.getLogger(__name__)

# Policy names go into structured-field strings, SQLite keys and logs: a plain charset needs no
# escaping anywhere (an sf-string would otherwise need \" and \\ escaped).
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_ROUTE = re.compile(r"(GET|PUT|POST|DELETE|PATCH) /\S*")
_POLICY_KEYS = frozenset({"name", "capacity", "per_seconds"})
# Refill is computed in floating point: 6 s at 10 tokens/60 s must give one whole token even when
# the arithmetic lands a hair below 1. A billionth of a token never shows as an extra request.
_EPSILON = 1e-9


@dataclass(frozen=True)
class Policy:
    """One named limit: a bucket of ``capacity`` tokens refilled at ``capacity / per_seconds``
    tokens per second. Validated on construction (``ValueError`` naming the field)."""

    name: str
    capacity: int
    per_seconds: float

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ValueError(
                f"name must be 1-64 letters, digits, '.', '_' or '-' (got {self.name!r})"
            )
        if isinstance(self.capacity, bool) or not isinstance(self.capacity, int):
            raise ValueError(f"capacity must be an integer (got {self.capacity!r})")
        if self.capacity < 1:
            raise ValueError(f"capacity must be at least 1 (got {self.capacity})")
        seconds = self.per_seconds
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise ValueError(f"per_seconds must be a number (got {seconds!r})")
        if not math.isfinite(seconds) or seconds <= 0:
            raise ValueError(f"per_seconds must be a positive number of seconds (got {seconds})")
        object.__setattr__(
            self, "per_seconds", float(seconds)
        )  # TOML gives 60, the type says float

    @property
    def rate(self) -> float:
        """Tokens added per second."""
        return self.capacity / self.per_seconds


@dataclass(frozen=True)
class Limits:
    """The configured policies: ``default`` for every route (per key), ``routes`` on top of them
    for the routes they name. Checked on construction: at least one default policy, route names
    ``"<METHOD> <path>"``, no name twice in one list, no route reusing a default name, and one
    name always the same size (it is one bucket)."""

    default: list[Policy]
    routes: dict[str, list[Policy]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.default:
            raise ValueError("default: at least one [[default]] policy is needed")
        sizes: dict[str, tuple[tuple[int, float], str]] = {}
        lists: list[tuple[str, list[Policy]]] = [("default", self.default)]
        for route, policies in self.routes.items():
            if not isinstance(route, str) or not _ROUTE.fullmatch(route):
                raise ValueError(
                    f'route."{route}": a route is named "<METHOD> <path template>",'
                    ' e.g. "POST /v1/orders"'
                )
            if not policies:
                raise ValueError(f'route."{route}": needs at least one policy')
            lists.append((f'route."{route}"', policies))
        default_names = {policy.name for policy in self.default}
        for where, policies in lists:
            seen: set[str] = set()
            for policy in policies:
                if policy.name in seen:
                    raise ValueError(f"{where}: policy {policy.name!r} is listed twice")
                seen.add(policy.name)
                if where != "default" and policy.name in default_names:
                    raise ValueError(
                        f"{where}: policy {policy.name!r} is already a [[default]] policy, which"
                        " every route has; give the route's limit its own name"
                    )
                size = (policy.capacity, policy.per_seconds)
                first = sizes.setdefault(policy.name, (size, where))
                if first[0] != size:
                    raise ValueError(
                        f"{where}: policy {policy.name!r} is capacity={size[0]},"
                        f" per_seconds={size[1]} but {first[1]} gives it capacity={first[0][0]},"
                        f" per_seconds={first[0][1]}; one name is one bucket"
                    )

    @classmethod
    def from_toml(cls, text: str) -> Limits:
        """Parse the configuration described in the module docstring. ``ValueError`` names the
        offending key, e.g. ``route."POST /v1/orders"[0].capacity must be at least 1``."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"rate limits are not valid TOML: {exc}") from exc
        unknown = sorted(set(data) - {"default", "route"})
        if unknown:
            raise ValueError(
                f'{unknown[0]}: unknown key (expected [[default]] and [[route."..."]] tables)'
            )
        default = _policies(data.get("default", []), "default")
        routes_table = data.get("route", {})
        if not isinstance(routes_table, dict):
            raise ValueError('route: must be tables, e.g. [[route."POST /v1/orders"]]')
        routes = {
            route: _policies(items, f'route."{route}"') for route, items in routes_table.items()
        }
        return cls(default=default, routes=routes)

    def policies_for(self, route: str) -> list[Policy]:
        """The default policies, then the route's own (none for a route not configured)."""
        return [*self.default, *self.routes.get(route, ())]


def _policies(items: object, where: str) -> list[Policy]:
    if not isinstance(items, list):
        raise ValueError(f"{where}: must be an array of tables ([[{where}]])")
    found = []
    for index, item in enumerate(items):
        here = f"{where}[{index}]"
        if not isinstance(item, dict):
            raise ValueError(f"{here}: must be a table with name, capacity and per_seconds")
        unknown = sorted(set(item) - _POLICY_KEYS)
        if unknown:
            raise ValueError(f"{here}.{unknown[0]}: unknown key (expected {sorted(_POLICY_KEYS)})")
        missing = sorted(_POLICY_KEYS - set(item))
        if missing:
            raise ValueError(f"{here}.{missing[0]}: missing")
        try:
            found.append(Policy(item["name"], item["capacity"], item["per_seconds"]))
        except ValueError as exc:
            raise ValueError(f"{here}.{exc}") from None
    return found


def _seconds(value: float) -> int:
    """Delay-seconds for a header: whole seconds, rounded up (rounding down would tell a client
    to come back before the token exists). Rounded to the microsecond first, so float noise
    (6.000000000001) does not add a second."""
    return max(0, math.ceil(round(value, 6)))


@dataclass(frozen=True)
class Decision:
    """The outcome of one check, reported for one policy: the refusing one, or when every bucket
    allowed, the one closest to refusing.

    ``remaining`` is whole tokens left. ``reset_seconds`` is the draft's effective window (its
    section 4.1.2): how long the client can use no more than ``remaining``, which for a token
    bucket is the time until one more whole token has dripped in. On a refusal it is the same
    moment as ``retry_after``, which the draft's section 6 asks for (Retry-After not before the
    end of the window). ``retry_after`` is 0 when allowed."""

    allowed: bool
    policy: Policy
    remaining: int
    reset_seconds: float
    retry_after: float

    def headers(self) -> list[tuple[str, str]]:
        """``RateLimit-Policy`` and ``RateLimit`` (draft-ietf-httpapi-ratelimit-headers-11,
        sections 3 and 4: structured-field lists of one item each), and ``Retry-After`` in
        integer seconds, rounded up, when refused. The partition key parameter (``pk``) is left
        out: ours would carry a user's id or an address, which section 6.1 says not to return."""
        policy = self.policy
        fields = [
            (
                "RateLimit-Policy",
                f'"{policy.name}";q={policy.capacity};w={max(1, _seconds(policy.per_seconds))}',
            ),
            ("RateLimit", f'"{policy.name}";r={self.remaining};t={_seconds(self.reset_seconds)}'),
        ]
        if not self.allowed:
            fields.append(("Retry-After", str(max(1, _seconds(self.retry_after)))))
        return fields


class Store(Protocol):
    """Where buckets live. Both methods are atomic per (key, policy name), also across the
    processes that share the store; ``now`` is the caller's clock in seconds, which every
    process sharing the store must share too."""

    def take(self, key: str, policy: Policy, now: float) -> tuple[bool, float, float]:
        """Refill the bucket up to ``now``, then take one token if there is one. Returns
        (allowed, tokens left, seconds until the bucket holds one whole token)."""
        ...

    def refund(self, key: str, policy: Policy, now: float) -> None:
        """Give back a token taken for a request that another bucket refused (never past
        capacity)."""
        ...


def _refill(tokens: float, updated: float, policy: Policy, now: float) -> tuple[float, float]:
    """The bucket at ``now``: (tokens, time it is now counted up to).

    A reading behind the stored time refills nothing and leaves the stored time alone: that is a
    replica whose clock reading lost the race for the write lock, and moving the time back would
    refill the same interval twice. A clock more than a whole refill period behind is not a race
    but a clock that was set back; restarting from it keeps the bucket from freezing."""
    if now < updated - policy.per_seconds:
        return tokens, now
    elapsed = max(0.0, now - updated)
    # Multiply before dividing: 6 s * 10 tokens / 60 s is exactly 1.0, 6 s * (10 / 60) is not.
    refilled = min(float(policy.capacity), tokens + elapsed * policy.capacity / policy.per_seconds)
    return refilled, max(updated, now)


def _take(tokens: float, policy: Policy) -> tuple[bool, float, float]:
    if tokens >= 1 - _EPSILON:
        left = max(0.0, tokens - 1)
        return True, left, _until_one(left, policy)
    return False, tokens, _until_one(tokens, policy)


def _until_one(tokens: float, policy: Policy) -> float:
    if tokens >= 1 - _EPSILON:
        return 0.0
    return (1 - tokens) * policy.per_seconds / policy.capacity


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float
    per_seconds: float


class MemoryStore:
    """Buckets in this process: per replica. Thread safe (one lock around each take/refund).

    Memory stays bounded by the keys active within one refill period: a bucket idle for its whole
    ``per_seconds`` has refilled to full, which is what a missing bucket means too, so a sweep
    (at most once every ``sweep_every`` seconds of the callers' clock, inside a ``take``) drops it
    without changing any answer."""

    def __init__(self, *, sweep_every: float = 60.0) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._sweep_every = sweep_every
        self._swept: float | None = None

    def take(self, key: str, policy: Policy, now: float) -> tuple[bool, float, float]:
        with self._lock:
            self._maybe_sweep(now)
            bucket = self._buckets.get((key, policy.name))
            if bucket is None:
                bucket = _Bucket(float(policy.capacity), now, policy.per_seconds)
                self._buckets[(key, policy.name)] = bucket
            tokens, bucket.updated = _refill(bucket.tokens, bucket.updated, policy, now)
            allowed, bucket.tokens, wait = _take(tokens, policy)
            bucket.per_seconds = policy.per_seconds
            return allowed, bucket.tokens, wait

    def refund(self, key: str, policy: Policy, now: float) -> None:
        with self._lock:
            bucket = self._buckets.get((key, policy.name))
            if bucket is None:  # swept: it is full already
                return
            tokens, bucket.updated = _refill(bucket.tokens, bucket.updated, policy, now)
            bucket.tokens = min(float(policy.capacity), tokens + 1)

    def __len__(self) -> int:
        """How many buckets are held (the ones not yet known to be full)."""
        with self._lock:
            return len(self._buckets)

    def _maybe_sweep(self, now: float) -> None:
        if self._swept is not None and now - self._swept < self._sweep_every:
            return
        self._swept = now
        idle = [name for name, b in self._buckets.items() if now - b.updated >= b.per_seconds]
        for name in idle:
            del self._buckets[name]


_SCHEMA = """
CREATE TABLE IF NOT EXISTS rate_buckets (
    key TEXT NOT NULL,
    policy TEXT NOT NULL,
    tokens REAL NOT NULL,
    updated REAL NOT NULL,
    per_seconds REAL NOT NULL,
    PRIMARY KEY (key, policy)
) WITHOUT ROWID
"""


class _Row(NamedTuple):
    tokens: float
    updated: float


class SqliteStore:
    """Buckets in one SQLite file shared by every gateway replica on the host: one row per
    (key, policy name), read and written in one ``BEGIN IMMEDIATE`` transaction, so SQLite's
    write lock makes each take atomic across processes and the replicas see one count.

    Why SQLite: it needs no extra server (the standard library has it) and every process on the
    host that opens the file shares its lock. It does not span hosts; replicas on several hosts
    need a network store: Redis (Kong's "redis" policy) or Envoy's global rate limit service.

    Thread safe: one connection per store, used under a lock (SQLite serialises writers anyway).
    The file is in WAL mode with ``synchronous=NORMAL``: a power cut may lose the last counts,
    which only hands some clients a fresh bucket, not worth an fsync per request. Rows of buckets
    idle for a whole refill period (full again, the same as no row) are deleted at most once
    every ``sweep_every`` seconds by each process."""

    def __init__(
        self, path: str | Path, *, busy_timeout: float = 10.0, sweep_every: float = 60.0
    ) -> None:
        self.path = str(path)
        self._busy_timeout = busy_timeout
        self._sweep_every = sweep_every
        self._swept: float | None = None
        self._lock = threading.Lock()
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves; timeout: how long BEGIN waits
        # for another replica's write lock.
        self._conn = sqlite3.connect(
            self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        self._enable_wal()
        self._conn.execute("PRAGMA synchronous = NORMAL")
        with self._transaction():
            self._conn.execute(_SCHEMA)

    def take(self, key: str, policy: Policy, now: float) -> tuple[bool, float, float]:
        with self._lock:
            self._maybe_sweep(now)
            with self._transaction():
                row = self._read(key, policy)
                if row is None:
                    tokens, updated = float(policy.capacity), now
                else:
                    tokens, updated = _refill(row.tokens, row.updated, policy, now)
                allowed, left, wait = _take(tokens, policy)
                self._write(key, policy, left, updated)
            return allowed, left, wait

    def refund(self, key: str, policy: Policy, now: float) -> None:
        with self._lock, self._transaction():
            row = self._read(key, policy)
            if row is None:  # swept: it is full already
                return
            tokens, updated = _refill(row.tokens, row.updated, policy, now)
            self._write(key, policy, min(float(policy.capacity), tokens + 1), updated)

    def __len__(self) -> int:
        """How many buckets are held (the ones not yet known to be full)."""
        with self._lock:
            count = self._conn.execute("SELECT count(*) FROM rate_buckets").fetchone()[0]
            return int(count)

    def close(self) -> None:
        """Close the connection; the file and its counts stay for the other replicas."""
        with self._lock:
            self._conn.close()

    def _read(self, key: str, policy: Policy) -> _Row | None:
        found = self._conn.execute(
            "SELECT tokens, updated FROM rate_buckets WHERE key = ? AND policy = ?",
            (key, policy.name),
        ).fetchone()
        return None if found is None else _Row(float(found[0]), float(found[1]))

    def _write(self, key: str, policy: Policy, tokens: float, updated: float) -> None:
        self._conn.execute(
            "INSERT INTO rate_buckets (key, policy, tokens, updated, per_seconds)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (key, policy) DO UPDATE SET"
            " tokens = excluded.tokens, updated = excluded.updated,"
            " per_seconds = excluded.per_seconds",
            (key, policy.name, tokens, updated, policy.per_seconds),
        )

    def _maybe_sweep(self, now: float) -> None:
        if self._swept is not None and now - self._swept < self._sweep_every:
            return
        self._swept = now
        with self._transaction():
            self._conn.execute("DELETE FROM rate_buckets WHERE updated + per_seconds <= ?", (now,))

    def _transaction(self) -> _Transaction:
        return _Transaction(self._conn)

    def _enable_wal(self) -> None:
        # Switching to WAL needs the file to itself and SQLite does not wait for that through
        # the busy timeout, so replicas opening the file together get "database is locked":
        # poll until the busy timeout has passed (the WAL mode then stays with the file).
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                mode = str(self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
            else:
                if mode.lower() in ("wal", "memory"):
                    return
            if time.monotonic() > deadline:
                raise sqlite3.OperationalError(f"{self.path}: could not switch to WAL (locked)")
            time.sleep(0.005)  # poll interval within the busy-timeout deadline


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, or ``ROLLBACK`` when the block raises."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        self._conn.execute("COMMIT" if kind is None else "ROLLBACK")


class _Taken(NamedTuple):
    key: str
    policy: Policy
    allowed: bool
    tokens: float
    wait: float


class RateLimiter:
    """Checks a request against every policy of its route for every key it carries.

    Thread safe when its store is (both stores here are). The clock must be one that every
    process sharing the store reads alike: ``time.time`` (the default) is; ``time.monotonic``
    only within one boot of one host, so a SQLite file kept across a reboot would see time go
    back. Tests pass a fake clock.

    A refused request spends no token: the buckets that had admitted it get theirs back
    (``Store.refund``). Otherwise a user refused by their own limit, retrying in a loop, would
    drain the bucket of the client app that every other user of that app shares. Between the
    take and the refund a concurrent request may see one token fewer: the error is a refusal,
    never an extra admission."""

    def __init__(
        self, limits: Limits, store: Store, clock: Callable[[], float] = time.time
    ) -> None:
        self._limits = limits
        self._store = store
        self._clock = clock

    @property
    def limits(self) -> Limits:
        """The policies this limiter applies."""
        return self._limits

    def check(self, route: str, keys: Sequence[str]) -> Decision:
        """Take one token from every (key, policy) bucket of ``route``. Refused when any bucket
        is empty: the Decision is then the refusing bucket with the longest ``retry_after``.
        Allowed otherwise: the Decision is the bucket with the fewest tokens left (what the
        RateLimit header reports). A key given twice counts once."""
        unique = list(dict.fromkeys(keys))
        if not unique:
            raise ValueError("check needs at least one key (client, user or ip)")
        now = self._clock()
        taken = [
            _Taken(key, policy, *self._store.take(key, policy, now))
            for key in unique
            for policy in self._limits.policies_for(route)
        ]
        refused = [t for t in taken if not t.allowed]
        if refused:
            for t in taken:
                if t.allowed:
                    self._store.refund(t.key, t.policy, now)
            worst = max(refused, key=lambda t: t.wait)
            log.debug(
                "rate limited: route=%s key=%s policy=%s retry_after=%.3fs",
                route,
                worst.key,
                worst.policy.name,
                worst.wait,
            )
            return _decision(worst)
        decisions = [_decision(t) for t in taken]
        return min(decisions, key=lambda d: (d.remaining, -d.reset_seconds))


def _decision(taken: _Taken) -> Decision:
    policy = taken.policy
    remaining = min(policy.capacity, max(0, math.floor(taken.tokens + _EPSILON)))
    # The effective window: until the bucket holds remaining + 1 whole tokens.
    window = max(0.0, (remaining + 1 - taken.tokens) * policy.per_seconds / policy.capacity)
    return Decision(
        allowed=taken.allowed,
        policy=policy,
        remaining=remaining,
        reset_seconds=window,
        retry_after=0.0 if taken.allowed else taken.wait,
    )


__all__ = [
    "Decision",
    "Limits",
    "MemoryStore",
    "Policy",
    "RateLimiter",
    "SqliteStore",
    "Store",
]
