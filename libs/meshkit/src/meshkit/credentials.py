"""Who a service's outgoing calls are made as (the client side of meshkit.authz).

An outgoing call carries, in this order of preference:
1. inside ``authz.acting_for(user)``, e.g. a saga step: the service's own access token and
   ``mesh-on-behalf-of: <user>``. The callee sees ``Service::"orders"`` acting for the user;
2. while handling an RPC: the caller's own token, forwarded, so the callee checks the same
   caller;
3. otherwise, e.g. a background worker: the service's own token.

A call whose metadata already has ``authorization`` is left as it is (the gateway sets its own).

The service's own token comes from identity's token endpoint with the OAuth 2 client_credentials
grant (RFC 6749 §4.4): client id = the service's name, secret = ``<NAME>_CLIENT_SECRET``. It is
kept until a minute before it expires, so a service asks identity about every nine minutes, not
per call.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

import grpc

from meshkit import authz
from meshkit.errors import Unauthenticated, Unavailable
from meshkit.telemetry import _ClientCallDetails

log = logging.getLogger("meshkit.credentials")

REFRESH_BEFORE_S = 60.0
RENEW_RETRY_S = 5.0  # between renewal attempts while identity is unreachable


class ServiceCredentials:
    """A service's own access token, from the client_credentials grant, cached. Thread-safe."""

    def __init__(
        self,
        token_url: str,
        client_id: str,
        secret: str,
        *,
        scope: str = "",
        clock: Callable[[], float] = time.monotonic,
        timeout: float = 5.0,
    ) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self._secret = secret
        self._scope = scope
        self._clock = clock
        self._timeout = timeout
        self._token = ""
        self._expires = 0.0
        self._retry_at = 0.0  # after a failed renewal: keep the cached token until then
        self._lock = threading.Lock()

    def _fresh(self) -> bool:
        """The cached token needs no renewal now."""
        if not self._token:
            return False
        now = self._clock()
        return now < self._expires - REFRESH_BEFORE_S or (now < self._retry_at < self._expires)

    def token(self) -> str:
        """A token valid for at least a minute more, renewed in time. While identity cannot be
        reached, the cached token is used for as long as it is still valid (graceful
        degradation: a renewal is due a minute early, not needed yet); after that, or when
        identity refuses the client, Unavailable / Unauthenticated."""
        if self._fresh():
            return self._token
        with self._lock:
            if self._fresh():
                return self._token
            try:
                answer = self._fetch()
            except Unavailable as exc:
                if self._token and self._clock() < self._expires:
                    # Not again for a while: every call would otherwise wait on identity.
                    self._retry_at = self._clock() + RENEW_RETRY_S
                    log.warning(
                        "%s: cannot renew its access token (%s); using the cached one, valid"
                        " %.0fs more",
                        self.client_id,
                        exc.message,
                        self._expires - self._clock(),
                    )
                    return self._token
                raise
            self._token = str(answer["access_token"])
            self._expires = self._clock() + float(answer.get("expires_in", 300))
            return self._token

    def _fetch(self) -> dict[str, Any]:
        form = {"grant_type": "client_credentials"}
        if self._scope:
            form["scope"] = self._scope
        basic = base64.b64encode(
            f"{urllib.parse.quote(self.client_id)}:{urllib.parse.quote(self._secret)}".encode()
        ).decode()
        request = urllib.request.Request(  # noqa: S310 - identity's URL, from mesh.toml
            self.token_url,
            data=urllib.parse.urlencode(form).encode(),
            headers={
                "Authorization": f"Basic {basic}",
                "Content-Type": "application/x-www-form-urlencoded",
            },
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as reply:  # noqa: S310
                document: dict[str, Any] = json.loads(reply.read())
                return document
        except urllib.error.HTTPError as exc:
            body = exc.read()[:300].decode(errors="replace")
            raise Unauthenticated(
                f"identity refused {self.client_id}'s client credentials ({exc.code}): {body}"
            ) from None
        except (OSError, ValueError) as exc:
            raise Unavailable(
                f"cannot get {self.client_id}'s access token from {self.token_url}: {exc}"
            ) from None


class StaticCredentials:
    """A fixed token (tests, tools): what ``ServiceCredentials`` would fetch."""

    def __init__(self, token: str) -> None:
        self._token = token

    def token(self) -> str:
        """The token given."""
        return self._token


TokenSource = ServiceCredentials | StaticCredentials


Metadata = list[tuple[str, str | bytes]]


def outgoing_metadata(metadata: Metadata, own: TokenSource | None) -> Metadata:
    """``metadata`` with the authorization this call should carry (see the module doc)."""
    if any(key == "authorization" for key, _ in metadata):
        return metadata
    acting_for = authz.current_acting_for()
    if acting_for and own is not None:
        return [
            *metadata,
            ("authorization", f"Bearer {own.token()}"),
            (authz.ON_BEHALF_OF, acting_for),
        ]
    principal = authz.current_principal()
    if principal is not None and principal.token:
        extra = [("authorization", f"Bearer {principal.token}")]
        if principal.on_behalf_of:
            extra.append((authz.ON_BEHALF_OF, principal.on_behalf_of))
        return [*metadata, *extra]
    if own is not None:
        return [*metadata, ("authorization", f"Bearer {own.token()}")]
    return metadata


class OutgoingAuthorization:
    """Adds the call's authorization (see the module doc) to every call of a channel."""

    def __init__(self, own: TokenSource | None) -> None:
        self._own = own

    def details_for(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        """``details`` with the call's authorization added (see the module doc)."""
        metadata: Metadata = list(details.metadata or ())
        updated = outgoing_metadata(metadata, self._own)
        if updated is metadata:
            return details
        return _ClientCallDetails(
            details.method,
            details.timeout,
            updated,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )
