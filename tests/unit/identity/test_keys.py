"""Identity's signing keys and access tokens: RFC 9068 tokens round-trip, forged and stale ones are
refused with their reason, rotation keeps retired keys exactly as long as their tokens live, an
independent verifier (PyJWT) accepts the tokens against the published JWKS, and both key stores
keep one contract (the SQLite one across a reopen)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from joserfc.jwk import ECKey

from identity.adapters.keys import (
    KEYS_MIGRATION,
    InvalidToken,
    KeyStore,
    MemoryKeyStore,
    SigningKeys,
    SqliteKeyStore,
    StoredKey,
)
from meshkit import Database

ISSUER = "https://identity.test"
T0 = 1_800_000_000.0  # a fixed "now"; tests move the clock, never sleep
TTL = 600
LEEWAY = 30
DAY = 24 * 3600


class Clock:
    """A clock the test sets by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def keys(clock: Clock) -> SigningKeys:
    return SigningKeys(MemoryKeyStore(), issuer=ISSUER, clock=clock)


def issue(keys: SigningKeys, aud: str | list[str] = "orders") -> tuple[str, dict[str, Any]]:
    return keys.issue_access_token(
        sub="user-1", aud=aud, client_id="web", scope="orders:read orders:write", roles=["buyer"]
    )


def refused(keys: SigningKeys, token: str, audience: str | None = "orders") -> str:
    with pytest.raises(InvalidToken) as caught:
        keys.verify(token, audience=audience)
    return caught.value.reason


# --- hand-built tokens: the attacks are made without a JOSE library that would refuse them ------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64json(value: object) -> str:
    return b64url(json.dumps(value).encode())


def unb64json(segment: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def compact(header: dict[str, Any], claims: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    signing_input = f"{b64json(header)}.{b64json(claims)}"
    return f"{signing_input}.{b64url(sign(signing_input.encode('ascii')))}"


def es256_signer(private_jwk: dict[str, Any]) -> Callable[[bytes], bytes]:
    """ES256 by hand (RFC 7518 §3.4: the raw 32-byte r and s, not DER)."""
    private = ECKey.import_key(private_jwk).private_key
    assert isinstance(private, ec.EllipticCurvePrivateKey)

    def sign(data: bytes) -> bytes:
        r, s = decode_dss_signature(private.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    return sign


def stored_private_jwk(store: MemoryKeyStore, kid: str) -> dict[str, Any]:
    stored = next(k for k in store.all_keys() if k.kid == kid)
    jwk: dict[str, Any] = json.loads(stored.private_jwk)
    return jwk


def valid_claims(now: float = T0) -> dict[str, Any]:
    return {
        "iss": ISSUER,
        "sub": "user-1",
        "aud": "orders",
        "exp": int(now) + TTL,
        "iat": int(now),
        "jti": "j-1",
        "client_id": "web",
        "scope": "orders:read",
        "roles": [],
    }


# --- tokens ---------------------------------------------------------------------------------


def test_a_token_round_trips_with_the_rfc9068_header_and_claims(keys: SigningKeys) -> None:
    token, claims = issue(keys)

    header_segment, payload_segment, _ = token.split(".")
    assert unb64json(header_segment) == {"alg": "ES256", "typ": "at+jwt", "kid": keys.active_kid()}
    assert unb64json(payload_segment) == claims
    assert claims == {
        "iss": ISSUER,
        "sub": "user-1",
        "aud": "orders",
        "exp": int(T0) + TTL,
        "iat": int(T0),
        "jti": claims["jti"],
        "client_id": "web",
        "scope": "orders:read orders:write",
        "roles": ["buyer"],
    }
    assert keys.verify(token, audience="orders") == claims
    assert keys.verify(token) == claims  # no audience asked: aud is still required, not matched


def test_jti_is_unique_and_carries_at_least_128_bits(keys: SigningKeys) -> None:
    jtis = {issue(keys)[1]["jti"] for _ in range(50)}

    assert len(jtis) == 50
    assert all(len(base64.urlsafe_b64decode(j + "==")) >= 16 for j in jtis)


def test_a_list_audience_is_matched_by_any_member(keys: SigningKeys) -> None:
    token, claims = issue(keys, aud=["orders", "payments"])

    assert claims["aud"] == ["orders", "payments"]
    assert keys.verify(token, audience="payments") == claims
    assert refused(keys, token, audience="shipping") == "wrong audience"


def test_extra_claims_are_added_but_may_not_replace_the_registered_ones(
    keys: SigningKeys,
) -> None:
    token, claims = keys.issue_access_token(
        sub="u", aud="orders", client_id="web", scope="", roles=[], extra={"acr": "mfa"}
    )
    assert keys.verify(token)["acr"] == "mfa" == claims["acr"]

    with pytest.raises(ValueError, match="exp"):
        keys.issue_access_token(
            sub="u", aud="orders", client_id="web", scope="", roles=[], extra={"exp": 2**40}
        )
    with pytest.raises(TypeError):
        keys.issue_access_token(sub="u", aud="orders", client_id="web", scope="", roles="admin")


def test_the_kid_is_the_rfc7638_thumbprint_and_jwks_publishes_public_keys_only(
    keys: SigningKeys,
) -> None:
    (jwk,) = keys.jwks()["keys"]

    members = {name: jwk[name] for name in ("crv", "kty", "x", "y")}  # RFC 7638 §3.2, sorted
    digest = hashlib.sha256(json.dumps(members, separators=(",", ":")).encode()).digest()
    assert jwk["kid"] == b64url(digest) == keys.active_kid()
    assert jwk["use"] == "sig"
    assert jwk["alg"] == "ES256"
    assert (jwk["kty"], jwk["crv"]) == ("EC", "P-256")
    assert "d" not in jwk


def test_the_media_type_form_of_typ_is_accepted_in_any_case(keys: SigningKeys) -> None:
    store = MemoryKeyStore()
    keys = SigningKeys(store, issuer=ISSUER, clock=Clock())
    kid = keys.active_kid()
    header = {"alg": "ES256", "typ": "Application/AT+JWT", "kid": kid}

    token = compact(header, valid_claims(), es256_signer(stored_private_jwk(store, kid)))

    assert keys.verify(token, audience="orders")["sub"] == "user-1"


# --- refusals, each with its reason -------------------------------------------------------------


def test_alg_none_is_refused(keys: SigningKeys) -> None:
    header = {"alg": "none", "typ": "at+jwt", "kid": keys.active_kid()}
    token = f"{b64json(header)}.{b64json(valid_claims())}."

    assert refused(keys, token) == "algorithm not allowed"


def test_hs256_signed_with_the_public_key_as_hmac_secret_is_refused(keys: SigningKeys) -> None:
    """RFC 8725 §2.1: the verifier must not let the token pick HMAC and use the public key
    (which everyone can fetch from the JWKS) as its secret."""
    (jwk,) = keys.jwks()["keys"]
    public_pem = ECKey.import_key(jwk).as_pem(private=False)
    header = {"alg": "HS256", "typ": "at+jwt", "kid": jwk["kid"]}

    token = compact(
        header, valid_claims(), lambda data: hmac.new(public_pem, data, hashlib.sha256).digest()
    )

    assert refused(keys, token) == "algorithm not allowed"


def test_a_wrong_audience_is_refused(keys: SigningKeys) -> None:
    token, _ = issue(keys, aud="payments")

    assert refused(keys, token, audience="orders") == "wrong audience"


def test_a_token_is_refused_from_exp_plus_leeway_on(keys: SigningKeys, clock: Clock) -> None:
    token, claims = issue(keys)

    clock.now = claims["exp"] + LEEWAY - 0.001
    assert keys.verify(token, audience="orders") == claims
    clock.now = claims["exp"] + LEEWAY
    assert refused(keys, token) == "token expired"


def test_without_leeway_a_token_is_refused_at_exp_exactly(clock: Clock) -> None:
    """RFC 7519 §4.1.4: now must be *before* exp (joserfc up to 1.7 accepted exp == now)."""
    keys = SigningKeys(MemoryKeyStore(), issuer=ISSUER, clock=clock, leeway=0)
    token, claims = issue(keys)

    clock.now = claims["exp"] - 0.001
    assert keys.verify(token) == claims
    clock.now = claims["exp"]
    assert refused(keys, token) == "token expired"


def test_a_token_issued_in_the_future_is_refused(keys: SigningKeys) -> None:
    claims = valid_claims(T0 + LEEWAY + 1)

    assert refused(keys, keys.sign(claims)) == "token issued in the future"


def test_a_token_not_yet_valid_is_refused(keys: SigningKeys) -> None:
    claims = {**valid_claims(), "nbf": int(T0) + LEEWAY + 1}

    assert refused(keys, keys.sign(claims)) == "token not yet valid"


def test_a_key_not_in_the_store_is_an_unknown_kid(keys: SigningKeys, clock: Clock) -> None:
    stranger = SigningKeys(MemoryKeyStore(), issuer=ISSUER, clock=clock)
    token, _ = issue(stranger)

    assert refused(keys, token) == "unknown key id"


def test_a_token_without_kid_is_refused(keys: SigningKeys) -> None:
    keys.active_kid()
    header = {"alg": "ES256", "typ": "at+jwt"}
    foreign = ECKey.generate_key("P-256").as_dict(private=True)

    assert refused(keys, compact(header, valid_claims(), es256_signer(foreign))) == (
        "unknown key id"
    )


def test_a_real_kid_on_a_token_signed_by_another_key_is_a_bad_signature(
    keys: SigningKeys,
) -> None:
    header = {"alg": "ES256", "typ": "at+jwt", "kid": keys.active_kid()}
    foreign = ECKey.generate_key("P-256").as_dict(private=True)

    token = compact(header, valid_claims(), es256_signer(foreign))

    assert refused(keys, token) == "bad signature"


@pytest.mark.parametrize("typ", ["JWT", "jwt", None, "at+jwt; charset=utf-8"])
def test_a_wrong_typ_is_refused(typ: str | None) -> None:
    store = MemoryKeyStore()
    keys = SigningKeys(store, issuer=ISSUER, clock=Clock())
    kid = keys.active_kid()
    header = {"alg": "ES256", "kid": kid} | ({} if typ is None else {"typ": typ})

    token = compact(header, valid_claims(), es256_signer(stored_private_jwk(store, kid)))

    assert refused(keys, token) == "wrong token type"


def test_a_crit_header_is_refused() -> None:
    store = MemoryKeyStore()
    keys = SigningKeys(store, issuer=ISSUER, clock=Clock())
    kid = keys.active_kid()
    header = {"alg": "ES256", "typ": "at+jwt", "kid": kid, "crit": ["exp"], "exp": 1}

    token = compact(header, valid_claims(), es256_signer(stored_private_jwk(store, kid)))

    assert refused(keys, token) == "unsupported critical header"


def test_a_wrong_issuer_is_refused(clock: Clock) -> None:
    store = MemoryKeyStore()
    ours = SigningKeys(store, issuer=ISSUER, clock=clock)
    # Same keys, another issuer name: the signature is good, the iss is not ours.
    token, _ = issue(SigningKeys(store, issuer="https://elsewhere.test", clock=clock))

    assert refused(ours, token) == "wrong issuer"


def test_a_tampered_payload_is_a_bad_signature(keys: SigningKeys) -> None:
    token, claims = issue(keys)
    header, _, signature = token.split(".")

    forged = f"{header}.{b64json({**claims, 'roles': ['admin']})}.{signature}"

    assert refused(keys, forged) == "bad signature"


@pytest.mark.parametrize("missing", ["sub", "aud", "exp", "iat", "jti", "client_id", "iss"])
def test_each_rfc9068_required_claim_must_be_present(keys: SigningKeys, missing: str) -> None:
    claims = valid_claims()
    del claims[missing]

    assert refused(keys, keys.sign(claims), audience=None) == f"missing claim: {missing}"


@pytest.mark.parametrize(
    "token",
    ["", "abc", "a.b", "a.b.c", "...", "é.e30.", f"{b64json(['alg'])}.e30.", "a.b.c.d.e"],
)
def test_malformed_tokens_are_refused(keys: SigningKeys, token: str) -> None:
    assert refused(keys, token) == "malformed token"


# --- rotation -------------------------------------------------------------------------------


def test_a_retired_key_is_kept_until_its_last_token_expired(
    keys: SigningKeys, clock: Clock
) -> None:
    old_kid = keys.active_kid()
    clock.now = T0 + 50
    early, _ = issue(keys)  # exp T0+650
    clock.now = T0 + 100
    last, _ = issue(keys)  # the old key's last token: exp T0+700

    new_kid = keys.rotate()  # old key retired at T0+100

    assert new_kid != old_kid
    assert keys.active_kid() == new_kid
    fresh, _ = issue(keys)
    assert unb64json(fresh.split(".")[0])["kid"] == new_kid
    assert [k["kid"] for k in keys.jwks()["keys"]] == [new_kid, old_kid]  # active first

    clock.now = T0 + 650 + LEEWAY
    assert refused(keys, early) == "token expired"  # its own exp, while its key is still kept
    assert keys.verify(last, audience="orders")["sub"] == "user-1"

    clock.now = T0 + 100 + TTL + LEEWAY - 0.001  # retired_at + ttl + leeway, just before
    assert keys.verify(last, audience="orders")["sub"] == "user-1"
    assert [k["kid"] for k in keys.jwks()["keys"]] == [new_kid, old_kid]

    clock.now = T0 + 100 + TTL + LEEWAY
    assert [k["kid"] for k in keys.jwks()["keys"]] == [new_kid]
    assert refused(keys, last) == "unknown key id"
    assert keys.verify(issue(keys)[0], audience="orders")["sub"] == "user-1"


def test_retention_counts_from_retirement_not_from_creation(
    keys: SigningKeys, clock: Clock
) -> None:
    old_kid = keys.active_kid()
    clock.now = T0 + 10 * DAY  # an old key, still active until now
    token, _ = issue(keys)

    keys.rotate()

    clock.now += TTL
    assert old_kid in {k["kid"] for k in keys.jwks()["keys"]}
    assert keys.verify(token)["sub"] == "user-1"


def test_rotate_if_due_honours_rotate_every(clock: Clock) -> None:
    keys = SigningKeys(MemoryKeyStore(), issuer=ISSUER, clock=clock, rotate_every=DAY)
    assert keys.rotate_if_due() is True  # no key yet: the first one is made
    first = keys.active_kid()

    clock.now = T0 + DAY - 0.001
    assert keys.rotate_if_due() is False
    assert keys.active_kid() == first

    clock.now = T0 + DAY
    assert keys.rotate_if_due() is True
    second = keys.active_kid()
    assert second != first
    assert keys.rotate_if_due() is False  # the new key is young

    clock.now = T0 + 2 * DAY
    assert keys.rotate_if_due() is True
    # Three keys made; the first retired a day ago, long past its tokens' life.
    assert [k["kid"] for k in keys.jwks()["keys"]] == [keys.active_kid(), second]


def test_keys_of_another_instance_over_the_same_store_are_seen_at_once(clock: Clock) -> None:
    store = MemoryKeyStore()
    issuer_a = SigningKeys(store, issuer=ISSUER, clock=clock)
    issuer_b = SigningKeys(store, issuer=ISSUER, clock=clock)
    issuer_a.active_kid()

    rotated = issuer_b.rotate()
    token, _ = issue(issuer_b)

    assert issuer_a.active_kid() == rotated
    assert issuer_a.verify(token)["sub"] == "user-1"


def test_settings_that_would_break_the_guarantees_are_refused() -> None:
    with pytest.raises(ValueError, match="token_ttl"):
        SigningKeys(MemoryKeyStore(), issuer=ISSUER, token_ttl=0.5)
    with pytest.raises(ValueError, match="leeway"):
        SigningKeys(MemoryKeyStore(), issuer=ISSUER, leeway=-1)
    with pytest.raises(ValueError, match="issuer"):
        SigningKeys(MemoryKeyStore(), issuer="")


# --- an independent verifier ----------------------------------------------------------------


def test_pyjwt_verifies_issued_tokens_against_the_published_jwks() -> None:
    # PyJWT checks exp/iat against the real time, so this issuer runs on it too.
    keys = SigningKeys(MemoryKeyStore(), issuer=ISSUER)
    before, claims_before = issue(keys)
    keys.rotate()
    after, claims_after = issue(keys)

    jwks = pyjwt.PyJWKSet.from_dict(keys.jwks())
    for token, claims in ((before, claims_before), (after, claims_after)):
        kid = pyjwt.get_unverified_header(token)["kid"]
        decoded = pyjwt.decode(
            token, jwks[kid], algorithms=["ES256"], audience="orders", issuer=ISSUER
        )
        assert decoded == claims
    with pytest.raises(pyjwt.InvalidAudienceError):
        pyjwt.decode(
            after, jwks[keys.active_kid()], algorithms=["ES256"], audience="x", issuer=ISSUER
        )


# --- the stores -----------------------------------------------------------------------------


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeyStore]:
    if request.param == "memory":
        yield MemoryKeyStore()
        return
    db = Database(tmp_path / "identity.db", [KEYS_MIGRATION])
    yield SqliteKeyStore(db)
    db.close()


def key(kid: str, at: float) -> StoredKey:
    return StoredKey(kid, json.dumps({"kid": kid}), at)


def test_store_contract_activate_is_a_compare_and_set(store: KeyStore) -> None:
    assert store.all_keys() == []
    assert store.activate(key("a", 1.0), replacing=None) is True
    assert store.activate(key("b", 2.0), replacing=None) is False  # "a" is active
    assert store.activate(key("b", 2.0), replacing="zzz") is False
    assert store.all_keys() == [key("a", 1.0)]

    assert store.activate(key("b", 2.0), replacing="a") is True
    assert store.activate(key("c", 3.0), replacing="a") is False  # "a" was already replaced

    assert store.all_keys() == [
        StoredKey("a", json.dumps({"kid": "a"}), 1.0, retired_at=2.0),
        key("b", 2.0),
    ]


def test_store_contract_signing_keys_run_on_it(store: KeyStore, clock: Clock) -> None:
    keys = SigningKeys(store, issuer=ISSUER, clock=clock)
    token, claims = issue(keys)
    keys.rotate()

    assert keys.verify(token, audience="orders") == claims
    assert len(keys.jwks()["keys"]) == 2


def test_sqlite_keys_survive_a_reopen(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "identity.db"
    db = Database(path, [KEYS_MIGRATION])
    keys = SigningKeys(SqliteKeyStore(db), issuer=ISSUER, clock=clock)
    old_kid = keys.active_kid()
    old_token, _ = issue(keys)
    clock.now += 60
    active = keys.rotate()
    token, claims = issue(keys)
    jwks = keys.jwks()
    db.close()

    db = Database(path, [KEYS_MIGRATION])
    try:
        reopened = SigningKeys(SqliteKeyStore(db), issuer=ISSUER, clock=clock)
        assert reopened.active_kid() == active
        assert reopened.jwks() == jwks
        assert {k["kid"] for k in jwks["keys"]} == {active, old_kid}
        assert reopened.verify(token, audience="orders") == claims
        assert reopened.verify(old_token, audience="orders")["sub"] == "user-1"
    finally:
        db.close()


def test_sqlite_allows_one_active_key_only(tmp_path: Path) -> None:
    db = Database(tmp_path / "identity.db", [KEYS_MIGRATION])
    try:
        assert SqliteKeyStore(db).activate(key("a", 1.0), replacing=None)
        with pytest.raises(sqlite3.IntegrityError), db.transaction() as conn:
            conn.execute(
                "INSERT INTO signing_keys (kid, private_jwk, created_at) VALUES ('b', '{}', 2)"
            )
    finally:
        db.close()


def test_instances_racing_to_create_the_first_key_agree_on_one(tmp_path: Path) -> None:
    db = Database(tmp_path / "identity.db", [KEYS_MIGRATION])
    racers = 8
    start = threading.Barrier(racers)
    kids: list[str] = []

    def race() -> None:
        keys = SigningKeys(SqliteKeyStore(db), issuer=ISSUER)
        start.wait(timeout=10)
        kids.append(keys.active_kid())

    threads = [threading.Thread(target=race) for _ in range(racers)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    try:
        assert len(kids) == racers
        assert len(set(kids)) == 1
        assert [k.kid for k in SqliteKeyStore(db).all_keys()] == kids[:1]
    finally:
        db.close()


class CountingStore(MemoryKeyStore):
    """A MemoryKeyStore that counts its reads."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def all_keys(self) -> list[StoredKey]:
        self.reads += 1
        return super().all_keys()


def test_verification_reads_the_store_once_a_second_not_per_token() -> None:
    store = CountingStore()
    keys = SigningKeys(store, issuer=ISSUER)
    token, _ = keys.issue_access_token(
        sub="u1", aud="meshkit", client_id="c", scope="s", roles=["customer"]
    )
    before = store.reads
    for _ in range(100):
        keys.verify(token, audience="meshkit")
    assert store.reads - before <= 1


def test_a_key_made_by_another_instance_verifies_at_once_and_is_published_at_once() -> None:
    store = CountingStore()
    ours = SigningKeys(store, issuer=ISSUER, refresh_every=3600)
    theirs = SigningKeys(store, issuer=ISSUER, refresh_every=3600)
    ours.active_kid()
    new_kid = theirs.rotate()
    token, _ = theirs.issue_access_token(
        sub="u1", aud="meshkit", client_id="c", scope="s", roles=["customer"]
    )
    assert ours.verify(token, audience="meshkit")["sub"] == "u1"  # an unknown kid reads again
    assert new_kid in {k["kid"] for k in ours.jwks()["keys"]}
