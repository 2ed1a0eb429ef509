"""Bearer access tokens from identity, verified against its JWKS (RFC 6750, RFC 9068).

The JWK Set is fetched from identity's ``/.well-known/jwks.json`` and cached, so that tokens keep
being verified while identity is down (issue 15, graceful degradation):

- a token naming a ``kid`` the cache lacks makes it fetch again (a key identity just rotated in),
  at most once per ``refetch_every`` seconds (10 s), so a stream of made-up kids, or a down
  identity, cannot turn into a stream of fetches;
- the cached set is fresh for ``max_age`` seconds (300 s). Past that, the next verification
  fetches it again, on the caller's thread but only one at a time (the others go on with the
  cached keys), so a key identity withdrew stops being accepted within ``max_age``;
- when a fetch fails, the cached keys stay in use however old (stale-if-error): identity down
  means no new tokens, not that the tokens it already signed stop working. Nothing is accepted
  that identity did not sign: only the freshness of the set degrades. Each failed fetch is
  logged at WARNING (so at most one line per ``refetch_every``);
- a fetch waits at most ``fetch_timeout`` seconds (2 s), which bounds what one request can wait
  on a hanging identity.
Verification is PyJWT's, strict: header ``typ`` at+jwt and ``alg`` ES256 only (never ``none``,
never an HMAC), then signature, ``iss``, ``aud`` and ``exp`` with a small clock skew, and the
claims RFC 9068 requires.

A verified token is remembered (by its exact text, at most ``cache_size`` of them) until its
``exp``, and only while the key that signed it is still in the JWK Set: an ES256 verification
is a sixth of the gateway's time per request, and an app sends the same token for ten minutes.
Remembering changes nothing a fresh check would decide: the same text, the same key, not expired.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt

log = logging.getLogger(__name__)

_TYPES = {"at+jwt", "application/at+jwt"}
_REQUIRED = ["iss", "sub", "aud", "exp", "iat", "jti", "client_id"]


class InvalidToken(Exception):
    """The token is not one we accept; ``description`` says why, fit for WWW-Authenticate."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class KeysUnavailable(Exception):
    """The JWK Set cannot be fetched and no cached key fits: tokens cannot be checked now."""


@dataclass(frozen=True)
class Caller:
    """Who a verified token acts for."""

    sub: str
    client_id: str
    scope: str
    roles: tuple[str, ...]
    token: str  # forwarded downstream, where it can be verified again

    def has_any_role(self, roles: tuple[str, ...]) -> bool:
        """Whether the caller holds one of ``roles`` (True when ``roles`` is empty)."""
        return not roles or any(role in self.roles for role in roles)


def _fetch_json(url: str, timeout: float) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout) as reply:  # noqa: S310  (our own URL)
        document: dict[str, Any] = json.loads(reply.read())
    return document


class TokenVerifier:
    """Verifies identity's access tokens against its cached JWK Set (see the module doc for the
    cache's lifetime: fresh ``max_age``, refetched at most every ``refetch_every``, kept while
    identity is unreachable). Thread safety: safe to share.
    """

    def __init__(
        self,
        jwks_url: str,
        *,
        issuer: str,
        audience: str,
        leeway: float = 30.0,
        refetch_every: float = 10.0,
        max_age: float = 300.0,
        fetch_timeout: float = 2.0,
        fetch: Callable[[str, float], dict[str, Any]] = _fetch_json,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        cache_size: int = 10_000,
    ) -> None:
        self._url = jwks_url
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway
        self._refetch_every = refetch_every
        self._max_age = max_age
        self._fetch_timeout = fetch_timeout
        self._fetch = fetch
        self._clock = clock
        self._wall_clock = wall_clock
        self._cache_size = cache_size
        # token text -> (the caller, its exp, the kid that signed it); insertion ordered, so the
        # oldest entry goes first when full.
        self._verified: dict[str, tuple[Caller, float, str]] = {}
        self._cache_lock = threading.Lock()
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None  # the last attempt, successful or not
        self._keys_at: float | None = None  # when ``_keys`` was fetched
        self._lock = threading.Lock()

    def _refresh(self) -> None:
        with self._lock:
            self._refresh_locked()

    def _refresh_if_stale(self) -> None:
        """Fetch the set again when it is older than ``max_age`` (one thread does; the others
        carry on with the cached keys rather than queue behind a slow identity)."""
        if self._keys_at is None or self._clock() - self._keys_at < self._max_age:
            return
        if not self._lock.acquire(blocking=False):
            return
        try:
            if self._keys_at is not None and self._clock() - self._keys_at >= self._max_age:
                self._refresh_locked()
        except KeysUnavailable:  # the set fetched was empty: the verification says so
            pass
        finally:
            self._lock.release()

    def _refresh_locked(self) -> None:
        now = self._clock()
        if self._fetched_at is not None and now - self._fetched_at < self._refetch_every:
            return
        self._fetched_at = now
        try:
            document = self._fetch(self._url, self._fetch_timeout)
            keys = jwt.PyJWKSet.from_dict(document).keys
        except (OSError, ValueError, jwt.PyJWKSetError) as exc:
            if not self._keys:
                log.warning("cannot fetch the JWK Set from %s: %s", self._url, exc)
                raise KeysUnavailable(f"identity's keys are unreachable: {exc}") from None
            age = now - (self._keys_at or now)
            log.warning(
                "cannot fetch the JWK Set from %s: %s; keeping the %d cached keys (fetched %.0fs"
                " ago)",
                self._url,
                exc,
                len(self._keys),
                age,
            )
            return
        self._keys = {k.key_id: k for k in keys if k.key_id}
        self._keys_at = now
        log.info("JWK Set of %s: %d keys", self._url, len(self._keys))

    def _key(self, kid: str) -> jwt.PyJWK:
        key = self._keys.get(kid)
        if key is None:
            self._refresh()
            key = self._keys.get(kid)
        if key is None:
            raise InvalidToken("the token's signing key is not one of identity's")
        return key

    def verify(self, token: str) -> Caller:
        """The caller, or InvalidToken (KeysUnavailable when no key can be had)."""
        self._refresh_if_stale()
        remembered = self._verified.get(token)
        if remembered is not None:
            caller, exp, kid = remembered
            if self._wall_clock() < exp + self._leeway and kid in self._keys:
                return caller
            self._verified.pop(token, None)
        caller, exp, kid = self._verify(token)
        with self._cache_lock:
            if len(self._verified) >= self._cache_size:
                self._verified.pop(next(iter(self._verified)), None)
            self._verified[token] = (caller, exp, kid)
        return caller

    def _verify(self, token: str) -> tuple[Caller, float, str]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise InvalidToken("the token is malformed") from None
        if str(header.get("typ", "")).lower() not in _TYPES:
            raise InvalidToken("not an access token (typ must be at+jwt)")
        if header.get("alg") != "ES256":
            raise InvalidToken("the token's algorithm is not accepted")
        key = self._key(str(header.get("kid", "")))
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=["ES256"],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": _REQUIRED},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("the token has expired") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken("the token is not for this audience") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken("the token is from another issuer") from None
        except jwt.InvalidTokenError:
            raise InvalidToken("the token is invalid") from None
        roles = claims.get("roles", [])
        caller = Caller(
            sub=str(claims["sub"]),
            client_id=str(claims["client_id"]),
            scope=str(claims.get("scope", "")),
            roles=tuple(str(r) for r in roles) if isinstance(roles, list) else (),
            token=token,
        )
        return caller, float(claims["exp"]), str(header.get("kid", ""))
