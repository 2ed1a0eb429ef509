"""End to end: identity's account security on the real server, the way a person and an attacker
meet it: registration rules, lockout and per-address throttling through the login form, equal
timing for unknown and known emails, MFA enrollment and login with TOTP and recovery codes,
sessions and "log out everywhere", forged and expired access tokens, a device login, and finally
that no secret typed or issued along the way reached identity's log, its spans, its events, its
audit records on audit.events.v1 or (in clear) its database.

Every test drives the session's ``identity`` (tests/support/identity.py) from a source address of
its own in 127.0.0.0/8 (a loopback alias: the whole /8 reaches a server on 127.0.0.1), because
identity counts failed logins per source address and throttles at 20: failures made here must
neither throttle one another nor the other test files that share the session identity on
127.0.0.1. Expired tokens need an identity of their own (a 2-second token lifetime, no clock skew).

Secrets are collected as the tests go; the last test in this file greps for all of them (it is
last on purpose: pytest runs a file's tests in the order they are written).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import html
import itertools
import json
import re
import secrets
import sqlite3
import statistics
import string
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import grpc
import jwt
import pyotp
import pytest
import requests
from confluent_kafka import Consumer, KafkaError, TopicPartition
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from opentelemetry.proto.trace.v1 import trace_pb2
from requests.adapters import HTTPAdapter
from support.identity import TEST_CLIENTS, Identity, running_identity

from shop.identity.v1 import identity_pb2 as pb
from shop.identity.v1 import identity_pb2_grpc as pb_grpc

pytestmark = pytest.mark.kafka

GENERIC = "Incorrect email, password or code."
EVENTS_TOPIC = "identity.events.v1"
AUDIT_TOPIC = "audit.events.v1"  # identity's audit records, through the same outbox
CLIENT = "shop-web"
CALLBACK = "http://127.0.0.1:8765/callback"
BACKEND_ID, BACKEND_SECRET = "shop-backend", "dev-shop-backend-secret"
# The short-lived identity's access tokens: iat is whole seconds, so a token lives 1 to 2 s,
# which leaves time to see it accepted once before it expires.
SHORT_TTL_S = 2
_ERROR = re.compile(r'<p class="error" role="alert">(.*?)</p>', re.S)
_ALPHABET = string.ascii_letters + string.digits


# --- helpers --------------------------------------------------------------------------------


class Secrets:
    """Everything secret the tests typed or were given, for the final grep."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def add(self, what: str, *values: str) -> None:
        """Remember ``values`` (described as ``what`` in a failure) to look for at the end."""
        for value in values:
            if value:
                self.values[value] = what


def password(length: int = 20) -> str:
    """A random password nothing else in a log or a record will contain by chance."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def email(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}@example.com"


def page_error(text: str) -> str:
    """The error sentence a login page shows ("" when none)."""
    found = _ERROR.search(text)
    return html.unescape(found.group(1)).strip() if found else ""


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def rpc_error(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = caught.value
    assert isinstance(error, grpc.RpcError)
    return error


def field_violations(error: grpc.RpcError) -> dict[str, list[str]]:
    """The google.rpc.BadRequest violations of an INVALID_ARGUMENT: field -> descriptions."""
    status = rpc_status.from_call(error)
    assert status is not None, "INVALID_ARGUMENT without google.rpc.Status details"
    fields: dict[str, list[str]] = {}
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            for violation in bad_request.field_violations:
                fields.setdefault(violation.field, []).append(violation.description)
    return fields


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, claims) of a JWT, unchecked."""
    header, claims = (
        json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        for part in token.split(".")[:2]
    )
    return header, claims


def wrong_totp(secret: str) -> str:
    """A 6-digit code valid for no time step the server accepts now (±1 step of 30 s)."""
    totp = pyotp.TOTP(secret)
    now = time.time()
    valid = {totp.at(now + 30 * d) for d in range(-2, 3)}
    while (code := f"{secrets.randbelow(10**6):06d}") in valid:
        pass
    return code


class _FromAddress(HTTPAdapter):
    """Connections from a given local address (so the server sees it as the source)."""

    def __init__(self, address: str) -> None:
        self._address = address
        super().__init__()

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **kw: Any
    ) -> None:
        kw["source_address"] = (self._address, 0)
        super().init_poolmanager(connections, maxsize, block, **kw)


_ADDRESSES = itertools.count(1)


class Browser:
    """A person's browser: its own cookies, User-Agent and source address (127.0.9.N)."""

    def __init__(self, server: Identity, leaks: Secrets, device: str) -> None:
        self.issuer = server.issuer
        self.leaks = leaks
        self.device = device
        self.address = f"127.0.9.{next(_ADDRESSES)}"
        self.http = requests.Session()
        self.http.mount("http://", _FromAddress(self.address))
        self.http.headers["User-Agent"] = device

    def close(self) -> None:
        self.http.close()

    def _submit(self, form_page: str, username: str, secret: str, otp: str) -> requests.Response:
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form_page)
        nxt = re.search(r'name="next" value="([^"]*)"', form_page)
        assert csrf and nxt, f"no login form in:\n{form_page[:500]}"
        answer = self.http.post(
            f"{self.issuer}/login",
            data={
                "csrf_token": csrf.group(1),
                "next": html.unescape(nxt.group(1)),
                "username": username,
                "password": secret,
                "otp": otp,
            },
            allow_redirects=False,
            timeout=30,
        )
        if answer.status_code == 303:
            self.leaks.add("a session cookie", self.http.cookies.get("identity_session") or "")
        return answer

    def login(self, username: str, secret: str, otp: str = "") -> requests.Response:
        """The login form, filled in and posted: 303 on success, the page again otherwise."""
        form = self.http.get(f"{self.issuer}/login", timeout=30)
        assert form.status_code == 200, form.text
        return self._submit(form.text, username, secret, otp)

    def signed_in(self) -> bool:
        """Whether identity's start page sees a live session behind this browser's cookie."""
        page = self.http.get(f"{self.issuer}/", timeout=30)
        assert page.status_code == 200, page.text[:500]
        return "You are signed in" in page.text

    def timed_login(self, username: str, secret: str) -> tuple[float, requests.Response]:
        """Seconds the POST of the login form took (the form itself fetched beforehand)."""
        form = self.http.get(f"{self.issuer}/login", timeout=30).text
        started = time.perf_counter()
        answer = self._submit(form, username, secret, "")
        return time.perf_counter() - started, answer

    def tokens(self, username: str, secret: str, otp: str = "") -> dict[str, Any]:
        """Access and refresh token for shop-web: authorization code + PKCE through the form."""
        verifier = secrets.token_urlsafe(48)
        state = secrets.token_urlsafe(12)
        answer = self.http.get(
            f"{self.issuer}/authorize",
            params={
                "response_type": "code",
                "client_id": CLIENT,
                "redirect_uri": CALLBACK,
                "scope": "orders offline_access",
                "state": state,
                "code_challenge": b64url(hashlib.sha256(verifier.encode()).digest()),
                "code_challenge_method": "S256",
            },
            allow_redirects=False,
            timeout=30,
        )
        if answer.status_code == 200:
            answer = self._submit(answer.text, username, secret, otp)
            assert answer.status_code == 303, page_error(answer.text) or answer.text[:500]
            answer = self.http.get(
                self.issuer + answer.headers["Location"], allow_redirects=False, timeout=30
            )
        assert answer.status_code == 302, answer.text[:500]
        query = parse_qs(urlsplit(answer.headers["Location"]).query)
        assert query["state"] == [state]
        code = query["code"][0]
        self.leaks.add("an authorization code", code)
        self.leaks.add("a PKCE code verifier", verifier)
        answer = self.http.post(
            f"{self.issuer}/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": CALLBACK,
                "client_id": CLIENT,
                "code_verifier": verifier,
            },
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        tokens: dict[str, Any] = answer.json()
        self.leaks.add("an access token", tokens["access_token"])
        # The signature alone is what makes a JWT a credential; look for it on its own too.
        self.leaks.add("an access token's signature", tokens["access_token"].rsplit(".", 1)[1])
        self.leaks.add("a refresh token", tokens["refresh_token"])
        return tokens


def refresh(server: Identity, refresh_token: str) -> requests.Response:
    return requests.post(
        f"{server.issuer}/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": CLIENT},
        timeout=30,
    )


def introspect(server: Identity, token: str) -> dict[str, Any]:
    answer = requests.post(
        f"{server.issuer}/introspect",
        data={"token": token},
        auth=(BACKEND_ID, BACKEND_SECRET),
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def register(stub: pb_grpc.IdentityServiceStub, address: str, secret: str) -> str:
    user_id: str = stub.Register(pb.RegisterRequest(email=address, password=secret)).user_id
    return user_id


def poll(predicate: Callable[[], bool], *, timeout: float, what: str, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def leaks() -> Secrets:
    """The module's secrets; the client secret of the introspection calls is one of them."""
    found = Secrets()
    found.add("the shop-backend client secret", BACKEND_SECRET)
    return found


@pytest.fixture(scope="module")
def stub(identity: Identity) -> Iterator[pb_grpc.IdentityServiceStub]:
    with grpc.insecure_channel(identity.grpc) as channel:
        yield pb_grpc.IdentityServiceStub(channel)


@pytest.fixture
def browsers(identity: Identity, leaks: Secrets) -> Iterator[Callable[[str], Browser]]:
    """Opens browsers on the session identity, each from its own source address."""
    opened: list[Browser] = []

    def open_browser(device: str) -> Browser:
        opened.append(Browser(identity, leaks, device))
        return opened[-1]

    yield open_browser
    for browser in opened:
        browser.close()


@pytest.fixture(scope="module")
def short_lived(
    identity: Identity, tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str
) -> Iterator[Identity]:
    """A second identity whose access tokens live SHORT_TTL_S seconds with no clock skew.

    Only identity is started (the session identity's registry holds the schemas already), and
    its spans go to the session's trace receiver, so the final grep sees them with the rest.
    """
    root = tmp_path_factory.mktemp("identity-short")
    clients = root / "clients.toml"
    clients.write_text(TEST_CLIENTS)
    components = tomllib.loads((identity.root / "mesh.toml").read_text())["component"]
    receiver = next(c["port"] for c in components if c["name"] == "trace-receiver")
    overrides: dict[str, str | None] = {
        "IDENTITY_CLIENTS_FILE": str(clients),
        "IDENTITY_ACCESS_TOKEN_TTL": str(SHORT_TTL_S),
        "IDENTITY_CLOCK_SKEW": "0",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver}",
        "OTEL_BSP_SCHEDULE_DELAY": "500",
    }
    with running_identity(
        root, kafka_bootstrap, identity.env, overrides=overrides, with_registry=False
    ) as running:
        yield running


# --- 1. registration ------------------------------------------------------------------------


def test_register_refuses_weak_passwords_and_bad_emails_field_by_field(
    stub: pb_grpc.IdentityServiceStub, leaks: Secrets
) -> None:
    short = password(7)
    cases = [
        (email("short"), short, "password", "at least 8 characters"),
        (email("common"), "password1", "password", "commonly used"),
        ("not-an-email", password(), "email", "must be an email address"),
    ]
    for address, secret, field, words in cases:
        leaks.add("a password", secret)
        error = rpc_error(functools.partial(register, stub, address, secret))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, (address, error.details())
        violations = field_violations(error)
        assert field in violations, violations
        assert any(words in text for text in violations[field]), violations


def test_register_refuses_a_taken_email_and_accepts_long_passwords(
    stub: pb_grpc.IdentityServiceStub, browsers: Callable[[str], Browser], leaks: Secrets
) -> None:
    address = email("long")
    # 800-63B: at least 64 characters must be accepted; nothing is truncated (a login with
    # only the first 64 characters fails).
    long_secret = password(100)
    leaks.add("a long password", long_secret)
    assert register(stub, address, long_secret)

    other = password()
    leaks.add("a password", other)
    error = rpc_error(lambda: register(stub, address.upper(), other))
    assert error.code() is grpc.StatusCode.ALREADY_EXISTS, error.details()

    browser = browsers("e2e-long-password")
    assert browser.login(address, long_secret[:64]).status_code == 401
    assert browser.login(address, long_secret).status_code == 303


# --- 2. lockout and throttling through the login form ---------------------------------------


def test_five_wrong_passwords_lock_the_account_and_only_the_right_one_is_told(
    stub: pb_grpc.IdentityServiceStub, browsers: Callable[[str], Browser], leaks: Secrets
) -> None:
    address, right = email("lock"), password()
    register(stub, address, right)
    browser = browsers("e2e-lockout")
    wrong = [password() for _ in range(6)]
    leaks.add("a password", right, *wrong)

    for attempt in wrong[:5]:
        answer = browser.login(address, attempt)
        assert (answer.status_code, page_error(answer.text)) == (401, GENERIC)

    answer = browser.login(address, right)
    assert answer.status_code == 401
    assert "locked" in page_error(answer.text), page_error(answer.text)
    assert "identity_session" not in browser.http.cookies

    # Telling a wrong guess "locked" would confirm the account exists and is under attack.
    answer = browser.login(address, wrong[5])
    assert (answer.status_code, page_error(answer.text)) == (401, GENERIC)
    assert "locked" not in answer.text.lower()

    # An unknown email: the very same answer as a wrong password, page and all (but for the
    # address, which the form shows again).
    nobody = email("nobody")
    unknown = browser.login(nobody, wrong[5])
    assert (unknown.status_code, page_error(unknown.text)) == (401, GENERIC)
    assert unknown.text.replace(nobody, "@") == answer.text.replace(address, "@")


def test_an_address_with_20_failures_is_throttled_and_others_are_not(
    stub: pb_grpc.IdentityServiceStub, browsers: Callable[[str], Browser], leaks: Secrets
) -> None:
    address, right = email("throttle"), password()
    register(stub, address, right)
    leaks.add("a password", right)
    attacker, owner = browsers("e2e-throttled"), browsers("e2e-not-throttled")
    # Unknown emails, so no account is locked on the way: only the address counts.
    for _ in range(20):
        guess = password()
        leaks.add("a password", guess)
        answer = attacker.login(email("spray"), guess)
        assert (answer.status_code, page_error(answer.text)) == (401, GENERIC)

    answer = attacker.login(address, right)
    assert answer.status_code == 429
    assert page_error(answer.text).startswith("Too many failed attempts from your address."), (
        page_error(answer.text)
    )
    # Per address: the same login from elsewhere goes through, the account is not locked.
    assert owner.login(address, right).status_code == 303


# --- 4. timing ------------------------------------------------------------------------------


def test_an_unknown_email_takes_as_long_as_a_wrong_password(
    stub: pb_grpc.IdentityServiceStub, browsers: Callable[[str], Browser], leaks: Secrets
) -> None:
    """Without the dummy hash an unknown email would answer ~10x faster than a known one."""
    known = [email("timing"), email("timing")]
    for address in known:
        secret = password()
        leaks.add("a password", secret)
        register(stub, address, secret)
    browser = browsers("e2e-timing")
    unknown_s: list[float] = []
    wrong_s: list[float] = []
    # Interleaved, so drift in machine load hits both alike; 4 + 3 failures per known account
    # stay under its lockout threshold, 14 under the address's.
    for i in range(7):
        guess = password()
        leaks.add("a password", guess)
        took, answer = browser.timed_login(email("ghost"), guess)
        assert page_error(answer.text) == GENERIC
        unknown_s.append(took)
        took, answer = browser.timed_login(known[i % 2], guess)
        assert page_error(answer.text) == GENERIC
        wrong_s.append(took)
    ratio = statistics.median(unknown_s) / statistics.median(wrong_s)
    assert 0.5 <= ratio <= 2.0, (
        f"unknown email {statistics.median(unknown_s) * 1000:.1f} ms vs wrong password"
        f" {statistics.median(wrong_s) * 1000:.1f} ms (ratio {ratio:.2f})"
    )


# --- 5. MFA ---------------------------------------------------------------------------------


def test_mfa_enrollment_then_logins_need_a_fresh_code_or_an_unused_recovery_code(
    stub: pb_grpc.IdentityServiceStub, browsers: Callable[[str], Browser], leaks: Secrets
) -> None:
    address, secret = email("mfa"), password()
    leaks.add("a password", secret)
    register(stub, address, secret)
    token = browsers("e2e-mfa-enroll").tokens(address, secret)["access_token"]

    # The password again first (a token alone does not change the authenticator).
    with pytest.raises(grpc.RpcError) as again:
        stub.BeginMfaEnrollment(pb.BeginMfaEnrollmentRequest(), metadata=bearer(token))
    assert again.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as wrong:
        stub.BeginMfaEnrollment(
            pb.BeginMfaEnrollmentRequest(password="not the password at all"),
            metadata=bearer(token),
        )
    assert wrong.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "password: is not this account's password" in (wrong.value.details() or "")
    enrollment = stub.BeginMfaEnrollment(
        pb.BeginMfaEnrollmentRequest(password=secret), metadata=bearer(token)
    )
    leaks.add("a TOTP secret", enrollment.secret)
    uri = urlsplit(enrollment.otpauth_uri)
    params = {k: v[0] for k, v in parse_qs(uri.query).items()}
    assert (uri.scheme, uri.netloc) == ("otpauth", "totp")
    assert params["issuer"]
    assert unquote(uri.path) == f"/{params['issuer']}:{address}"  # the label: issuer:account
    assert params["secret"] == enrollment.secret
    # Key Uri Format: absent algorithm/digits/period mean SHA1/6/30, and every app assumes them.
    explicit = (params.get("algorithm", "SHA1"), params.get("digits", "6"), params.get("period"))
    assert explicit in {("SHA1", "6", "30"), ("SHA1", "6", None)}, params
    parsed = pyotp.parse_uri(enrollment.otpauth_uri)
    assert isinstance(parsed, pyotp.TOTP)
    assert (parsed.digits, parsed.interval, parsed.digest().name) == (6, 30, "sha1")
    assert parsed.issuer == params["issuer"]
    assert enrollment.qr_png.startswith(b"\x89PNG\r\n\x1a\n")

    totp = pyotp.TOTP(enrollment.secret)
    bad = wrong_totp(enrollment.secret)
    leaks.add("a TOTP code", bad)
    error = rpc_error(
        lambda: stub.ConfirmMfaEnrollment(
            pb.ConfirmMfaEnrollmentRequest(code=bad), metadata=bearer(token)
        )
    )
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "code" in field_violations(error)

    confirm = totp.now()
    leaks.add("a TOTP code", confirm)
    codes = list(
        stub.ConfirmMfaEnrollment(
            pb.ConfirmMfaEnrollmentRequest(code=confirm), metadata=bearer(token)
        ).recovery_codes
    )
    leaks.add("a recovery code", *codes, *(c.replace("-", "") for c in codes))
    assert len(codes) == len(set(codes)) == 10
    assert stub.GetMe(pb.GetMeRequest(), metadata=bearer(token)).user.mfa_enabled

    browser = browsers("e2e-mfa-login")
    # The password alone now only gets the question for the code.
    answer = browser.login(address, secret)
    assert answer.status_code == 401
    assert "code from your authenticator" in page_error(answer.text), page_error(answer.text)
    assert "identity_session" not in browser.http.cookies

    bad = wrong_totp(enrollment.secret)
    leaks.add("a TOTP code", bad)
    answer = browser.login(address, secret, bad)
    assert (answer.status_code, page_error(answer.text)) == (401, GENERIC)

    # The confirmation spent its code: it opens no login...
    answer = browser.login(address, secret, confirm)
    assert (answer.status_code, page_error(answer.text)) == (401, GENERIC)

    # ...but the next step's code does (one step of drift is accepted).
    fresh = totp.at(time.time() + 30)
    leaks.add("a TOTP code", fresh)
    assert browser.login(address, secret, fresh).status_code == 303

    # The same code again, in a new login: a replay (RFC 6238 §5.2).
    replay = browsers("e2e-mfa-replay").login(address, secret, fresh)
    assert (replay.status_code, page_error(replay.text)) == (401, GENERIC)

    recovery = codes[3]
    assert browsers("e2e-mfa-recovery").login(address, secret, recovery).status_code == 303
    again = browsers("e2e-mfa-recovery-again").login(address, secret, recovery)
    assert (again.status_code, page_error(again.text)) == (401, GENERIC)


# --- 6. sessions ----------------------------------------------------------------------------


def test_sessions_are_listed_revoked_one_by_one_and_everywhere(
    identity: Identity,
    stub: pb_grpc.IdentityServiceStub,
    browsers: Callable[[str], Browser],
    leaks: Secrets,
) -> None:
    address, secret = email("sessions"), password()
    leaks.add("a password", secret)
    register(stub, address, secret)
    started = time.time()
    laptop, phone, tablet = (
        browsers(f"e2e-{name}/1.0 ({uuid.uuid4().hex[:6]})")
        for name in ("laptop", "phone", "tablet")
    )
    tokens = {b.device: b.tokens(address, secret) for b in (laptop, phone, tablet)}
    mine = bearer(tokens[laptop.device]["access_token"])

    listed = stub.ListSessions(pb.ListSessionsRequest(), metadata=mine).sessions
    by_device = {s.device: s for s in listed}
    assert set(by_device) == {laptop.device, phone.device, tablet.device}
    assert [s.device for s in listed if s.current] == [laptop.device]
    for session in listed:
        created = session.create_time.ToSeconds()
        assert started - 2 <= created <= session.last_seen_time.ToSeconds() <= time.time() + 2

    # Someone else's token neither sees these sessions nor ends one.
    other, other_secret = email("sessions-other"), password()
    leaks.add("a password", other_secret)
    register(stub, other, other_secret)
    theirs = bearer(browsers("e2e-stranger").tokens(other, other_secret)["access_token"])
    assert len(stub.ListSessions(pb.ListSessionsRequest(), metadata=theirs).sessions) == 1
    error = rpc_error(
        lambda: stub.RevokeSession(
            pb.RevokeSessionRequest(session_id=by_device[phone.device].session_id),
            metadata=theirs,
        )
    )
    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert phone.signed_in()

    stub.RevokeSession(
        pb.RevokeSessionRequest(session_id=by_device[phone.device].session_id), metadata=mine
    )
    assert not phone.signed_in()
    answer = refresh(identity, tokens[phone.device]["refresh_token"])
    assert (answer.status_code, answer.json()["error"]) == (400, "invalid_grant")
    error = rpc_error(
        lambda: stub.GetMe(pb.GetMeRequest(), metadata=bearer(tokens[phone.device]["access_token"]))
    )
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    remaining = stub.ListSessions(pb.ListSessionsRequest(), metadata=mine).sessions
    assert {s.device for s in remaining} == {laptop.device, tablet.device}
    assert stub.GetMe(pb.GetMeRequest(), metadata=mine).user.email == address

    # "Log out everywhere": the rest, the calling session included.
    revoked = stub.RevokeAllSessions(pb.RevokeAllSessionsRequest(), metadata=mine)
    assert revoked.revoked_count == 2
    error = rpc_error(lambda: stub.GetMe(pb.GetMeRequest(), metadata=mine))
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    for browser in (laptop, tablet):
        assert not browser.signed_in()
        answer = refresh(identity, tokens[browser.device]["refresh_token"])
        assert (answer.status_code, answer.json()["error"]) == (400, "invalid_grant")
        assert introspect(identity, tokens[browser.device]["access_token"]) == {"active": False}


# --- 7. refused tokens ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def genuine(identity: Identity, stub: pb_grpc.IdentityServiceStub, leaks: Secrets) -> str:
    """A real access token of a real user, to forge from."""
    address, secret = email("forged"), password()
    leaks.add("a password", secret)
    register(stub, address, secret)
    browser = Browser(identity, leaks, "e2e-forgery")
    try:
        token: str = browser.tokens(address, secret)["access_token"]
    finally:
        browser.close()
    return token


def _alg_none(token: str, jwks: dict[str, Any]) -> str:
    header, claims = unverified(token)
    return f"{b64url_json({**header, 'alg': 'none'})}.{b64url_json(claims)}."


def _hs256_with_the_public_key(token: str, jwks: dict[str, Any]) -> str:
    """The classic key confusion: HMAC keyed with the PEM a verifier would hold."""
    header, claims = unverified(token)
    jwk = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    public = jwt.PyJWK(jwk).key
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = f"{b64url_json({**header, 'alg': 'HS256'})}.{b64url_json(claims)}"
    signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def _audience_edited(token: str, jwks: dict[str, Any]) -> str:
    claims = unverified(token)[1]
    head, _, signature = token.split(".")
    return f"{head}.{b64url_json({**claims, 'aud': 'other'})}.{signature}"


def _unknown_kid(token: str, jwks: dict[str, Any]) -> str:
    """Well formed and validly signed, by a key identity never had."""
    claims = unverified(token)[1]
    stranger = ec.generate_private_key(ec.SECP256R1())
    return jwt.encode(
        claims, stranger, algorithm="ES256", headers={"kid": "made-up-kid", "typ": "at+jwt"}
    )


def _stranger_key_real_kid(token: str, jwks: dict[str, Any]) -> str:
    """Validly signed by a key identity never had, under the kid of the key it has."""
    header, claims = unverified(token)
    stranger = ec.generate_private_key(ec.SECP256R1())
    return jwt.encode(
        claims, stranger, algorithm="ES256", headers={"kid": header["kid"], "typ": "at+jwt"}
    )


@pytest.mark.parametrize(
    "forge",
    [_alg_none, _hs256_with_the_public_key, _audience_edited, _unknown_kid, _stranger_key_real_kid],
)
def test_forged_tokens_are_refused_by_get_me_and_introspection(
    identity: Identity,
    stub: pb_grpc.IdentityServiceStub,
    genuine: str,
    forge: Callable[[str, dict[str, Any]], str],
) -> None:
    jwks = requests.get(f"{identity.issuer}/.well-known/jwks.json", timeout=30).json()
    # The genuine one passes: what follows is refused for its forgery, not for being a token.
    assert introspect(identity, genuine)["active"] is True
    assert stub.GetMe(pb.GetMeRequest(), metadata=bearer(genuine)).user.user_id

    forged = forge(genuine, jwks)
    assert forged != genuine
    assert introspect(identity, forged) == {"active": False}
    error = rpc_error(lambda: stub.GetMe(pb.GetMeRequest(), metadata=bearer(forged)))
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED, error.details()


def test_a_genuine_token_names_only_the_mesh_as_its_audience(
    identity: Identity, genuine: str
) -> None:
    """A token presented to another audience is the gateway's to refuse: an independent verifier
    (PyJWT, against the published JWKS) refuses it for any aud but the mesh's."""
    keys = jwt.PyJWKClient(f"{identity.issuer}/.well-known/jwks.json")
    key = keys.get_signing_key_from_jwt(genuine)
    assert jwt.decode(
        genuine, key, algorithms=["ES256"], audience="meshkit", issuer=identity.issuer
    )
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(genuine, key, algorithms=["ES256"], audience="other", issuer=identity.issuer)


def test_an_expired_token_is_refused(short_lived: Identity, leaks: Secrets) -> None:
    address, secret = email("expiry"), password()
    leaks.add("a password", secret)
    with grpc.insecure_channel(short_lived.grpc) as channel:
        short_stub = pb_grpc.IdentityServiceStub(channel)
        register(short_stub, address, secret)
        browser = Browser(short_lived, leaks, "e2e-expiry")
        try:
            token = browser.tokens(address, secret)["access_token"]
        finally:
            browser.close()
        claims = unverified(token)[1]
        assert claims["exp"] - claims["iat"] == SHORT_TTL_S
        # Accepted while it lives (at least 1 s of it is left: iat is rounded down)...
        assert introspect(short_lived, token)["active"] is True
        # ...and refused once exp has passed, with no leeway on this server.
        poll(
            lambda: introspect(short_lived, token) == {"active": False},
            timeout=10,
            what="the token to expire",
            every=0.25,
        )
        assert time.time() >= claims["exp"]
        error = rpc_error(lambda: short_stub.GetMe(pb.GetMeRequest(), metadata=bearer(token)))
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED, error.details()


# --- the device grant (so its codes are among the secrets looked for) -----------------------


def test_a_device_login_approved_in_the_browser(
    identity: Identity,
    stub: pb_grpc.IdentityServiceStub,
    browsers: Callable[[str], Browser],
    leaks: Secrets,
) -> None:
    address, secret = email("device"), password()
    leaks.add("a password", secret)
    register(stub, address, secret)
    tv = requests.post(
        f"{identity.issuer}/device_authorization",
        data={"client_id": "shop-tv", "scope": "orders"},
        timeout=30,
    ).json()
    leaks.add("a device code", tv["device_code"])
    leaks.add("a user code", tv["user_code"])

    answers: list[requests.Response] = []
    answered_at = [float("-inf")]

    def poll_token() -> bool:
        """One token request, never sooner than the interval after the last answer (RFC 8628
        §3.5: sooner earns slow_down, and 5 s more for every later poll)."""
        if time.monotonic() - answered_at[0] < tv["interval"]:
            return False
        answers.append(
            requests.post(
                f"{identity.issuer}/token",
                data={
                    "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
                    "device_code": tv["device_code"],
                    "client_id": "shop-tv",
                },
                timeout=30,
            )
        )
        answered_at[0] = time.monotonic()
        return True

    assert poll_token()
    assert answers[-1].json()["error"] == "authorization_pending"
    browser = browsers("e2e-device-approver")
    assert browser.login(address, secret).status_code == 303
    page = browser.http.get(tv["verification_uri_complete"], timeout=30)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf, page.text[:500]
    approved = browser.http.post(
        f"{identity.issuer}/device",
        data={"csrf_token": csrf.group(1), "user_code": tv["user_code"], "decision": "approve"},
        timeout=30,
    )
    assert approved.status_code == 200, approved.text[:500]

    poll(
        lambda: poll_token() and answers[-1].status_code == 200,
        timeout=10,
        what="the device token",
    )
    assert all(
        a.status_code == 200 or a.json()["error"] == "authorization_pending" for a in answers
    )
    tokens = answers[-1].json()
    leaks.add("an access token", tokens["access_token"], tokens["access_token"].rsplit(".")[-1])
    leaks.add("a refresh token", tokens.get("refresh_token", ""))
    me = stub.GetMe(pb.GetMeRequest(), metadata=bearer(tokens["access_token"]))
    assert me.user.email == address


# --- 8. no secrets anywhere (keep this test last in the file) -------------------------------


def _contains(haystack: bytes, secret: str) -> bool:
    needle = secret.encode()
    if secret.isdigit():
        # A 6-digit TOTP code would turn up by chance inside longer numbers (timestamps, ids,
        # a duration's fraction): only a number of exactly those digits counts.
        return re.search(rb"(?<![\d.])" + re.escape(needle) + rb"(?!\d)", haystack) is not None
    return needle in haystack


def _marker(server: Identity, leaks: Secrets) -> tuple[str, bytes]:
    """Register a last user on ``server`` inside a trace of our own: (its email, the trace id).

    Identity's outbox relay and its span exporter each keep order, so once this user's event
    is on the topic and this call's span in the store, everything before them is too."""
    trace_id = secrets.token_bytes(16)
    address, secret = email("marker"), password()
    leaks.add("a password", secret)
    traceparent = f"00-{trace_id.hex()}-{secrets.token_hex(8)}-01"
    with grpc.insecure_channel(server.grpc) as channel:
        pb_grpc.IdentityServiceStub(channel).Register(
            pb.RegisterRequest(email=address, password=secret),
            metadata=(("traceparent", traceparent),),
        )
    return address, trace_id


def _spans(store: Path) -> tuple[dict[str, bytes], set[bytes]]:
    """Every span of the trace store (what it stored: name, attributes, events, as protobuf
    bytes), by a readable name; and the trace ids present."""
    found: dict[str, bytes] = {}
    traces: set[bytes] = set()
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as conn:
        for trace_id, service, blob in conn.execute("SELECT trace_id, service, span FROM spans"):
            span = trace_pb2.Span.FromString(blob)
            found[f"span {service} {span.name!r} {span.span_id.hex()}"] = bytes(blob)
            traces.add(bytes(trace_id))
    return found, traces


def _raw(value: str | bytes | None) -> bytes:
    return value.encode() if isinstance(value, str) else value or b""


def _kafka(bootstrap: str) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"e2e-identity-secrets-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )


def _ends(consumer: Consumer, name: str) -> dict[int, int]:
    """Each partition of topic ``name`` and its end offset (high watermark); {} when there is
    no such topic yet."""
    topic = consumer.list_topics(name, timeout=10).topics.get(name)
    if topic is None or topic.error is not None:
        return {}
    return {
        p: consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1]
        for p in topic.partitions
    }


@pytest.fixture(scope="module", autouse=True)
def events_before(kafka_bootstrap: str) -> dict[str, dict[int, int]]:
    """Where EVENTS_TOPIC and AUDIT_TOPIC ended before this module's first test: its records
    start after."""
    consumer = _kafka(kafka_bootstrap)
    try:
        return {topic: _ends(consumer, topic) for topic in (EVENTS_TOPIC, AUDIT_TOPIC)}
    finally:
        consumer.close()


def _events(
    bootstrap: str,
    topic: str,
    start: dict[int, int],
    markers: list[bytes],
    timeout: float = 30.0,
) -> dict[str, bytes]:
    """Every record on ``topic`` since ``start`` (key, value, header names and values), read
    until each marker was seen and then to the end of every partition."""
    consumer = _kafka(bootstrap)
    records: dict[str, bytes] = {}
    try:
        partitions = sorted(_ends(consumer, topic))
        position = {p: start.get(p, 0) for p in partitions}
        consumer.assign([TopicPartition(topic, p, position[p]) for p in partitions])
        unseen = set(markers)
        ends: dict[int, int] | None = None
        deadline = time.monotonic() + timeout
        while ends is None or any(position[p] < ends[p] for p in partitions):
            assert time.monotonic() < deadline, f"{topic}: markers {unseen} never came"
            message = consumer.poll(0.2)
            if message is not None and (error := message.error()) is not None:
                assert error.code() == KafkaError._PARTITION_EOF, str(error)
            elif message is not None:
                partition, offset = message.partition() or 0, message.offset() or 0
                raw = _raw(message.key()) + b"\n" + _raw(message.value())
                headers = message.headers() or []
                # A consumed record's headers are a list of pairs (a dict only when producing).
                for name, value in headers.items() if isinstance(headers, dict) else headers:
                    raw += b"\n" + name.encode() + b"=" + _raw(value)
                records[f"record {topic}[{partition}]@{offset}"] = raw
                position[partition] = offset + 1
                unseen = {m for m in unseen if m not in raw}
            if not unseen and ends is None:
                ends = _ends(consumer, topic)
    finally:
        consumer.close()
    return records


def test_no_secret_reached_logs_spans_events_or_the_database(
    identity: Identity,
    short_lived: Identity,
    kafka_bootstrap: str,
    events_before: dict[str, dict[int, int]],
    leaks: Secrets,
) -> None:
    kinds = set(leaks.values.values())
    for kind in (
        "a password",
        "a TOTP code",
        "a recovery code",
        "an access token",
        "a refresh token",
        "an authorization code",
        "a device code",
    ):
        assert kind in kinds, f"no {kind} was collected: did an earlier test not run?"

    markers = [_marker(server, leaks) for server in (identity, short_lived)]
    store = identity.root / ".mesh" / "data" / "traces.db"
    spans: dict[str, bytes] = {}

    def marked_spans_stored() -> bool:
        nonlocal spans
        spans, traces = _spans(store)
        return all(trace_id in traces for _, trace_id in markers)

    poll(marked_spans_stored, timeout=15, what="the marker calls' spans in the trace store")
    haystacks: dict[str, bytes] = {
        f"{server.root.name}/identity.log": (server.root / ".mesh/logs/identity.log").read_bytes()
        for server in (identity, short_lived)
    }
    haystacks.update(spans)
    haystacks.update(
        _events(
            kafka_bootstrap,
            EVENTS_TOPIC,
            events_before[EVENTS_TOPIC],
            [address.encode() for address, _ in markers],
        )
    )
    # The audit records: the marker's user_created carries its trace id.
    haystacks.update(
        _events(
            kafka_bootstrap,
            AUDIT_TOPIC,
            events_before[AUDIT_TOPIC],
            [trace_id.hex().encode() for _, trace_id in markers],
        )
    )
    # Not to be vacuous: each source holds what identity did in this module.
    assert all(haystacks[f"{s.root.name}/identity.log"] for s in (identity, short_lived))
    assert any(b"POST /login" in blob for blob in spans.values())
    # (The throttling test alone made 20 LoginFailed events, and 20 authn_login_fail records.)
    for topic in (EVENTS_TOPIC, AUDIT_TOPIC):
        assert sum(1 for name in haystacks if name.startswith(f"record {topic}")) >= 20

    # Identity's own database holds digests of codes, tokens and cookies, never the values. Two
    # things must stay readable there: the TOTP secret (to compute codes; at-rest encryption is
    # the signing keys' open question too) and the short-lived user code a person types.
    for server in (identity, short_lived):
        for path in sorted((server.root / ".mesh" / "data").glob("identity.db*")):
            haystacks[f"database {server.root.name}/{path.name}"] = path.read_bytes()
    readable_in_database = {"a TOTP secret", "a user code"}

    found = sorted(
        f"{what} in {where}"
        for secret, what in leaks.values.items()
        for where, haystack in haystacks.items()
        if _contains(haystack, secret)
        and not (where.startswith("database ") and what in readable_in_database)
    )
    assert not found, "secrets leaked:\n" + "\n".join(found)
