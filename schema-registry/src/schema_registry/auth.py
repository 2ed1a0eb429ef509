"""Who may write to the registry (`serve --auth JWKS_URL`): identity's tokens with scope
``schemas:write``, as a bearer token or as OAuth client credentials over HTTP Basic.

Contract:

* Reads never come here (GET, HEAD and the schema lookup, ``POST /subjects/{s}``, which
  Confluent also counts as SUBJECT_READ and every serializer makes without credentials).
* ``Authorization: Bearer <JWT>``: verified by meshkit.tokens.TokenVerifier (ES256, at+jwt,
  issuer, audience ``meshkit``, exp) against identity's JWKS.
* ``Authorization: Basic <client_id:secret>`` (what confluent-kafka's ``basic.auth.user.info``
  sends): exchanged for a token with the client_credentials grant at identity's token endpoint
  (found in ``<issuer>/.well-known/oauth-authorization-server``), then checked like a bearer
  token. The outcome is remembered under a SHA-256 of the credentials (never the secret itself):
  a token until its ``exp``, a refusal for ``failure_ttl`` seconds, so a client with a wrong
  secret does not make identity count a failure per request. Identity locks out an address after
  20 wrong client secrets in 15 minutes, and every exchange comes from the registry's address:
  so at most ``failure_budget`` exchanges may fail per 15 minutes; past it, credentials not
  known to be good are answered 503 without asking identity, and tokens already held go on.
* Verdicts: the caller (``Principal``) or a ``Refusal``: 401 without credentials or with bad
  ones, 403 with good ones lacking ``schemas:write``, 503 when identity cannot be asked (not
  remembered: the next request asks again).

``Guard.check`` may block (a JWKS fetch, a token request): the HTTP server calls it on a worker
thread, never on the event loop. Thread safety: a Guard may be shared by every thread.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from meshkit.authz import SERVICE_ROLE, Principal
from meshkit.tokens import InvalidToken, KeysUnavailable, TokenVerifier

log = logging.getLogger(__name__)

WRITE_SCOPE: Final = "schemas:write"
REALM: Final = "schema-registry"
DEFAULT_AUDIENCE: Final = "meshkit"
#: How long a refused set of client credentials is answered from memory. Long on purpose: the
#: same wrong secret never becomes right, and a corrected one is other credentials.
FAILURE_TTL_S: Final = 120.0
#: Failed exchanges allowed per FAILURE_WINDOW_S, under identity's client lockout (20 per 15 min
#: per address): a client retrying a typo costs at most 8 of them.
FAILURE_BUDGET: Final = 15
FAILURE_WINDOW_S: Final = 15 * 60.0
_CACHE_SIZE: Final = 10_000
_TIMEOUT_S: Final = 5.0

FetchJson = Callable[[str, float], dict[str, Any]]
"""GET a URL, its JSON object (raises OSError or ValueError)."""
PostForm = Callable[[str, Mapping[str, str], Mapping[str, str], float], tuple[int, dict[str, Any]]]
"""POST a form with headers; (HTTP status, JSON object answered) (raises OSError)."""


@dataclass(frozen=True)
class Refusal:
    """Why a write is refused. ``status`` 401 (no or bad credentials), 403 (no
    ``schemas:write``) or 503 (identity unreachable). ``error`` is RFC 6750's code for the
    WWW-Authenticate challenge (empty when no credentials came at all); ``principal`` is who was
    refused, when the credentials were good (403)."""

    status: int
    reason: str
    error: str = ""
    principal: Principal | None = None


def origin_of(jwks_url: str) -> str:
    """``scheme://host[:port]`` of a URL: identity's issuer when its JWKS is at
    ``<issuer>/.well-known/jwks.json``."""
    parts = urllib.parse.urlsplit(jwks_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an http(s) URL: {jwks_url!r}")
    return f"{parts.scheme}://{parts.netloc}"


def _fetch_json(url: str, timeout: float) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout) as reply:  # noqa: S310 (configured URL)
        document = json.loads(reply.read())
    if not isinstance(document, dict):
        raise ValueError(f"{url} did not answer a JSON object")
    return document


def _post_form(
    url: str, form: Mapping[str, str], headers: Mapping[str, str], timeout: float
) -> tuple[int, dict[str, Any]]:
    data = urllib.parse.urlencode(form).encode()
    request = urllib.request.Request(url, data=data, headers=dict(headers), method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:  # noqa: S310
            status, body = reply.status, reply.read()
    except urllib.error.HTTPError as exc:  # 4xx/5xx still carry OAuth's JSON error body
        status, body = exc.code, exc.read()
    try:
        document = json.loads(body)
    except ValueError:
        document = {}
    return status, document if isinstance(document, dict) else {}


class Guard:
    """Decides who may write: see the module docstring. Thread-safe."""

    def __init__(
        self,
        jwks_url: str,
        *,
        issuer: str | None = None,
        audience: str = DEFAULT_AUDIENCE,
        failure_ttl: float = FAILURE_TTL_S,
        failure_budget: int = FAILURE_BUDGET,
        fetch_json: FetchJson = _fetch_json,
        post_form: PostForm = _post_form,
        wall_clock: Callable[[], float] = time.time,
        verifier: TokenVerifier | None = None,
    ) -> None:
        self.jwks_url = jwks_url
        self.issuer = (issuer or origin_of(jwks_url)).rstrip("/")
        self.audience = audience
        self._verifier = verifier or TokenVerifier(
            jwks_url,
            issuer=self.issuer,
            audience=audience,
            fetch=fetch_json,
            wall_clock=wall_clock,
        )
        self._failure_ttl = failure_ttl
        self._failure_budget = failure_budget
        self._failed_exchanges: deque[float] = deque()  # wall-clock times, oldest first
        self._fetch_json = fetch_json
        self._post_form = post_form
        self._clock = wall_clock
        self._token_url = ""
        # SHA-256 of Basic credentials -> (answer until this wall-clock time, the verdict).
        self._basic: dict[str, tuple[float, Principal | Refusal]] = {}
        self._basic_lock = threading.Lock()
        self._exchanging: dict[str, threading.Lock] = {}

    # ------------------------------------------------------------------ the verdict
    def check(self, authorization: str) -> Principal | Refusal:
        """The caller allowed to write, or why not. Never raises; may block (see module doc)."""
        scheme, _, credentials = authorization.strip().partition(" ")
        credentials = credentials.strip()
        if not scheme:
            return Refusal(
                401, "no credentials: a write needs a bearer token or client credentials"
            )
        kind = scheme.lower()
        if kind == "bearer" and credentials:
            found = self._verify(credentials)
        elif kind == "basic" and credentials:
            found = self._basic_verdict(credentials)
        else:
            return Refusal(
                401, f"the {scheme} authorization scheme is not accepted: use Bearer or Basic"
            )
        return found if isinstance(found, Refusal) else self._scoped(found)

    def _scoped(self, principal: Principal) -> Principal | Refusal:
        if WRITE_SCOPE in principal.scope.split():
            return principal
        return Refusal(
            403,
            f"the credentials lack scope {WRITE_SCOPE}",
            error="insufficient_scope",
            principal=principal,
        )

    def _verify(self, token: str) -> Principal | Refusal:
        try:
            caller = self._verifier.verify(token)
        except InvalidToken as exc:
            return Refusal(
                401, f"the access token is not accepted: {exc.description}", "invalid_token"
            )
        except KeysUnavailable as exc:
            return Refusal(503, f"cannot verify tokens now: {exc}")
        service = SERVICE_ROLE in caller.roles
        return Principal(
            subject=caller.sub,
            roles=tuple(caller.roles),
            client_id=caller.client_id,
            scope=caller.scope,
            service=caller.sub if service else "",
        )

    # ------------------------------------------------------------------ HTTP Basic
    def _basic_verdict(self, encoded: str) -> Principal | Refusal:
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            return Refusal(401, "malformed Basic credentials", "invalid_token")
        key = hashlib.sha256(raw).hexdigest()
        remembered = self._remembered(key)
        if remembered is not None:
            return remembered
        with self._basic_lock:
            lock = self._exchanging.setdefault(key, threading.Lock())
        with lock:  # one exchange per credentials at a time; the others then find its verdict
            remembered = self._remembered(key)
            if remembered is None:
                remembered, until = self._exchange(raw)
                if until > 0:
                    self._remember(key, until, remembered)
        with self._basic_lock:
            self._exchanging.pop(key, None)
        return remembered

    def _remembered(self, key: str) -> Principal | Refusal | None:
        found = self._basic.get(key)
        if found is None:
            return None
        until, verdict = found
        if self._clock() < until:
            return verdict
        with self._basic_lock:
            self._basic.pop(key, None)
        return None

    def _remember(self, key: str, until: float, verdict: Principal | Refusal) -> None:
        with self._basic_lock:
            if len(self._basic) >= _CACHE_SIZE:
                self._basic.pop(next(iter(self._basic)), None)
            self._basic[key] = (until, verdict)

    def _over_budget(self) -> bool:
        now = self._clock()
        with self._basic_lock:
            while self._failed_exchanges and self._failed_exchanges[0] <= now - FAILURE_WINDOW_S:
                self._failed_exchanges.popleft()
            return len(self._failed_exchanges) >= self._failure_budget

    def _exchange(self, raw: bytes) -> tuple[Principal | Refusal, float]:
        """The verdict on one set of client credentials and until when to remember it (0: not
        at all)."""
        text = raw.decode("utf-8", errors="replace")
        client_id, sep, secret = text.partition(":")
        if not sep or not client_id:
            return Refusal(401, "Basic credentials must be client_id:secret", "invalid_token"), (
                self._clock() + self._failure_ttl
            )
        if self._over_budget():
            log.warning(
                "client credentials of %r not checked: %d failed exchanges in %.0f s (identity "
                "would lock this registry's address out)",
                client_id,
                self._failure_budget,
                FAILURE_WINDOW_S,
            )
            reason = "too many failed client authentications through this registry lately"
            return Refusal(503, f"{reason}; try again later or use a bearer token"), 0
        try:
            token_url = self._token_endpoint()
            # RFC 6749 §2.3.1: id and secret are form-urlencoded before the Basic encoding.
            pair = f"{urllib.parse.quote_plus(client_id)}:{urllib.parse.quote_plus(secret)}"
            headers = {
                "Authorization": "Basic " + base64.b64encode(pair.encode()).decode(),
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
            }
            status, answer = self._post_form(
                token_url, {"grant_type": "client_credentials"}, headers, _TIMEOUT_S
            )
        except (OSError, ValueError) as exc:
            log.warning("cannot reach identity's token endpoint: %s", exc)
            return Refusal(503, f"identity cannot be reached to check client credentials: {exc}"), 0
        if status >= 500:
            log.warning("identity's token endpoint answered %d", status)
            return Refusal(503, f"identity answered {status} to a client credentials grant"), 0
        token = answer.get("access_token")
        if status != 200 or not isinstance(token, str) or not token:
            # The detail stays in our log: whether a client id exists is not for the caller.
            log.info(
                "client credentials of %r refused by identity (%d %s: %s)",
                client_id,
                status,
                answer.get("error", ""),
                answer.get("error_description", ""),
            )
            with self._basic_lock:
                self._failed_exchanges.append(self._clock())
            refusal = Refusal(401, "the client id or secret is not accepted", "invalid_token")
            return refusal, self._clock() + self._failure_ttl
        verdict = self._verify(token)
        if isinstance(verdict, Refusal):
            # A token identity just issued that we cannot verify is our problem (keys not
            # fetched yet, a wrong --auth-issuer or --auth-audience), not the caller's.
            log.error(
                "a token identity issued to %r does not verify: %s", client_id, verdict.reason
            )
            return Refusal(503, f"identity's token cannot be verified here: {verdict.reason}"), 0
        try:
            expires = float(answer.get("expires_in", 0))
        except (TypeError, ValueError):
            expires = 0.0
        # Remembered while the token identity gave for these credentials would be valid.
        return verdict, self._clock() + max(0.0, expires)

    def _token_endpoint(self) -> str:
        if not self._token_url:
            metadata = self._fetch_json(
                f"{self.issuer}/.well-known/oauth-authorization-server", _TIMEOUT_S
            )
            url = metadata.get("token_endpoint")
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise ValueError("identity's metadata names no token_endpoint")
            self._token_url = url
        return self._token_url


def challenge(refusal: Refusal) -> list[str]:
    """The ``WWW-Authenticate`` header values of a refusal (RFC 6750 §3, RFC 7617)."""
    bearer = f'Bearer realm="{REALM}"'
    if refusal.error:
        bearer += f', error="{refusal.error}"'
        if refusal.error == "insufficient_scope":
            bearer += f', scope="{WRITE_SCOPE}"'
        else:
            bearer += f', error_description="{_quotable(refusal.reason)}"'
    if refusal.status == 403:
        return [bearer]
    return [bearer, f'Basic realm="{REALM}", charset="UTF-8"']


def _quotable(text: str) -> str:
    # RFC 6750 §3: error_description is %x20-21 / %x23-5B / %x5D-7E (no quote, no backslash).
    return "".join(c for c in text if 0x20 <= ord(c) <= 0x7E and c not in '"\\')
