"""What happened in identity, as facts other contexts may react to (past tense, immutable).

None of them ever carries a password, a one-time code, a token or a secret: only ids, names of
what happened, and where from.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass


@dataclass(frozen=True)
class UserRegistered:
    """An account was registered."""

    user_id: str
    email: str
    roles: list[str]
    occurred_at: datetime.datetime


@dataclass(frozen=True)
class RoleGranted:
    """An admin granted a role."""

    user_id: str
    role: str
    granted_by: str
    occurred_at: datetime.datetime


@dataclass(frozen=True)
class LoginSucceeded:
    """A login succeeded and began a session."""

    user_id: str
    session_id: str
    client_id: str
    source_address: str
    mfa: bool
    occurred_at: datetime.datetime


@dataclass(frozen=True)
class LoginFailed:
    """A login failed (user_id None: the email has no account)."""

    user_id: str | None
    reason: str
    source_address: str
    failures: int
    occurred_at: datetime.datetime


@dataclass(frozen=True)
class AccountLocked:
    """An account was locked after repeated failures."""

    user_id: str
    failures: int
    locked_until: datetime.datetime | None  # None: until an operator unlocks it
    occurred_at: datetime.datetime


@dataclass(frozen=True)
class MfaEnrolled:
    """TOTP MFA was turned on."""

    user_id: str
    recovery_codes: int
    occurred_at: datetime.datetime


@dataclass(frozen=True)
class RecoveryCodeUsed:
    """A recovery code was used in place of a TOTP code."""

    user_id: str
    remaining: int
    occurred_at: datetime.datetime


@dataclass(frozen=True)
class SessionRevoked:
    """A session ended, with its tokens."""

    user_id: str
    session_id: str
    reason: str
    occurred_at: datetime.datetime


@dataclass(frozen=True)
class RefreshTokenReuseDetected:
    """A rotated refresh token came back: its family was revoked."""

    user_id: str
    family_id: str
    client_id: str
    session_id: str
    occurred_at: datetime.datetime


@dataclass(frozen=True)
class TokenRevoked:
    """A token was revoked at the revocation endpoint."""

    user_id: str
    client_id: str
    token_type: str
    family_id: str
    occurred_at: datetime.datetime


IdentityEvent = (
    UserRegistered
    | RoleGranted
    | LoginSucceeded
    | LoginFailed
    | AccountLocked
    | MfaEnrolled
    | RecoveryCodeUsed
    | SessionRevoked
    | RefreshTokenReuseDetected
    | TokenRevoked
)
