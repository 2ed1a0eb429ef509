"""The mesh's own services as OAuth clients (issue 14): orders, gateway and schema-registrar get
client_credentials tokens whose sub is their client id and whose roles carry "service"; and the
auditor role exists, granted like the others."""

from __future__ import annotations

import pytest
from unit.identity.world import AUDIENCE, ISSUER, World

from identity.adapters.clients import load_clients
from identity.app.oauth import OAuthError
from identity.domain.model import ROLES, Principal
from meshkit.errors import InvalidArgument

SERVICES = {
    "orders": ("ORDERS_CLIENT_SECRET", "dev-orders-secret", "mesh"),
    "gateway": ("GATEWAY_CLIENT_SECRET", "dev-gateway-secret", "mesh"),
    "schema-registrar": (
        "SCHEMA_REGISTRAR_CLIENT_SECRET",
        "dev-schema-registrar-secret",
        "schemas:write",
    ),
}


@pytest.mark.parametrize("client_id", sorted(SERVICES))
def test_a_service_client_is_confidential_with_its_development_secret(client_id: str) -> None:
    variable, default, scope = SERVICES[client_id]
    client = load_clients(env={})[client_id]
    assert not client.public
    assert client.grant_types == ("client_credentials",)
    assert client.roles == ("service",)
    assert client.scopes == (scope,)
    assert client.secret == default
    assert load_clients(env={variable: "from-the-env"})[client_id].secret == "from-the-env"


@pytest.mark.parametrize("client_id", sorted(SERVICES))
def test_a_service_token_names_the_service_and_carries_the_service_role(
    world: World, client_id: str
) -> None:
    _, secret, scope = SERVICES[client_id]
    client = world.oauth.authenticate_client(client_id, secret, basic=True, source="10.0.0.9")
    answer = world.oauth.token(
        client, {"grant_type": "client_credentials"}, source="10.0.0.9", device="svc"
    )
    claims = world.keys.verify(answer["access_token"], audience=AUDIENCE)
    assert claims["sub"] == client_id
    assert claims["client_id"] == client_id
    assert claims["roles"] == ["service"]
    assert claims["scope"] == scope == answer["scope"]
    assert claims["iss"] == ISSUER
    assert "refresh_token" not in answer  # client credentials: no refresh (RFC 6749 §4.4.3)
    # Identity itself accepts it (recorded as issued, not revoked).
    principal = world.oauth.authenticate(answer["access_token"])
    assert (principal.sub, principal.roles) == (client_id, ("service",))


def test_a_service_client_with_a_wrong_secret_is_refused_and_audited(world: World) -> None:
    with pytest.raises(OAuthError) as refused:
        world.oauth.authenticate_client("orders", "not-the-secret", basic=True, source="10.0.0.9")
    assert (refused.value.error, refused.value.status) == ("invalid_client", 401)
    [entry] = world.sink.audits("authn_client_fail")
    assert entry.outcome == "FAILURE" and entry.source_address == "10.0.0.9"
    assert entry.actor is not None and entry.actor.client_id == "orders"
    assert "not-the-secret" not in repr(entry)


def test_auditor_is_a_role_an_admin_grants(world: World) -> None:
    assert ROLES == ("customer", "support", "admin", "auditor")
    user_id = world.accounts.register("audra@example.com", "correct horse battery staple")
    admin = Principal("admin-1", "shop-web", "orders", ("customer", "admin"), None, "j1")
    account = world.accounts.grant_role(admin, user_id, "auditor")
    assert account.roles == ("customer", "auditor")
    with pytest.raises(InvalidArgument) as bad:
        world.accounts.grant_role(admin, user_id, "root")
    assert "must be one of customer, support, admin, auditor" in str(bad.value.violations)
