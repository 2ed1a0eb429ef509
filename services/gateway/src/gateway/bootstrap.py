"""The composition root: the gateway's route table, token verifier, limiter and pages."""

from __future__ import annotations

import importlib.resources
import json
import logging
import re
from pathlib import Path

import grpc
from werkzeug.wrappers import Request, Response

from gateway import aggregate, experiments
from gateway.config import Settings
from gateway.edge import Composite, Edge, EdgeSettings, Page
from gateway.openapi import docs_page, openapi_document
from gateway.ratelimit import Limits, MemoryStore, RateLimiter, SqliteStore, Store
from gateway.routing import Route, RouteTable
from meshkit.addresses import http_url_of
from meshkit.control.experiments import NAMESPACE as EXPERIMENTS_NAMESPACE
from meshkit.control.experiments import Experiments, parse_experiments
from meshkit.events import SchemaRegistrationError
from meshkit.server import ServiceBinding
from meshkit.service import Service, ServiceContext
from meshkit.settings import SettingsError
from meshkit.tokens import TokenVerifier

log = logging.getLogger(__name__)


def component_of(route: Route) -> str:
    """The mesh component serving a route's RPC: the package's context (``shop.orders.v1`` ->
    ``orders``), found by name in mesh.toml like any peer."""
    parts = route.package.split(".")
    return parts[1] if len(parts) >= 3 else parts[0]


def _store(setting: str) -> Store:
    if setting == "memory":
        return MemoryStore()
    if setting.startswith("sqlite:///"):
        return SqliteStore(Path(setting.removeprefix("sqlite:///")))
    raise SettingsError(f"GATEWAY_RATE_LIMIT_STORE={setting!r}: memory or sqlite:///PATH")


def _limits(path: str) -> Limits:
    text = (
        Path(path).read_text()
        if path
        else importlib.resources.files("gateway").joinpath("ratelimits.toml").read_text()
    )
    return Limits.from_toml(text)


def build(ctx: ServiceContext[Settings]) -> list[ServiceBinding]:
    """The edge over every annotated RPC of the contracts, served on the HTTP port, with the
    gateway's own routes: an order's details from four services, and the caller's variant of
    an experiment (assigned here, from the control plane's live ``experiments`` namespace)."""
    settings = ctx.settings
    identity = (settings.identity_url or http_url_of("identity")).rstrip("/")
    routes = RouteTable.from_contracts()
    verifier = TokenVerifier(
        f"{identity}/.well-known/jwks.json",
        issuer=settings.issuer or identity,
        audience=settings.audience,
        leeway=settings.clock_skew,
    )
    channels: dict[str, grpc.Channel] = {}

    def channel(name: str) -> grpc.Channel:
        if name not in channels:
            channels[name] = ctx.connect(name)
        return channels[name]

    def channel_for(route: Route) -> grpc.Channel:
        return channel(component_of(route))

    for route in routes.routes:  # connect now: a backend missing from mesh.toml fails the start
        channel_for(route)
    details = Composite(
        aggregate.NAME,
        re.compile(r"/v1/orders/(?P<order_id>[^/]+)/details"),
        lambda values, metadata, caller: aggregate.OrderDetails(
            channel, settings.deadline, ctx.credentials
        )(values["order_id"], metadata, caller.sub),
    )
    # The shop page's checkout experiment asks for its variant here (the exposure is recorded).
    assignment = experiments.assignment_route(_experiments(ctx))
    pages: dict[str, Page] = {"/healthz": lambda _r: Response("ok\n", mimetype="text/plain")}
    # Built once: the document depends on the routes only. Its server is "/", the server it was
    # fetched from, so it stays right whatever host and port the gateway is reached on.
    document = openapi_document(
        routes,
        server_url="/",
        issuer=settings.issuer or identity,
        own=[aggregate.operation(), experiments.operation()],
    )
    pages["/openapi.json"] = _static(json.dumps(document).encode(), "application/json")
    pages["/docs"] = _static(
        docs_page(document).encode(),
        "text/html",
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
    )
    # The browser reaches identity at the issuer URL (in compose, not the internal address).
    pages.update(_shop_pages(settings.issuer or identity, settings))
    edge = Edge(
        routes,
        verifier,
        RateLimiter(_limits(settings.rate_limits_file), _store(settings.rate_limit_store)),
        channel_for,
        EdgeSettings(
            deadline_s=settings.deadline,
            max_body_bytes=settings.max_body_bytes,
            cors_origins=settings.origins,
            pages=pages,
            composites=(details, assignment),
        ),
    )
    ctx.serve_http(edge, access_log=True, threads=settings.http_threads)
    log.info(
        "gateway: %d routes from the contracts (%s); identity at %s",
        len(routes.routes),
        ", ".join(r.name for r in routes.routes),
        identity,
    )
    return []


def _experiments(ctx: ServiceContext[Settings]) -> Experiments:
    """The kit's experiments client; without the experiments' contracts in the registry (a
    mesh that never registered them) one that assigns but records no exposures, said once: an
    experiment must not keep the shop's edge from starting."""
    try:
        return ctx.experiments
    except SchemaRegistrationError as exc:
        log.warning("gateway: experiments assign but record no exposures: %s", exc)
        live = ctx.config(EXPERIMENTS_NAMESPACE, parse=parse_experiments)
        return Experiments(live, None, service=ctx.name)


def _shop_pages(identity: str, settings: Settings) -> dict[str, Page]:
    """The shop page and its configuration (where identity is, which client it is)."""
    static = importlib.resources.files("gateway").joinpath("static")

    def config(_request: Request) -> Response:
        return Response(
            json.dumps(
                {"issuer": identity, "client_id": "shop-web", "jaeger_url": settings.jaeger_url}
            ),
            mimetype="application/json",
        )

    pages: dict[str, Page] = {"/config.json": config}
    for name, mimetype in (
        ("index.html", "text/html"),
        ("app.js", "text/javascript"),
        ("shop.css", "text/css"),
    ):
        resource = static.joinpath(name)
        if resource.is_file():
            body = resource.read_bytes()
            path = "/" if name == "index.html" else f"/{name}"
            # The page talks to itself and to identity only, and no one may frame it (a header:
            # frame-ancestors cannot be set from the page's own <meta> policy).
            policy = (
                f"default-src 'self'; connect-src 'self' {identity}; frame-ancestors 'none';"
                " base-uri 'none'; form-action 'self'"
                if mimetype == "text/html"
                else ""
            )
            pages[path] = _static(body, mimetype, policy)
    return pages


def _static(body: bytes, mimetype: str, policy: str = "") -> Page:
    headers = {"Cache-Control": "no-cache"}
    if policy:
        headers["Content-Security-Policy"] = policy
        headers["X-Frame-Options"] = "DENY"

    def page(_request: Request) -> Response:
        return Response(body, mimetype=mimetype, headers=headers)

    return page


SERVICE = Service[Settings]("gateway", build, settings=Settings, database=False)
