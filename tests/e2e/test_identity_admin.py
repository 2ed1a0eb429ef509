"""End to end: the first admin is made with `python -m identity.admin`, and only an admin grants
roles over gRPC (PERMISSION_DENIED for anyone else); roles reach the tokens of the next login."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import grpc
import pytest
from support.identity import Identity, login, register, service_token

from meshkit.tokens import TokenVerifier
from shop.identity.v1 import identity_pb2 as pb
from shop.identity.v1 import identity_pb2_grpc as pb_grpc

PASSWORD = "correct horse battery staple 42"


def _admin(identity: Identity, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "identity.admin", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=identity.root,
        env={
            **identity.env,
            "IDENTITY_DB_PATH": str(identity.root / ".mesh" / "data" / "identity.db"),
            "MESH_CONFIG": str(identity.root / "mesh.toml"),
        },
        check=False,
    )


def _mesh_token(identity: Identity, *args: str) -> subprocess.CompletedProcess[str]:
    mesh = Path(sys.executable).parent / "mesh"
    return subprocess.run(
        [str(mesh), "--root", str(identity.root), "token", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=identity.env,
        check=False,
    )


def _stub(identity: Identity) -> pb_grpc.IdentityServiceStub:
    return pb_grpc.IdentityServiceStub(grpc.insecure_channel(identity.grpc))


def _bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def test_the_operator_makes_the_first_admin_who_then_grants_roles(identity: Identity) -> None:
    admin_email = f"admin-{uuid.uuid4().hex[:8]}@example.com"
    clerk_email = f"clerk-{uuid.uuid4().hex[:8]}@example.com"
    register(identity, admin_email, PASSWORD)
    clerk_id = register(identity, clerk_email, PASSWORD)
    stub = _stub(identity)

    # Before: a customer cannot grant anything, not even to itself.
    customer = login(identity, admin_email, PASSWORD)["access_token"]
    with pytest.raises(grpc.RpcError) as refused:
        stub.GrantRole(
            pb.GrantRoleRequest(user_id=clerk_id, role="support"), metadata=_bearer(customer)
        )
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED

    made = _admin(identity, "grant-role", admin_email, "admin")
    assert made.returncode == 0, made.stderr
    assert f"granted admin to {admin_email}" in made.stdout

    token = login(identity, admin_email, PASSWORD)["access_token"]
    me = stub.GetMe(pb.GetMeRequest(), metadata=_bearer(token)).user
    assert set(me.roles) == {"customer", "admin"}
    granted = stub.GrantRole(
        pb.GrantRoleRequest(user_id=clerk_id, role="support"), metadata=_bearer(token)
    ).user
    assert set(granted.roles) == {"customer", "support"}
    # The clerk's next login carries the role in its access token (introspection, a service's
    # RPC, says so).
    clerk = login(identity, clerk_email, PASSWORD)["access_token"]
    seen = stub.IntrospectToken(
        pb.IntrospectTokenRequest(token=clerk), metadata=_bearer(service_token(identity))
    )
    assert seen.active and set(seen.roles) == {"customer", "support"}


def test_admin_cli_refuses_an_unknown_account_and_a_bad_role(identity: Identity) -> None:
    unknown = _admin(identity, "grant-role", "nobody@example.com", "admin")
    assert unknown.returncode == 1
    assert "no account with email 'nobody@example.com'" in unknown.stderr
    bad = _admin(identity, "grant-role", "x@example.com", "root")
    assert bad.returncode == 2
    assert "invalid choice: 'root'" in bad.stderr


def test_a_bad_role_or_missing_token_is_a_clear_error(identity: Identity) -> None:
    """Who is calling is checked first (nothing is said to a caller without a token), then
    whether they may (the permission, named), then the request."""
    stub = _stub(identity)
    with pytest.raises(grpc.RpcError) as missing:
        stub.GetMe(pb.GetMeRequest())
    assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "needs an access token" in (missing.value.details() or "")
    assert "authorization: Bearer" in (missing.value.details() or "")
    email = f"someone-{uuid.uuid4().hex[:8]}@example.com"
    register(identity, email, PASSWORD)
    token = login(identity, email, PASSWORD)["access_token"]
    with pytest.raises(grpc.RpcError) as denied:
        stub.GrantRole(pb.GrantRoleRequest(user_id="u1", role="root"), metadata=_bearer(token))
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "identity.roles.grant" in (denied.value.details() or "")
    admin = _admin(identity, "token", "--role", "admin")
    assert admin.returncode == 0, admin.stderr
    with pytest.raises(grpc.RpcError) as bad:
        stub.GrantRole(
            pb.GrantRoleRequest(user_id="u1", role="root"),
            metadata=_bearer(admin.stdout.strip()),
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "role: must be one of customer, support, admin, auditor" in (bad.value.details() or "")


def test_unlock_forgets_an_accounts_failed_logins(identity: Identity) -> None:
    email = f"unlock-{uuid.uuid4().hex[:8]}@example.com"
    register(identity, email, PASSWORD)
    token = login(identity, email, PASSWORD)["access_token"]
    stub = _stub(identity)
    for _ in range(2):  # a wrong password when asked again counts as a failed login
        with pytest.raises(grpc.RpcError):
            stub.BeginMfaEnrollment(
                pb.BeginMfaEnrollmentRequest(password="not it at all"), metadata=_bearer(token)
            )
    freed = _admin(identity, "unlock", email)
    assert freed.returncode == 0, freed.stderr
    assert f"unlocked {email}" in freed.stdout and "2 failed logins forgotten" in freed.stdout
    again = _admin(identity, "unlock", email)
    assert "0 failed logins forgotten" in again.stdout


def test_mesh_token_mints_a_token_the_mesh_accepts(identity: Identity) -> None:
    """`mesh token` in the running mesh: the token verifies against identity's published JWKS
    (the kit's verifier, as every service checks it) and an admin one grants a role."""
    minted = _mesh_token(identity, "--role", "admin", "--ttl", "600")
    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.strip()
    assert minted.stdout == token + "\n"
    verifier = TokenVerifier(
        f"{identity.issuer}/.well-known/jwks.json", issuer=identity.issuer, audience="meshkit"
    )
    caller = verifier.verify(token)
    assert (caller.sub, caller.roles, caller.client_id) == ("dev-admin", ("admin",), "mesh-cli")

    email = f"helper-{uuid.uuid4().hex[:8]}@example.com"
    user_id = register(identity, email, PASSWORD)
    granted = _stub(identity).GrantRole(
        pb.GrantRoleRequest(user_id=user_id, role="auditor"), metadata=_bearer(token)
    )
    assert set(granted.user.roles) == {"customer", "auditor"}
    # A token for that very account, by its email.
    mine = _mesh_token(identity, "--subject", email)
    assert mine.returncode == 0, mine.stderr
    assert verifier.verify(mine.stdout.strip()).sub == user_id
