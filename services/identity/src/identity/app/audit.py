"""Identity's audit records: what it writes to audit.events.v1, and how (issue 14, item 5).

Every record is ``uow.publish(AuditEntry(...))`` in the unit of work of the change it describes
(or beside the identity event it accompanies), so the record exists exactly when the change
does. The kit routes an ``AuditEntry`` to the audit topic; identity's EventMap never sees one.

Action names follow OWASP's logging vocabulary (authn_*, authz_*, session_*, user_*). The
resource is always the account (``Account``, its user id; empty for a login attempt on an email
with no account). Who acted is given explicitly: the HTTP side has no RPC context for the kit
to read it from, and on the gRPC side the verified token is identity's own ``Principal``. Where
the request came from is given explicitly on the HTTP side (the client address) and left to the
kit (the RPC's peer) on the gRPC side.

Never in a record: a password, a token, a TOTP or recovery code, a session cookie, a secret, or
the email typed into a failed login (people type their password into the email field often
enough that OWASP says not to log what was typed there).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping

from identity.domain.model import Account, Principal
from meshkit.audit import SUCCESS, Actor, AuditEntry

USER_CREATED = "user_created"
LOGIN_SUCCESS = "authn_login_success"
LOGIN_FAIL = "authn_login_fail"
LOGIN_LOCK = "authn_login_lock"
TOKEN_REUSE = "authn_token_reuse"  # noqa: S105  (an action name, not a secret)
TOKEN_REVOKED = "authn_token_revoked"  # noqa: S105
CLIENT_FAIL = "authn_client_fail"
MFA_ENROLLMENT_STARTED = "mfa_enrollment_started"
MFA_ENROLLED = "mfa_enrolled"
MFA_RECOVERY_CODE_USED = "mfa_recovery_code_used"
SESSION_REVOKED = "session_revoked"
SESSION_REVOKED_ALL = "session_revoked_all"
AUTHZ_CHANGE = "authz_change"

RESOURCE = "Account"


def actor_of(caller: Principal) -> Actor:
    """The actor a verified access token names."""
    return Actor(subject=caller.sub, roles=caller.roles, client_id=caller.client_id)


def actor_of_account(account: Account | None, client_id: str = "") -> Actor:
    """The account acting for itself (a login, a logout); nobody for an unknown email."""
    if account is None:
        return Actor(client_id=client_id)
    return Actor(subject=account.user_id, roles=account.roles, client_id=client_id)


def entry(
    action: str,
    user_id: str | None,
    *,
    actor: Actor,
    at: datetime.datetime,
    outcome: str = SUCCESS,
    reason: str = "",
    source: str = "",
    details: Mapping[str, str] | None = None,
) -> AuditEntry:
    """An audit record of ``action`` on the account ``user_id`` (None: no account), at ``at``
    (the use case's clock, the same instant as the identity event beside it)."""
    return AuditEntry(
        action,
        outcome=outcome,
        resource_type=RESOURCE,
        resource_id=user_id or "",
        reason=reason,
        details=dict(details or {}),
        actor=actor,
        source_address=source,
        occurred_at=at,
    )
