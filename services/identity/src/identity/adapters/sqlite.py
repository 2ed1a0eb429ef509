"""SQLite storage for identity: accounts, sessions, token families, codes and its outbox.

Every secret that comes back from a client (refresh tokens, authorization and device codes,
session cookies) is stored as its SHA-256 digest only: they are 256-bit random values, so a
fast hash is enough (no dictionary to attack), and a copy of the database lets no one use them.
Times are Unix seconds (REAL).
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable

from identity.adapters.keys import KEYS_MIGRATION
from identity.domain.model import Account, AuthCode, DeviceCode, Family, Session
from meshkit.db import UnitOfWork
from meshkit.events import OUTBOX_MIGRATION

MIGRATIONS = (
    """
    CREATE TABLE account (
        user_id TEXT PRIMARY KEY,
        email TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        roles TEXT NOT NULL,
        created_at REAL NOT NULL,
        mfa_secret TEXT,
        mfa_pending TEXT,
        mfa_last_step INTEGER
    );
    CREATE TABLE login_failure (
        id INTEGER PRIMARY KEY,
        user_id TEXT,
        source TEXT NOT NULL,
        kind TEXT NOT NULL,
        at REAL NOT NULL
    );
    CREATE INDEX login_failure_user ON login_failure (user_id, at);
    CREATE INDEX login_failure_source ON login_failure (source, kind, at);
    CREATE TABLE recovery_code (
        user_id TEXT NOT NULL,
        digest TEXT NOT NULL,
        used_at REAL,
        PRIMARY KEY (user_id, digest)
    );
    CREATE TABLE session (
        session_id TEXT PRIMARY KEY,
        cookie_digest TEXT NOT NULL UNIQUE,
        user_id TEXT NOT NULL,
        device TEXT NOT NULL,
        created_at REAL NOT NULL,
        last_seen REAL NOT NULL,
        revoked_at REAL
    );
    CREATE INDEX session_user ON session (user_id, created_at);
    CREATE TABLE refresh_family (
        family_id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        client_id TEXT NOT NULL,
        session_id TEXT NOT NULL,
        scope TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        revoked_at REAL,
        revoked_reason TEXT
    );
    CREATE INDEX refresh_family_session ON refresh_family (session_id);
    CREATE TABLE refresh_token (
        digest TEXT PRIMARY KEY,
        family_id TEXT NOT NULL,
        issued_at REAL NOT NULL,
        used_at REAL
    );
    CREATE TABLE access_token (
        jti TEXT PRIMARY KEY,
        sub TEXT NOT NULL,
        client_id TEXT NOT NULL,
        family_id TEXT,
        session_id TEXT,
        expires_at REAL NOT NULL,
        revoked_at REAL
    );
    CREATE INDEX access_token_family ON access_token (family_id);
    CREATE TABLE auth_code (
        digest TEXT PRIMARY KEY,
        client_id TEXT NOT NULL,
        redirect_uri TEXT NOT NULL,
        user_id TEXT NOT NULL,
        session_id TEXT NOT NULL,
        scope TEXT NOT NULL,
        code_challenge TEXT NOT NULL,
        expires_at REAL NOT NULL,
        used_at REAL,
        family_id TEXT
    );
    CREATE TABLE device_code (
        digest TEXT PRIMARY KEY,
        user_code TEXT NOT NULL UNIQUE,
        client_id TEXT NOT NULL,
        scope TEXT NOT NULL,
        expires_at REAL NOT NULL,
        interval REAL NOT NULL,
        last_poll REAL,
        status TEXT NOT NULL,
        user_id TEXT,
        session_id TEXT
    );
    """,
    KEYS_MIGRATION,
    OUTBOX_MIGRATION,
    "ALTER TABLE account ADD COLUMN consecutive_failures INTEGER NOT NULL DEFAULT 0;",
)


def digest(secret: str) -> str:
    """The stored form of a high-entropy secret: SHA-256, hex."""
    return hashlib.sha256(secret.encode()).hexdigest()


_ACCOUNT = (
    "SELECT user_id, email, password_hash, roles, created_at, mfa_secret, mfa_pending,"
    " mfa_last_step, consecutive_failures FROM account"
)
_SESSION = "SELECT session_id, user_id, device, created_at, last_seen, revoked_at FROM session"
_FAMILY = (
    "SELECT family_id, user_id, client_id, session_id, scope, created_at, expires_at, revoked_at"
    " FROM refresh_family"
)
_DEVICE = (
    "SELECT digest, user_code, client_id, scope, expires_at, interval, last_poll, status,"
    " user_id, session_id FROM device_code"
)


def _account(row: tuple[object, ...] | None) -> Account | None:
    if row is None:
        return None
    roles = tuple(r for r in str(row[3]).split(",") if r)
    return Account(
        str(row[0]),
        str(row[1]),
        str(row[2]),
        roles,
        float(row[4]),  # type: ignore[arg-type]
        None if row[5] is None else str(row[5]),
        None if row[6] is None else str(row[6]),
        None if row[7] is None else int(row[7]),  # type: ignore[call-overload]
        int(row[8]),  # type: ignore[call-overload]
    )


def _session(row: tuple[object, ...] | None) -> Session | None:
    return None if row is None else Session(*row)  # type: ignore[arg-type]


class IdentityStore:
    """Identity's tables, over one open transaction (or read snapshot)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    # accounts ---------------------------------------------------------------------------
    def account(self, user_id: str) -> Account | None:
        """The account, or None."""
        return _account(self._conn.execute(f"{_ACCOUNT} WHERE user_id = ?", (user_id,)).fetchone())

    def account_by_email(self, email: str) -> Account | None:
        """The account with this (normalised) email, or None."""
        return _account(self._conn.execute(f"{_ACCOUNT} WHERE email = ?", (email,)).fetchone())

    def add_account(self, account: Account) -> bool:
        """Store a new account; False (nothing stored) when the email is taken."""
        cursor = self._conn.execute(
            "INSERT INTO account (user_id, email, password_hash, roles, created_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (email) DO NOTHING",
            (
                account.user_id,
                account.email,
                account.password_hash,
                ",".join(account.roles),
                account.created_at,
            ),
        )
        return cursor.rowcount == 1

    def set_roles(self, user_id: str, roles: Iterable[str]) -> None:
        """Replace the account's roles."""
        self._conn.execute(
            "UPDATE account SET roles = ? WHERE user_id = ?", (",".join(roles), user_id)
        )

    def set_password_hash(self, user_id: str, password_hash: str) -> None:
        """Replace the stored hash (a rehash with today's parameters)."""
        self._conn.execute(
            "UPDATE account SET password_hash = ? WHERE user_id = ?", (password_hash, user_id)
        )

    def set_mfa_pending(self, user_id: str, secret: str | None) -> None:
        """Hold a secret awaiting its first code."""
        self._conn.execute(
            "UPDATE account SET mfa_pending = ? WHERE user_id = ?", (secret, user_id)
        )

    def enable_mfa(self, user_id: str, secret: str, step: int) -> None:
        """Turn MFA on with ``secret``; ``step`` is the step of the code that confirmed it."""
        self._conn.execute(
            "UPDATE account SET mfa_secret = ?, mfa_pending = NULL, mfa_last_step = ?"
            " WHERE user_id = ?",
            (secret, step, user_id),
        )

    def accept_totp_step(self, user_id: str, step: int) -> bool:
        """Record ``step`` as used; False when it (or a later one) was used already, which a
        concurrent login with the same code may have done since it was read."""
        cursor = self._conn.execute(
            "UPDATE account SET mfa_last_step = ? WHERE user_id = ?"
            " AND (mfa_last_step IS NULL OR mfa_last_step < ?)",
            (step, user_id, step),
        )
        return cursor.rowcount == 1

    # failures ---------------------------------------------------------------------------
    def add_failure(self, user_id: str | None, source: str, kind: str, at: float) -> int:
        """Record a failed attempt (kind: login, user_code or client); for an account's login,
        its consecutive failures now (else 0)."""
        self._conn.execute(
            "INSERT INTO login_failure (user_id, source, kind, at) VALUES (?, ?, ?, ?)",
            (user_id, source, kind, at),
        )
        if user_id is None or kind != "login":
            return 0
        row = self._conn.execute(
            "UPDATE account SET consecutive_failures = consecutive_failures + 1"
            " WHERE user_id = ? RETURNING consecutive_failures",
            (user_id,),
        ).fetchone()
        return 0 if row is None else int(row[0])

    def failures_of_user(self, user_id: str, since: float) -> list[float]:
        """The account's failed logins since ``since``."""
        rows = self._conn.execute(
            "SELECT at FROM login_failure WHERE user_id = ? AND kind = 'login' AND at > ?",
            (user_id, since),
        )
        return [float(r[0]) for r in rows]

    def failures_of_source(self, source: str, kind: str, since: float) -> list[float]:
        """A source address's failed attempts of ``kind`` since ``since``."""
        rows = self._conn.execute(
            "SELECT at FROM login_failure WHERE source = ? AND kind = ? AND at > ?",
            (source, kind, since),
        )
        return [float(r[0]) for r in rows]

    def clear_failures(self, user_id: str) -> None:
        """Forget the account's failures (after a successful login, or an operator's unlock)."""
        self._conn.execute("DELETE FROM login_failure WHERE user_id = ?", (user_id,))
        self._conn.execute(
            "UPDATE account SET consecutive_failures = 0 WHERE user_id = ?", (user_id,)
        )

    def prune_failures(self, before: float) -> int:
        """Drop failures older than any window looks at."""
        return self._conn.execute("DELETE FROM login_failure WHERE at < ?", (before,)).rowcount

    # recovery codes ---------------------------------------------------------------------
    def set_recovery_codes(self, user_id: str, digests: Iterable[str]) -> None:
        """Replace the account's recovery codes."""
        self._conn.execute("DELETE FROM recovery_code WHERE user_id = ?", (user_id,))
        self._conn.executemany(
            "INSERT INTO recovery_code (user_id, digest) VALUES (?, ?)",
            [(user_id, d) for d in digests],
        )

    def unused_recovery_codes(self, user_id: str) -> list[str]:
        """Digests of the account's unused recovery codes."""
        rows = self._conn.execute(
            "SELECT digest FROM recovery_code WHERE user_id = ? AND used_at IS NULL", (user_id,)
        )
        return [str(r[0]) for r in rows]

    def use_recovery_code(self, user_id: str, code_digest: str, at: float) -> bool:
        """Mark one used; False when it was used already."""
        cursor = self._conn.execute(
            "UPDATE recovery_code SET used_at = ? WHERE user_id = ? AND digest = ?"
            " AND used_at IS NULL",
            (at, user_id, code_digest),
        )
        return cursor.rowcount == 1

    # sessions ---------------------------------------------------------------------------
    def add_session(self, session: Session, cookie: str) -> None:
        """Store a new session with its cookie's digest."""
        self._conn.execute(
            "INSERT INTO session (session_id, cookie_digest, user_id, device, created_at,"
            " last_seen) VALUES (?, ?, ?, ?, ?, ?)",
            (
                session.session_id,
                digest(cookie),
                session.user_id,
                session.device,
                session.created_at,
                session.last_seen,
            ),
        )

    def session(self, session_id: str) -> Session | None:
        """The session, live or not."""
        return _session(
            self._conn.execute(f"{_SESSION} WHERE session_id = ?", (session_id,)).fetchone()
        )

    def session_by_cookie(self, cookie: str) -> Session | None:
        """The session this cookie value opens, live or not."""
        return _session(
            self._conn.execute(f"{_SESSION} WHERE cookie_digest = ?", (digest(cookie),)).fetchone()
        )

    def live_sessions(self, user_id: str) -> list[Session]:
        """The account's sessions not revoked, newest first."""
        rows = self._conn.execute(
            f"{_SESSION} WHERE user_id = ? AND revoked_at IS NULL ORDER BY created_at DESC",
            (user_id,),
        )
        return [Session(*r) for r in rows]

    def touch_session(self, session_id: str, at: float) -> None:
        """Record a use of the session."""
        self._conn.execute(
            "UPDATE session SET last_seen = ? WHERE session_id = ?", (at, session_id)
        )

    def revoke_session(self, session_id: str, at: float) -> bool:
        """End the session and everything issued in it; False when it had ended already."""
        cursor = self._conn.execute(
            "UPDATE session SET revoked_at = ? WHERE session_id = ? AND revoked_at IS NULL",
            (at, session_id),
        )
        self._conn.execute(
            "UPDATE refresh_family SET revoked_at = ?, revoked_reason = 'session revoked'"
            " WHERE session_id = ? AND revoked_at IS NULL",
            (at, session_id),
        )
        self._conn.execute(
            "UPDATE access_token SET revoked_at = ? WHERE session_id = ? AND revoked_at IS NULL",
            (at, session_id),
        )
        return cursor.rowcount == 1

    # refresh token families -------------------------------------------------------------
    def add_family(self, family: Family) -> None:
        """Start a family."""
        self._conn.execute(
            "INSERT INTO refresh_family (family_id, user_id, client_id, session_id, scope,"
            " created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                family.family_id,
                family.user_id,
                family.client_id,
                family.session_id,
                family.scope,
                family.created_at,
                family.expires_at,
            ),
        )

    def family(self, family_id: str) -> Family | None:
        """The family, or None."""
        row = self._conn.execute(f"{_FAMILY} WHERE family_id = ?", (family_id,)).fetchone()
        return None if row is None else Family(*row)

    def revoke_family(self, family_id: str, reason: str, at: float) -> None:
        """Revoke the family and every access token minted from it."""
        self._conn.execute(
            "UPDATE refresh_family SET revoked_at = ?, revoked_reason = ?"
            " WHERE family_id = ? AND revoked_at IS NULL",
            (at, reason, family_id),
        )
        self._conn.execute(
            "UPDATE access_token SET revoked_at = ? WHERE family_id = ? AND revoked_at IS NULL",
            (at, family_id),
        )

    def add_refresh_token(self, token: str, family_id: str, at: float) -> None:
        """Store a new refresh token (its digest) in its family."""
        self._conn.execute(
            "INSERT INTO refresh_token (digest, family_id, issued_at) VALUES (?, ?, ?)",
            (digest(token), family_id, at),
        )

    def refresh_token(self, token: str) -> tuple[str, float | None] | None:
        """(family_id, used_at) of a refresh token, or None when unknown."""
        row = self._conn.execute(
            "SELECT family_id, used_at FROM refresh_token WHERE digest = ?", (digest(token),)
        ).fetchone()
        return None if row is None else (str(row[0]), row[1])

    def use_refresh_token(self, token: str, at: float) -> bool:
        """Mark it used (rotated); False when it was used already."""
        cursor = self._conn.execute(
            "UPDATE refresh_token SET used_at = ? WHERE digest = ? AND used_at IS NULL",
            (at, digest(token)),
        )
        return cursor.rowcount == 1

    # access tokens ----------------------------------------------------------------------
    def add_access_token(
        self,
        jti: str,
        sub: str,
        client_id: str,
        *,
        family_id: str | None,
        session_id: str | None,
        expires_at: float,
    ) -> None:
        """Record an issued access token (for revocation and introspection)."""
        self._conn.execute(
            "INSERT INTO access_token (jti, sub, client_id, family_id, session_id, expires_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (jti, sub, client_id, family_id, session_id, expires_at),
        )

    def access_token_revoked(self, jti: str) -> bool:
        """True when the token, its family or its session was revoked, or it is unknown."""
        row = self._conn.execute(
            "SELECT a.revoked_at, f.revoked_at, s.revoked_at FROM access_token a"
            " LEFT JOIN refresh_family f ON f.family_id = a.family_id"
            " LEFT JOIN session s ON s.session_id = a.session_id WHERE a.jti = ?",
            (jti,),
        ).fetchone()
        return row is None or any(v is not None for v in row)

    def revoke_access_token(self, jti: str, client_id: str, at: float) -> bool:
        """Revoke one access token issued to ``client_id``; False when none matched."""
        cursor = self._conn.execute(
            "UPDATE access_token SET revoked_at = ? WHERE jti = ? AND client_id = ?"
            " AND revoked_at IS NULL",
            (at, jti, client_id),
        )
        return cursor.rowcount == 1

    def prune_expired(self, before: float) -> int:
        """Drop access-token rows and codes that expired before ``before`` (their tokens are
        refused on expiry anyway); families are kept until their absolute expiry, so reuse of
        any of their refresh tokens is recognised as long as it could matter."""
        removed = 0
        for sql in (
            "DELETE FROM access_token WHERE expires_at < ?",
            "DELETE FROM auth_code WHERE expires_at < ?",
            "DELETE FROM device_code WHERE expires_at < ?",
            "DELETE FROM refresh_token WHERE family_id IN"
            " (SELECT family_id FROM refresh_family WHERE expires_at < ?)",
            "DELETE FROM refresh_family WHERE expires_at < ?",
        ):
            removed += self._conn.execute(sql, (before,)).rowcount
        return removed

    # authorization codes ----------------------------------------------------------------
    def add_auth_code(self, code: str, stored: AuthCode) -> None:
        """Store a new authorization code (its digest)."""
        self._conn.execute(
            "INSERT INTO auth_code (digest, client_id, redirect_uri, user_id, session_id, scope,"
            " code_challenge, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                digest(code),
                stored.client_id,
                stored.redirect_uri,
                stored.user_id,
                stored.session_id,
                stored.scope,
                stored.code_challenge,
                stored.expires_at,
            ),
        )

    def auth_code(self, code: str) -> AuthCode | None:
        """The stored code, or None."""
        row = self._conn.execute(
            "SELECT client_id, redirect_uri, user_id, session_id, scope, code_challenge,"
            " expires_at, used_at, family_id FROM auth_code WHERE digest = ?",
            (digest(code),),
        ).fetchone()
        return None if row is None else AuthCode(*row)

    def use_auth_code(self, code: str, family_id: str, at: float) -> bool:
        """Mark it redeemed into ``family_id``; False when it was redeemed already."""
        cursor = self._conn.execute(
            "UPDATE auth_code SET used_at = ?, family_id = ? WHERE digest = ? AND used_at IS NULL",
            (at, family_id, digest(code)),
        )
        return cursor.rowcount == 1

    # device codes -----------------------------------------------------------------------
    def add_device_code(self, device_code: str, stored: DeviceCode) -> None:
        """Store a new device authorization."""
        self._conn.execute(
            "INSERT INTO device_code (digest, user_code, client_id, scope, expires_at, interval,"
            " status) VALUES (?, ?, ?, ?, ?, ?, 'pending')",
            (
                digest(device_code),
                stored.user_code,
                stored.client_id,
                stored.scope,
                stored.expires_at,
                stored.interval,
            ),
        )

    def device_code(self, device_code: str) -> DeviceCode | None:
        """By the device's code."""
        row = self._conn.execute(f"{_DEVICE} WHERE digest = ?", (digest(device_code),)).fetchone()
        return None if row is None else DeviceCode(*row)

    def device_code_by_user_code(self, user_code: str) -> DeviceCode | None:
        """By the code the user types."""
        row = self._conn.execute(f"{_DEVICE} WHERE user_code = ?", (user_code,)).fetchone()
        return None if row is None else DeviceCode(*row)

    def polled(self, code_digest: str, at: float, interval: float) -> None:
        """Record a poll, and the interval from now on."""
        self._conn.execute(
            "UPDATE device_code SET last_poll = ?, interval = ? WHERE digest = ?",
            (at, interval, code_digest),
        )

    def decide_device_code(
        self, code_digest: str, status: str, user_id: str | None, session_id: str | None
    ) -> bool:
        """Approve or deny a pending one; False when it was not pending."""
        cursor = self._conn.execute(
            "UPDATE device_code SET status = ?, user_id = ?, session_id = ?"
            " WHERE digest = ? AND status = 'pending'",
            (status, user_id, session_id, code_digest),
        )
        return cursor.rowcount == 1

    def use_device_code(self, code_digest: str) -> bool:
        """Mark an approved one exchanged; False when it was not approved-and-unused."""
        cursor = self._conn.execute(
            "UPDATE device_code SET status = 'used' WHERE digest = ? AND status = 'approved'",
            (code_digest,),
        )
        return cursor.rowcount == 1


class SqliteUnitOfWork(UnitOfWork):
    """Identity's unit of work: its tables and its events in one SQLite transaction."""

    store: IdentityStore

    def bind(self, conn: sqlite3.Connection) -> None:
        """The store over the transaction's connection."""
        self.store = IdentityStore(conn)
