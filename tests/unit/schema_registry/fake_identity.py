"""Identity, played at the two network ports of schema_registry.auth.Guard (GET a JSON document,
POST a form): real ES256 at+jwt tokens, a real JWK Set, a token endpoint checking client secrets.
A fake at the boundary, so the guard's own code runs unchanged."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from schema_registry.auth import Guard

ISSUER = "http://identity.test:8090"
JWKS = f"{ISSUER}/.well-known/jwks.json"


@dataclass
class FakeIdentity:
    """Identity at the guard's ports: its JWK Set, its metadata, its token endpoint."""

    clients: dict[str, tuple[str, str, tuple[str, ...]]] = field(default_factory=dict)
    token_requests: int = 0
    reachable: bool = True
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    def token(
        self,
        sub: str = "u-1",
        *,
        scope: str = "schemas:write",
        roles: tuple[str, ...] = ("admin",),
        client_id: str = "shop-web",
        expires_in: int = 600,
        audience: str = "meshkit",
    ) -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": sub,
            "aud": audience,
            "exp": now + expires_in,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "client_id": client_id,
            "scope": scope,
            "roles": list(roles),
        }
        return jwt.encode(claims, self.key, "ES256", headers={"typ": "at+jwt", "kid": "k1"})

    def fetch_json(self, url: str, timeout: float) -> dict[str, Any]:
        if not self.reachable:
            raise OSError("connection refused")
        if url == JWKS:
            public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.key.public_key()))
            return {"keys": [{**public, "kid": "k1", "use": "sig", "alg": "ES256"}]}
        if url == f"{ISSUER}/.well-known/oauth-authorization-server":
            return {"issuer": ISSUER, "token_endpoint": f"{ISSUER}/token"}
        raise OSError(f"404 {url}")

    def post_form(
        self, url: str, form: Mapping[str, str], headers: Mapping[str, str], timeout: float
    ) -> tuple[int, dict[str, Any]]:
        self.token_requests += 1
        if not self.reachable:
            raise OSError("connection refused")
        assert url == f"{ISSUER}/token"
        assert form == {"grant_type": "client_credentials"}
        client_id, _, secret = (
            base64.b64decode(headers["Authorization"][6:]).decode().partition(":")
        )
        known = self.clients.get(client_id)
        if known is None or known[0] != secret:
            return 401, {"error": "invalid_client", "error_description": "unknown client"}
        return 200, {
            "access_token": self.token(
                client_id, scope=known[1], roles=known[2], client_id=client_id
            ),
            "token_type": "Bearer",
            "expires_in": 600,
        }

    def guard(self, **kwargs: Any) -> Guard:
        return Guard(JWKS, fetch_json=self.fetch_json, post_form=self.post_form, **kwargs)


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()
