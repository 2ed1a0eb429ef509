"""`python -m identity.admin token`: a development access token signed exactly as identity signs
a real one (its current key, issuer, audience, RFC 9068 header and claims), accepted by the kit's
TokenVerifier against identity's JWKS and by identity's own checks, audited without the token;
and a clear refusal when identity's database does not exist (none is created)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from unit.identity.world import Recorder

from identity import admin
from identity.adapters.hashing import PasswordHasher
from identity.adapters.keys import SigningKeys, SqliteKeyStore
from identity.adapters.sqlite import MIGRATIONS, IdentityStore
from identity.domain.model import Account
from meshkit.audit import AuditEntry, to_record
from meshkit.db import Database
from meshkit.tokens import TokenVerifier

HTTP_PORT = 18090
ISSUER = f"http://127.0.0.1:{HTTP_PORT}"


def _header(token: str) -> dict[str, Any]:
    head = token.split(".", maxsplit=1)[0]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    return decoded


@pytest.fixture
def started(tmp_path: Path) -> Iterator[tuple[dict[str, str], SigningKeys]]:
    """Identity's database as a started identity leaves it (migrated, its first key made), and
    the environment the admin command reads it with."""
    path = tmp_path / "identity.db"
    db = Database(path, MIGRATIONS)
    keys = SigningKeys(SqliteKeyStore(db), issuer=ISSUER)
    keys.active_kid()
    with db.transaction() as conn:
        IdentityStore(conn).add_account(
            Account("u-ann", "ann@example.com", PasswordHasher.for_tests().hash("x" * 12), (), 1.0)
        )
    db.close()
    env = {
        "IDENTITY_PORT": "50056",
        "IDENTITY_HTTP_PORT": str(HTTP_PORT),
        "IDENTITY_DB_PATH": str(path),
    }
    reader = Database(path, MIGRATIONS)
    yield env, SigningKeys(SqliteKeyStore(reader), issuer=ISSUER)
    reader.close()


def test_the_token_is_signed_as_a_real_one_and_verifies_against_the_jwks(
    started: tuple[dict[str, str], SigningKeys],
) -> None:
    env, keys = started
    sink = Recorder()
    token = admin.mint_token("admin", env=env, events=sink)

    header = _header(token)
    assert header == {"alg": "ES256", "typ": "at+jwt", "kid": keys.active_kid()}
    verifier = TokenVerifier(
        f"{ISSUER}/.well-known/jwks.json",
        issuer=ISSUER,
        audience="meshkit",
        fetch=lambda url, timeout: keys.jwks(),
    )
    caller = verifier.verify(token)
    assert (caller.sub, caller.roles, caller.client_id, caller.scope) == (
        "dev-admin",
        ("admin",),
        "mesh-cli",
        "orders",
    )
    claims = keys.verify(token, audience="meshkit")  # identity's own, strict checks
    assert claims["iss"] == ISSUER and claims["exp"] - claims["iat"] == admin.DEV_TOKEN_TTL
    assert set(claims) == {"iss", "sub", "aud", "exp", "iat", "jti", "client_id", "scope", "roles"}

    # Recorded as issued, so identity's revocation check (unknown = refused) accepts it.
    db = Database(env["IDENTITY_DB_PATH"], MIGRATIONS)
    with db.snapshot() as conn:
        assert not IdentityStore(conn).access_token_revoked(str(claims["jti"]))
    db.close()

    [entry] = sink.published
    assert isinstance(entry, AuditEntry) and entry.action == "authn_token_minted"
    assert entry.resource_id == "dev-admin" and entry.details["role"] == "admin"
    assert entry.details["jti"] == claims["jti"]
    assert token not in repr(to_record(entry, "identity"))


def test_subject_email_ttl_and_role(started: tuple[dict[str, str], SigningKeys]) -> None:
    env, keys = started
    token = admin.mint_token("auditor", "Ann@Example.com", 120, env=env, events=Recorder())
    claims = keys.verify(token)
    assert (claims["sub"], claims["roles"]) == ("u-ann", ["auditor"])
    assert claims["exp"] - claims["iat"] == 120
    token = admin.mint_token("support", "c-42", env=env, events=Recorder())
    assert keys.verify(token)["sub"] == "c-42"


def test_bad_arguments_are_refused(started: tuple[dict[str, str], SigningKeys]) -> None:
    env, _ = started
    with pytest.raises(ValueError, match="role must be one of"):
        admin.mint_token("root", env=env, events=Recorder())
    with pytest.raises(ValueError, match="at least 1 second"):
        admin.mint_token("admin", ttl=0, env=env, events=Recorder())
    with pytest.raises(admin.Missing, match="no account with email"):
        admin.mint_token("admin", "nobody@example.com", env=env, events=Recorder())


def test_a_token_that_outlives_its_key_says_so(
    started: tuple[dict[str, str], SigningKeys],
) -> None:
    env, _ = started
    heard: list[str] = []
    admin.mint_token(
        "admin",
        ttl=3 * 86400,
        env={**env, "IDENTITY_KEY_ROTATION": "3600"},
        events=Recorder(),
        warn=heard.append,
    )
    assert len(heard) == 1 and "stops verifying" in heard[0]


def test_no_database_is_a_clear_error_and_none_is_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "nothing" / "identity.db"
    env = {"IDENTITY_PORT": "50056", "IDENTITY_HTTP_PORT": "8090", "IDENTITY_DB_PATH": str(path)}
    with pytest.raises(admin.Missing, match="run mesh up first"):
        admin.mint_token("admin", env=env, events=Recorder())
    assert not path.exists()
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        assert admin.main(["token", "--role", "admin"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "run mesh up first" in err
