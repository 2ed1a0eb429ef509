"""Identity's pure rules: the lockout delay, PKCE's S256 (RFC 7636 Appendix B), user codes
(RFC 8628 §6.1), the clients file, and where the mesh finds identity's HTTP side."""

from __future__ import annotations

from pathlib import Path

import pytest

from identity.adapters.clients import ClientsError, load_clients
from identity.app.oauth import USER_CODE_ALPHABET, new_user_code, normalise_user_code, s256
from identity.domain.model import DEVICE_CODE_GRANT, Lockout, Session, SessionPolicy
from meshkit.addresses import AddressError, http_url_of


def test_five_failures_in_fifteen_minutes_lock_with_a_doubling_delay() -> None:
    rule = Lockout()
    four = [100.0, 200.0, 300.0, 400.0]
    assert rule.locked_until(four, 401.0) is None
    five = [*four, 500.0]
    assert rule.locked_until(five, 501.0) == 560.0  # 60 s after the fifth
    assert rule.locked_until([*five, 520.0], 521.0) == 640.0  # the sixth doubles it: 120 s
    assert rule.locked_until(five, 560.0) is None  # the lock lifts by itself


def test_failures_older_than_the_window_do_not_count() -> None:
    rule = Lockout()
    old = [0.0, 1.0, 2.0, 3.0]
    assert rule.locked_until([*old, 1000.0], 1001.0) is None  # 15 min = 900 s


def test_the_delay_is_capped() -> None:
    rule = Lockout(threshold=1, base_delay=60, max_delay=3600)
    many = [float(t) for t in range(1, 30)]
    assert rule.locked_until(many, 30.0) == 29.0 + 3600


def test_s256_matches_rfc_7636_appendix_b() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert s256(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_user_codes_use_the_base_20_alphabet_and_compare_loosely() -> None:
    codes = {new_user_code() for _ in range(200)}
    assert len(codes) == 200
    for code in codes:
        assert len(code) == 9 and code[4] == "-"
        assert set(code.replace("-", "")) <= set(USER_CODE_ALPHABET)
    assert normalise_user_code("bcdf ghjk") == "BCDF-GHJK"
    assert normalise_user_code("BCDFGHJK") == "BCDF-GHJK"


def test_the_shipped_clients() -> None:
    clients = load_clients(env={})
    web, tv, backend = clients["shop-web"], clients["shop-tv"], clients["shop-backend"]
    assert web.public and web.redirect_uris == (
        "http://127.0.0.1:8080/",
        "http://127.0.0.1:8765/callback",
    )
    assert web.response_types == ("code",) and not web.allows("password")
    assert tv.public and tv.allows(DEVICE_CODE_GRANT)
    assert not backend.public and backend.allows("client_credentials")
    assert backend.secret == "dev-shop-backend-secret"  # the development default
    assert not any(c.allows("password") or "token" in c.response_types for c in clients.values())


def test_a_confidential_secret_comes_from_its_variable() -> None:
    clients = load_clients(env={"SHOP_BACKEND_CLIENT_SECRET": "s3cret-from-env"})
    assert clients["shop-backend"].secret == "s3cret-from-env"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('client_id = "x"\ntype = "other"', "type must be public or confidential"),
        ('client_id = "x"\ntype = "public"\ngrant_types = ["magic"]', "unknown grant_types"),
        (
            'client_id = "x"\ntype = "public"\ngrant_types = ["client_credentials"]',
            "client_credentials needs a confidential client",
        ),
        (
            'client_id = "x"\ntype = "public"\ngrant_types = ["authorization_code"]\n'
            'response_types = ["code"]',
            "needs redirect_uris",
        ),
        ('type = "public"', "missing 'client_id'"),
        ('client_id = "x"\ntype = "public"\nfirst_party = false', "needs a consent page"),
    ],
)
def test_a_bad_clients_file_is_refused_naming_the_problem(
    tmp_path: Path, entry: str, message: str
) -> None:
    path = tmp_path / "clients.toml"
    path.write_text(f"[[client]]\n{entry}\n")
    with pytest.raises(ClientsError, match=message):
        load_clients(path, env={})


def test_http_url_of_reads_http_port_or_the_override(tmp_path: Path) -> None:
    config = tmp_path / "mesh.toml"
    config.write_text(
        '[[component]]\nname = "identity"\ncommand = ["x"]\nport = 50056\nhttp_port = 8090\n'
        'health = "grpc"\n[[component]]\nname = "orders"\ncommand = ["x"]\nport = 1\n'
        'health = "grpc"\n'
    )
    env = {"MESH_CONFIG": str(config)}
    assert http_url_of("identity", env) == "http://127.0.0.1:8090"
    assert http_url_of("identity", {**env, "MESH_URL_IDENTITY": "http://id:9/"}) == "http://id:9"
    with pytest.raises(AddressError, match="MESH_URL_ORDERS"):
        http_url_of("orders", env)


def test_a_session_ends_when_idle_too_long_when_too_old_or_when_revoked() -> None:
    policy = SessionPolicy(idle=100.0, absolute=1000.0)
    fresh = Session("s", "u", "device", created_at=0.0, last_seen=0.0)
    assert policy.live(fresh, 99.0)
    assert not policy.live(fresh, 100.0)  # idle
    used = Session("s", "u", "device", created_at=0.0, last_seen=950.0)
    assert policy.live(used, 999.0)
    assert not policy.live(used, 1000.0)  # absolute, however recently used
    revoked = Session("s", "u", "device", 0.0, 0.0, revoked_at=1.0)
    assert not policy.live(revoked, 2.0)
    assert not policy.live(None, 0.0)
