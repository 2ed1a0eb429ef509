"""The gateway's token check, against tokens identity's own signer issues: accepted ones, the
classic forgeries refused, and the JWK Set fetched again for a new key, but not for every
made-up kid."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from identity.adapters.keys import MemoryKeyStore, SigningKeys
from meshkit.tokens import InvalidToken, KeysUnavailable, TokenVerifier

ISSUER = "http://identity.test"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Jwks:
    """Identity's JWKS endpoint, counting fetches; ``down`` makes it unreachable."""

    def __init__(self, keys: SigningKeys) -> None:
        self.keys = keys
        self.fetches = 0
        self.down = False

    def __call__(self, url: str, timeout: float) -> dict[str, Any]:
        self.fetches += 1
        if self.down:
            raise OSError("connection refused")
        return self.keys.jwks()


@pytest.fixture
def world() -> tuple[SigningKeys, Jwks, TokenVerifier, Clock]:
    keys = SigningKeys(MemoryKeyStore(), issuer=ISSUER, refresh_every=0)
    jwks, clock = Jwks(keys), Clock()
    verifier = TokenVerifier(
        "http://identity.test/.well-known/jwks.json",
        issuer=ISSUER,
        audience="meshkit",
        fetch=jwks,
        clock=clock,
        refetch_every=10,
    )
    return keys, jwks, verifier, clock


def issue(keys: SigningKeys, **overrides: Any) -> str:
    token, _ = keys.issue_access_token(
        sub="u-1",
        aud=overrides.pop("aud", "meshkit"),
        client_id="shop-web",
        scope="orders",
        roles=["customer"],
    )
    return token


def test_a_token_of_identitys_is_accepted(
    world: tuple[SigningKeys, Jwks, TokenVerifier, Clock],
) -> None:
    keys, jwks, verifier, _ = world
    caller = verifier.verify(issue(keys))
    assert (caller.sub, caller.client_id, caller.roles) == ("u-1", "shop-web", ("customer",))
    verifier.verify(issue(keys))
    assert jwks.fetches == 1  # the JWK Set is cached


def test_forgeries_are_refused(world: tuple[SigningKeys, Jwks, TokenVerifier, Clock]) -> None:
    keys, _, verifier, _ = world
    real = issue(keys)
    header, payload, _ = real.split(".")
    kid = json.loads(base64.urlsafe_b64decode(header + "=="))["kid"]
    none = f"{b64(json.dumps({'alg': 'none', 'typ': 'at+jwt', 'kid': kid}).encode())}.{payload}."
    with pytest.raises(InvalidToken, match="algorithm"):
        verifier.verify(none)
    published = next(k for k in keys.jwks()["keys"] if k["kid"] == kid)
    public_pem = jwt.PyJWK(published).key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    hs_header = b64(json.dumps({"alg": "HS256", "typ": "at+jwt", "kid": kid}).encode())
    signature = hmac.new(public_pem, f"{hs_header}.{payload}".encode(), hashlib.sha256).digest()
    with pytest.raises(InvalidToken, match="algorithm"):
        verifier.verify(f"{hs_header}.{payload}.{b64(signature)}")
    with pytest.raises(InvalidToken, match="not for this audience"):
        verifier.verify(issue(keys, aud="elsewhere"))
    tampered = json.loads(base64.urlsafe_b64decode(payload + "=="))
    tampered["roles"] = ["admin"]
    with pytest.raises(InvalidToken, match="invalid"):
        verifier.verify(f"{header}.{b64(json.dumps(tampered).encode())}.{real.split('.')[2]}")
    plain = b64(json.dumps({"alg": "ES256", "typ": "JWT", "kid": kid}).encode())
    with pytest.raises(InvalidToken, match="typ must be at\\+jwt"):
        verifier.verify(f"{plain}.{payload}.{real.split('.')[2]}")
    with pytest.raises(InvalidToken, match="malformed"):
        verifier.verify("not-a-token")


def test_an_expired_token_is_refused() -> None:
    keys = SigningKeys(MemoryKeyStore(), issuer=ISSUER, token_ttl=1, clock=lambda: 1000.0)
    verifier = TokenVerifier(
        "u", issuer=ISSUER, audience="meshkit", leeway=0, fetch=lambda _u, _t: keys.jwks()
    )
    with pytest.raises(InvalidToken, match="expired"):
        verifier.verify(issue(keys))


def test_a_new_key_is_fetched_once_and_made_up_kids_do_not_hammer_identity(
    world: tuple[SigningKeys, Jwks, TokenVerifier, Clock],
) -> None:
    keys, jwks, verifier, clock = world
    verifier.verify(issue(keys))
    keys.rotate()
    clock.now += 11  # past refetch_every: the unknown kid makes it fetch again
    verifier.verify(issue(keys))
    assert jwks.fetches == 2
    header = b64(json.dumps({"alg": "ES256", "typ": "at+jwt", "kid": "made-up"}).encode())
    for _ in range(20):
        with pytest.raises(InvalidToken, match="not one of identity's"):
            verifier.verify(f"{header}.e30.c2ln")
    assert jwks.fetches == 2  # within refetch_every: no fetch per request


def test_no_keys_at_all_is_unavailable_not_a_bad_token(
    world: tuple[SigningKeys, Jwks, TokenVerifier, Clock],
) -> None:
    keys, jwks, verifier, _ = world
    jwks.down = True
    with pytest.raises(KeysUnavailable):
        verifier.verify(issue(keys))


def test_a_remembered_token_still_expires_and_goes_with_its_key() -> None:
    keys = SigningKeys(MemoryKeyStore(), issuer=ISSUER, token_ttl=1)
    jwks = Jwks(keys)
    verifier = TokenVerifier(
        "u", issuer=ISSUER, audience="meshkit", leeway=0, fetch=jwks, refetch_every=0
    )
    token = issue(keys)
    assert verifier.verify(token).sub == "u-1"
    assert verifier.verify(token).sub == "u-1"  # remembered
    deadline = time.monotonic() + 5
    while True:  # it lives one second: remembered or not, past its exp it is refused
        try:
            verifier.verify(token)
        except InvalidToken as refused:
            assert "expired" in refused.description
            break
        assert time.monotonic() < deadline, "a remembered token outlived its exp"
        time.sleep(0.05)  # polling for the expiry within the deadline
    jwks.keys = SigningKeys(MemoryKeyStore(), issuer=ISSUER)  # a long-lived token's key
    other = issue(jwks.keys)
    assert verifier.verify(other).sub == "u-1"
    fresh = SigningKeys(MemoryKeyStore(), issuer=ISSUER)
    jwks.keys = fresh  # identity's keys are all new now; a token of the new key fetches them
    assert verifier.verify(issue(fresh)).sub == "u-1"
    with pytest.raises(InvalidToken, match="not one of identity's"):
        verifier.verify(other)  # its key left the JWK Set: the remembered answer goes too
