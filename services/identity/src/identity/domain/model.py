"""Accounts, sessions, OAuth clients and the lockout rule. Pure: no I/O, no grpc, no gen/."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from meshkit.errors import Violations

# auditor: reads the audit trail (audit.read), nothing else; a compliance role kept apart from
# admin, so whoever reviews the trail is not whoever changes what it records.
ROLES = ("customer", "support", "admin", "auditor")
# NIST SP 800-63B §5.2.2: at most 100 consecutive failed attempts on one account. Past this, the
# account is checked no more (not even whether the password is right) until an operator unlocks
# it, so the timed lock's "locked" answer, given only to the right password, can leak at most
# this many guesses however many addresses an attacker spreads them over.
MAX_CONSECUTIVE_FAILURES = 100
DEFAULT_ROLE = "customer"
MAX_EMAIL = 254
MAX_ID = 64
MAX_DEVICE = 200
# Deliberately loose (RFC 5321 allows far more than any regex checks well): one @, something on
# both sides, a dot in the domain, no spaces. The address is proven only by using it.
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


@dataclass(frozen=True)
class Account:
    """An account: its login name, password hash, roles and TOTP state."""

    user_id: str
    email: str
    password_hash: str
    roles: tuple[str, ...]
    created_at: float
    mfa_secret: str | None = None  # set once enrollment is confirmed
    mfa_pending: str | None = None  # a secret awaiting its first code
    mfa_last_step: int | None = None  # the last TOTP step accepted (RFC 6238 §5.2: never reuse)
    consecutive_failures: int = 0  # failed logins since the last success, however spread out

    @property
    def mfa_enabled(self) -> bool:
        """Whether logins need a second factor."""
        return self.mfa_secret is not None


@dataclass(frozen=True)
class Session:
    """A server-side login session: one per login, on one device."""

    session_id: str
    user_id: str
    device: str
    created_at: float
    last_seen: float
    revoked_at: float | None = None


@dataclass(frozen=True)
class SessionPolicy:
    """How long a session lives (OWASP Session Management: an idle and an absolute timeout).

    A session unused for ``idle`` seconds, or older than ``absolute``, has ended: its cookie no
    longer logs in, and the refresh tokens issued in it no longer refresh (RFC 9700 §4.14.2:
    refresh tokens SHOULD expire after a period of inactivity). A refresh counts as a use.
    """

    idle: float = 7 * 86400.0
    absolute: float = 30 * 86400.0

    def live(self, session: Session | None, now: float) -> bool:
        """Whether ``session`` exists, was not revoked, and has not timed out."""
        return (
            session is not None
            and session.revoked_at is None
            and now - session.last_seen < self.idle
            and now - session.created_at < self.absolute
        )


@dataclass(frozen=True)
class Client:
    """An OAuth client, from the clients file."""

    client_id: str
    public: bool
    grant_types: tuple[str, ...]
    redirect_uris: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()
    first_party: bool = True
    secret: str | None = field(default=None, repr=False)  # confidential clients only
    roles: tuple[str, ...] = ()  # what its client_credentials tokens carry
    response_types: tuple[str, ...] = ()  # "code", and "token" only when implicit is allowed

    def allows(self, grant_type: str) -> bool:
        """Whether the client may use ``grant_type``."""
        return grant_type in self.grant_types


@dataclass(frozen=True)
class Family:
    """A refresh token family: every refresh token descended from one authorization."""

    family_id: str
    user_id: str
    client_id: str
    session_id: str
    scope: str
    created_at: float
    expires_at: float
    revoked_at: float | None


@dataclass(frozen=True)
class AuthCode:
    """An authorization code, as stored."""

    client_id: str
    redirect_uri: str
    user_id: str
    session_id: str
    scope: str
    code_challenge: str
    expires_at: float
    used_at: float | None
    family_id: str | None


@dataclass(frozen=True)
class DeviceCode:
    """A device authorization, as stored."""

    digest: str
    user_code: str
    client_id: str
    scope: str
    expires_at: float
    interval: float
    last_poll: float | None
    status: str  # pending, approved, denied, used
    user_id: str | None
    session_id: str | None


@dataclass(frozen=True)
class Principal:
    """Who a verified access token acts for."""

    sub: str
    client_id: str
    scope: str
    roles: tuple[str, ...]
    session_id: str | None
    jti: str

    def has_role(self, role: str) -> bool:
        """Whether the token carries ``role``."""
        return role in self.roles


@dataclass(frozen=True)
class Lockout:
    """Failures in a window lock (an account, or a source address) with a growing delay.

    After ``threshold`` failures within ``window`` seconds, attempts are refused until
    ``base_delay * 2 ** (failures - threshold)`` seconds (at most ``max_delay``) after the last
    failure: each further failure doubles the wait (OWASP's exponential lockout), and the lock
    lifts by itself, so lockout cannot be turned into a permanent denial of service.
    """

    threshold: int = 5
    window: float = 15 * 60.0
    base_delay: float = 60.0
    max_delay: float = 3600.0

    def recent(self, failures: Sequence[float], now: float) -> list[float]:
        """The failure times within the window before ``now``, oldest first."""
        return sorted(t for t in failures if now - self.window < t <= now)

    def locked_until(self, failures: Sequence[float], now: float) -> float | None:
        """When attempts may be made again, or None when not locked now."""
        recent = self.recent(failures, now)
        if len(recent) < self.threshold:
            return None
        delay = min(self.base_delay * 2 ** (len(recent) - self.threshold), self.max_delay)
        until = recent[-1] + delay
        return until if until > now else None


def normalise_email(email: str) -> str:
    """The login name as stored and looked up: trimmed, lower-cased."""
    return email.strip().lower()


def validate_email(violations: Violations, email: str, field_path: str = "email") -> None:
    """An email address: required, at most MAX_EMAIL characters, roughly name@domain.tld."""
    if not violations.check(email.strip() != "", field_path, "is required"):
        return
    violations.check(len(email) <= MAX_EMAIL, field_path, f"must be at most {MAX_EMAIL} characters")
    violations.check(bool(_EMAIL.fullmatch(email.strip())), field_path, "must be an email address")


def validate_role(violations: Violations, role: str) -> None:
    """One of ROLES."""
    violations.check(role in ROLES, "role", f"must be one of {', '.join(ROLES)}")


def validate_id(violations: Violations, value: str, field_path: str) -> None:
    """An id is 1 to MAX_ID characters."""
    if violations.check(value != "", field_path, "is required"):
        violations.check(len(value) <= MAX_ID, field_path, f"must be at most {MAX_ID} characters")
