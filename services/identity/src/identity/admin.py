"""``python -m identity.admin``: operator commands on identity's own database.

Only an admin grants a role over the API, so the first admin is made here, by whoever operates
the service (access to its database is the proof). Reads the same IDENTITY_* settings as the
service, so it works on the database the running service uses; its events and audit records go
through the same outbox, and the running service's relay publishes them.

    python -m identity.admin grant-role ann@example.com admin
    python -m identity.admin unlock ann@example.com
    python -m identity.admin token --role admin          # an access token, for local development

Exit codes: 0 done, 1 the account or identity's database is missing (or the registry, which
the audit record needs, is unreachable), 2 bad usage or a bad setting.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from collections.abc import Callable, Mapping, Sequence

from identity.adapters.events import EVENTS
from identity.adapters.keys import SigningKeys, SqliteKeyStore
from identity.adapters.sqlite import MIGRATIONS, SqliteUnitOfWork
from identity.bootstrap import SERVICE
from identity.config import Settings
from identity.domain.events import IdentityEvent, RoleGranted
from identity.domain.model import MAX_ID, ROLES, normalise_email
from meshkit.audit import AUDIT_NAMESPACE, Actor, AuditEntry, AuditTrail
from meshkit.db import Database, EventSink
from meshkit.errors import MeshError
from meshkit.events import EventCatalog, EventPublisher, Outbox
from meshkit.settings import SettingsError

OPERATOR = "operator"  # granted_by for roles granted here, the actor of its audit records
MESH_CLI = "mesh-cli"  # the client_id of the tokens minted here (no such OAuth client exists)
DEV_TOKEN_TTL = 3600
DEV_SCOPE = "orders"  # what the shop's own apps ask for on a person's behalf
_OPERATOR_ACTOR = Actor(subject=OPERATOR, client_id="identity.admin")


class Missing(LookupError):
    """What a command needs is not there (an account, identity's database); exit 1."""


def _publisher(settings: Settings) -> EventPublisher[IdentityEvent]:
    """The outbox the running service writes to: the same contracts (its events and the audit
    records), the same source, the same service name on the records."""
    outbox = Outbox(
        EventCatalog.from_packages(EVENTS.namespace, AUDIT_NAMESPACE),
        settings.schema_registry_url,
        source=SERVICE.source,
    )
    return EventPublisher(outbox, EVENTS, AuditTrail(outbox, SERVICE.name))


def _existing_database(settings: Settings) -> Database:
    """Identity's database; Missing when there is none yet (``Database`` would create an empty
    one, and a token signed by a key no running identity publishes is of no use)."""
    if not settings.db_path.is_file():
        raise Missing(
            f"identity's database {settings.db_path} does not exist: run mesh up first"
            " (or set IDENTITY_DB_PATH to the database a running identity uses)"
        )
    return Database(settings.db_path, MIGRATIONS)


def grant_role(email: str, role: str, env: Mapping[str, str] | None = None) -> str:
    """Grant ``role`` to the account ``email``; returns what happened, in a sentence. Raises
    Missing when there is no such account. The grant and its audit record commit together."""
    settings = SERVICE.load_settings(env)
    db = Database(settings.db_path, MIGRATIONS)
    try:
        with SqliteUnitOfWork(db, _publisher(settings)) as uow:
            account = uow.store.account_by_email(normalise_email(email))
            if account is None:
                raise Missing(f"no account with email {email!r} in {settings.db_path}")
            if role in account.roles:
                return f"{account.email} ({account.user_id}) has the role {role} already"
            now = datetime.datetime.now(datetime.UTC)
            uow.store.set_roles(account.user_id, (*account.roles, role))
            uow.publish(RoleGranted(account.user_id, role, OPERATOR, now))
            uow.publish(
                AuditEntry(
                    "authz_change",
                    resource_type="Account",
                    resource_id=account.user_id,
                    details={"role": role, "change": "granted", "via": "identity.admin"},
                    actor=_OPERATOR_ACTOR,
                    occurred_at=now,
                )
            )
            return (
                f"granted {role} to {account.email} ({account.user_id});"
                " it is in the access tokens issued from the next login or refresh on"
            )
    finally:
        db.close()


def unlock(email: str, env: Mapping[str, str] | None = None) -> str:
    """Clear the failed logins of the account ``email`` (after 100 consecutive failures it is
    locked until this is done); a sentence saying so. Missing for an unknown account. The
    unlock and its audit record commit together."""
    settings = SERVICE.load_settings(env)
    db = Database(settings.db_path, MIGRATIONS)
    try:
        with SqliteUnitOfWork(db, _publisher(settings)) as uow:
            account = uow.store.account_by_email(normalise_email(email))
            if account is None:
                raise Missing(f"no account with email {email!r} in {settings.db_path}")
            uow.store.clear_failures(account.user_id)
            uow.publish(
                AuditEntry(
                    "authn_login_unlock",
                    resource_type="Account",
                    resource_id=account.user_id,
                    details={"failures_cleared": str(account.consecutive_failures)},
                    actor=_OPERATOR_ACTOR,
                )
            )
        return (
            f"unlocked {account.email} ({account.user_id}):"
            f" {account.consecutive_failures} failed logins forgotten"
        )
    finally:
        db.close()


def mint_token(
    role: str,
    subject: str = "",
    ttl: int = DEV_TOKEN_TTL,
    *,
    scope: str = DEV_SCOPE,
    env: Mapping[str, str] | None = None,
    warn: Callable[[str], None] | None = None,
    events: EventSink | None = None,
) -> str:
    """An access token for local development, signed exactly as identity signs a real one: its
    current signing key (kid), its issuer (IDENTITY_ISSUER, else its HTTP URL), its audience,
    ``typ: at+jwt``; claims sub (``subject``, default ``dev-<role>``; an email names that
    account's user id), roles ``[role]``, client_id ``mesh-cli``, scope, jti, iat and exp (``ttl``
    seconds on). It is recorded as issued (identity's own checks refuse tokens it has no record
    of, and it can be revoked like any other), and an audit record says who minted what, in the
    same transaction. ``warn(sentence)`` hears when the token will stop verifying before its exp
    (its key's retention ends first). ``events`` is where the audit record goes (default: the
    service's outbox, which needs the schema registry). Missing when identity's database does
    not exist.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if ttl < 1:
        raise ValueError(f"ttl must be at least 1 second, not {ttl}")
    settings = SERVICE.load_settings(env)
    if not settings.issuer and not settings.http_port:
        raise SettingsError(
            "identity's issuer is unknown: set IDENTITY_ISSUER, or identity's http_port in"
            " mesh.toml (IDENTITY_HTTP_PORT)"
        )
    db = _existing_database(settings)
    try:
        sub = subject or f"dev-{role}"
        if "@" in sub:
            with SqliteUnitOfWork(db, read_only=True) as snapshot:
                account = snapshot.store.account_by_email(normalise_email(sub))
            if account is None:
                raise Missing(f"no account with email {sub!r} in {settings.db_path}")
            sub = account.user_id
        if len(sub) > MAX_ID:
            raise ValueError(f"subject must be at most {MAX_ID} characters")
        store = SqliteKeyStore(db)
        keys = SigningKeys(
            store,
            issuer=settings.issuer_for(settings.http_port),
            rotate_every=settings.key_rotation,
            token_ttl=ttl,
            leeway=settings.clock_skew,
        )
        token, claims = keys.issue_access_token(
            sub=sub, aud=settings.audience, client_id=MESH_CLI, scope=scope, roles=[role]
        )
        with SqliteUnitOfWork(db, events or _publisher(settings)) as uow:
            uow.store.add_access_token(
                str(claims["jti"]),
                sub,
                MESH_CLI,
                family_id=None,
                session_id=None,
                expires_at=float(claims["exp"]),
            )
            uow.publish(
                AuditEntry(
                    "authn_token_minted",
                    resource_type="Account",
                    resource_id=sub,
                    details={
                        "role": role,
                        "scope": scope,
                        "ttl_seconds": str(ttl),
                        "jti": str(claims["jti"]),
                    },
                    actor=_OPERATOR_ACTOR,
                )
            )
        _warn_if_outlived(store, settings, int(claims["exp"]), warn)
        return token
    finally:
        db.close()


def _warn_if_outlived(
    store: SqliteKeyStore, settings: Settings, exp: int, warn: Callable[[str], None] | None
) -> None:
    """The running identity publishes a key until ``rotation + its token lifetime + skew``
    after the key was made; a longer-lived token stops verifying then, before its exp."""
    if warn is None:
        return
    active = next((k for k in store.all_keys() if k.retired_at is None), None)
    if active is None:
        return
    published_until = (
        active.created_at + settings.key_rotation + settings.access_token_ttl + settings.clock_skew
    )
    if exp > published_until:
        left = max(0, int(published_until - time.time()))
        warn(
            f"note: identity's signing key rotates soon; this token stops verifying in about"
            f" {left} s, before its exp (IDENTITY_KEY_ROTATION)"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; exit 0 on success, 1 when something needed is missing, 2 on bad
    usage."""
    parser = argparse.ArgumentParser(
        prog="python -m identity.admin",
        description="Operator commands on identity's database (IDENTITY_DB_PATH).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    grant = commands.add_parser(
        "grant-role",
        help="grant a role to an account (how the first admin is made)",
        description="Grant ROLE to the account with EMAIL. Roles: customer (the default of"
        " every account), support (reads any order), admin (sets stock, inspects sagas, grants"
        " roles), auditor (reads the audit trail).",
    )
    grant.add_argument("email", help="the account's login email")
    grant.add_argument("role", choices=ROLES, help="the role to grant")
    free = commands.add_parser(
        "unlock",
        help="clear an account's failed logins (after 100 in a row it stays locked until then)",
        description="Clear the failed logins of the account with EMAIL. Make sure its owner asks.",
    )
    free.add_argument("email", help="the account's login email")
    mint = commands.add_parser(
        "token",
        help="print an access token for local development (mesh token runs this)",
        description="Print an access token signed with identity's current key, as a real one"
        " is (same issuer, audience and claims; client_id mesh-cli), for local use: grpcurl -H"
        ' "authorization: Bearer $(mesh token --role admin)". Only the token goes to stdout.'
        " Identity's database must exist (run mesh up first). The minting is audited.",
    )
    mint.add_argument(
        "--role", choices=ROLES, default="customer", help="the token's one role (default customer)"
    )
    mint.add_argument(
        "--subject",
        metavar="ID",
        default="",
        help="its sub: a user id, or an account's email for that account's id (default dev-<role>)",
    )
    mint.add_argument(
        "--ttl",
        metavar="SECONDS",
        type=int,
        default=DEV_TOKEN_TTL,
        help=f"lifetime in seconds (default {DEV_TOKEN_TTL})",
    )
    mint.add_argument(
        "--scope", default=DEV_SCOPE, help=f"space-separated scopes (default {DEV_SCOPE!r})"
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "unlock":
            print(unlock(args.email))
        elif args.command == "token":
            print(
                mint_token(
                    args.role,
                    args.subject,
                    args.ttl,
                    scope=args.scope,
                    warn=lambda s: print(f"identity.admin: {s}", file=sys.stderr),
                )
            )
        else:
            print(grant_role(args.email, args.role))
    except Missing as exc:
        print(f"identity.admin: {exc.args[0]}", file=sys.stderr)
        return 1
    except SettingsError as exc:
        print(f"identity.admin: bad setting: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"identity.admin: {exc}", file=sys.stderr)
        return 2
    except MeshError as exc:
        # The registry (for the audit record's schema id) is down: nothing was committed.
        print(f"identity.admin: {exc} (is the mesh up? mesh up)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
