"""`mesh token`: identity's admin command run in the environment `mesh up` gives identity, on a
scratch mesh whose identity database was left by a start (migrated, first key made) and an
in-process schema registry with the contracts: only the token on stdout, and it verifies with
the kit's TokenVerifier against identity's JWKS; without the database, a clear error and
exit 1."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from identity.adapters.keys import SigningKeys, SqliteKeyStore
from identity.adapters.sqlite import MIGRATIONS
from mesh_runner.cli import main
from meshkit.db import Database
from meshkit.tokens import TokenVerifier
from schema_registry.cli import main as registry_cli
from schema_registry.server import running_server

REPO = Path(__file__).resolve().parents[3]
HTTP_PORT = 18090


def _mesh_toml(root: Path, registry_port: int) -> None:
    (root / "mesh.toml").write_text(
        "[[component]]\n"
        'name = "schema-registry"\n'
        'command = ["schema-registry", "serve"]\n'
        f"port = {registry_port}\n"
        'health = "http"\n'
        "\n"
        "[[component]]\n"
        'name = "identity"\n'
        'command = ["python", "-m", "identity"]\n'
        "port = 50056\n"
        f"http_port = {HTTP_PORT}\n"
        'health = "grpc"\n'
    )


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No setting of the developer's shell leaks into the mesh's identity."""
    for key in list(os.environ):
        if key.startswith(("IDENTITY_", "MESH_")) or key == "SCHEMA_REGISTRY_URL":
            monkeypatch.delenv(key)


@pytest.fixture
def registry() -> Iterator[str]:
    with running_server() as url:
        assert registry_cli(["--url", url, "register-all", str(REPO / "proto")]) == 0
        yield url


def test_mesh_token_prints_only_a_token_that_verifies_against_identitys_jwks(
    tmp_path: Path,
    registry: str,
    clean_env: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _mesh_toml(tmp_path, int(registry.rsplit(":", 1)[1]))
    data = tmp_path / ".mesh" / "data"
    data.mkdir(parents=True)
    issuer = f"http://127.0.0.1:{HTTP_PORT}"
    db = Database(data / "identity.db", MIGRATIONS)
    keys = SigningKeys(SqliteKeyStore(db), issuer=issuer)
    keys.active_kid()  # what identity does as it starts

    assert main(["--root", str(tmp_path), "token", "--role", "admin", "--ttl", "300"]) == 0
    out = capsys.readouterr().out
    token = out.strip()
    assert out == token + "\n" and token.count(".") == 2  # nothing but the token

    verifier = TokenVerifier(
        f"{issuer}/.well-known/jwks.json",
        issuer=issuer,
        audience="meshkit",
        fetch=lambda url, timeout: keys.jwks(),
    )
    caller = verifier.verify(token)
    assert (caller.sub, caller.roles, caller.client_id) == ("dev-admin", ("admin",), "mesh-cli")
    head = token.split(".")[0]
    header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    assert header["kid"] == keys.active_kid() and header["typ"] == "at+jwt"
    claims = keys.verify(token)
    assert claims["exp"] - claims["iat"] == 300

    # Audited through identity's outbox, on the audit topic, without the token in it.
    with db.snapshot() as conn:
        rows = conn.execute("SELECT topic, value FROM meshkit_outbox").fetchall()
    assert [topic for topic, _ in rows] == ["audit.events.v1"]
    assert token.encode() not in rows[0][1] and b"authn_token_minted" in rows[0][1]
    db.close()

    assert main(["--root", str(tmp_path), "token", "--subject", "c-7"]) == 0
    assert verifier.verify(capsys.readouterr().out.strip()).sub == "c-7"


def test_without_identitys_database_it_says_run_mesh_up_first(
    tmp_path: Path, clean_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    _mesh_toml(tmp_path, 18081)
    assert main(["--root", str(tmp_path), "token", "--role", "support"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "mesh token:" in err and "run mesh up first" in err
    assert not (tmp_path / ".mesh" / "data" / "identity.db").exists()


def test_a_mesh_without_identity_is_an_error(
    tmp_path: Path, clean_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "mesh.toml").write_text(
        '[[component]]\nname = "orders"\ncommand = ["x"]\nport = 1\nhealth = "grpc"\n'
    )
    assert main(["--root", str(tmp_path), "token"]) == 1
    assert "no component 'identity'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--role", "root"], "invalid choice: 'root'"),
        (["--ttl", "0"], "must be at least 1 second"),
        (["--ttl", "soon"], "not a whole number of seconds"),
    ],
)
def test_bad_arguments_are_usage_errors(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["token", *args])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_help_names_every_role(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["token", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # as read, whatever argparse's wrapping
    assert "{customer,support,admin,auditor}" in out and "run mesh up first" in out
