"""identity down: its JWK Set stays cached in the verifiers (meshkit.tokens.TokenVerifier).

Tokens signed by a key the verifier knows keep verifying however long identity is away; the set
is fresh for ``max_age`` and refetched after that (so a withdrawn key goes), at most once per
``refetch_every`` whatever the traffic, and one slow fetch holds up no other request. Identity's
own signer issues the tokens; its endpoint is a function here (tests/integration has the HTTP
one).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from identity.adapters.keys import MemoryKeyStore, SigningKeys
from meshkit.tokens import InvalidToken, TokenVerifier

ISSUER = "http://identity.test"
MAX_AGE = 300.0
REFETCH = 10.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Identity:
    """identity's JWKS endpoint: counts fetches; ``down`` refuses them, ``hold`` stalls them."""

    def __init__(self) -> None:
        self.keys = SigningKeys(MemoryKeyStore(), issuer=ISSUER, refresh_every=0)
        self.fetches = 0
        self.down = False
        self.hold: threading.Event | None = None
        self.fetching = threading.Event()

    def __call__(self, url: str, timeout: float) -> dict[str, Any]:
        self.fetches += 1
        self.fetching.set()
        if self.hold is not None:
            self.hold.wait(timeout)
        if self.down:
            raise OSError("connection refused")
        return self.keys.jwks()

    def token(self) -> str:
        token, _ = self.keys.issue_access_token(
            sub="u-1", aud="meshkit", client_id="shop-web", scope="orders", roles=["customer"]
        )
        return token


@pytest.fixture
def identity() -> Identity:
    return Identity()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def verifier(identity: Identity, clock: Clock) -> TokenVerifier:
    return TokenVerifier(
        "http://identity.test/.well-known/jwks.json",
        issuer=ISSUER,
        audience="meshkit",
        fetch=identity,
        clock=clock,
        refetch_every=REFETCH,
        max_age=MAX_AGE,
    )


def test_identity_down_for_long_known_keys_still_verify(
    identity: Identity, clock: Clock, verifier: TokenVerifier, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = identity.token(), identity.token()
    assert verifier.verify(first).sub == "u-1"
    identity.down = True
    clock.now += 10 * MAX_AGE  # far past the set's freshness
    with caplog.at_level(logging.WARNING, logger="meshkit.tokens"):
        for _ in range(50):
            assert verifier.verify(first).sub == "u-1"  # remembered
            assert verifier.verify(second).sub == "u-1"  # checked now, with the cached key
    assert identity.fetches == 2  # the first, then one attempt for the stale set: not 100
    [warning] = [r.getMessage() for r in caplog.records]
    assert "keeping the 1 cached keys" in warning
    clock.now += REFETCH  # the next attempt comes one interval later, not before
    verifier.verify(first)
    assert identity.fetches == 3


def test_an_unknown_kid_refetches_at_most_once_per_interval_while_identity_is_down(
    identity: Identity, clock: Clock, verifier: TokenVerifier
) -> None:
    verifier.verify(identity.token())
    identity.keys.rotate()  # identity signs with a key the verifier has not seen...
    unknown = identity.token()
    identity.down = True  # ...and is gone
    clock.now += REFETCH
    for _ in range(100):
        with pytest.raises(InvalidToken, match="not one of identity's"):
            verifier.verify(unknown)
    assert identity.fetches == 2
    identity.down = False
    clock.now += REFETCH  # back: the next interval's fetch finds the new key
    assert verifier.verify(unknown).sub == "u-1"
    assert identity.fetches == 3


def test_a_withdrawn_key_stops_verifying_once_the_set_is_stale(
    identity: Identity, clock: Clock, verifier: TokenVerifier
) -> None:
    old = identity.token()
    assert verifier.verify(old).sub == "u-1"
    identity.keys = SigningKeys(MemoryKeyStore(), issuer=ISSUER)  # every key replaced
    clock.now += MAX_AGE - 1
    assert verifier.verify(old).sub == "u-1"  # the set is still fresh: no fetch yet
    assert identity.fetches == 1
    clock.now += 1
    with pytest.raises(InvalidToken, match="not one of identity's"):
        verifier.verify(old)
    assert identity.fetches == 2


def test_a_slow_refresh_holds_up_no_other_request(
    identity: Identity, clock: Clock, verifier: TokenVerifier
) -> None:
    token = identity.token()
    verifier.verify(token)
    identity.fetching.clear()
    clock.now += MAX_AGE
    identity.hold = threading.Event()  # identity hangs on the next fetch
    refreshing = threading.Thread(target=verifier.verify, args=(token,))
    refreshing.start()
    try:
        assert identity.fetching.wait(5), "the stale set was never refetched"
        others = threading.Thread(target=lambda: [verifier.verify(token) for _ in range(20)])
        others.start()
        others.join(timeout=5)
        assert not others.is_alive(), "a request waited on another's refresh"
    finally:
        identity.hold.set()
        refreshing.join(timeout=5)
    assert identity.fetches == 2
