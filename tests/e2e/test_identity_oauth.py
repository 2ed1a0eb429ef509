"""End to end: identity's OAuth 2 authorization server as real clients and browsers use it.

Everything goes through HTTP (and, for the tokens' effect on the mesh, gRPC) on the running
identity of the session fixture ``identity``: authlib's ``OAuth2Session`` is the client, a
``requests.Session`` holding cookies is the person's browser that fills in the login and device
forms, PyJWT checks the access tokens against the published JWKS, and the confidential client
shop-backend asks ``/introspect`` whether a token is still active.

Passwords are checked with the real argon2 parameters, so logins are few: a browser that has
logged in once gets further authorization codes without a new login.

The device grant's ``expired_token`` is shown on a second identity whose device codes live 2 s
(IDENTITY_DEVICE_CODE_TTL).
"""

from __future__ import annotations

import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import grpc
import jwt
import pytest
import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session, OAuthError
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from support.identity import Identity, running_identity

from shop.identity.v1 import identity_pb2, identity_pb2_grpc

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
MESH = str(Path(sys.executable).parent / "mesh")

PASSWORD = "correct horse battery staple 42"
WEB_REDIRECT = "http://127.0.0.1:8765/callback"
LEGACY_REDIRECT = "http://127.0.0.1:8766/legacy"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
BACKEND_AUTH = ("shop-backend", "dev-shop-backend-secret")
USER_CODE = re.compile(r"[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}")
HTTP_TIMEOUT_S = 10.0
GRPC_TIMEOUT_S = 10.0


# --- people and their browsers ---------------------------------------------------------------
@dataclass(frozen=True)
class User:
    """A registered account and its password."""

    email: str
    user_id: str
    password: str = PASSWORD


@dataclass
class Form:
    """One HTML form: where it posts, its inputs' values and its submit buttons."""

    action: str
    fields: dict[str, str] = field(default_factory=dict)
    buttons: list[tuple[str, str, str]] = field(default_factory=list)  # (name, value, label)


class _FormParser(HTMLParser):
    """The forms of a page, read the way a browser submits them (entities already decoded)."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self._button: dict[str, str] | None = None
        self._label = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append(Form(values.get("action", "")))
        elif tag == "input" and self.forms and "name" in values:
            self.forms[-1].fields[values["name"]] = values.get("value", "")
        elif tag == "button" and self.forms:
            self._button, self._label = values, ""

    def handle_data(self, data: str) -> None:
        if self._button is not None:
            self._label += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "button" and self._button is not None and self.forms:
            button = self._button
            self.forms[-1].buttons.append(
                (button.get("name", ""), button.get("value", ""), self._label.strip())
            )
            self._button = None


def only_form(html: str) -> Form:
    """The page's single form."""
    parser = _FormParser()
    parser.feed(html)
    assert len(parser.forms) == 1, html
    return parser.forms[0]


class Browser:
    """A person's browser: keeps cookies, follows redirects only when told to (so each hop can
    be looked at), and submits the forms it is shown."""

    def __init__(self, issuer: str) -> None:
        self.issuer = issuer
        self.http = requests.Session()

    def _url(self, url: str) -> str:
        return f"{self.issuer}{url}" if url.startswith("/") else url

    def get(self, url: str) -> requests.Response:
        return self.http.get(self._url(url), allow_redirects=False, timeout=HTTP_TIMEOUT_S)

    def submit(
        self, page: requests.Response, values: dict[str, str] | None = None
    ) -> requests.Response:
        """Fill in the page's form with ``values`` over its own (hidden) inputs and post it."""
        form = only_form(page.text)
        data = {**form.fields, **(values or {})}
        return self.http.post(
            self._url(form.action), data=data, allow_redirects=False, timeout=HTTP_TIMEOUT_S
        )

    def follow(self, response: requests.Response) -> requests.Response:
        assert response.status_code in (302, 303), (response.status_code, response.text)
        return self.get(response.headers["Location"])

    def log_in(self, login_page: requests.Response, user: User) -> requests.Response:
        """Sign in on the login page and go where it sends the browser back to."""
        assert login_page.status_code == 200, login_page.text
        assert only_form(login_page.text).action == "/login"
        done = self.submit(login_page, {"username": user.email, "password": user.password})
        assert done.status_code == 303, done.text
        assert "identity_session" in self.http.cookies
        return self.follow(done)

    def authorize(self, url: str, user: User) -> str:
        """Open an authorization URL, signing in when asked; the Location it redirects to."""
        answer = self.get(url)
        if answer.status_code == 200:
            answer = self.log_in(answer, user)
        assert answer.status_code == 302, (answer.status_code, answer.text)
        return answer.headers["Location"]


def redirect_params(location: str) -> dict[str, str]:
    """The parameters of a redirect to a client: query and fragment, each given once."""
    parts = urlsplit(location)
    params: dict[str, str] = {}
    for part in (parts.query, parts.fragment):
        for key, values in parse_qs(part, keep_blank_values=True, strict_parsing=False).items():
            assert len(values) == 1 and key not in params, location
            params[key] = values[0]
    return params


# --- clients ---------------------------------------------------------------------------------
def recording(client: OAuth2Session) -> list[requests.Response]:
    """Keep every token-endpoint response the client gets (for its headers)."""
    seen: list[requests.Response] = []

    def keep(response: requests.Response) -> requests.Response:
        seen.append(response)
        return response

    client.register_compliance_hook("access_token_response", keep)
    client.register_compliance_hook("refresh_token_response", keep)
    return seen


def web_client() -> OAuth2Session:
    """The shop's web app: a public client (no secret), code + PKCE S256."""
    return OAuth2Session(
        "shop-web",
        redirect_uri=WEB_REDIRECT,
        scope="orders offline_access",
        code_challenge_method="S256",
        token_endpoint_auth_method="none",
        revocation_endpoint_auth_method="none",
        default_timeout=HTTP_TIMEOUT_S,
    )


@dataclass
class CodeLogin:
    """What one authorization code flow of shop-web got."""

    client: OAuth2Session
    token: dict[str, Any]
    location: str
    state: str
    responses: list[requests.Response]


def code_login(identity: Identity, browser: Browser, user: User) -> CodeLogin:
    """shop-web's authorization code flow with PKCE, to the tokens."""
    client = web_client()
    responses = recording(client)
    verifier = generate_token(48)
    url, state = client.create_authorization_url(
        f"{identity.issuer}/authorize", code_verifier=verifier
    )
    location = browser.authorize(url, user)
    token = client.fetch_token(
        f"{identity.issuer}/token",
        authorization_response=location,
        code_verifier=verifier,
        state=state,
    )
    return CodeLogin(client, dict(token), location, state, responses)


def introspect(identity: Identity, token: str) -> dict[str, Any]:
    """RFC 7662 introspection by the confidential shop-backend (HTTP Basic)."""
    answer = requests.post(
        f"{identity.issuer}/introspect",
        data={"token": token},
        auth=BACKEND_AUTH,
        timeout=HTTP_TIMEOUT_S,
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def token_error(answer: requests.Response) -> str:
    """The RFC 6749 §5.2 error code of a token-endpoint answer."""
    assert answer.headers["Content-Type"].startswith("application/json"), answer.text
    assert answer.headers.get("Cache-Control") == "no-store"
    error: str = answer.json()["error"]
    return error


def oauth_error(call: Callable[[], object]) -> str:
    """The OAuth error code that an authlib call was refused with."""
    with pytest.raises(OAuthError) as refused:
        call()
    return str(refused.value.error)


def verify_access_token(identity: Identity, token: str) -> dict[str, Any]:
    """The claims of an access token, verified against the published JWKS (RFC 9068)."""
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "at+jwt"
    assert header["alg"] == "ES256"
    jwks = requests.get(f"{identity.issuer}/.well-known/jwks.json", timeout=HTTP_TIMEOUT_S)
    assert jwks.status_code == 200
    key = jwt.PyJWKSet.from_dict(jwks.json())[header["kid"]]
    claims: dict[str, Any] = jwt.decode(
        token,
        key,
        algorithms=["ES256"],
        audience="meshkit",
        issuer=identity.issuer,
        options={"require": ["exp", "iat", "sub", "jti", "iss", "aud"]},
    )
    return claims


# --- gRPC --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stub(identity: Identity) -> Iterator[identity_pb2_grpc.IdentityServiceStub]:
    with grpc.insecure_channel(identity.grpc) as channel:
        yield identity_pb2_grpc.IdentityServiceStub(channel)


@pytest.fixture
def user(stub: identity_pb2_grpc.IdentityServiceStub) -> User:
    """A new customer account, registered through gRPC."""
    return register(stub)


def register(stub: identity_pb2_grpc.IdentityServiceStub) -> User:
    email = f"oauth-{uuid.uuid4().hex[:12]}@example.com"
    answer = stub.Register(
        identity_pb2.RegisterRequest(email=email, password=PASSWORD), timeout=GRPC_TIMEOUT_S
    )
    return User(email, answer.user_id)


def get_me(
    stub: identity_pb2_grpc.IdentityServiceStub, token: str
) -> identity_pb2.GetMeResponse | grpc.StatusCode:
    """GetMe with the token as a bearer: the answer, or the status it was refused with."""
    try:
        answer: identity_pb2.GetMeResponse = stub.GetMe(
            identity_pb2.GetMeRequest(),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=GRPC_TIMEOUT_S,
        )
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        return code
    return answer


def assert_dead(
    identity: Identity, stub: identity_pb2_grpc.IdentityServiceStub, access_token: str
) -> None:
    """The access token is refused everywhere: inactive at /introspect, UNAUTHENTICATED by gRPC."""
    assert introspect(identity, access_token) == {"active": False}
    assert get_me(stub, access_token) == grpc.StatusCode.UNAUTHENTICATED


def assert_alive(
    identity: Identity,
    stub: identity_pb2_grpc.IdentityServiceStub,
    access_token: str,
    user: User,
) -> None:
    assert introspect(identity, access_token)["active"] is True
    me = get_me(stub, access_token)
    assert isinstance(me, identity_pb2.GetMeResponse), me
    assert me.user.email == user.email


# --- 1. authorization code + PKCE, refresh, JWT ------------------------------------------------
def test_code_flow_with_pkce_refresh_and_jwks_verified_access_token(
    identity: Identity, stub: identity_pb2_grpc.IdentityServiceStub, user: User
) -> None:
    login = code_login(identity, Browser(identity.issuer), user)

    assert login.location.startswith(f"{WEB_REDIRECT}?")
    params = redirect_params(login.location)
    assert params["state"] == login.state  # unchanged
    assert params["iss"] == identity.issuer  # RFC 9207
    assert set(params) == {"code", "state", "iss"}
    token = login.token
    assert token["token_type"] == "Bearer"
    assert token["expires_in"] == 600
    assert token["scope"] == "orders offline_access"
    assert token["refresh_token"]
    assert login.responses[-1].headers["Cache-Control"] == "no-store"

    refreshed = login.client.refresh_token(
        f"{identity.issuer}/token", refresh_token=token["refresh_token"]
    )
    assert refreshed["refresh_token"] != token["refresh_token"]  # rotated
    assert refreshed["access_token"] != token["access_token"]
    assert login.responses[-1].headers["Cache-Control"] == "no-store"

    first = verify_access_token(identity, token["access_token"])
    claims = verify_access_token(identity, refreshed["access_token"])
    for c in (first, claims):
        assert c["sub"] == user.user_id
        assert c["client_id"] == "shop-web"
        assert c["scope"] == "orders offline_access"
        assert c["roles"] == ["customer"]
        assert c["exp"] - c["iat"] == 600
    assert first["jti"] != claims["jti"]
    assert first["sid"] == claims["sid"]  # one login session
    assert_alive(identity, stub, refreshed["access_token"], user)


# --- 2. the device grant ----------------------------------------------------------------------
def tv_client() -> OAuth2Session:
    return OAuth2Session(
        "shop-tv",
        scope="orders",
        token_endpoint_auth_method="none",
        default_timeout=HTTP_TIMEOUT_S,
    )


def start_device(identity: Identity) -> dict[str, Any]:
    answer = requests.post(
        f"{identity.issuer}/device_authorization",
        data={"client_id": "shop-tv", "scope": "orders"},
        timeout=HTTP_TIMEOUT_S,
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["Cache-Control"] == "no-store"
    started: dict[str, Any] = answer.json()
    assert USER_CODE.fullmatch(started["user_code"]), started
    assert len(started["user_code"]) == 9
    assert started["verification_uri"] == f"{identity.issuer}/device"
    assert started["verification_uri_complete"] == (
        f"{identity.issuer}/device?{urlencode({'user_code': started['user_code']})}"
    )
    assert started["interval"] == 1  # IDENTITY_DEVICE_INTERVAL of the fixture
    assert started["expires_in"] == 600
    return started


def poll(tv: OAuth2Session, identity: Identity, device_code: str) -> dict[str, Any]:
    token = tv.fetch_token(
        f"{identity.issuer}/token", grant_type=DEVICE_GRANT, device_code=device_code
    )
    return dict(token)


def device_decision(
    browser: Browser, user_code: str, choice: str, user: User | None, typed: str = ""
) -> None:
    """A person at /device: types the code (as ``typed``, if given), signs in when asked
    (``user``), then presses ``choice`` (the Allow or Deny button)."""
    page = browser.get("/device")
    assert page.status_code == 200
    page = browser.submit(page, {"user_code": typed or user_code})
    if user is not None:
        page = browser.log_in(page, user)
    assert page.status_code == 200, page.text
    form = only_form(page.text)
    assert form.fields["user_code"] == user_code
    buttons = {label: (name, value) for name, value, label in form.buttons}
    assert set(buttons) == {"Allow", "Deny"}
    name, value = buttons[choice]
    done = browser.submit(page, {name: value})
    assert done.status_code == 200, done.text
    assert ("signed in" if choice == "Allow" else "denied") in done.text


def test_device_grant_pending_slow_down_approve_and_deny(
    identity: Identity, stub: identity_pb2_grpc.IdentityServiceStub, user: User
) -> None:
    tv = tv_client()
    browser = Browser(identity.issuer)

    # Approved: pending until the person allows it, then tokens.
    started = start_device(identity)
    device_code = started["device_code"]
    assert oauth_error(lambda: poll(tv, identity, device_code)) == "authorization_pending"
    polled_at = time.monotonic()
    device_decision(browser, started["user_code"], "Allow", user)
    # RFC 8628 §3.5: a client waits `interval` seconds between polls; this wait is the
    # protocol's, not a guess at when the server is ready (the approval is already stored).
    time.sleep(max(0.0, polled_at + started["interval"] - time.monotonic()))
    token = poll(tv, identity, device_code)
    assert token["token_type"] == "Bearer"
    assert token["refresh_token"]
    claims = verify_access_token(identity, token["access_token"])
    assert (claims["sub"], claims["client_id"], claims["scope"]) == (
        user.user_id,
        "shop-tv",
        "orders",
    )
    assert_alive(identity, stub, token["access_token"], user)
    # A device code is exchanged once.
    assert oauth_error(lambda: poll(tv, identity, device_code)) == "invalid_grant"

    # Polled faster than the interval: slow_down (this flow is then abandoned).
    hasty = start_device(identity)
    assert oauth_error(lambda: poll(tv, identity, hasty["device_code"])) == "authorization_pending"
    assert oauth_error(lambda: poll(tv, identity, hasty["device_code"])) == "slow_down"

    # Denied by the person (already signed in on this browser; the code typed sloppily, as
    # people do): access_denied. The first poll needs no wait.
    denied = start_device(identity)
    assert denied["user_code"] not in (started["user_code"], hasty["user_code"])
    sloppy = denied["user_code"].lower().replace("-", " ")
    device_decision(browser, denied["user_code"], "Deny", None, typed=sloppy)
    assert oauth_error(lambda: poll(tv, identity, denied["device_code"])) == "access_denied"


# --- 3. refresh token reuse -------------------------------------------------------------------
def test_refresh_token_reuse_revokes_the_whole_family(
    identity: Identity, stub: identity_pb2_grpc.IdentityServiceStub, user: User
) -> None:
    login = code_login(identity, Browser(identity.issuer), user)
    token_url = f"{identity.issuer}/token"
    a = login.token
    b = dict(login.client.refresh_token(token_url, refresh_token=a["refresh_token"]))
    c = dict(login.client.refresh_token(token_url, refresh_token=b["refresh_token"]))
    assert len({a["refresh_token"], b["refresh_token"], c["refresh_token"]}) == 3
    assert_alive(identity, stub, c["access_token"], user)

    # Another login of the same person: its own family, untouched by what follows.
    other = code_login(identity, Browser(identity.issuer), user)

    reused = oauth_error(
        lambda: login.client.refresh_token(token_url, refresh_token=a["refresh_token"])
    )
    assert reused == "invalid_grant"
    # The legitimate holder's newest token is refused too: the family is gone.
    latest = oauth_error(
        lambda: login.client.refresh_token(token_url, refresh_token=c["refresh_token"])
    )
    assert latest == "invalid_grant"
    for access in (a["access_token"], b["access_token"], c["access_token"]):
        assert_dead(identity, stub, access)

    assert_alive(identity, stub, other.token["access_token"], user)
    renewed = other.client.refresh_token(token_url, refresh_token=other.token["refresh_token"])
    assert_alive(identity, stub, renewed["access_token"], user)


def test_a_refused_refresh_does_not_spend_the_refresh_token(
    identity: Identity, stub: identity_pb2_grpc.IdentityServiceStub, user: User
) -> None:
    login = code_login(identity, Browser(identity.issuer), user)
    token_url = f"{identity.issuer}/token"
    refresh = login.token["refresh_token"]

    # More than the login granted: refused (RFC 6749 §6) without rotating the token away, so
    # presenting it again is a retry, not a reuse that would end the login.
    wider = "orders offline_access inventory.admin"
    assert (
        oauth_error(
            lambda: login.client.refresh_token(token_url, refresh_token=refresh, scope=wider)
        )
        == "invalid_scope"
    )
    narrower = dict(login.client.refresh_token(token_url, refresh_token=refresh, scope="orders"))
    assert narrower["scope"] == "orders"
    assert verify_access_token(identity, narrower["access_token"])["scope"] == "orders"
    assert_alive(identity, stub, narrower["access_token"], user)
    # The family keeps its own scope: a later refresh may ask for all of it again.
    full = dict(login.client.refresh_token(token_url, refresh_token=narrower["refresh_token"]))
    assert full["scope"] == "orders offline_access"


# --- 4. PKCE ----------------------------------------------------------------------------------
def authorize_url(identity: Identity, **params: str) -> str:
    return f"{identity.issuer}/authorize?{urlencode(params)}"


def test_pkce_is_required_s256_only_verified_and_codes_are_single_use(
    identity: Identity, stub: identity_pb2_grpc.IdentityServiceStub, user: User
) -> None:
    browser = Browser(identity.issuer)
    verifier = generate_token(48)
    base = {
        "client_id": "shop-web",
        "response_type": "code",
        "redirect_uri": WEB_REDIRECT,
        "scope": "orders",
        "state": "s-1",
    }
    # Refused before any login is asked for, back at the client (RFC 6749 §4.1.2.1).
    for extra in ({}, {"code_challenge": verifier, "code_challenge_method": "plain"}):
        answer = browser.get(authorize_url(identity, **base, **extra))
        assert answer.status_code == 302, answer.text
        assert answer.headers["Location"].startswith(f"{WEB_REDIRECT}?")
        params = redirect_params(answer.headers["Location"])
        assert params["error"] == "invalid_request", extra
        assert (params["state"], params["iss"]) == ("s-1", identity.issuer)
    assert "identity_session" not in browser.http.cookies

    token_url = f"{identity.issuer}/token"
    # A wrong code_verifier.
    client = web_client()
    url, state = client.create_authorization_url(
        f"{identity.issuer}/authorize", code_verifier=verifier
    )
    location = browser.authorize(url, user)
    wrong = generate_token(48)
    assert (
        oauth_error(
            lambda: client.fetch_token(
                token_url, authorization_response=location, code_verifier=wrong, state=state
            )
        )
        == "invalid_grant"
    )

    # A code redeemed twice: refused, and what the first redemption got is revoked.
    client = web_client()
    url, state = client.create_authorization_url(
        f"{identity.issuer}/authorize", code_verifier=verifier
    )
    location = browser.authorize(url, user)  # signed in already: straight back with a code

    def redeem() -> dict[str, Any]:
        return dict(
            client.fetch_token(
                token_url, authorization_response=location, code_verifier=verifier, state=state
            )
        )

    first = redeem()
    assert_alive(identity, stub, first["access_token"], user)
    assert oauth_error(redeem) == "invalid_grant"
    assert_dead(identity, stub, first["access_token"])
    assert (
        oauth_error(lambda: client.refresh_token(token_url, refresh_token=first["refresh_token"]))
        == "invalid_grant"
    )


# --- 5. redirect URIs -------------------------------------------------------------------------
def test_redirect_uri_must_match_exactly_and_is_never_redirected_to(identity: Identity) -> None:
    browser = Browser(identity.issuer)
    challenge = create_s256_code_challenge(generate_token(48))
    for redirect_uri in (
        f"{WEB_REDIRECT}/more",
        WEB_REDIRECT[:-1],
        f"{WEB_REDIRECT}?next=1",
        f"{WEB_REDIRECT}/",
        "http://127.0.0.1:8765/",
        "http://127.0.0.1:8765/CALLBACK",
        "https://127.0.0.1:8765/callback",
        "http://127.0.0.1:8766/callback",
        LEGACY_REDIRECT,  # another client's
        "http://attacker.example/callback",
    ):
        answer = browser.get(
            authorize_url(
                identity,
                client_id="shop-web",
                response_type="code",
                redirect_uri=redirect_uri,
                scope="orders",
                state="s-2",
                code_challenge=challenge,
                code_challenge_method="S256",
            )
        )
        assert answer.status_code == 400, (redirect_uri, answer.status_code)
        assert "Location" not in answer.headers, redirect_uri
        assert answer.headers["Content-Type"].startswith("text/html")
        assert "redirect_uri is not registered" in answer.text


# --- 6. the legacy grants ---------------------------------------------------------------------
def test_implicit_and_password_grants_only_for_the_client_allowed_them(
    identity: Identity, stub: identity_pb2_grpc.IdentityServiceStub, user: User
) -> None:
    browser = Browser(identity.issuer)
    token_url = f"{identity.issuer}/token"

    # shop-web: neither.
    answer = browser.get(
        authorize_url(
            identity,
            client_id="shop-web",
            response_type="token",
            redirect_uri=WEB_REDIRECT,
            scope="orders",
            state="s-3",
        )
    )
    assert answer.status_code == 302
    assert answer.headers["Location"].startswith(WEB_REDIRECT)
    params = redirect_params(answer.headers["Location"])
    assert params["error"] == "unsupported_response_type"
    assert params["state"] == "s-3"
    password_grant = {
        "grant_type": "password",
        "username": user.email,
        "password": user.password,
        "scope": "orders",
    }
    answer = requests.post(
        token_url, data={**password_grant, "client_id": "shop-web"}, timeout=HTTP_TIMEOUT_S
    )
    assert answer.status_code == 400
    assert token_error(answer) == "unsupported_grant_type"

    # legacy-app: the implicit grant, the token in the fragment and no refresh token.
    legacy = OAuth2Session(
        "legacy-app",
        redirect_uri=LEGACY_REDIRECT,
        scope="orders",
        token_endpoint_auth_method="none",
        default_timeout=HTTP_TIMEOUT_S,
    )
    url, state = legacy.create_authorization_url(
        f"{identity.issuer}/authorize", response_type="token"
    )
    location = browser.authorize(url, user)
    parts = urlsplit(location)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == LEGACY_REDIRECT
    assert parts.query == ""
    assert redirect_params(location)["iss"] == identity.issuer
    implicit = dict(legacy.fetch_token(authorization_response=location, state=state))
    assert implicit["token_type"] == "Bearer"
    assert "refresh_token" not in implicit
    claims = verify_access_token(identity, implicit["access_token"])
    assert (claims["sub"], claims["client_id"]) == (user.user_id, "legacy-app")
    assert_alive(identity, stub, implicit["access_token"], user)

    # legacy-app: the password grant.
    legacy_password = OAuth2Session("legacy-app", scope="orders", token_endpoint_auth_method="none")
    responses = recording(legacy_password)
    granted = dict(
        legacy_password.fetch_token(token_url, username=user.email, password=user.password)
    )
    assert responses[-1].headers["Cache-Control"] == "no-store"
    claims = verify_access_token(identity, granted["access_token"])
    assert (claims["sub"], claims["client_id"]) == (user.user_id, "legacy-app")


@pytest.fixture(scope="module")
def shipped_identity(
    tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, identity: Identity
) -> Iterator[str]:
    """A second identity with the shipped clients file (no legacy client), device codes that
    live 2 seconds and a signing key that rotates every 2 seconds: its issuer. Like the
    session's ``identity`` in all else; it is up in about two seconds, cheap for a real proof."""
    root = tmp_path_factory.mktemp("identity-shipped-clients")
    overrides: dict[str, str | None] = {
        "IDENTITY_CLIENTS_FILE": None,
        "IDENTITY_DEVICE_CODE_TTL": "2",
        "IDENTITY_KEY_ROTATION": "2",
    }
    with running_identity(root, kafka_bootstrap, identity.env, overrides=overrides) as running:
        yield running.issuer


def test_discovery_lists_the_legacy_grants_only_because_a_client_may_use_them(
    identity: Identity, shipped_identity: str
) -> None:
    def metadata(issuer: str) -> dict[str, Any]:
        answer = requests.get(
            f"{issuer}/.well-known/oauth-authorization-server", timeout=HTTP_TIMEOUT_S
        )
        assert answer.status_code == 200
        body: dict[str, Any] = answer.json()
        return body

    with_legacy, shipped = metadata(identity.issuer), metadata(shipped_identity)
    # The test clients file: legacy-app may use both, so they are listed.
    assert {"implicit", "password"} <= set(with_legacy["grant_types_supported"])
    assert with_legacy["response_types_supported"] == ["code", "token"]
    assert with_legacy["response_modes_supported"] == ["query", "fragment"]
    # The shipped clients file differs only in having no legacy-app: neither is listed.
    assert {"implicit", "password"}.isdisjoint(shipped["grant_types_supported"])
    assert shipped["response_types_supported"] == ["code"]
    assert shipped["response_modes_supported"] == ["query"]
    assert set(with_legacy["grant_types_supported"]) - set(shipped["grant_types_supported"]) == {
        "implicit",
        "password",
    }


# --- 7. client credentials --------------------------------------------------------------------
def test_client_credentials_for_the_confidential_backend_only(identity: Identity) -> None:
    token_url = f"{identity.issuer}/token"
    backend = OAuth2Session(*BACKEND_AUTH, scope="orders", default_timeout=HTTP_TIMEOUT_S)
    responses = recording(backend)
    token = dict(backend.fetch_token(token_url, grant_type="client_credentials"))
    assert responses[-1].headers["Cache-Control"] == "no-store"
    assert "refresh_token" not in token
    claims = verify_access_token(identity, token["access_token"])
    assert claims["sub"] == "shop-backend"
    assert claims["client_id"] == "shop-backend"
    assert claims["roles"] == ["service"]
    assert claims["scope"] == "orders"
    assert "sid" not in claims  # no person's login behind it

    wrong = requests.post(
        token_url,
        data={"grant_type": "client_credentials"},
        auth=("shop-backend", "not-the-secret"),
        timeout=HTTP_TIMEOUT_S,
    )
    assert wrong.status_code == 401
    assert wrong.headers["WWW-Authenticate"].startswith("Basic ")
    assert token_error(wrong) == "invalid_client"

    public = requests.post(
        token_url,
        data={"grant_type": "client_credentials", "client_id": "shop-web"},
        timeout=HTTP_TIMEOUT_S,
    )
    assert public.status_code == 400
    assert token_error(public) == "unauthorized_client"


# --- 8. metadata ------------------------------------------------------------------------------
def test_metadata_at_both_well_known_addresses(identity: Identity) -> None:
    answers = [
        requests.get(f"{identity.issuer}/.well-known/{name}", timeout=HTTP_TIMEOUT_S)
        for name in ("oauth-authorization-server", "openid-configuration")
    ]
    for answer in answers:
        assert answer.status_code == 200
        assert answer.headers["Content-Type"].startswith("application/json")
    metadata = answers[0].json()
    assert answers[1].json() == metadata
    iss = identity.issuer
    assert metadata["issuer"] == iss
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert metadata["authorization_response_iss_parameter_supported"] is True
    assert {k: metadata[k] for k in metadata if k.endswith("_endpoint") or k == "jwks_uri"} == {
        "authorization_endpoint": f"{iss}/authorize",
        "token_endpoint": f"{iss}/token",
        "device_authorization_endpoint": f"{iss}/device_authorization",
        "introspection_endpoint": f"{iss}/introspect",
        "revocation_endpoint": f"{iss}/revoke",
        "jwks_uri": f"{iss}/.well-known/jwks.json",
    }
    assert {"authorization_code", "refresh_token", "client_credentials", DEVICE_GRANT} <= set(
        metadata["grant_types_supported"]
    )
    jwks = requests.get(metadata["jwks_uri"], timeout=HTTP_TIMEOUT_S).json()
    assert jwks["keys"] and all(k["alg"] == "ES256" and "d" not in k for k in jwks["keys"])

    # Token answers are never cached, errors included (RFC 6749 §5.1, §5.2).
    refused = requests.post(
        f"{iss}/token",
        data={"grant_type": "refresh_token", "client_id": "shop-web"},
        timeout=HTTP_TIMEOUT_S,
    )
    assert refused.status_code == 400
    assert token_error(refused) == "invalid_request"
    assert refused.headers["Pragma"] == "no-cache"


# --- 9. revocation ----------------------------------------------------------------------------
def test_revocation_of_a_refresh_token_and_of_unknown_tokens(
    identity: Identity, stub: identity_pb2_grpc.IdentityServiceStub, user: User
) -> None:
    browser = Browser(identity.issuer)
    login = code_login(identity, browser, user)
    token_url = f"{identity.issuer}/token"
    revoke_url = f"{identity.issuer}/revoke"
    first_access = login.token["access_token"]
    refreshed = dict(
        login.client.refresh_token(token_url, refresh_token=login.token["refresh_token"])
    )
    assert_alive(identity, stub, refreshed["access_token"], user)

    answer = login.client.revoke_token(
        revoke_url, token=refreshed["refresh_token"], token_type_hint="refresh_token"
    )
    assert answer.status_code == 200
    assert (
        oauth_error(
            lambda: login.client.refresh_token(token_url, refresh_token=refreshed["refresh_token"])
        )
        == "invalid_grant"
    )
    for access in (first_access, refreshed["access_token"]):
        assert_dead(identity, stub, access)

    # Revoking one access token (another login on the same browser, no new password).
    other = code_login(identity, browser, user)
    assert_alive(identity, stub, other.token["access_token"], user)
    answer = other.client.revoke_token(
        revoke_url, token=other.token["access_token"], token_type_hint="access_token"
    )
    assert answer.status_code == 200
    assert_dead(identity, stub, other.token["access_token"])

    # RFC 7009 §2.2: an unknown token is answered 200 too.
    for unknown in (generate_token(43), "not.a.jwt"):
        answer = requests.post(
            revoke_url, data={"token": unknown, "client_id": "shop-web"}, timeout=HTTP_TIMEOUT_S
        )
        assert answer.status_code == 200, answer.text


# --- 10. CSRF ---------------------------------------------------------------------------------
def test_login_without_the_right_csrf_token_is_refused(identity: Identity, user: User) -> None:
    client = web_client()
    url, _ = client.create_authorization_url(
        f"{identity.issuer}/authorize", code_verifier=generate_token(48)
    )
    elsewhere = Browser(identity.issuer)  # another browser: a valid token, but not for this one
    foreign = only_form(elsewhere.get(url).text).fields["csrf_token"]
    browser = Browser(identity.issuer)
    page = browser.get(url)
    assert page.status_code == 200
    assert "identity_csrf" in browser.http.cookies
    credentials = {"username": user.email, "password": user.password}
    form = only_form(page.text)
    for csrf in (None, "", "0" * 64, foreign):
        data = {**form.fields, **credentials}
        if csrf is None:
            del data["csrf_token"]
        else:
            data["csrf_token"] = csrf
        refused = browser.http.post(
            f"{identity.issuer}/login", data=data, allow_redirects=False, timeout=HTTP_TIMEOUT_S
        )
        assert refused.status_code == 400, csrf
        assert "identity_session" not in refused.headers.get("Set-Cookie", "")
        assert "identity_session" not in browser.http.cookies
        assert "The form expired" in refused.text

    # The same form with its own token signs in: it was the token that was refused.
    location = browser.authorize(url, user)
    assert "code" in redirect_params(location)


def test_a_device_code_left_unapproved_expires(shipped_identity: str) -> None:
    """RFC 8628 §3.5 expired_token: the device stops polling and may start again."""
    started = requests.post(
        f"{shipped_identity}/device_authorization",
        data={"client_id": "shop-tv", "scope": "orders"},
        timeout=HTTP_TIMEOUT_S,
    ).json()
    assert started["expires_in"] == 2
    errors: list[str] = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and (not errors or errors[-1] != "expired_token"):
        # Polling at the interval the server gave (1 s here) is the protocol, not a guess.
        time.sleep(started["interval"])
        answer = requests.post(
            f"{shipped_identity}/token",
            data={
                "grant_type": DEVICE_GRANT,
                "device_code": started["device_code"],
                "client_id": "shop-tv",
            },
            timeout=HTTP_TIMEOUT_S,
        )
        assert answer.status_code == 400
        errors.append(answer.json()["error"])
    assert errors[0] == "authorization_pending"
    assert errors[-1] == "expired_token"
    # The user code is dead too: the verification page says so.
    page = requests.get(
        f"{shipped_identity}/device",
        params={"user_code": started["user_code"]},
        timeout=HTTP_TIMEOUT_S,
    )
    assert page.status_code == 400
    assert "not valid, or it has expired" in page.text


def test_a_rotated_key_stays_published_and_its_tokens_stay_good(shipped_identity: str) -> None:
    """Keys rotate (every 2 s here); a token signed before a rotation still verifies, with the
    retired key still in the JWKS, until the token itself expires."""

    def backend_token() -> str:
        answer = requests.post(
            f"{shipped_identity}/token",
            data={"grant_type": "client_credentials"},
            auth=("shop-backend", "dev-shop-backend-secret"),
            timeout=HTTP_TIMEOUT_S,
        )
        assert answer.status_code == 200, answer.text
        token: str = answer.json()["access_token"]
        return token

    first = backend_token()
    first_kid = jwt.get_unverified_header(first)["kid"]
    deadline = time.monotonic() + 15
    second = backend_token()
    while jwt.get_unverified_header(second)["kid"] == first_kid:
        assert time.monotonic() < deadline, "the key did not rotate within 15 s"
        time.sleep(0.2)  # polling for the rotation the server makes every 2 s
        second = backend_token()
    keys = jwt.PyJWKSet.from_dict(
        requests.get(f"{shipped_identity}/.well-known/jwks.json", timeout=HTTP_TIMEOUT_S).json()
    )
    published = {key.key_id for key in keys.keys}
    assert {first_kid, jwt.get_unverified_header(second)["kid"]} <= published
    for token in (first, second):
        key = next(k for k in keys.keys if k.key_id == jwt.get_unverified_header(token)["kid"])
        claims = jwt.decode(
            token, key, algorithms=["ES256"], audience="meshkit", issuer=shipped_identity
        )
        assert claims["sub"] == "shop-backend"


def test_guessing_a_client_secret_gets_the_address_refused(shipped_identity: str) -> None:
    """Twenty wrong secrets from one address, and even the right one is refused for a while.
    Last in the file: shop-backend stays refused from this address on this identity."""

    def client_credentials(secret: str) -> requests.Response:
        return requests.post(
            f"{shipped_identity}/token",
            data={"grant_type": "client_credentials"},
            auth=("shop-backend", secret),
            timeout=HTTP_TIMEOUT_S,
        )

    assert client_credentials("dev-shop-backend-secret").status_code == 200
    for attempt in range(20):
        wrong = client_credentials(f"guess-{attempt}")
        assert wrong.status_code == 401
        assert wrong.json()["error_description"] == "client authentication failed"
    refused = client_credentials("dev-shop-backend-secret")
    assert refused.status_code == 401
    assert refused.json()["error"] == "invalid_client"
    assert "too many failed client authentications" in refused.json()["error_description"]
    assert refused.headers["WWW-Authenticate"].startswith("Basic")
