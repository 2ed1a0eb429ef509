"""Identity's signing keys and the access tokens they sign (RFC 9068 JWTs, ES256, JWKS, rotation).

``SigningKeys`` issues and verifies JWT access tokens in the RFC 9068 profile (header
``typ: at+jwt``; claims iss, sub, aud, exp, iat, jti, client_id, scope, roles), signed with ES256
through joserfc. Each key is named by its RFC 7638 JWK thumbprint (its ``kid``). Exactly one key is
active (signs); ``rotate()`` makes a new one active and retires the old one, which stays published
in ``jwks()`` (and accepted by ``verify()``) until the last token it can have signed has expired:
``retired_at + token_ttl + leeway``.

Storage is behind ``KeyStore`` (SQLite via ``SqliteKeyStore``, or ``MemoryKeyStore`` in tests).
Private keys are stored as plain JWK JSON: at-rest encryption is not done here. Encrypting them
with a key kept in the same database or next to it would protect nothing, and this project has no
secret store or KMS yet. The database file's permissions are what protects the keys today. The step
up is envelope encryption of ``private_jwk`` (e.g. a JWE with A256KW under a key-encryption key
taken from a secret manager at start-up), or an HSM/KMS that holds the key and signs, so the
private key never leaves it and ``sign()`` calls out to it.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Protocol, TypeGuard

from joserfc import jws, jwt
from joserfc.errors import (
    BadSignatureError,
    ExpiredTokenError,
    InvalidClaimError,
    JoseError,
    MissingClaimError,
)
from joserfc.jwk import ECKey

from meshkit.db import Database

log = logging.getLogger(__name__)

ALGORITHM = "ES256"
HEADER_TYP = "at+jwt"
# RFC 9068 §4: resource servers accept "at+jwt" or its full media type "application/at+jwt";
# media type names are case-insensitive (RFC 7515 §4.1.9), so both are compared lowercased.
_ACCEPTED_TYPES = frozenset({HEADER_TYP, "application/" + HEADER_TYP})

# The claims issue_access_token sets itself; `extra` may not replace them (a caller overriding
# iss, exp or aud by accident would mint a token this issuer never meant to vouch for).
_RESERVED_CLAIMS = frozenset(
    {"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "client_id", "scope", "roles"}
)
_NO_EXTRA: Mapping[str, Any] = MappingProxyType({})

# A compare-and-set that loses means another process just changed the active key; a few retries
# cover any realistic contention, and a bound keeps a broken store from looping forever.
_ATTEMPTS = 5

KEYS_MIGRATION = """
CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    private_jwk TEXT NOT NULL,
    created_at REAL NOT NULL,
    retired_at REAL
);
-- At most one active key: every active row has the same value here, so a second one would
-- collide. A backstop to the store's compare-and-set, for writers that bypass it.
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys ((retired_at IS NULL))
    WHERE retired_at IS NULL;
"""


@dataclass(frozen=True, slots=True)
class StoredKey:
    """One signing key as stored: its kid (the RFC 7638 thumbprint of its public key), the private
    JWK as JSON, when it was created, and when it was retired (None while it is the active key).
    Times are seconds since the epoch, from ``SigningKeys``' clock."""

    kid: str
    private_jwk: str
    created_at: float
    retired_at: float | None = None


class KeyStore(Protocol):
    """What ``SigningKeys`` needs from storage. Implementations are safe to call from any thread
    and, for a shared database, from several processes."""

    def all_keys(self) -> list[StoredKey]:
        """Every key stored, active and retired, oldest first."""
        ...

    def activate(self, key: StoredKey, *, replacing: str | None) -> bool:
        """Atomically: if the active key is ``replacing`` (None: there is no active key), retire
        it at ``key.created_at`` and store ``key`` as the new active key, and return True.
        Otherwise change nothing and return False (someone else changed the active key first)."""
        ...


class MemoryKeyStore:
    """A ``KeyStore`` in a list, for unit tests. Thread safe; lost with the process."""

    def __init__(self) -> None:
        self._keys: list[StoredKey] = []
        self._lock = threading.Lock()

    def all_keys(self) -> list[StoredKey]:
        """Every key, oldest first."""
        with self._lock:
            return list(self._keys)

    def activate(self, key: StoredKey, *, replacing: str | None) -> bool:
        """See ``KeyStore.activate``."""
        with self._lock:
            active = [i for i, k in enumerate(self._keys) if k.retired_at is None]
            current = self._keys[active[0]].kid if active else None
            if current != replacing:
                return False
            for i in active:
                self._keys[i] = replace(self._keys[i], retired_at=key.created_at)
            self._keys.append(replace(key, retired_at=None))
            return True


class SqliteKeyStore:
    """A ``KeyStore`` in the ``signing_keys`` table (``KEYS_MIGRATION``) of the service's database.

    Each ``activate`` is one write transaction (``BEGIN IMMEDIATE``), so the check of the active
    key and the switch cannot interleave with another process's; the unique index on active rows
    backs that up. Reads take a snapshot. Thread safe, as ``Database`` is."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def all_keys(self) -> list[StoredKey]:
        """Every key, oldest first."""
        with self._db.snapshot() as conn:
            rows = conn.execute(
                "SELECT kid, private_jwk, created_at, retired_at FROM signing_keys"
                " ORDER BY created_at, kid"
            ).fetchall()
        return [StoredKey(row[0], row[1], row[2], row[3]) for row in rows]

    def activate(self, key: StoredKey, *, replacing: str | None) -> bool:
        """See ``KeyStore.activate``."""
        with self._db.transaction() as conn:
            row = conn.execute("SELECT kid FROM signing_keys WHERE retired_at IS NULL").fetchone()
            if (row[0] if row is not None else None) != replacing:
                return False
            if replacing is not None:
                conn.execute(
                    "UPDATE signing_keys SET retired_at = ? WHERE kid = ?",
                    (key.created_at, replacing),
                )
            conn.execute(
                "INSERT INTO signing_keys (kid, private_jwk, created_at, retired_at)"
                " VALUES (?, ?, ?, NULL)",
                (key.kid, key.private_jwk, key.created_at),
            )
        return True


class InvalidToken(ValueError):
    """A token ``SigningKeys.verify`` refused. ``reason`` is a short sentence saying why ("unknown
    key id", "token expired", "wrong audience", "algorithm not allowed", ...): fit for logs and
    for an ``invalid_token`` error description, never containing the token itself."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SigningKeys:
    """Signs and verifies identity's access tokens, and keeps its signing keys (create, rotate,
    publish).

    Tokens: RFC 9068 JWT access tokens, header ``{"alg": "ES256", "typ": "at+jwt", "kid": ...}``,
    valid ``token_ttl`` seconds. Keys: one active key signs; ``rotate()`` replaces it, and a
    retired key stays published (``jwks()``) and accepted (``verify()``) while
    ``retired_at + token_ttl + leeway`` is in the future, i.e. as long as a token it signed can
    still be valid anywhere. Retired keys are never deleted here.

    The store is read at most once every ``refresh_every`` seconds (verification is on the hot
    path of every call in the mesh, and a read of the store cost a third of it), and again at
    once when a token names a key not seen yet: a rotation made by another process is therefore
    seen within that time, and its tokens verify at once. Signing with the key that was active
    up to a second ago is harmless, since a retired key stays published. The parsed keys are
    cached by kid, which is safe because a kid is the thumbprint of its key and so
    never names another one (a racing thread at worst parses a key twice). Thread safe when the
    store is.
    """

    def __init__(
        self,
        store: KeyStore,
        *,
        issuer: str,
        clock: Callable[[], float] = time.time,
        rotate_every: float = 24 * 3600,
        token_ttl: float = 600,
        leeway: float = 30,
        refresh_every: float = 1.0,
    ) -> None:
        if not issuer:
            raise ValueError("issuer must not be empty")
        if token_ttl < 1:
            raise ValueError(f"token_ttl must be at least 1 second, got {token_ttl!r}")
        if rotate_every <= 0:
            raise ValueError(f"rotate_every must be positive, got {rotate_every!r}")
        if leeway < 0:
            raise ValueError(f"leeway must not be negative, got {leeway!r}")
        self._store = store
        self._issuer = issuer
        self._clock = clock
        self._rotate_every = rotate_every
        # Whole seconds: exp = iat + token_ttl stays an integer NumericDate, and flooring keeps a
        # token's life no longer than asked (the JWKS retention below relies on that).
        self._ttl = int(token_ttl)
        self._leeway = leeway
        self._refresh_every = refresh_every
        self._cache: tuple[float, list[StoredKey]] | None = None  # (monotonic time read, keys)
        self._private: dict[str, ECKey] = {}
        self._public: dict[str, ECKey] = {}

    @property
    def issuer(self) -> str:
        """The ``iss`` of every token issued, and the one ``verify`` requires."""
        return self._issuer

    # --- keys ---------------------------------------------------------------------------------

    def active_kid(self) -> str:
        """The kid of the key that signs now, creating the first key if the store has none."""
        return self._active().kid

    def rotate(self) -> str:
        """Make a new key active and retire the old one now; returns the new kid."""
        new = self._new_key()
        for _ in range(_ATTEMPTS):
            current = _active_of(self._store.all_keys())
            replacing = current.kid if current is not None else None
            if self._store.activate(new, replacing=replacing):
                self._cache = None
                log.info("signing key %s active, %s retired", new.kid, replacing)
                return new.kid
        raise RuntimeError("the active signing key kept changing while rotating")

    def rotate_if_due(self) -> bool:
        """Rotate when the active key is ``rotate_every`` seconds old or older (or create the first
        key when there is none). True when this call made a new key active; False when none was
        due, or when another process rotated the same key first (so it no longer needs to be)."""
        current = _active_of(self._store.all_keys())
        if current is None:
            return self._create_first() is not None
        if self._clock() - current.created_at < self._rotate_every:
            return False
        new = self._new_key()
        if not self._store.activate(new, replacing=current.kid):
            self._cache = None
            return False
        self._cache = None
        log.info("signing key %s active, %s retired (due)", new.kid, current.kid)
        return True

    def jwks(self) -> dict[str, Any]:
        """The JWK Set to publish at ``/.well-known/jwks.json``: the public JWKs (with kid, use
        "sig", alg "ES256") of the active key and of the retired keys whose
        ``retired_at + token_ttl + leeway`` is still in the future, active key first. Creates
        the first key if the store has none, so the set is never empty. Deletes nothing."""
        self._active()
        # Read fresh: the JWKS is fetched rarely (verifiers cache it) and must show a key
        # another process just made, or its tokens would be refused by those verifiers.
        published = sorted(
            self._published(self._clock(), fresh=True),
            key=lambda k: math.inf if k.retired_at is None else k.retired_at,
            reverse=True,
        )
        return {"keys": [self._key(k).as_dict(private=False) for k in published]}

    # --- tokens -------------------------------------------------------------------------------

    def sign(self, claims: Mapping[str, Any]) -> str:
        """The compact JWS of ``claims`` signed with the active key, header
        ``{"alg": "ES256", "typ": "at+jwt", "kid": <active kid>}``. Signs the claims as given."""
        active = self._active()
        header = {"alg": ALGORITHM, "typ": HEADER_TYP, "kid": active.kid}
        # A copy: joserfc's encode rewrites datetime claims in the dict it is given.
        return jwt.encode(
            header, dict(claims), self._key(active), algorithms=[ALGORITHM], default_type=None
        )

    def issue_access_token(
        self,
        *,
        sub: str,
        aud: str | list[str],
        client_id: str,
        scope: str,
        roles: Sequence[str],
        extra: Mapping[str, Any] = _NO_EXTRA,
    ) -> tuple[str, dict[str, Any]]:
        """A new access token and its claims: iss, sub, aud, exp (iat + token_ttl), iat, jti (128
        random bits), client_id, scope (space-separated, RFC 6749 §3.3), roles, plus ``extra``
        (which may not set any of those). Raises ValueError/TypeError on malformed input."""
        if isinstance(roles, str):
            # A str is a Sequence[str]: "admin" would become ["a", "d", "m", "i", "n"].
            raise TypeError("roles must be a sequence of role names, not one string")
        if not sub or not client_id or not aud:
            raise ValueError("sub, client_id and aud must not be empty")
        if clash := _RESERVED_CLAIMS & extra.keys():
            raise ValueError(f"extra claims may not set {sorted(clash)}")
        iat = int(self._clock())
        claims: dict[str, Any] = {
            "iss": self._issuer,
            "sub": sub,
            "aud": aud if isinstance(aud, str) else list(aud),
            "exp": iat + self._ttl,
            "iat": iat,
            "jti": secrets.token_urlsafe(16),
            "client_id": client_id,
            "scope": scope,
            "roles": list(roles),
            **extra,
        }
        return self.sign(claims), claims

    def verify(self, token: str, *, audience: str | None = None) -> dict[str, Any]:
        """The claims of ``token`` if it is one of this issuer's valid access tokens; otherwise
        raises ``InvalidToken`` with the reason.

        Strict, in this order: header ``typ`` is at+jwt (or application/at+jwt, any case), ``alg``
        is exactly ES256 (so never none or HS*), no ``crit`` extensions, ``kid`` names a published
        key (active, or retired and still retained), the signature verifies with that key, the
        RFC 9068 claims are present, ``iss`` is this issuer, ``exp`` has not passed (refused from
        ``exp + leeway`` on, RFC 7519 §4.1.4), ``nbf`` if present has come, ``iat`` is not later
        than now + leeway, and ``aud`` contains ``audience`` when one is given.
        """
        now = self._clock()
        try:
            header = jws.extract_compact(token.encode("ascii")).headers()
        except (JoseError, ValueError, UnicodeError) as exc:
            raise InvalidToken("malformed token") from exc
        if not isinstance(header, dict):  # joserfc checks only that "alg" is `in` it
            raise InvalidToken("malformed token")
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in _ACCEPTED_TYPES:
            raise InvalidToken("wrong token type")
        if header.get("alg") != ALGORITHM:
            raise InvalidToken("algorithm not allowed")
        if "crit" in header:
            # We implement no JWS extension, and RFC 7515 §4.1.11 says to refuse those we don't.
            raise InvalidToken("unsupported critical header")
        kid = header.get("kid")
        key = next((k for k in self._published(now) if k.kid == kid), None)
        if key is None:
            # Perhaps a key another process made since the last read: read again, once.
            key = next((k for k in self._published(now, fresh=True) if k.kid == kid), None)
        if key is None:
            raise InvalidToken("unknown key id")
        try:
            claims = jwt.decode(token, self._public_key(key), algorithms=[ALGORITHM]).claims
        except BadSignatureError as exc:
            raise InvalidToken("bad signature") from exc
        except JoseError as exc:
            raise InvalidToken("malformed token") from exc
        self._check_times(claims, now)
        self._check_claims(claims, now, audience)
        return claims

    # --- internals ----------------------------------------------------------------------------

    def _active(self) -> StoredKey:
        for _ in range(_ATTEMPTS):
            current = _active_of(self._keys())
            if current is not None:
                return current
            if (created := self._create_first()) is not None:
                return created
            # Lost the race to another process creating the first key: read theirs.
        raise RuntimeError("no active signing key could be read or created")

    def _create_first(self) -> StoredKey | None:
        """The new first key, or None if another process stored one first."""
        new = self._new_key()
        if not self._store.activate(new, replacing=None):
            self._cache = None
            return None
        self._cache = None
        log.info("first signing key %s created", new.kid)
        return new

    def _new_key(self) -> StoredKey:
        key = ECKey.generate_key("P-256", parameters={"use": "sig", "alg": ALGORITHM})
        kid = key.thumbprint()  # RFC 7638, SHA-256 over the public members crv, kty, x, y
        jwk = key.as_dict(private=True, kid=kid)
        return StoredKey(kid, json.dumps(jwk, sort_keys=True), self._clock())

    def _keys(self, *, fresh: bool = False) -> list[StoredKey]:
        """The store's keys, read again when ``fresh`` or older than ``refresh_every``."""
        cached, at = self._cache, time.monotonic()
        if fresh or cached is None or at - cached[0] >= self._refresh_every:
            keys = self._store.all_keys()
            self._cache = (at, keys)
            return keys
        return cached[1]

    def _published(self, now: float, *, fresh: bool = False) -> list[StoredKey]:
        margin = self._ttl + self._leeway
        return [
            k
            for k in self._keys(fresh=fresh)
            if k.retired_at is None or k.retired_at + margin > now
        ]

    def _key(self, stored: StoredKey) -> ECKey:
        key = self._private.get(stored.kid)
        if key is None:
            key = ECKey.import_key(json.loads(stored.private_jwk))
            if key.thumbprint() != stored.kid:
                raise RuntimeError(f"stored signing key {stored.kid} does not match its kid")
            self._private[stored.kid] = key
        return key

    def _public_key(self, stored: StoredKey) -> ECKey:
        # Verification gets only the public half: nothing on that path can then sign.
        key = self._public.get(stored.kid)
        if key is None:
            key = ECKey.import_key(self._key(stored).as_dict(private=False))
            self._public[stored.kid] = key
        return key

    def _check_times(self, claims: Mapping[str, Any], now: float) -> None:
        """RFC 7519's time rules, exactly and on the float clock. joserfc's registry checks them
        too, but on whole seconds and, in versions before 1.8, accepting ``exp == now``; this is
        the check that decides. Non-numbers are left to the registry to reject."""
        exp, nbf, iat = claims.get("exp"), claims.get("nbf"), claims.get("iat")
        if _is_number(exp) and now >= exp + self._leeway:
            raise InvalidToken("token expired")
        if _is_number(nbf) and now < nbf - self._leeway:
            raise InvalidToken("token not yet valid")
        if _is_number(iat) and iat > now + self._leeway:
            raise InvalidToken("token issued in the future")

    def _check_claims(self, claims: dict[str, Any], now: float, audience: str | None) -> None:
        required: jwt.ClaimsOption = {"essential": True}
        aud: jwt.ClaimsOption = {"essential": True}
        if audience is not None:
            aud["value"] = audience
        # Whole seconds, rounded so the registry is never stricter than _check_times for the
        # integer NumericDates this issuer writes.
        registry = jwt.JWTClaimsRegistry(
            now=math.floor(now),
            leeway=math.ceil(self._leeway),
            iss={"essential": True, "value": self._issuer},
            aud=aud,
            sub=required,
            exp=required,
            iat=required,
            jti=required,
            client_id=required,
        )
        try:
            registry.validate(claims)
        except ExpiredTokenError as exc:
            raise InvalidToken("token expired") from exc
        except MissingClaimError as exc:
            raise InvalidToken(f"missing claim: {exc.claim}") from exc
        except InvalidClaimError as exc:
            reasons = {"iss": "wrong issuer", "aud": "wrong audience"}
            raise InvalidToken(reasons.get(exc.claim, f"invalid claim: {exc.claim}")) from exc


def _active_of(keys: Sequence[StoredKey]) -> StoredKey | None:
    return next((k for k in keys if k.retired_at is None), None)


def _is_number(value: object) -> TypeGuard[int | float]:
    # bool is an int to Python but not a JSON number; a NaN exp compares false and never expires.
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))
