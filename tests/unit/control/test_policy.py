"""Control's policy: every service reads configuration as itself, staff read it, only admins
change it; experiment reports for staff and services. Asked through meshkit.authz, with the
entities it builds for real callers."""

from __future__ import annotations

import pytest

from meshkit import authz

POLICY = authz.Policy.from_package("control")


def user(*roles: str) -> authz.Principal:
    return authz.Principal("u-1", roles)


def service(name: str = "orders", on_behalf_of: str = "") -> authz.Principal:
    return authz.Principal(name, ("service",), service=name, on_behalf_of=on_behalf_of)


@pytest.mark.parametrize(
    ("principal", "permission", "allowed"),
    [
        (service(), "config.read", True),
        (service("shipping", on_behalf_of="c-1"), "config.read", True),
        (service(), "config.write", False),
        (user("admin"), "config.read", True),
        (user("support"), "config.read", True),
        (user("customer"), "config.read", False),
        (user("auditor"), "config.read", False),
        (user(), "config.read", False),
        (user("admin"), "config.write", True),
        (user("support"), "config.write", False),
        (user("customer", "admin"), "config.write", True),
        # A user token that claims the service role is still a user: the kit makes a Service
        # principal only of a service's own client_credentials token.
        (user("service"), "config.read", False),
        (user("admin"), "experiments.read", True),
        (user("support"), "experiments.read", True),
        (user("customer"), "experiments.read", False),
        (service(), "experiments.read", True),
    ],
)
def test_who_may_do_what(principal: authz.Principal, permission: str, allowed: bool) -> None:
    assert POLICY.decide(principal, permission, "Request", owned=False).allowed is allowed
