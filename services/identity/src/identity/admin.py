"""``python -m identity.admin``: operator commands on identity's own database.

Only an admin grants a role over the API, so the first admin is made here, by whoever operates
the service (access to its database is the proof). Reads the same IDENTITY_* settings as the
service, so it works on the database the running service uses; its events go through the same
outbox, and the running service's relay publishes them.

    python -m identity.admin grant-role ann@example.com admin
    python -m identity.admin unlock ann@example.com
"""

from __future__ import annotations

import argparse
import datetime
import sys
from collections.abc import Sequence

from identity.adapters.events import EVENTS
from identity.adapters.sqlite import MIGRATIONS, SqliteUnitOfWork
from identity.bootstrap import SERVICE
from identity.domain.events import RoleGranted
from identity.domain.model import ROLES, normalise_email
from meshkit.db import Database
from meshkit.events import EventCatalog, EventPublisher, Outbox
from meshkit.settings import SettingsError

OPERATOR = "operator"  # granted_by for roles granted here


def grant_role(email: str, role: str) -> str:
    """Grant ``role`` to the account ``email``; returns what happened, in a sentence. Raises
    LookupError when there is no such account."""
    settings = SERVICE.load_settings()
    outbox = Outbox(
        EventCatalog.from_package(EVENTS.namespace),
        settings.schema_registry_url,
        source=SERVICE.source,
    )
    db = Database(settings.db_path, MIGRATIONS)
    try:
        with SqliteUnitOfWork(db, EventPublisher(outbox, EVENTS)) as uow:
            account = uow.store.account_by_email(normalise_email(email))
            if account is None:
                raise LookupError(f"no account with email {email!r} in {settings.db_path}")
            if role in account.roles:
                return f"{account.email} ({account.user_id}) has the role {role} already"
            uow.store.set_roles(account.user_id, (*account.roles, role))
            uow.publish(
                RoleGranted(account.user_id, role, OPERATOR, datetime.datetime.now(datetime.UTC))
            )
            return (
                f"granted {role} to {account.email} ({account.user_id});"
                " it is in the access tokens issued from the next login or refresh on"
            )
    finally:
        db.close()


def unlock(email: str) -> str:
    """Clear the failed logins of the account ``email`` (after 100 consecutive failures it is
    locked until this is done); a sentence saying so. LookupError for an unknown account."""
    settings = SERVICE.load_settings()
    db = Database(settings.db_path, MIGRATIONS)
    try:
        with SqliteUnitOfWork(db) as uow:
            account = uow.store.account_by_email(normalise_email(email))
            if account is None:
                raise LookupError(f"no account with email {email!r} in {settings.db_path}")
            uow.store.clear_failures(account.user_id)
        return (
            f"unlocked {account.email} ({account.user_id}):"
            f" {account.consecutive_failures} failed logins forgotten"
        )
    finally:
        db.close()


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; exit 0 on success, 1 when the account is unknown, 2 on bad usage."""
    parser = argparse.ArgumentParser(
        prog="python -m identity.admin",
        description="Operator commands on identity's database (IDENTITY_DB_PATH).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    grant = commands.add_parser(
        "grant-role",
        help="grant a role to an account (how the first admin is made)",
        description="Grant ROLE to the account with EMAIL.",
    )
    grant.add_argument("email", help="the account's login email")
    grant.add_argument("role", choices=ROLES, help="the role to grant")
    free = commands.add_parser(
        "unlock",
        help="clear an account's failed logins (after 100 in a row it stays locked until then)",
        description="Clear the failed logins of the account with EMAIL. Make sure its owner asks.",
    )
    free.add_argument("email", help="the account's login email")
    args = parser.parse_args(argv)
    try:
        if args.command == "unlock":
            print(unlock(args.email))
        else:
            print(grant_role(args.email, args.role))
    except LookupError as exc:
        print(f"identity.admin: {exc.args[0]}", file=sys.stderr)
        return 1
    except SettingsError as exc:
        print(f"identity.admin: bad setting: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
