"""Identity's events on the wire: each domain event and its Avro record on identity.events.v1."""

from __future__ import annotations

from identity.domain.events import (
    AccountLocked,
    IdentityEvent,
    LoginFailed,
    LoginSucceeded,
    MfaEnrolled,
    RecoveryCodeUsed,
    RefreshTokenReuseDetected,
    RoleGranted,
    SessionRevoked,
    TokenRevoked,
    UserRegistered,
)
from meshkit.events import EventMap

EVENTS: EventMap[IdentityEvent] = EventMap("shop.identity.v1")
"""Keyed by the account (per-account order in Kafka); a failed login for an email that has no
account is keyed by its source address."""
EVENTS.add(UserRegistered, key=lambda e: e.user_id)
EVENTS.add(RoleGranted, key=lambda e: e.user_id)
EVENTS.add(LoginSucceeded, key=lambda e: e.user_id)
EVENTS.add(LoginFailed, key=lambda e: e.user_id or e.source_address)
EVENTS.add(AccountLocked, key=lambda e: e.user_id)
EVENTS.add(MfaEnrolled, key=lambda e: e.user_id)
EVENTS.add(RecoveryCodeUsed, key=lambda e: e.user_id)
EVENTS.add(SessionRevoked, key=lambda e: e.user_id)
EVENTS.add(RefreshTokenReuseDetected, key=lambda e: e.user_id)
EVENTS.add(TokenRevoked, key=lambda e: e.user_id)
