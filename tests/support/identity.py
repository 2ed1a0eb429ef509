"""A running identity (with its schema registry) for the tests that log in to it for real."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from support.mesh import mesh_up, write_moved_mesh_toml

# A client file for the tests: the shipped clients (the mesh's services included) plus a legacy
# one that may use the implicit and password grants (off for everyone else).
TEST_CLIENTS = """
[[client]]
client_id = "shop-web"
type = "public"
grant_types = ["authorization_code", "refresh_token"]
response_types = ["code"]
redirect_uris = ["http://127.0.0.1:8765/callback"]
scopes = ["orders", "offline_access"]

[[client]]
client_id = "shop-tv"
type = "public"
grant_types = ["urn:ietf:params:oauth:grant-type:device_code", "refresh_token"]
scopes = ["orders", "offline_access"]

[[client]]
client_id = "shop-backend"
type = "confidential"
grant_types = ["client_credentials"]
scopes = ["orders", "inventory.admin"]
roles = ["service"]
secret_env = "SHOP_BACKEND_CLIENT_SECRET"
secret_default = "dev-shop-backend-secret"

# The mesh's services, as the shipped file has them (their calls as themselves).
[[client]]
client_id = "orders"
type = "confidential"
grant_types = ["client_credentials"]
scopes = ["mesh"]
roles = ["service"]
secret_env = "ORDERS_CLIENT_SECRET"
secret_default = "dev-orders-secret"

[[client]]
client_id = "gateway"
type = "confidential"
grant_types = ["client_credentials"]
scopes = ["mesh"]
roles = ["service"]
secret_env = "GATEWAY_CLIENT_SECRET"
secret_default = "dev-gateway-secret"

[[client]]
client_id = "shipping"
type = "confidential"
grant_types = ["client_credentials"]
scopes = ["mesh"]
roles = ["service"]
secret_env = "SHIPPING_CLIENT_SECRET"
secret_default = "dev-shipping-secret"

[[client]]
client_id = "schema-registrar"
type = "confidential"
grant_types = ["client_credentials"]
scopes = ["schemas:write"]
roles = ["service"]
secret_env = "SCHEMA_REGISTRAR_CLIENT_SECRET"
secret_default = "dev-schema-registrar-secret"

[[client]]
client_id = "legacy-app"
type = "public"
grant_types = ["authorization_code", "password", "refresh_token"]
response_types = ["code", "token"]
redirect_uris = ["http://127.0.0.1:8766/legacy"]
scopes = ["orders"]
"""


@dataclass(frozen=True)
class Identity:
    """Where the test identity listens, and its scratch root (logs in .mesh/logs/)."""

    root: Path
    grpc: str  # host:port
    issuer: str  # http://127.0.0.1:<port>
    registry: str
    env: dict[str, str]

    @classmethod
    def at(cls, root: Path, ports: Mapping[str, int], env: dict[str, str]) -> Identity:
        """The identity of a mesh started in ``root`` with ``ports`` (write_moved_mesh_toml's)."""
        return cls(
            root,
            f"127.0.0.1:{ports['identity']}",
            f"http://127.0.0.1:{ports['identity:http']}",
            env["SCHEMA_REGISTRY_URL"],
            env,
        )


@contextmanager
def running_identity(
    root: Path,
    kafka_bootstrap: str,
    env: Mapping[str, str],
    *,
    overrides: Mapping[str, str | None] | None = None,
    with_registry: bool = True,
) -> Iterator[Identity]:
    """`mesh up -d` of identity in the scratch ``root`` on free ports, in ``env`` with
    ``overrides`` (None unsets a variable); with its own trace receiver and schema registry, or
    (``with_registry=False``) on the registry ``env`` names. `mesh down` when the block ends."""
    names = ("trace-receiver", "schema-registry", "identity") if with_registry else ("identity",)
    ports = write_moved_mesh_toml(root, names)
    merged = {**env}
    if with_registry:
        merged["SCHEMA_REGISTRY_URL"] = f"http://127.0.0.1:{ports['schema-registry']}"
    merged.pop("MESH_KAFKA_BOOTSTRAP", None)
    for key, value in (overrides or {}).items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    with mesh_up(root, kafka_bootstrap, merged):
        yield Identity.at(root, ports, merged)


@pytest.fixture(scope="session")
def identity(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> Iterator[Identity]:
    """`mesh up -d` of the schema registry and identity on free ports, with the real argon2
    parameters, a 1-second device polling interval and the test clients above."""
    root = tmp_path_factory.mktemp("identity-mesh")
    clients = root / "clients.toml"
    clients.write_text(TEST_CLIENTS)
    overrides: dict[str, str | None] = {
        "IDENTITY_CLIENTS_FILE": str(clients),
        "IDENTITY_DEVICE_INTERVAL": "1",
        "OTEL_EXPORTER_OTLP_ENDPOINT": None,
    }
    with running_identity(root, kafka_bootstrap, os.environ, overrides=overrides) as running:
        yield running


def register(identity: Identity, email: str, password: str) -> str:
    """A new account through gRPC Register; its user_id."""
    import grpc

    from shop.identity.v1 import identity_pb2, identity_pb2_grpc

    with grpc.insecure_channel(identity.grpc) as channel:
        stub = identity_pb2_grpc.IdentityServiceStub(channel)
        reply = stub.Register(identity_pb2.RegisterRequest(email=email, password=password))
    return str(reply.user_id)


def login(identity: Identity, email: str, password: str, otp: str = "") -> dict[str, Any]:
    """Tokens for ``email`` from the authorization code flow with PKCE as shop-web, driving the
    login form as a browser does (a fresh browser: a new session each time)."""
    import base64
    import hashlib
    import html
    import re
    import secrets
    from urllib.parse import parse_qs, urlencode, urlsplit

    import requests

    verifier = secrets.token_urlsafe(48)
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )
    redirect = "http://127.0.0.1:8765/callback"
    query = urlencode(
        {
            "response_type": "code",
            "client_id": "shop-web",
            "redirect_uri": redirect,
            "scope": "orders offline_access",
            "state": "s1",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    browser = requests.Session()
    page = browser.get(f"{identity.issuer}/authorize?{query}", allow_redirects=False, timeout=10)
    assert page.status_code == 200, page.text
    hidden = dict(re.findall(r'name="(csrf_token|next)" value="([^"]*)"', page.text))
    posted = browser.post(
        f"{identity.issuer}/login",
        data={
            "csrf_token": hidden["csrf_token"],
            "next": html.unescape(hidden["next"]),
            "username": email,
            "password": password,
            "otp": otp,
        },
        allow_redirects=False,
        timeout=10,
    )
    assert posted.status_code == 303, posted.text
    back = browser.get(
        identity.issuer + posted.headers["Location"], allow_redirects=False, timeout=10
    )
    assert back.status_code == 302, back.text
    code = parse_qs(urlsplit(back.headers["Location"]).query)["code"][0]
    tokens = requests.post(
        f"{identity.issuer}/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect,
            "client_id": "shop-web",
            "code_verifier": verifier,
        },
        timeout=10,
    )
    assert tokens.status_code == 200, tokens.text
    answer: dict[str, Any] = tokens.json()
    return answer


def service_token(identity: Identity, client_id: str = "orders") -> str:
    """An access token of one of the mesh's services (client_credentials with its development
    secret): what a service calls identity's service-only RPCs (IntrospectToken) with."""
    import requests

    answer = requests.post(
        f"{identity.issuer}/token",
        data={"grant_type": "client_credentials"},
        auth=(client_id, f"dev-{client_id}-secret"),
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])
