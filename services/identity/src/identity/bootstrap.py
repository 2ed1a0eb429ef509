"""The composition root: identity's use cases, its gRPC servicer and its HTTP side, on the kit."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from identity.adapters import recovery, totp
from identity.adapters.clients import load_clients
from identity.adapters.common_passwords import load_common_passwords
from identity.adapters.events import EVENTS
from identity.adapters.hashing import PasswordHasher
from identity.adapters.keys import SigningKeys, SqliteKeyStore
from identity.adapters.sqlite import MIGRATIONS, SqliteUnitOfWork
from identity.app.accounts import Accounts
from identity.app.oauth import AuthorizationServer, Lifetimes
from identity.config import Settings
from identity.domain.model import SessionPolicy
from identity.domain.passwords import PasswordPolicy
from identity.entrypoints.grpc_api import IdentityServicer
from identity.entrypoints.http_api import IdentityHttp
from meshkit.server import ServiceBinding
from meshkit.service import Service, ServiceContext, binding
from shop.identity.v1 import identity_pb2_grpc

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

log = logging.getLogger(__name__)

HOUSEKEEPING_EVERY_S = 60.0


def build(ctx: ServiceContext[Settings]) -> list[ServiceBinding]:
    """Identity's use cases over ``ctx.db``; gRPC for the mesh, HTTP for OAuth."""
    settings = ctx.settings
    # The issuer names the HTTP port, so bind it first (port 0 in tests: a free one).
    http = _Deferred()
    server = ctx.serve_http(http, port=settings.http_port)
    issuer = settings.issuer_for(server.port)

    def uow() -> SqliteUnitOfWork:
        return SqliteUnitOfWork(ctx.db, ctx.events)

    def snapshot() -> SqliteUnitOfWork:
        return SqliteUnitOfWork(ctx.db, ctx.events, read_only=True)

    hasher = PasswordHasher.for_tests() if settings.fast_hashing else PasswordHasher()
    accounts = Accounts(
        uow,
        snapshot,
        hasher=hasher,
        totp=totp,  # the module implements the port (mypy checks modules against Protocols)
        recovery=recovery,
        policy=PasswordPolicy(common=load_common_passwords()),
        totp_issuer=settings.totp_issuer,
        session_policy=SessionPolicy(settings.session_idle, settings.session_lifetime),
    )
    keys = SigningKeys(
        SqliteKeyStore(ctx.db),
        issuer=issuer,
        rotate_every=settings.key_rotation,
        token_ttl=settings.access_token_ttl,
        leeway=settings.clock_skew,
    )
    keys.active_kid()
    oauth = AuthorizationServer(
        uow,
        snapshot,
        accounts=accounts,
        signer=keys,
        clients=load_clients(settings.clients_path),
        issuer=issuer,
        audience=settings.audience,
        lifetimes=Lifetimes(
            access_token=settings.access_token_ttl,
            refresh_token=settings.refresh_token_ttl,
            device_code=settings.device_code_ttl,
            device_interval=settings.device_interval,
        ),
    )
    http.app = IdentityHttp(
        accounts,
        oauth,
        keys.jwks,
        secure_cookies=issuer.startswith("https://"),
        cors_origins=settings.origins,
    )

    # Often enough that a rotation is never late by more than half its period.
    every = min(HOUSEKEEPING_EVERY_S, max(0.5, settings.key_rotation / 2))

    def housekeeping(stop: threading.Event) -> None:
        """Rotate the signing key when due; drop expired rows."""
        while not stop.wait(every):
            try:
                if keys.rotate_if_due():
                    log.info("rotated the signing key: now %s", keys.active_kid())
                # Expiry is wall-clock by the RFCs. Rows are kept an hour past it (beyond any
                # clock skew allowed), failures a day (beyond any lockout window).
                now = time.time()
                with uow() as work:
                    work.store.prune_expired(now - 3600)
                    work.store.prune_failures(now - 86400)
            except Exception:
                log.exception("identity housekeeping failed; retrying in %.1fs", every)

    ctx.add_worker("housekeeping", housekeeping)
    log.info("identity: issuer %s", issuer)
    return [
        binding(
            IdentityServicer(accounts, oauth),
            identity_pb2_grpc.add_IdentityServiceServicer_to_server,
        )
    ]


class _Deferred:
    """The WSGI app, set once built: the HTTP socket must be bound before the issuer is known."""

    app: IdentityHttp | None = None

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if self.app is None:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"starting\n"]
        return self.app(environ, start_response)


SERVICE = Service[Settings](
    "identity", build, settings=Settings, migrations=MIGRATIONS, events=EVENTS
)
