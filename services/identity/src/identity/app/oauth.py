"""The OAuth 2 authorization server's rules: clients, authorization codes with PKCE, the device
grant, refresh-token rotation with family revocation, client credentials, the two legacy grants
behind a per-client switch, introspection and revocation.

Transport-free: the HTTP entry point turns requests into these calls and ``OAuthError`` into
RFC 6749 §5.2 answers; the gRPC one uses ``authenticate`` and ``introspect``.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import logging
import re
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from identity.app import audit
from identity.app.accounts import Accounts, LoginRefused
from identity.app.ports import Signer, UnitOfWork
from identity.domain import events
from identity.domain.model import (
    DEVICE_CODE_GRANT,
    AuthCode,
    Client,
    DeviceCode,
    Family,
    Lockout,
    Principal,
    Session,
)
from meshkit.audit import FAILURE, Actor
from meshkit.errors import Unauthenticated

log = logging.getLogger(__name__)

# RFC 8628 §6.1: 20 consonants (no vowels, so no words), 8 characters: 20^8 ~ 2^34.6.
USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")  # RFC 7636 §4.1
_CHALLENGE = re.compile(r"[A-Za-z0-9\-_]{43}")  # BASE64URL(SHA-256), no padding


# Wrong client secrets from one address: as an account's password failures, with more room.
CLIENT_LOCKOUT = Lockout(threshold=20)


class OAuthError(Exception):
    """An RFC 6749 error: ``error`` code, a description for people, and the HTTP status."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status


class AuthorizeError(OAuthError):
    """An authorization request error. ``redirect`` is where to send it (the client's
    redirect URI), or None when the client or redirect URI itself is wrong and the error must
    be shown to the person instead (RFC 6749 §4.1.2.1)."""

    def __init__(
        self, error: str, description: str, redirect: AuthorizeRequest | None = None
    ) -> None:
        super().__init__(error, description)
        self.request = redirect


@dataclass(frozen=True)
class AuthorizeRequest:
    """A validated authorization request."""

    client: Client
    response_type: str
    redirect_uri: str
    scope: str
    state: str
    code_challenge: str

    def redirect(self, params: Mapping[str, str], issuer: str) -> str:
        """The client's redirect URI with ``params``, ``state`` and ``iss`` (RFC 9207): in the
        query for a code, in the fragment for the implicit grant (RFC 6749 §4.2.2)."""
        values = dict(params)
        if self.state:
            values["state"] = self.state
        values["iss"] = issuer
        separator = (
            "#" if self.response_type == "token" else ("&" if "?" in self.redirect_uri else "?")
        )
        return f"{self.redirect_uri}{separator}{urlencode(values)}"


@dataclass(frozen=True)
class Lifetimes:
    """How long things live, in seconds."""

    access_token: float = 600.0  # the issue's 10 minutes
    refresh_token: float = 30 * 86400.0  # absolute, from the login (RFC 9700 §4.14.2)
    auth_code: float = 60.0  # single use, short (RFC 9700 §4.2.4 recommends <= 10 min)
    device_code: float = 600.0
    device_interval: float = 5.0  # RFC 8628 §3.2 default


def _at(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC)


def s256(verifier: str) -> str:
    """RFC 7636 §4.2: BASE64URL(SHA-256(ASCII(code_verifier))), no padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def new_user_code() -> str:
    """XXXX-XXXX from the base-20 alphabet (RFC 8628 §6.1)."""
    chars = "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(8))
    return f"{chars[:4]}-{chars[4:]}"


def normalise_user_code(typed: str) -> str:
    """What a person typed as the stored form: upper case, dashes and spaces ignored."""
    chars = "".join(c for c in typed.upper() if c.isalnum())
    return f"{chars[:4]}-{chars[4:]}" if len(chars) == 8 else chars


class AuthorizationServer:
    """OAuth 2 grants over identity's store. Thread safety: safe to share."""

    def __init__(
        self,
        unit_of_work: Callable[[], UnitOfWork],
        snapshot: Callable[[], UnitOfWork],
        *,
        accounts: Accounts,
        signer: Signer,
        clients: Mapping[str, Client],
        issuer: str,
        audience: str,
        lifetimes: Lifetimes = Lifetimes(),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._uow = unit_of_work
        self._snapshot = snapshot
        self._accounts = accounts
        self._signer = signer
        self.clients = dict(clients)
        self.issuer = issuer
        self.audience = audience
        self.lifetimes = lifetimes
        self._clock = clock

    # clients ------------------------------------------------------------------------------
    def client(self, client_id: str) -> Client | None:
        """A configured client, or None."""
        return self.clients.get(client_id)

    def authenticate_client(
        self, client_id: str, secret: str, *, basic: bool, source: str = ""
    ) -> Client:
        """The client a token, introspection or revocation request comes from. A public client
        only names itself; a confidential one must present its secret (constant-time compare).
        invalid_client otherwise: 401 (with WWW-Authenticate) when it used HTTP Basic.

        Wrong secrets count against the source address: past CLIENT_LOCKOUT's threshold it is
        refused, right secret or not, until the delay passes (guessing a secret online is then
        hopeless, as guessing passwords is at the login form)."""
        client = self.clients.get(client_id)
        status = 401 if basic else 400
        if client is None:
            raise OAuthError("invalid_client", "unknown client", status)
        if not client.public and source:
            now = self._clock()
            with self._snapshot() as uow:
                failures = uow.store.failures_of_source(
                    source, "client", now - CLIENT_LOCKOUT.window
                )
            if CLIENT_LOCKOUT.locked_until(failures, now) is not None:
                raise OAuthError(
                    "invalid_client",
                    "too many failed client authentications from your address; try again later",
                    401,
                )
            if (
                secret
                and client.secret
                and not hmac.compare_digest(secret.encode(), client.secret.encode())
            ):
                with self._uow() as uow:
                    uow.store.add_failure(None, source, "client", now)
                    uow.publish(
                        audit.entry(
                            audit.CLIENT_FAIL,
                            None,
                            actor=Actor(subject=client.client_id, client_id=client.client_id),
                            at=_at(now),
                            outcome=FAILURE,
                            reason="wrong client secret",
                            source=source,
                        )
                    )
        if client.public:
            if secret:
                raise OAuthError("invalid_client", "a public client has no secret", status)
            return client
        if not secret or client.secret is None:
            raise OAuthError("invalid_client", "client authentication is required", 401)
        if not hmac.compare_digest(secret.encode(), client.secret.encode()):
            raise OAuthError("invalid_client", "client authentication failed", status)
        return client

    def _scope(self, client: Client, requested: str) -> str:
        asked = requested.split()
        if not asked:
            return " ".join(client.scopes)
        unknown = [s for s in asked if s not in client.scopes]
        if unknown:
            raise OAuthError("invalid_scope", f"not allowed for this client: {' '.join(unknown)}")
        return " ".join(dict.fromkeys(asked))

    # authorization endpoint ---------------------------------------------------------------
    def validate_authorize(self, params: Mapping[str, str]) -> AuthorizeRequest:
        """Check an authorization request (RFC 6749 §4.1.1, RFC 7636 §4.3)."""
        client = self.clients.get(params.get("client_id", ""))
        if client is None:
            raise AuthorizeError("invalid_request", "unknown client_id")
        redirect_uri = params.get("redirect_uri", "")
        if not redirect_uri and len(client.redirect_uris) == 1:
            redirect_uri = client.redirect_uris[0]
        # Exact string match, no patterns, no prefix (RFC 9700 §4.1.3).
        if redirect_uri not in client.redirect_uris:
            raise AuthorizeError(
                "invalid_request", "redirect_uri is not registered for this client"
            )
        response_type = params.get("response_type", "")
        partial = AuthorizeRequest(
            client, response_type, redirect_uri, "", params.get("state", ""), ""
        )
        if response_type not in ("code", "token") or response_type not in client.response_types:
            raise AuthorizeError(
                "unsupported_response_type",
                f"response_type {response_type!r} is not available to this client",
                partial,
            )
        try:
            scope = self._scope(client, params.get("scope", ""))
        except OAuthError as exc:
            raise AuthorizeError(exc.error, exc.description, partial) from None
        challenge = ""
        if response_type == "code":
            challenge = params.get("code_challenge", "")
            method = params.get("code_challenge_method", "plain" if challenge else "")
            if not challenge:
                raise AuthorizeError(
                    "invalid_request", "code_challenge is required (PKCE, S256)", partial
                )
            if method != "S256":
                raise AuthorizeError(
                    "invalid_request",
                    "code_challenge_method must be S256 (plain is not accepted)",
                    partial,
                )
            if not _CHALLENGE.fullmatch(challenge):
                raise AuthorizeError(
                    "invalid_request", "code_challenge is not a base64url SHA-256", partial
                )
        return AuthorizeRequest(
            client, response_type, redirect_uri, scope, partial.state, challenge
        )

    def authorize(self, request: AuthorizeRequest, session: Session) -> str:
        """The redirect that answers an authorization request for a logged-in session: a
        single-use code (or, implicit, a token in the fragment)."""
        now = self._clock()
        if request.response_type == "token":
            token = self._access_token(
                session.user_id, request.client, request.scope, session.session_id, None
            )
            return request.redirect(
                {
                    "access_token": token,
                    "token_type": "Bearer",
                    "expires_in": str(int(self.lifetimes.access_token)),
                    "scope": request.scope,
                },
                self.issuer,
            )
        code = secrets.token_urlsafe(32)
        with self._uow() as uow:
            uow.store.add_auth_code(
                code,
                AuthCode(
                    request.client.client_id,
                    request.redirect_uri,
                    session.user_id,
                    session.session_id,
                    request.scope,
                    request.code_challenge,
                    now + self.lifetimes.auth_code,
                    None,
                    None,
                ),
            )
            uow.store.touch_session(session.session_id, now)
        return request.redirect({"code": code}, self.issuer)

    # token endpoint -----------------------------------------------------------------------
    def token(
        self, client: Client, form: Mapping[str, str], *, source: str, device: str
    ) -> dict[str, Any]:
        """Answer a token request (RFC 6749 §4-6, RFC 8628 §3.4)."""
        grant_type = form.get("grant_type", "")
        known = {
            "authorization_code",
            "refresh_token",
            "client_credentials",
            DEVICE_CODE_GRANT,
            "password",
        }
        if not grant_type:
            raise OAuthError("invalid_request", "grant_type is required")
        if grant_type not in known or (grant_type == "password" and not client.allows("password")):
            raise OAuthError(
                "unsupported_grant_type", f"grant_type {grant_type!r} is not supported"
            )
        if not client.allows(grant_type):
            raise OAuthError(
                "unauthorized_client", f"this client may not use the {grant_type} grant"
            )
        if grant_type == "authorization_code":
            return self._redeem_code(client, form, source=source)
        if grant_type == "refresh_token":
            return self._refresh(client, form, source=source)
        if grant_type == DEVICE_CODE_GRANT:
            return self._poll_device(client, form)
        if grant_type == "client_credentials":
            scope = self._scope(client, form.get("scope", ""))
            token = self._access_token(
                client.client_id, client, scope, None, None, roles=client.roles
            )
            return self._answer(token, scope, None)
        return self._password_grant(client, form, source=source, device=device)

    def _redeem_code(
        self, client: Client, form: Mapping[str, str], *, source: str
    ) -> dict[str, Any]:
        code = form.get("code", "")
        verifier = form.get("code_verifier", "")
        if not code:
            raise OAuthError("invalid_request", "code is required")
        if not verifier:
            raise OAuthError("invalid_request", "code_verifier is required (PKCE)")
        now = self._clock()
        family_id = uuid.uuid4().hex
        with self._uow() as uow:
            stored = uow.store.auth_code(code)
            if stored is None or stored.client_id != client.client_id:
                raise OAuthError("invalid_grant", "unknown authorization code")
            replayed = stored.used_at is not None
            if replayed and stored.family_id:
                # A second redemption: deny, and revoke what the first one got (RFC 6749
                # §4.1.2, RFC 9700 §4.2.4). Committed even though the request fails.
                uow.store.revoke_family(stored.family_id, "authorization code replayed", now)
                uow.publish(
                    audit.entry(
                        audit.TOKEN_REUSE,
                        stored.user_id,
                        actor=Actor(subject=stored.user_id, client_id=client.client_id),
                        at=_at(now),
                        outcome=FAILURE,
                        reason="authorization code replayed; what it was exchanged for is revoked",
                        source=source,
                        details={
                            "kind": "authorization_code",
                            "family_id": stored.family_id,
                            "session_id": stored.session_id,
                        },
                    )
                )
            if not replayed:
                if stored.expires_at <= now:
                    raise OAuthError("invalid_grant", "the authorization code has expired")
                if form.get("redirect_uri", stored.redirect_uri) != stored.redirect_uri:
                    raise OAuthError("invalid_grant", "redirect_uri does not match the request")
                if not _VERIFIER.fullmatch(verifier) or not hmac.compare_digest(
                    s256(verifier), stored.code_challenge
                ):
                    raise OAuthError("invalid_grant", "code_verifier does not match")
                if not self._live(uow.store.session(stored.session_id)):
                    raise OAuthError("invalid_grant", "the login session has ended")
                uow.store.use_auth_code(code, family_id, now)
        if replayed:
            raise OAuthError("invalid_grant", "the authorization code was used already")
        return self._tokens_for_login(
            client, stored.user_id, stored.session_id, stored.scope, family_id
        )

    def _live(self, session: Session | None) -> bool:
        return self._accounts.session_policy.live(session, self._clock())

    def _tokens_for_login(
        self, client: Client, user_id: str, session_id: str, scope: str, family_id: str
    ) -> dict[str, Any]:
        now = self._clock()
        # The family exists either way: the access tokens of one login are revoked through it
        # (a replayed code, a revoked session). A refresh token only for a client allowed the
        # refresh_token grant.
        refresh = secrets.token_urlsafe(32) if client.allows("refresh_token") else None
        with self._uow() as uow:
            uow.store.add_family(
                Family(
                    family_id,
                    user_id,
                    client.client_id,
                    session_id,
                    scope,
                    now,
                    now + self.lifetimes.refresh_token,
                    None,
                )
            )
            if refresh is not None:
                uow.store.add_refresh_token(refresh, family_id, now)
        token = self._access_token(user_id, client, scope, session_id, family_id)
        return self._answer(token, scope, refresh)

    def _access_token(
        self,
        sub: str,
        client: Client,
        scope: str,
        session_id: str | None,
        family_id: str | None,
        *,
        roles: tuple[str, ...] | None = None,
    ) -> str:
        if roles is None:
            roles = self._accounts.account(sub).roles
        extra = {"sid": session_id} if session_id else {}
        token, claims = self._signer.issue_access_token(
            sub=sub,
            aud=self.audience,
            client_id=client.client_id,
            scope=scope,
            roles=list(roles),
            extra=extra,
        )
        with self._uow() as uow:
            uow.store.add_access_token(
                str(claims["jti"]),
                sub,
                client.client_id,
                family_id=family_id,
                session_id=session_id,
                expires_at=float(claims["exp"]),
            )
        return token

    def _answer(self, access_token: str, scope: str, refresh: str | None) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": int(self.lifetimes.access_token),
            "scope": scope,
        }
        if refresh is not None:
            answer["refresh_token"] = refresh
        return answer

    def _refresh(self, client: Client, form: Mapping[str, str], *, source: str) -> dict[str, Any]:
        presented = form.get("refresh_token", "")
        if not presented:
            raise OAuthError("invalid_request", "refresh_token is required")
        # RFC 6749 §6: this access token may ask for less; the family keeps its own scope.
        requested = form.get("scope", "").split()
        now = self._clock()
        fresh = secrets.token_urlsafe(32)
        reuse: Family | None = None
        with self._uow() as uow:
            found = uow.store.refresh_token(presented)
            family = uow.store.family(found[0]) if found else None
            if found is None or family is None or family.client_id != client.client_id:
                raise OAuthError("invalid_grant", "unknown refresh token")
            if found[1] is not None:
                # Presented again after rotation: one of two holders is an attacker, and which
                # cannot be told, so the whole family goes (RFC 9700 §4.14.2).
                if family.revoked_at is None:
                    uow.store.revoke_family(family.family_id, "refresh token reuse", now)
                    uow.publish(
                        events.RefreshTokenReuseDetected(
                            family.user_id,
                            family.family_id,
                            family.client_id,
                            family.session_id,
                            _at(now),
                        )
                    )
                    uow.publish(
                        audit.entry(
                            audit.TOKEN_REUSE,
                            family.user_id,
                            actor=Actor(subject=family.user_id, client_id=family.client_id),
                            at=_at(now),
                            outcome=FAILURE,
                            reason="refresh token presented again after rotation;"
                            " its family is revoked",
                            source=source,
                            details={
                                "kind": "refresh_token",
                                "family_id": family.family_id,
                                "session_id": family.session_id,
                            },
                        )
                    )
                reuse = family
            elif family.revoked_at is not None:
                raise OAuthError("invalid_grant", "the refresh token was revoked")
            elif family.expires_at <= now:
                raise OAuthError("invalid_grant", "the refresh token has expired; log in again")
            elif not self._live(uow.store.session(family.session_id)):
                raise OAuthError("invalid_grant", "the login session has ended")
            elif any(s not in family.scope.split() for s in requested):
                # Refused before rotating: the client may retry with this same token, which
                # would otherwise count as a reuse and end the whole family.
                raise OAuthError("invalid_scope", "more than the original grant")
            else:
                uow.store.use_refresh_token(presented, now)
                uow.store.add_refresh_token(fresh, family.family_id, now)
                uow.store.touch_session(family.session_id, now)
        if reuse is not None:
            log.warning(
                "refresh token reuse: family %s of %s (client %s) revoked",
                reuse.family_id,
                reuse.user_id,
                reuse.client_id,
            )
            raise OAuthError("invalid_grant", "the refresh token was used already")
        scope = " ".join(requested) if requested else family.scope
        token = self._access_token(
            family.user_id, client, scope, family.session_id, family.family_id
        )
        return self._answer(token, scope, fresh)

    def _password_grant(
        self, client: Client, form: Mapping[str, str], *, source: str, device: str
    ) -> dict[str, Any]:
        username, password = form.get("username", ""), form.get("password", "")
        if not username or not password:
            raise OAuthError("invalid_request", "username and password are required")
        scope = self._scope(client, form.get("scope", ""))
        try:
            login = self._accounts.login(
                username,
                password,
                form.get("otp", ""),
                source=source,
                device=device,
                client_id=client.client_id,
            )
        except LoginRefused as exc:
            raise OAuthError("invalid_grant", exc.message) from None
        return self._tokens_for_login(
            client, login.account.user_id, login.session.session_id, scope, uuid.uuid4().hex
        )

    # device grant (RFC 8628) --------------------------------------------------------------
    def device_authorization(
        self, client: Client, scope: str, verification_uri: str
    ) -> dict[str, Any]:
        """Start a device authorization (RFC 8628 §3.1-3.2)."""
        if not client.allows(DEVICE_CODE_GRANT):
            raise OAuthError("unauthorized_client", "this client may not use the device grant")
        granted = self._scope(client, scope)
        now = self._clock()
        device_code = secrets.token_urlsafe(32)
        with self._uow() as uow:
            while True:
                user_code = new_user_code()
                if uow.store.device_code_by_user_code(user_code) is None:
                    break
            uow.store.add_device_code(
                device_code,
                DeviceCode(
                    "",
                    user_code,
                    client.client_id,
                    granted,
                    now + self.lifetimes.device_code,
                    self.lifetimes.device_interval,
                    None,
                    "pending",
                    None,
                    None,
                ),
            )
        return {
            "device_code": device_code,
            "user_code": user_code,
            "verification_uri": verification_uri,
            "verification_uri_complete": (
                f"{verification_uri}?{urlencode({'user_code': user_code})}"
            ),
            "expires_in": int(self.lifetimes.device_code),
            "interval": int(self.lifetimes.device_interval),
        }

    def _poll_device(self, client: Client, form: Mapping[str, str]) -> dict[str, Any]:
        presented = form.get("device_code", "")
        if not presented:
            raise OAuthError("invalid_request", "device_code is required")
        now = self._clock()
        with self._uow() as uow:
            stored = uow.store.device_code(presented)
            if stored is None or stored.client_id != client.client_id:
                raise OAuthError("invalid_grant", "unknown device_code")
            if stored.expires_at <= now:
                raise OAuthError("expired_token", "the device code has expired; start again")
            if stored.status == "denied":
                raise OAuthError("access_denied", "the user denied the request")
            if stored.status == "used":
                raise OAuthError("invalid_grant", "the device code was exchanged already")
            if stored.status == "pending":
                too_soon = stored.last_poll is not None and now - stored.last_poll < stored.interval
                # RFC 8628 §3.5: slow_down adds 5 seconds "for this and all subsequent requests".
                interval = stored.interval + 5 if too_soon else stored.interval
                uow.store.polled(stored.digest, now, interval)
                pending = "slow_down" if too_soon else "authorization_pending"
            else:
                pending = ""
                uow.store.use_device_code(stored.digest)
        if pending == "slow_down":
            raise OAuthError("slow_down", f"poll at most every {int(stored.interval + 5)} seconds")
        if pending:
            raise OAuthError("authorization_pending", "the user has not finished yet")
        assert stored.user_id is not None and stored.session_id is not None
        return self._tokens_for_login(
            client, stored.user_id, stored.session_id, stored.scope, uuid.uuid4().hex
        )

    def pending_device(self, typed: str, *, source: str) -> DeviceCode | None:
        """The pending device authorization a typed user code names, or None. Failed lookups
        count against the source address, which is throttled like logins (RFC 8628 §5.1)."""
        code = normalise_user_code(typed)
        now = self._clock()
        with self._snapshot() as uow:
            stored = uow.store.device_code_by_user_code(code)
        if stored is None or stored.status != "pending" or stored.expires_at <= now:
            with self._uow() as uow:
                uow.store.add_failure(None, source, "user_code", now)
            return None
        return stored

    def user_code_throttled(self, source: str, threshold: int = 10, window: float = 900.0) -> bool:
        """Whether the source has typed too many wrong user codes lately."""
        now = self._clock()
        with self._snapshot() as uow:
            return len(uow.store.failures_of_source(source, "user_code", now - window)) >= threshold

    def decide_device(self, user_code: str, session: Session, approve: bool) -> bool:
        """Approve or deny a pending device authorization for the session's user."""
        code = normalise_user_code(user_code)
        with self._uow() as uow:
            stored = uow.store.device_code_by_user_code(code)
            if stored is None or stored.expires_at <= self._clock():
                return False
            return uow.store.decide_device_code(
                stored.digest,
                "approved" if approve else "denied",
                session.user_id if approve else None,
                session.session_id if approve else None,
            )

    # introspection, revocation, authentication --------------------------------------------
    def verify(self, token: str) -> dict[str, Any] | None:
        """The claims of an active access token, or None: signature, issuer, audience and
        expiry (the signer), then not revoked (alone, with its family, or with its session)."""
        try:
            claims = self._signer.verify(token, audience=self.audience)
        except ValueError as exc:
            log.debug("token refused: %s", exc)
            return None
        with self._snapshot() as uow:
            if uow.store.access_token_revoked(str(claims.get("jti", ""))):
                return None
        return claims

    def introspect(self, token: str) -> dict[str, Any]:
        """RFC 7662 §2.2: {"active": false} for anything not active, else what it carries."""
        claims = self.verify(token)
        if claims is None:
            return {"active": False}
        answer: dict[str, Any] = {
            "active": True,
            "token_type": "Bearer",
            **{
                k: claims[k]
                for k in (
                    "scope",
                    "client_id",
                    "sub",
                    "aud",
                    "iss",
                    "exp",
                    "iat",
                    "jti",
                    "roles",
                    "sid",
                )
                if k in claims
            },
        }
        account = None if claims.get("sid") is None else claims["sub"]
        if account is not None:
            answer["username"] = self._accounts.account(account).email
        return answer

    def authenticate(self, token: str) -> Principal:
        """The principal of an active access token; Unauthenticated otherwise."""
        claims = self.verify(token) if token else None
        if claims is None:
            raise Unauthenticated(
                "a valid access token is required (authorization: Bearer ...)",
                reason="INVALID_TOKEN",
            )
        return Principal(
            sub=str(claims["sub"]),
            client_id=str(claims.get("client_id", "")),
            scope=str(claims.get("scope", "")),
            roles=tuple(claims.get("roles", ())),
            session_id=claims.get("sid"),
            jti=str(claims["jti"]),
        )

    def revoke(self, client: Client, token: str, hint: str = "", *, source: str = "") -> None:
        """RFC 7009: revoke a refresh token (its whole family, and the access tokens minted
        from it, §2.1) or an access token of this client. Unknown tokens are ignored (§2.2).
        ``source`` is the client's address, for the audit record."""
        now = self._clock()
        with self._uow() as uow:
            # The hint only orders the search (RFC 7009 §2.1); a refresh token is looked up
            # first because it is a cheap key lookup, an access token needs its signature.
            del hint
            found = uow.store.refresh_token(token)
            if found is not None:
                family = uow.store.family(found[0])
                if family is not None and family.client_id == client.client_id:
                    uow.store.revoke_family(family.family_id, "revoked by the client", now)
                    uow.publish(
                        events.TokenRevoked(
                            family.user_id,
                            client.client_id,
                            "refresh_token",
                            family.family_id,
                            _at(now),
                        )
                    )
                    uow.publish(
                        audit.entry(
                            audit.TOKEN_REVOKED,
                            family.user_id,
                            actor=Actor(subject=family.user_id, client_id=client.client_id),
                            at=_at(now),
                            source=source,
                            details={"kind": "refresh_token", "family_id": family.family_id},
                        )
                    )
                return
        try:
            claims = self._signer.verify(token, audience=self.audience)
        except ValueError:
            return
        with self._uow() as uow:
            if uow.store.revoke_access_token(str(claims["jti"]), client.client_id, now):
                sub = str(claims["sub"])
                uow.publish(
                    events.TokenRevoked(sub, client.client_id, "access_token", "", _at(now))
                )
                uow.publish(
                    audit.entry(
                        audit.TOKEN_REVOKED,
                        sub,
                        actor=Actor(subject=sub, client_id=client.client_id),
                        at=_at(now),
                        source=source,
                        details={"kind": "access_token", "jti": str(claims["jti"])},
                    )
                )

    def metadata(self, base: str) -> dict[str, Any]:
        """RFC 8414 authorization server metadata. The implicit and password grants are listed
        only when a configured client may use them (RFC 9700 §2.1.2, §2.4)."""
        grants = {"authorization_code", "refresh_token", "client_credentials", DEVICE_CODE_GRANT}
        responses = {"code"}
        for client in self.clients.values():
            if client.allows("password"):
                grants.add("password")
            if "token" in client.response_types:
                grants.add("implicit")
                responses.add("token")
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{base}/authorize",
            "token_endpoint": f"{base}/token",
            "device_authorization_endpoint": f"{base}/device_authorization",
            "introspection_endpoint": f"{base}/introspect",
            "revocation_endpoint": f"{base}/revoke",
            "jwks_uri": f"{base}/.well-known/jwks.json",
            "response_types_supported": sorted(responses),
            "response_modes_supported": ["query", "fragment"]
            if "token" in responses
            else ["query"],
            "grant_types_supported": sorted(grants),
            "token_endpoint_auth_methods_supported": [
                "client_secret_basic",
                "client_secret_post",
                "none",
            ],
            "introspection_endpoint_auth_methods_supported": [
                "client_secret_basic",
                "client_secret_post",
            ],
            "revocation_endpoint_auth_methods_supported": [
                "client_secret_basic",
                "client_secret_post",
                "none",
            ],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": sorted({s for c in self.clients.values() for s in c.scopes}),
            "authorization_response_iss_parameter_supported": True,
        }
