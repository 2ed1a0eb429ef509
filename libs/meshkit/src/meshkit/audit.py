"""Audit records: every important action as one ``mesh.audit.v1.AuditRecorded`` on
``audit.events.v1``, written through the acting service's outbox in the same transaction as the
change it describes, so a record exists exactly when its change does (NIST SP 800-92; OWASP's
logging cheat sheet: who, what, which resource, outcome, when, from where, the trace id).

A service writes one inside its unit of work like any event::

    uow.publish(AuditEntry("orders.place", resource_type="Order", resource_id=order.id))

The kit fills in the rest: who (the verified caller of the current RPC, or the identity a saga
step acts for; see ``meshkit.authz``), the service, when, from where and the trace id. A record
never holds a secret: ``details`` is for plain facts (a SKU, a quantity), and ``AuditEntry``
refuses keys that name a secret (password, token, code, secret), so a careless call fails its
first test instead of leaking.

The audit service chains the records into its tamper-evident store; see services/audit.
"""

from __future__ import annotations

import datetime
import re
import sqlite3
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from meshkit import authz

if TYPE_CHECKING:
    from meshkit.events import Outbox

AUDIT_NAMESPACE = "mesh.audit.v1"
AUDIT_EVENT = "mesh.audit.v1.AuditRecorded"
AUDIT_TOPIC = "audit.events.v1"

SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
DENIED = "DENIED"
OUTCOMES = (SUCCESS, FAILURE, DENIED)

# A details key with one of these words is refused: a record must never carry a secret. Words,
# not substrings: "country_code" and "company" are facts, "payment_token" and "totp_code" not.
_SECRET_WORDS = frozenset(
    {"password", "passwd", "passphrase", "token", "secret", "otp", "totp", "credential",
     "credentials", "cvv", "pan", "pin", "cookie"}
)  # fmt: skip
_SECRET_CODES = re.compile(r"(^|_)(auth|authorization|recovery|totp|otp|mfa|device|user)_code$")


def _names_a_secret(key: str) -> bool:
    words = re.split(r"[^a-z0-9]+", key.lower())
    return (
        bool(_SECRET_WORDS.intersection(words))
        or key.lower() == "code"
        or bool(_SECRET_CODES.search(key.lower()))
    )


@dataclass(frozen=True)
class Actor:
    """Who acted: a user (token ``sub`` and roles), or a service acting on behalf of one."""

    subject: str = ""
    roles: tuple[str, ...] = ()
    client_id: str = ""
    service: str = ""
    on_behalf_of: str = ""

    @classmethod
    def of(cls, principal: authz.Principal | None) -> Actor:
        """The actor of a verified caller (an empty actor for nobody)."""
        if principal is None:
            return cls()
        return cls(
            subject=principal.subject,
            roles=principal.roles,
            client_id=principal.client_id,
            service=principal.service,
            on_behalf_of=principal.on_behalf_of,
        )


@dataclass(frozen=True)
class AuditEntry:
    """One important action, as a service states it. ``actor``, ``source_address`` and
    ``trace_id`` default to the current request's (or the saga step's) when left empty."""

    action: str
    outcome: str = SUCCESS
    resource_type: str = ""
    resource_id: str = ""
    reason: str = ""
    details: Mapping[str, str] = field(default_factory=dict)
    actor: Actor | None = None
    source_address: str = ""
    trace_id: str = ""
    audit_id: str = ""
    occurred_at: datetime.datetime | None = None

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, not {self.outcome!r}")
        secret = [k for k in self.details if _names_a_secret(k)]
        if secret:
            raise ValueError(f"audit details must not carry secrets: {secret}")


def _trace_id() -> str:
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.trace_id else ""


def to_record(entry: AuditEntry, service: str) -> dict[str, Any]:
    """The ``AuditRecorded`` record of ``entry`` written by ``service``, with the current
    request's caller, address and trace id where the entry leaves them empty."""
    actor = entry.actor if entry.actor is not None else Actor.of(authz.current_principal())
    occurred = entry.occurred_at or datetime.datetime.now(datetime.UTC)
    return {
        "audit_id": entry.audit_id or str(uuid.uuid4()),
        "occurred_at": occurred,
        "service": service,
        "action": entry.action,
        "outcome": entry.outcome,
        "reason": entry.reason,
        "resource_type": entry.resource_type,
        "resource_id": entry.resource_id,
        "actor": {
            "subject": actor.subject,
            "roles": list(actor.roles),
            "client_id": actor.client_id,
            "service": actor.service,
            "on_behalf_of": actor.on_behalf_of,
        },
        "source_address": entry.source_address or authz.current_peer(),
        "trace_id": entry.trace_id or _trace_id(),
        "details": {str(k): str(v) for k, v in entry.details.items()},
    }


class AuditTrail:
    """Appends audit records to a service's outbox (see the module doc). Thread-safe."""

    def __init__(self, outbox: Outbox, service: str) -> None:
        self._outbox = outbox
        self.service = service

    def record(self, conn: sqlite3.Connection, entry: AuditEntry) -> str:
        """Append ``entry`` in ``conn``'s open transaction; returns its audit id (also the
        record's ``ce_id`` and Kafka key, so a redelivery is recognised downstream)."""
        record = to_record(entry, self.service)
        audit_id = str(record["audit_id"])
        self._outbox.append(
            conn,
            AUDIT_EVENT,
            record,
            key=audit_id,
            event_id=audit_id,
            time=record["occurred_at"],
        )
        return audit_id
