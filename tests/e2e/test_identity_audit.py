"""End to end: after a person's whole flow through the real identity (register, log in through
the login page, a wrong password, MFA enrollment, a login with a recovery code, a refresh token
replayed, an admin's grant, "log out everywhere"), identity's outbox holds an AuditRecorded for
each step, bound for audit.events.v1, each naming the account, who acted, from where, the outcome
and (for the RPCs) the trace; and no record holds the password, a code, a token or the TOTP
secret. The records are read from the outbox as the relay sends them (Confluent wire format,
Avro), decoded with the contract's schema."""

from __future__ import annotations

import html
import io
import json
import re
import secrets
import sqlite3
import string
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import grpc
import pyotp
import requests
from fastavro import parse_schema, schemaless_reader
from support.identity import Identity, login, register

from shop.identity.v1 import identity_pb2 as pb
from shop.identity.v1 import identity_pb2_grpc as pb_grpc

REPO = Path(__file__).resolve().parents[2]
SCHEMA = parse_schema(
    json.loads((REPO / "proto/mesh/audit/v1/avro/audit_recorded.avsc").read_text())
)
AUDIT_TOPIC = "audit.events.v1"
_ALPHABET = string.ascii_letters + string.digits


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _records(identity: Identity) -> list[tuple[dict[str, Any], bytes]]:
    """Every audit record in identity's outbox: (decoded, the raw row as stored)."""
    path = identity.root / ".mesh" / "data" / "identity.db"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT key, value, headers FROM meshkit_outbox WHERE topic = ? ORDER BY id",
            (AUDIT_TOPIC,),
        ).fetchall()
    found = []
    for key, value, headers in rows:
        assert value[:1] == b"\x00"  # Confluent framing: magic byte, then the schema id
        record = schemaless_reader(io.BytesIO(value[5:]), SCHEMA, SCHEMA)
        assert isinstance(record, dict) and key == record["audit_id"]
        found.append((record, bytes(key.encode()) + bytes(value) + headers.encode()))
    return found


def _failed_form_login(identity: Identity, email: str, password: str) -> int:
    """POST the login page with a wrong password, as a browser does; the status."""
    browser = requests.Session()
    page = browser.get(f"{identity.issuer}/login", timeout=10)
    token = re.search(r'name="csrf_token" value="([^"]*)"', page.text)
    assert token is not None
    answer = browser.post(
        f"{identity.issuer}/login",
        data={
            "csrf_token": html.unescape(token.group(1)),
            "next": "/",
            "username": email,
            "password": password,
        },
        allow_redirects=False,
        timeout=10,
    )
    return answer.status_code


def test_a_whole_flow_leaves_its_audit_records_and_no_secret(identity: Identity) -> None:
    password = "".join(secrets.choice(_ALPHABET) for _ in range(24))
    wrong = "".join(secrets.choice(_ALPHABET) for _ in range(24))
    email = f"audited-{uuid.uuid4().hex[:10]}@example.com"
    user_id = register(identity, email, password)
    stub = pb_grpc.IdentityServiceStub(grpc.insecure_channel(identity.grpc))

    first = login(identity, email, password)
    assert _failed_form_login(identity, email, wrong) == 401
    enrollment = stub.BeginMfaEnrollment(
        pb.BeginMfaEnrollmentRequest(password=password), metadata=_bearer(first["access_token"])
    )
    confirm = pyotp.TOTP(enrollment.secret).now()
    codes = list(
        stub.ConfirmMfaEnrollment(
            pb.ConfirmMfaEnrollmentRequest(code=confirm), metadata=_bearer(first["access_token"])
        ).recovery_codes
    )
    second = login(identity, email, password, otp=codes[0])
    # The first login's refresh token, rotated, then presented again: reuse.
    rotated = requests.post(
        f"{identity.issuer}/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": first["refresh_token"],
            "client_id": "shop-web",
        },
        timeout=10,
    )
    assert rotated.status_code == 200, rotated.text
    replayed = requests.post(
        f"{identity.issuer}/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": first["refresh_token"],
            "client_id": "shop-web",
        },
        timeout=10,
    )
    assert replayed.status_code == 400
    granted = subprocess.run(
        [sys.executable, "-m", "identity.admin", "grant-role", email, "auditor"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=identity.root,
        env={**identity.env, "MESH_CONFIG": str(identity.root / "mesh.toml")},
        check=False,
    )
    assert granted.returncode == 0, granted.stderr
    ended = stub.RevokeAllSessions(
        pb.RevokeAllSessionsRequest(), metadata=_bearer(second["access_token"])
    )
    assert ended.revoked_count >= 1

    records = [(r, raw) for r, raw in _records(identity) if r["resource_id"] == user_id]
    actions = [r["action"] for r, _ in records]
    for action in (
        "user_created",
        "authn_login_success",
        "authn_login_fail",
        "mfa_enrollment_started",
        "mfa_enrolled",
        "mfa_recovery_code_used",
        "authn_token_reuse",
        "authz_change",
        "session_revoked_all",
    ):
        assert action in actions, f"no {action} among {actions}"
    assert actions.index("user_created") < actions.index("authn_login_success")

    by_action = {r["action"]: r for r, _ in records}
    assert all(r["service"] == "identity" and r["resource_type"] == "Account" for r, _ in records)
    fail = by_action["authn_login_fail"]
    assert (fail["outcome"], fail["reason"]) == ("FAILURE", "bad_credentials")
    assert fail["source_address"] == "127.0.0.1"  # the browser's address, from the HTTP side
    success = by_action["authn_login_success"]
    assert success["actor"]["subject"] == user_id and success["actor"]["client_id"] == ""
    assert by_action["authn_token_reuse"]["actor"]["client_id"] == "shop-web"
    enrolled = by_action["mfa_enrolled"]
    assert enrolled["actor"]["client_id"] == "shop-web"  # the token's client, from gRPC
    assert enrolled["source_address"].startswith("ipv4:127.0.0.1:")  # the RPC's peer
    assert re.fullmatch(r"[0-9a-f]{32}", enrolled["trace_id"])
    assert by_action["authz_change"]["actor"]["subject"] == "operator"
    assert by_action["authz_change"]["details"]["role"] == "auditor"

    secrets_seen = {
        "the password": password,
        "the wrong password": wrong,
        "the TOTP secret": enrollment.secret,
        "an access token": first["access_token"],
        "a refresh token": first["refresh_token"],
        "a rotated refresh token": rotated.json()["refresh_token"],
        "a recovery code": codes[0],
        "an unused recovery code": codes[1],
    }
    for _, raw in records:
        for what, value in secrets_seen.items():
            assert value.encode() not in raw, f"{what} is in an audit record"
    # A six-digit code may occur in random hex by chance; no decoded string value holds it.
    for record, _ in records:
        strings = [v for v in _strings(record) if not re.fullmatch(r"[0-9a-f]{32}", v)]
        assert not any(confirm in v for v in strings), record


def _strings(value: Any) -> list[str]:
    """Every string in a decoded record, nested ones too (ids that are random hex excepted by
    the caller)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []
