"""Access tokens for tests that run services in this process.

Services check every RPC's permission against identity's tokens (meshkit.authz). Tests that
build a service in-process (``SERVICE.create(SERVICE.load_settings(env))``) point it at a test
issuer instead: ``env | TEST_ISSUER.env`` makes it trust this issuer's key (a JWKS file), and
``TEST_ISSUER.metadata(role=...)`` or ``authorized(channel, ...)`` calls it with a token of the
same shape identity issues (RFC 9068: typ at+jwt, ES256, kid, iss, aud, sub, client_id, roles).

A service that calls others as itself (orders' saga) gets its own token from identity's token
endpoint (meshkit.credentials.ServiceCredentials). There is no identity in this process, so
``token_endpoint()`` serves a minimal one: the OAuth 2 client_credentials grant only, answering
with this issuer's service tokens; ``MESH_URL_IDENTITY=<its url>`` points the service at it, and
the real credentials code path runs.

Tests against a whole mesh (`mesh up`) use identity's own tokens instead: ``mesh token``.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator, Mapping, Sequence
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


class TokenEndpoint:
    """A running ``token_endpoint()``: its base ``url`` (what ``MESH_URL_IDENTITY`` holds; the
    grant is at ``<url>/token``) and the client ids it issued tokens to, in order (``issued``)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.issued: list[str] = []
        self.refused: list[str] = []
        self._lock = threading.Lock()

    @property
    def env(self) -> dict[str, str]:
        """The setting that sends a service's own token requests here."""
        return {"MESH_URL_IDENTITY": self.url}

    def note(self, client_id: str, *, granted: bool) -> None:
        """Remember a request (thread-safe: the server answers on its own threads)."""
        with self._lock:
            (self.issued if granted else self.refused).append(client_id)


def _client_of(authorization: str) -> tuple[str, str]:
    """(client id, secret) of an HTTP Basic header, form-decoded as RFC 6749 §2.3.1 asks."""
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return "", ""
    try:
        pair = base64.b64decode(encoded, validate=True).decode()
    except ValueError:
        return "", ""
    client_id, _, secret = pair.partition(":")
    return urllib.parse.unquote_plus(client_id), urllib.parse.unquote_plus(secret)


@contextlib.contextmanager
def token_endpoint(
    issuer: TestIssuer = TEST_ISSUER,
    *,
    secrets: Mapping[str, str] | None = None,
    ttl: int = 600,
) -> Iterator[TokenEndpoint]:
    """Serve ``POST /token`` (grant_type=client_credentials, client authenticated with HTTP
    Basic) on a free 127.0.0.1 port while the block runs. A client whose secret is right gets
    ``issuer.token(service=client_id)``: roles ["service"], sub = the client id, as identity
    gives a service. ``secrets`` maps client id -> secret; by default every client's secret is
    the development one, ``dev-<client id>-secret``. Anything else is answered as identity
    would: 401 invalid_client, 400 unsupported_grant_type, 404 for other paths."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if self.path.split("?")[0].rstrip("/") != "/token":
                self._answer(404, {"error": "not_found"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            form = urllib.parse.parse_qs(self.rfile.read(length).decode())
            client_id, secret = _client_of(self.headers.get("Authorization", ""))
            expected = secrets.get(client_id) if secrets is not None else f"dev-{client_id}-secret"
            if not client_id or secret != expected:
                endpoint.note(client_id, granted=False)
                self._answer(401, {"error": "invalid_client"})
                return
            if form.get("grant_type") != ["client_credentials"]:
                self._answer(400, {"error": "unsupported_grant_type"})
                return
            endpoint.note(client_id, granted=True)
            token = issuer.token(service=client_id, ttl=ttl)
            self._answer(200, {"access_token": token, "token_type": "Bearer", "expires_in": ttl})

        def _answer(self, status: int, document: dict[str, Any]) -> None:
            body = json.dumps(document).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the test reads ``issued``/``refused``; a line per request is noise

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    endpoint = TokenEndpoint(f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, name="test-token-endpoint", daemon=True)
    thread.start()
    try:
        yield endpoint
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
