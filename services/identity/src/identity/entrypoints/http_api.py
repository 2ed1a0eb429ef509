"""Identity's HTTP side: the OAuth 2 endpoints and the login and device pages (WSGI, Werkzeug).

Endpoints: ``/authorize``, ``/token``, ``/device_authorization``, ``/introspect``, ``/revoke``,
``/.well-known/oauth-authorization-server`` (also at ``/.well-known/openid-configuration``) and
``/.well-known/jwks.json``. Pages (server-rendered forms, no JavaScript): ``/login``, ``/device``
and ``/logout``.

Forms carry a CSRF token in a hidden input: an HMAC, under a key of this process, of a random
value in a cookie (the signed double-submit cookie of OWASP's CSRF cheat sheet), so a page of
another site can neither read nor forge it. The session cookie is HttpOnly and SameSite=Lax.
Token and error answers carry ``Cache-Control: no-store`` (RFC 6749 §5.1).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from jinja2 import Environment, PackageLoader, select_autoescape
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from identity.app.accounts import Accounts, LoginRefused
from identity.app.oauth import AuthorizationServer, AuthorizeError, OAuthError
from identity.domain.model import Session

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

log = logging.getLogger(__name__)

SESSION_COOKIE = "identity_session"
# What a browser app of another origin may call (CORS): the token endpoints and discovery. Never
# the pages: they are for identity's own origin, and their forms carry CSRF tokens.
_CORS_PATHS = frozenset(
    {
        "/token",
        "/revoke",
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
        "/.well-known/jwks.json",
    }
)
CSRF_COOKIE = "identity_csrf"
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class IdentityHttp:
    """The WSGI application. Thread safety: safe to share (no per-request state on self)."""

    def __init__(
        self,
        accounts: Accounts,
        oauth: AuthorizationServer,
        jwks: Callable[[], dict[str, Any]],
        *,
        secure_cookies: bool = False,
        cors_origins: tuple[str, ...] = (),
    ) -> None:
        self._accounts = accounts
        self._oauth = oauth
        self._jwks_source = jwks
        self._secure = secure_cookies
        self._cors_origins = cors_origins
        self._csrf_key = secrets.token_bytes(32)
        self._templates = Environment(
            loader=PackageLoader("identity.entrypoints", "templates"),
            autoescape=select_autoescape(default=True),
        )
        self._urls = Map(
            [
                Rule("/", endpoint="index", methods=["GET"]),
                Rule(
                    "/.well-known/oauth-authorization-server", endpoint="metadata", methods=["GET"]
                ),
                Rule("/.well-known/openid-configuration", endpoint="metadata", methods=["GET"]),
                Rule("/.well-known/jwks.json", endpoint="jwks", methods=["GET"]),
                Rule("/authorize", endpoint="authorize", methods=["GET"]),
                Rule("/login", endpoint="login", methods=["GET", "POST"]),
                Rule("/logout", endpoint="logout", methods=["POST"]),
                Rule("/token", endpoint="token", methods=["POST"]),
                Rule("/device_authorization", endpoint="device_authorization", methods=["POST"]),
                Rule("/device", endpoint="device", methods=["GET", "POST"]),
                Rule("/introspect", endpoint="introspect", methods=["POST"]),
                Rule("/revoke", endpoint="revoke", methods=["POST"]),
            ],
            strict_slashes=False,
        )

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        # Form bodies are small here; bound them (Werkzeug raises 413 beyond).
        request.max_content_length = 64 * 1024
        request.max_form_memory_size = 64 * 1024
        origin = request.headers.get("Origin", "")
        cors = origin in self._cors_origins and request.path in _CORS_PATHS
        if request.method == "OPTIONS" and cors:
            # A browser app's preflight before it POSTs to /token (a public client in a page).
            preflight = Response(status=204)
            preflight.headers["Access-Control-Allow-Origin"] = origin
            preflight.headers["Access-Control-Allow-Methods"] = "GET, POST"
            preflight.headers["Access-Control-Allow-Headers"] = "Content-Type, Authorization"
            preflight.headers["Access-Control-Max-Age"] = "600"
            preflight.headers["Vary"] = "Origin"
            return preflight(environ, start_response)
        try:
            endpoint, args = self._urls.bind_to_environ(environ).match()
            response = getattr(self, f"_{endpoint}")(request, **args)
        except (NotFound, MethodNotAllowed) as exc:
            response = self._page("error.html", exc.code or 404, message=exc.description)
        except HTTPException as exc:
            response = self._page("error.html", exc.code or 400, message=exc.description)
        if cors:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers.add("Vary", "Origin")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        if response.mimetype == "text/html":
            # No framing (clickjacking) and nothing but our own forms.
            response.headers.setdefault("X-Frame-Options", "DENY")
            # form-action also governs the redirects after a POST (Chromium enforces it on each
            # hop), so the login form may end at the validated redirect URI's origin: the
            # client's page (shop-web's is the gateway's, another origin).
            form_action = " ".join(["'self'", *self._redirect_origins(request)])
            response.headers.setdefault(
                "Content-Security-Policy",
                f"default-src 'none'; style-src 'unsafe-inline'; form-action {form_action};"
                " frame-ancestors 'none'",
            )
        body: Iterable[bytes] = response(environ, start_response)
        return body

    @property
    def issuer(self) -> str:
        """The issuer URL; every endpoint hangs off it."""
        return self._oauth.issuer

    # helpers ------------------------------------------------------------------------------
    def _page(self, template: str, status: int = 200, **values: Any) -> Response:
        html = self._templates.get_template(template).render(**values)
        return Response(html, status=status, mimetype="text/html", headers=_NO_STORE)

    @staticmethod
    def _json(
        body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
    ) -> Response:
        return Response(
            json.dumps(body),
            status=status,
            mimetype="application/json",
            headers={**_NO_STORE, **(headers or {})},
        )

    def _oauth_error(self, exc: OAuthError, request: Request) -> Response:
        headers = {}
        if exc.status == 401:
            headers["WWW-Authenticate"] = f'Basic realm="{self.issuer}"'
        return self._json(
            {"error": exc.error, "error_description": exc.description}, exc.status, headers
        )

    @staticmethod
    def _source(request: Request) -> str:
        return request.remote_addr or "unknown"

    @staticmethod
    def _user_agent(request: Request) -> str:
        return (request.user_agent.string or "unknown device")[:200]

    def _csrf(self, request: Request) -> tuple[str, str | None]:
        """(token for the form, cookie value to set when the browser has none yet)."""
        nonce = request.cookies.get(CSRF_COOKIE, "")
        fresh = None
        if len(nonce) < 32:
            nonce = fresh = secrets.token_urlsafe(32)
        return self._sign(nonce), fresh

    def _sign(self, nonce: str) -> str:
        return hmac.new(self._csrf_key, nonce.encode(), hashlib.sha256).hexdigest()

    def _csrf_ok(self, request: Request) -> bool:
        nonce = request.cookies.get(CSRF_COOKIE, "")
        sent = request.form.get("csrf_token", "")
        return bool(nonce) and hmac.compare_digest(self._sign(nonce), sent)

    def _form_page(
        self, request: Request, template: str, status: int = 200, **values: Any
    ) -> Response:
        token, fresh = self._csrf(request)
        response = self._page(template, status, csrf_token=token, **values)
        if fresh is not None:
            response.set_cookie(
                CSRF_COOKIE, fresh, httponly=True, samesite="Lax", secure=self._secure, path="/"
            )
        return response

    def _session(self, request: Request) -> Session | None:
        return self._accounts.session_by_cookie(request.cookies.get(SESSION_COOKIE, ""))

    def _redirect_origins(self, request: Request) -> list[str]:
        """The origin of the redirect URI a login form on this page may end at: the one of the
        authorization request being served (``/authorize?...``, or ``next`` on ``/login``),
        and only once identity has validated it against the client's registered URIs."""
        if request.path == "/authorize":
            query = request.query_string.decode()
        else:
            next_url = self._safe_next(request.values.get("next", "/"))
            query = next_url.partition("?")[2] if next_url.startswith("/authorize?") else ""
        if not query:
            return []
        try:
            authorize = self._oauth.validate_authorize(dict(parse_qsl(query)))
        except AuthorizeError:
            return []
        parts = urlsplit(authorize.redirect_uri)
        return [f"{parts.scheme}://{parts.netloc}"] if parts.scheme in ("http", "https") else []

    @staticmethod
    def _safe_next(value: str) -> str:
        """Only our own pages may be returned to after a login (no open redirect)."""
        value = unquote(value) if value.startswith("%2F") else value
        if value.startswith(("/authorize?", "/device")) and "//" not in value and "\\" not in value:
            return value
        return "/"

    def _client_auth(self, request: Request) -> tuple[str, str, bool]:
        """(client_id, secret, used HTTP Basic) from the Authorization header or the form."""
        header = request.headers.get("Authorization", "")
        if header.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
                client_id, _, secret = decoded.partition(":")
            except (ValueError, UnicodeDecodeError):
                raise OAuthError("invalid_client", "malformed Basic credentials", 401) from None
            # RFC 6749 §2.3.1: both are form-urlencoded before Basic encoding.
            from urllib.parse import unquote_plus

            if request.form.get("client_secret"):
                raise OAuthError("invalid_request", "more than one client authentication method")
            return unquote_plus(client_id), unquote_plus(secret), True
        return request.form.get("client_id", ""), request.form.get("client_secret", ""), False

    @staticmethod
    def _single_values(request: Request) -> dict[str, str]:
        """Form parameters; a repeated one is invalid_request (RFC 6749 §3.1)."""
        values: dict[str, str] = {}
        for key in request.form:
            items = request.form.getlist(key)
            if len(items) > 1:
                raise OAuthError("invalid_request", f"parameter {key} is repeated")
            values[key] = items[0]
        return values

    # endpoints ----------------------------------------------------------------------------
    def _index(self, request: Request) -> Response:
        return self._form_page(
            request, "index.html", issuer=self.issuer, session=self._session(request)
        )

    def _metadata(self, request: Request) -> Response:
        return self._json(
            self._oauth.metadata(self.issuer), headers={"Cache-Control": "max-age=300"}
        )

    def _jwks(self, request: Request) -> Response:
        return Response(
            json.dumps(self._jwks_source()),
            mimetype="application/jwk-set+json",
            headers={"Cache-Control": "max-age=60"},
        )

    def _authorize(self, request: Request) -> Response:
        params = {k: v for k, v in request.args.items()}
        try:
            authorize = self._oauth.validate_authorize(params)
        except AuthorizeError as exc:
            if exc.request is None:
                return self._page("error.html", 400, message=exc.description)
            return Response(
                status=302,
                headers={
                    "Location": exc.request.redirect(
                        {"error": exc.error, "error_description": exc.description}, self.issuer
                    )
                },
            )
        session = self._session(request)
        if session is None:
            return self._form_page(
                request,
                "login.html",
                next=f"/authorize?{urlencode(params)}",
                client_id=authorize.client.client_id,
                error="",
                email="",
            )
        # First-party clients only (the shipped ones): no consent page.
        return Response(status=302, headers={"Location": self._oauth.authorize(authorize, session)})

    def _login(self, request: Request) -> Response:
        if request.method == "GET":
            return self._form_page(
                request,
                "login.html",
                next=self._safe_next(request.args.get("next", "/")),
                client_id="",
                error="",
                email="",
            )
        next_url = self._safe_next(request.form.get("next", "/"))
        email = request.form.get("username", "")
        if not self._csrf_ok(request):
            return self._form_page(
                request,
                "login.html",
                400,
                next=next_url,
                client_id="",
                email=email,
                error="The form expired. Please try again.",
            )
        try:
            login = self._accounts.login(
                email,
                request.form.get("password", ""),
                request.form.get("otp", ""),
                source=self._source(request),
                device=self._user_agent(request),
            )
        except LoginRefused as exc:
            status = 429 if exc.reason == "throttled" else 401
            return self._form_page(
                request,
                "login.html",
                status,
                next=next_url,
                client_id="",
                email=email,
                error=exc.message,
                otp_required=exc.reason == "otp_required",
            )
        response = Response(status=303, headers={"Location": next_url})
        response.set_cookie(
            SESSION_COOKIE,
            login.cookie,
            httponly=True,
            samesite="Lax",
            secure=self._secure,
            path="/",
        )
        return response

    def _logout(self, request: Request) -> Response:
        if not self._csrf_ok(request):
            return self._page("error.html", 400, message="The form expired. Please try again.")
        self._accounts.logout(request.cookies.get(SESSION_COOKIE, ""), source=self._source(request))
        response = Response(status=303, headers={"Location": "/"})
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    def _token(self, request: Request) -> Response:
        try:
            form = self._single_values(request)
            client_id, secret, basic = self._client_auth(request)
            client = self._oauth.authenticate_client(
                client_id, secret, basic=basic, source=self._source(request)
            )
            answer = self._oauth.token(
                client, form, source=self._source(request), device=self._user_agent(request)
            )
        except OAuthError as exc:
            return self._oauth_error(exc, request)
        return self._json(answer)

    def _device_authorization(self, request: Request) -> Response:
        try:
            form = self._single_values(request)
            client_id, secret, basic = self._client_auth(request)
            client = self._oauth.authenticate_client(
                client_id, secret, basic=basic, source=self._source(request)
            )
            answer = self._oauth.device_authorization(
                client, form.get("scope", ""), f"{self.issuer}/device"
            )
        except OAuthError as exc:
            return self._oauth_error(exc, request)
        return self._json(answer)

    def _device(self, request: Request) -> Response:
        """The verification page (RFC 8628 §3.3): the user code, then the login, then a choice."""
        source = self._source(request)
        if self._oauth.user_code_throttled(source):
            return self._page(
                "error.html",
                429,
                message="Too many wrong codes from your address. Wait a few minutes and retry.",
            )
        values = request.form if request.method == "POST" else request.args
        typed = values.get("user_code", "").strip()
        if request.method == "POST" and not self._csrf_ok(request):
            return self._form_page(
                request,
                "device.html",
                400,
                user_code=typed,
                error="The form expired. Please try again.",
            )
        if not typed:
            return self._form_page(request, "device.html", user_code="", error="")
        pending = self._oauth.pending_device(typed, source=source)
        if pending is None:
            return self._form_page(
                request,
                "device.html",
                400,
                user_code=typed,
                error="That code is not valid, or it has expired. Check the code on your device.",
            )
        session = self._session(request)
        if session is None:
            return self._form_page(
                request,
                "login.html",
                next=f"/device?{urlencode({'user_code': pending.user_code})}",
                client_id=pending.client_id,
                error="",
                email="",
            )
        decision = values.get("decision", "") if request.method == "POST" else ""
        if decision in ("approve", "deny"):
            if not self._oauth.decide_device(pending.user_code, session, decision == "approve"):
                return self._page("error.html", 400, message="That code was already used.")
            return self._page(
                "device_done.html", approved=decision == "approve", client_id=pending.client_id
            )
        return self._form_page(
            request,
            "device_confirm.html",
            user_code=pending.user_code,
            client_id=pending.client_id,
            scope=pending.scope,
        )

    def _introspect(self, request: Request) -> Response:
        try:
            client_id, secret, basic = self._client_auth(request)
            client = self._oauth.authenticate_client(
                client_id, secret, basic=basic, source=self._source(request)
            )
            if client.public:
                # RFC 7662 §2.1: the endpoint needs authorization, or it is a token scanner.
                raise OAuthError("invalid_client", "introspection is for confidential clients", 401)
        except OAuthError as exc:
            return self._oauth_error(exc, request)
        return self._json(self._oauth.introspect(request.form.get("token", "")))

    def _revoke(self, request: Request) -> Response:
        try:
            client_id, secret, basic = self._client_auth(request)
            client = self._oauth.authenticate_client(
                client_id, secret, basic=basic, source=self._source(request)
            )
            token = request.form.get("token", "")
            if not token:
                raise OAuthError("invalid_request", "token is required")
        except OAuthError as exc:
            return self._oauth_error(exc, request)
        self._oauth.revoke(
            client,
            token,
            request.form.get("token_type_hint", ""),
            source=self._source(request),
        )
        return Response(status=200, headers=_NO_STORE)
