"""identity's JWK Set over real HTTP, then identity stopped: the verifier keeps verifying.

A real HTTP server publishes identity's JWK Set (identity's own signer, ``SigningKeys.jwks()``,
the document identity serves at ``/.well-known/jwks.json``) and counts the GETs. The verifier
(meshkit.tokens.TokenVerifier, as every service and the gateway build it, with short intervals)
fetches it over HTTP. The server is stopped: tokens of the known key still verify, a made-up kid
costs at most one connection attempt per interval, and once a server is back on the same port
the rotated-in key is found.
"""

from __future__ import annotations

import base64
import http.server
import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from support.mesh import free_port
from support.registry import wait_until

from identity.adapters.keys import MemoryKeyStore, SigningKeys
from meshkit.tokens import InvalidToken, TokenVerifier

ISSUER = "http://identity.test"
REFETCH_S = 0.5
MAX_AGE_S = 1.0


class Jwks:
    """identity's signer and how many times its JWK Set was fetched."""

    def __init__(self) -> None:
        self.keys = SigningKeys(MemoryKeyStore(), issuer=ISSUER, refresh_every=0)
        self.gets = 0

    def token(self) -> str:
        token, _ = self.keys.issue_access_token(
            sub="u-1", aud="meshkit", client_id="shop-web", scope="orders", roles=["customer"]
        )
        return token


@contextmanager
def serving(jwks: Jwks, port: int) -> Iterator[str]:
    """An HTTP server on ``port`` answering GET /.well-known/jwks.json; stopped (the port
    closed) when the block ends."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            jwks.gets += 1
            body = json.dumps(jwks.keys.jwks()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/.well-known/jwks.json"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_tokens_verify_while_identity_is_stopped_and_no_refetch_storm(
    caplog: pytest.LogCaptureFixture,
) -> None:
    jwks, port = Jwks(), free_port()
    known = jwks.token()
    with serving(jwks, port) as url:
        verifier = TokenVerifier(
            url, issuer=ISSUER, audience="meshkit", refetch_every=REFETCH_S, max_age=MAX_AGE_S
        )
        assert verifier.verify(known).sub == "u-1"
        for _ in range(50):  # made-up kids while identity is up: one fetch per interval
            with pytest.raises(InvalidToken, match="not one of identity's"):
                verifier.verify(_with_kid(known, "made-up"))
        assert jwks.gets <= 2
    # identity is stopped: nothing listens on its port any more.
    other = jwks.token()  # signed by the same key, never seen by the verifier
    with caplog.at_level(logging.WARNING, logger="meshkit.tokens"):
        # Past max_age the set is stale: a refresh is tried, fails, and the keys are kept.
        wait_until(
            lambda: (
                verifier.verify(known).sub == "u-1"
                and any("keeping the 1 cached keys" in r.getMessage() for r in caplog.records)
            ),
            timeout=10,
            what="a refresh of the stale JWK Set against the stopped identity",
        )
        assert verifier.verify(other).sub == "u-1"
        caplog.clear()
        jwks.keys.rotate()
        rotated = jwks.token()  # a key the verifier cannot fetch now
        began = time.monotonic()
        refused = 0
        while time.monotonic() - began < 2 * REFETCH_S:  # a second of a made-up kid storm
            with pytest.raises(InvalidToken, match="not one of identity's"):
                verifier.verify(rotated)
            refused += 1
        attempts = [r for r in caplog.records if "cannot fetch the JWK Set" in r.getMessage()]
    assert refused > 100
    # One attempt per REFETCH_S at most (the interval may start just before the loop).
    assert 1 <= len(attempts) <= 3, [r.getMessage() for r in attempts]
    assert verifier.verify(known).sub == "u-1"  # the known key throughout
    with serving(jwks, port):  # identity back on its port, with the rotated-in key
        wait_until(
            lambda: _verifies(verifier, rotated),
            timeout=10,
            what="the rotated-in key to be fetched once identity is back",
        )


def _verifies(verifier: TokenVerifier, token: str) -> bool:
    try:
        return verifier.verify(token).sub == "u-1"
    except InvalidToken:
        return False


def _with_kid(token: str, kid: str) -> str:
    """``token`` with its header's kid replaced (the signature no longer matters: no key)."""
    header, payload, signature = token.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(header + "=="))
    decoded["kid"] = kid
    encoded = base64.urlsafe_b64encode(json.dumps(decoded).encode()).rstrip(b"=").decode()
    return f"{encoded}.{payload}.{signature}"
