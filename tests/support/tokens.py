"""Access tokens for tests that run services in this process.

Services check every RPC's permission against identity's tokens (meshkit.authz). Tests that
build a service in-process (``SERVICE.create(SERVICE.load_settings(env))``) point it at a test
issuer instead: ``env | TEST_ISSUER.env`` makes it trust this issuer's key (a JWKS file), and
``TEST_ISSUER.metadata(role=...)`` or ``authorized(channel, ...)`` calls it with a token of the
same shape identity issues (RFC 9068: typ at+jwt, ES256, kid, iss, aud, sub, client_id, roles).

Tests against a whole mesh (`mesh up`) use identity's own tokens instead: ``mesh token``.
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
import jwt
from cryptography.hazmat.primitives.asymmetric import ec

ISSUER = "http://issuer.test"
AUDIENCE = "meshkit"


class TestIssuer:
    """An ES256 key and its JWKS file; mints access tokens like identity's."""

    __test__ = False  # not a test class

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        jwk: dict[str, Any] = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self._key.public_key()))
        self.kid = "test-key"
        jwk |= {"kid": self.kid, "use": "sig", "alg": "ES256"}
        folder = Path(tempfile.mkdtemp(prefix="meshkit-test-issuer-"))
        self.jwks_path = folder / "jwks.json"
        self.jwks_path.write_text(json.dumps({"keys": [jwk]}))

    @property
    def env(self) -> dict[str, str]:
        """Settings that make a service trust this issuer (and none else)."""
        return {
            "MESH_AUTH_JWKS_URL": self.jwks_path.as_uri(),
            "MESH_AUTH_ISSUER": ISSUER,
            "MESH_AUTH_AUDIENCE": AUDIENCE,
        }

    def token(
        self,
        role: str | Sequence[str] = "admin",
        subject: str | None = None,
        *,
        service: str | None = None,
        ttl: float = 600,
        client_id: str = "test-client",
        scope: str = "",
    ) -> str:
        """An access token for ``subject`` with ``role`` (or for ``service``: roles
        ["service"], sub = the service's name, as identity's client_credentials gives)."""
        roles = [role] if isinstance(role, str) else list(role)
        if service is not None:
            subject, roles, client_id = service, ["service"], service
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": subject or f"test-{roles[0] if roles else 'nobody'}",
            "aud": AUDIENCE,
            "exp": now + int(ttl),
            "iat": now,
            "jti": uuid.uuid4().hex,
            "client_id": client_id,
            "scope": scope,
            "roles": roles,
        }
        return jwt.encode(
            claims, self._key, algorithm="ES256", headers={"typ": "at+jwt", "kid": self.kid}
        )

    def metadata(
        self,
        role: str | Sequence[str] = "admin",
        subject: str | None = None,
        *,
        service: str | None = None,
        on_behalf_of: str | None = None,
    ) -> list[tuple[str, str]]:
        """Call metadata carrying such a token (and ``mesh-on-behalf-of`` for a service)."""
        pairs = [("authorization", f"Bearer {self.token(role, subject, service=service)}")]
        if on_behalf_of is not None:
            pairs.append(("mesh-on-behalf-of", on_behalf_of))
        return pairs


TEST_ISSUER = TestIssuer()


class _WithMetadata(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
):
    def __init__(self, metadata: Sequence[tuple[str, str]]) -> None:
        self._metadata = list(metadata)

    def _details(self, details: Any) -> Any:
        from meshkit.telemetry import _ClientCallDetails

        return _ClientCallDetails(
            details.method,
            details.timeout,
            [*(details.metadata or ()), *self._metadata],
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)


def authorized(
    channel: grpc.Channel,
    role: str | Sequence[str] = "admin",
    subject: str | None = None,
    *,
    service: str | None = None,
    on_behalf_of: str | None = None,
    issuer: TestIssuer = TEST_ISSUER,
) -> grpc.Channel:
    """``channel`` with every call carrying a token of ``issuer`` (see ``TestIssuer.metadata``)."""
    metadata = issuer.metadata(role, subject, service=service, on_behalf_of=on_behalf_of)
    return grpc.intercept_channel(channel, _WithMetadata(metadata))


def bearer(metadata: Mapping[str, str] | Sequence[tuple[str, str]]) -> str:
    """The token of ``metadata``'s authorization pair."""
    pairs = metadata.items() if isinstance(metadata, Mapping) else metadata
    for key, value in pairs:
        if key == "authorization":
            return value.removeprefix("Bearer ")
    raise KeyError("authorization")
