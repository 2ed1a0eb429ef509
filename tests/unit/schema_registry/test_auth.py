"""serve --auth: who may write (schema_registry.auth.Guard) and how the API answers the rest.

Identity is played by `FakeIdentity` (fake_identity.py) at the Guard's two network ports. The
end-to-end version, against identity itself, is tests/e2e/test_registry_auth.py.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator

import pytest
from support.registry import record, register
from unit.schema_registry.fake_identity import ISSUER, JWKS, FakeIdentity, basic

from meshkit.authz import Principal
from meshkit.tokens import TokenVerifier
from schema_registry.auth import Guard, Refusal, challenge, origin_of
from schema_registry.client import RegistryClient
from schema_registry.server import running_server
from schema_registry.storage import MemoryStorage

SCHEMA = record("Thing", {"name": "id", "type": "string"})


@pytest.fixture
def identity() -> FakeIdentity:
    return FakeIdentity(
        clients={
            "schema-registrar": ("s3cret", "schemas:write", ("service",)),
            "shop-backend": ("other", "orders inventory.admin", ("service",)),
        }
    )


def status(verdict: Principal | Refusal) -> int:
    """The HTTP status a verdict becomes (200 for a caller allowed to write)."""
    return verdict.status if isinstance(verdict, Refusal) else 200


# ---------------------------------------------------------------------------- the verdicts
def test_the_issuer_defaults_to_the_jwks_urls_origin() -> None:
    assert origin_of("http://127.0.0.1:8090/.well-known/jwks.json") == "http://127.0.0.1:8090"
    assert Guard(JWKS).issuer == ISSUER
    assert Guard(JWKS, issuer="https://id.example/").issuer == "https://id.example"
    with pytest.raises(ValueError, match="not an http"):
        Guard("file:///etc/jwks.json")


def test_a_token_with_schemas_write_may_write(identity: FakeIdentity) -> None:
    verdict = identity.guard().check(
        "Bearer " + identity.token("u-7", scope="orders schemas:write")
    )
    assert not isinstance(verdict, Refusal)
    assert (verdict.subject, verdict.roles, verdict.client_id) == ("u-7", ("admin",), "shop-web")
    assert verdict.token == "", "the token text is not kept with the caller"


@pytest.mark.parametrize(
    ("authorization", "error"),
    [
        ("", ""),
        ("Bearer", ""),
        ("Digest abc", ""),
        ("Bearer not.a.jwt", "invalid_token"),
        ("Basic %%%", "invalid_token"),
    ],
)
def test_missing_or_malformed_credentials_are_401(
    identity: FakeIdentity, authorization: str, error: str
) -> None:
    verdict = identity.guard().check(authorization)
    assert isinstance(verdict, Refusal)
    assert (verdict.status, verdict.error) == (401, error)


def test_a_token_for_another_audience_or_expired_is_401(identity: FakeIdentity) -> None:
    guard = identity.guard()
    for token in (identity.token(audience="elsewhere"), identity.token(expires_in=-120)):
        verdict = guard.check(f"Bearer {token}")
        assert isinstance(verdict, Refusal) and verdict.status == 401


def test_a_token_without_the_scope_is_403_naming_it(identity: FakeIdentity) -> None:
    verdict = identity.guard().check("Bearer " + identity.token(scope="orders offline_access"))
    assert isinstance(verdict, Refusal)
    assert verdict.status == 403 and "schemas:write" in verdict.reason
    assert verdict.principal is not None and verdict.principal.subject == "u-1"
    assert challenge(verdict) == [
        'Bearer realm="schema-registry", error="insufficient_scope", scope="schemas:write"'
    ]


def test_identity_unreachable_is_503_and_not_remembered(identity: FakeIdentity) -> None:
    # refetch_every=0: the JWK Set is fetched again at once when identity is back (by default
    # meshkit.tokens waits 10 s between fetches).
    verifier = TokenVerifier(
        JWKS, issuer=ISSUER, audience="meshkit", fetch=identity.fetch_json, refetch_every=0
    )
    guard = identity.guard(verifier=verifier)
    identity.reachable = False
    verdict = guard.check("Bearer " + identity.token())
    assert isinstance(verdict, Refusal) and verdict.status == 503
    down = guard.check(basic("schema-registrar", "s3cret"))
    assert isinstance(down, Refusal) and down.status == 503
    identity.reachable = True
    assert not isinstance(guard.check(basic("schema-registrar", "s3cret")), Refusal)


# ---------------------------------------------------------------------------- HTTP Basic
def test_client_credentials_are_exchanged_once_and_remembered(identity: FakeIdentity) -> None:
    guard = identity.guard()
    verdicts = [guard.check(basic("schema-registrar", "s3cret")) for _ in range(5)]
    assert identity.token_requests == 1
    verdict = verdicts[-1]
    assert not isinstance(verdict, Refusal)
    assert (verdict.subject, verdict.service, verdict.roles) == (
        "schema-registrar",
        "schema-registrar",
        ("service",),
    )


def test_a_wrong_secret_is_401_and_identity_is_asked_once_per_while(
    identity: FakeIdentity,
) -> None:
    now = [1_000_000.0]
    guard = identity.guard(wall_clock=lambda: now[0], failure_ttl=10.0)
    for _ in range(20):
        verdict = guard.check(basic("schema-registrar", "wrong"))
        assert isinstance(verdict, Refusal) and verdict.status == 401
        assert "unknown client" not in verdict.reason, "identity's detail stays in our log"
    assert identity.token_requests == 1
    now[0] += 11
    guard.check(basic("schema-registrar", "wrong"))
    assert identity.token_requests == 2, "after failure_ttl identity is asked again"
    assert not isinstance(guard.check(basic("schema-registrar", "s3cret")), Refusal)


def test_failed_exchanges_stop_before_identity_would_lock_the_registry_out(
    identity: FakeIdentity,
) -> None:
    now = [1_000_000.0]
    guard = identity.guard(wall_clock=lambda: now[0], failure_budget=3)
    good = guard.check(basic("schema-registrar", "s3cret"))  # a token held before the attack
    for n in range(3):
        assert status(guard.check(basic("schema-registrar", f"guess-{n}"))) == 401
    assert identity.token_requests == 4
    over = guard.check(basic("schema-registrar", "guess-3"))
    assert isinstance(over, Refusal) and over.status == 503
    assert identity.token_requests == 4, "identity is not asked past the budget"
    assert guard.check(basic("schema-registrar", "s3cret")) == good, "held tokens go on"
    now[0] += 15 * 60 + 1
    assert status(guard.check(basic("schema-registrar", "guess-4"))) == 401


def test_client_credentials_without_the_scope_are_403(identity: FakeIdentity) -> None:
    verdict = identity.guard().check(basic("shop-backend", "other"))
    assert isinstance(verdict, Refusal) and verdict.status == 403


# ---------------------------------------------------------------------------- over HTTP
@pytest.fixture
def storage() -> MemoryStorage:
    return MemoryStorage()


@pytest.fixture
def url(identity: FakeIdentity, storage: MemoryStorage) -> Iterator[str]:
    with running_server(storage, guard=identity.guard(), audit=True) as base:
        yield base


def test_anonymous_writes_get_confluents_401_and_reads_stay_open(url: str) -> None:
    with RegistryClient(url) as anonymous:
        refused = anonymous.post("/subjects/things-value/versions", {"schema": SCHEMA})
        assert refused.status == 401
        assert refused.json()["error_code"] == 401
        assert refused.json()["message"].startswith("Unauthorized")
        assert refused.headers["content-type"] == "application/vnd.schemaregistry.v1+json"
        assert anonymous.get("/subjects").status == 200
        assert anonymous.get("/config").status == 200
        # The lookup is a read: every serializer makes it without credentials.
        assert anonymous.post("/subjects/things-value", {"schema": SCHEMA}).error_code == 40401
        assert anonymous.put("/config", {"compatibility": "NONE"}).status == 401
        assert anonymous.delete("/subjects/things-value").status == 401
        assert anonymous.put("/mode", {"mode": "READONLY"}).status == 401


def test_the_challenge_names_both_schemes(url: str) -> None:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"DELETE /config HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        head = b""
        while chunk := sock.recv(65536):
            head += chunk
    lines = head.split(b"\r\n\r\n")[0].decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 401 Unauthorized"
    assert 'WWW-Authenticate: Bearer realm="schema-registry"' in lines
    assert 'WWW-Authenticate: Basic realm="schema-registry", charset="UTF-8"' in lines


def test_a_token_without_the_scope_gets_40301(url: str, identity: FakeIdentity) -> None:
    with RegistryClient(url, bearer_token=identity.token(scope="orders")) as client:
        refused = client.post("/subjects/things-value/versions", {"schema": SCHEMA})
    assert refused.status == 403
    assert refused.json() == {
        "error_code": 40301,
        "message": "User is denied operation Write on Subject: things-value: "
        "the credentials lack scope schemas:write",
    }


def test_writers_with_the_scope_write(url: str, identity: FakeIdentity) -> None:
    with RegistryClient(url, bearer_token=identity.token()) as client:
        found = register(client, "things-value", SCHEMA)
        assert found["version"] == 1
        assert client.put("/config/things-value", {"compatibility": "FULL"}).ok
    with RegistryClient(url, basic_auth="schema-registrar:s3cret") as client:
        assert client.delete("/subjects/things-value").json() == [1]


def test_a_read_pipelined_behind_a_guarded_write_sees_it(url: str, identity: FakeIdentity) -> None:
    """The write waits for its verdict off the loop; what came after it waits too, in order."""
    body = json.dumps({"schema": SCHEMA}).encode()
    token = identity.token().encode()
    data = (
        b"POST /subjects/p-value/versions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + token
        + b"\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
        + b"GET /subjects/p-value/versions HTTP/1.1\r\nHost: x\r\n\r\n"
        + b"DELETE /config HTTP/1.1\r\nHost: x\r\n\r\n"
        + b"GET /subjects HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    statuses = re.findall(rb"HTTP/1\.1 (\d{3})", received)
    assert statuses == [b"200", b"200", b"401", b"200"]
    assert b"[1]" in received, "the read after the write saw its version"
    assert received.rstrip().endswith(b'"p-value"]')


def test_a_guard_that_was_never_asked_refuses(
    storage: MemoryStorage, identity: FakeIdentity
) -> None:
    """Api fails closed: a guarded write without a verdict is refused, not let through."""
    from schema_registry.api import Api, WriteContext
    from schema_registry.registry import Registry

    api = Api(Registry(storage), guard=identity.guard())
    body = json.dumps({"schema": SCHEMA}).encode()
    answer = api.handle("POST", b"/subjects/x-value/versions", b"", body, WriteContext())
    assert answer.startswith(b"HTTP/1.1 401 ")
    assert api.handle("GET", b"/subjects", b"", b"").endswith(b"[]")
