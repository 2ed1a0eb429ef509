"""The gateway's WSGI application: what happens to every HTTP request, in order.

1. ``X-Request-Id``: the client's (when it is a sane token) or a new one; echoed, and sent on
   to the backend as ``x-request-id`` metadata.
2. CORS for the configured origins (preflight ``OPTIONS`` answered here).
3. The gateway's own pages: the shop page at ``/``, ``/openapi.json``, ``/docs``, ``/healthz``.
4. The route, from the contracts (gateway.routing): 404, or 405 with ``Allow``.
5. Authentication (RFC 6750) unless the route is declared public: 401 with
   ``WWW-Authenticate: Bearer ...``; a route's roles: 403.
6. Rate limits per client and per user (gateway.ratelimit): 429 with ``Retry-After`` and the
   RateLimit headers (these are on every limited answer).
7. Transcoding (gateway.transcoding), with the caller's subject in the route's subject field.
8. The gRPC call with the route's deadline, the caller's token as ``authorization`` metadata
   (a backend can verify it again; a caller that skips the gateway has no token identity
   signed, so it cannot pose as anyone) and ``traceparent`` (meshkit's channel).
9. The answer in protojson, or an RFC 9457 problem (gateway.problems).

One access-log line per request (JSON, with the trace id) comes from meshkit.http.
"""

from __future__ import annotations

import logging
import math
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wrappers import Request, Response

from gateway.problems import PROBLEM_TYPE, Problem, from_rpc_error
from gateway.ratelimit import RateLimiter
from gateway.routing import Route, RouteTable
from gateway.transcoding import BadRequest, build_request, message_class, to_json
from meshkit import telemetry
from meshkit.tokens import Caller, InvalidToken, KeysUnavailable, TokenVerifier

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

log = logging.getLogger(__name__)

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_EXPOSED = "X-Request-Id, X-Trace-Id, RateLimit, RateLimit-Policy, Retry-After"
Page = Callable[[Request], Response]


@dataclass(frozen=True)
class Composite:
    """A route of the gateway's own that answers from several backends (gateway.aggregate):
    authenticated and limited like any route, its handler given the path variables, the
    metadata to send on, and the verified caller."""

    name: str  # "GET /v1/orders/{order_id}/details"
    pattern: re.Pattern[str]  # named groups are the path variables
    handler: Callable[[dict[str, str], tuple[tuple[str, str], ...], Caller], dict[str, Any]]

    @property
    def http_method(self) -> str:
        """GET, ..."""
        return self.name.split(" ", 1)[0]


@dataclass(frozen=True)
class EdgeSettings:
    """What the edge needs to know besides its collaborators."""

    realm: str = "meshkit"
    deadline_s: float = 5.0
    max_body_bytes: int = 1024 * 1024
    cors_origins: tuple[str, ...] = ()
    pages: Mapping[str, Page] = field(default_factory=dict)
    composites: Sequence[Composite] = ()


class Edge:
    """The WSGI app. Thread safety: safe to share; channels and stubs are thread safe."""

    def __init__(
        self,
        routes: RouteTable,
        verifier: TokenVerifier,
        limiter: RateLimiter,
        channel_for: Callable[[Route], grpc.Channel],
        settings: EdgeSettings,
    ) -> None:
        self._routes = routes
        self._verifier = verifier
        self._limiter = limiter
        self._channel_for = channel_for
        self._settings = settings
        self._calls: dict[str, Any] = {}

    # --- WSGI --------------------------------------------------------------------------------
    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        request.max_content_length = self._settings.max_body_bytes
        sent = request.headers.get("X-Request-Id", "")
        request_id = sent if _REQUEST_ID.fullmatch(sent) else uuid.uuid4().hex
        trace_id = _trace_id()
        try:
            response = self._handle(request, request_id)
        except Problem as problem:
            response = Response(
                problem.body(instance=request.path, request_id=request_id, trace_id=trace_id),
                status=problem.status,
                content_type=PROBLEM_TYPE,
                headers=problem.headers,
            )
        except Exception:  # the last line: a stack trace never reaches a client
            log.exception("gateway: unexpected error on %s %s", request.method, request.path)
            failed = Problem(500, "the gateway failed to handle the request", code="INTERNAL")
            response = Response(
                failed.body(instance=request.path, request_id=request_id, trace_id=trace_id),
                status=500,
                content_type=PROBLEM_TYPE,
            )
        response.headers["X-Request-Id"] = request_id
        if trace_id:
            response.headers["X-Trace-Id"] = trace_id
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        self._cors(request, response)
        answer: Iterable[bytes] = response(environ, start_response)
        return answer

    def _cors(self, request: Request, response: Response) -> None:
        origin = request.headers.get("Origin", "")
        if origin and origin in self._settings.cors_origins:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = _EXPOSED
            response.headers.add("Vary", "Origin")

    # --- the pipeline ------------------------------------------------------------------------
    def _handle(self, request: Request, request_id: str) -> Response:
        if request.method == "OPTIONS":
            return self._preflight(request)
        page = self._settings.pages.get(request.path)
        if page is not None and request.method in ("GET", "HEAD"):
            return page(request)
        for composite in self._settings.composites:
            matched = composite.pattern.fullmatch(request.path)
            if matched and request.method == composite.http_method:
                return self._composite(request, composite, matched.groupdict(), request_id)
        found = self._routes.match(request.method, request.path)
        if isinstance(found, list):
            if found:
                raise Problem(
                    405,
                    f"{request.path} allows {', '.join(found)}",
                    headers=[("Allow", ", ".join(found))],
                )
            raise Problem(404, f"no route for {request.method} {request.path}")
        route, path_values = found
        caller = None if route.public else self._authenticate(request)
        if caller is not None and not caller.has_any_role(route.roles):
            raise Problem(
                403,
                f"{route.name} needs the role {' or '.join(route.roles)}",
                code="PERMISSION_DENIED",
            )
        limit_headers = self._limit(route.name, request, caller)
        try:
            body = request.get_data(cache=False) if route.body else request.get_data()
        except RequestEntityTooLarge:
            raise Problem(
                413,
                f"the body is larger than {self._settings.max_body_bytes} bytes",
                headers=limit_headers,
            ) from None
        if route.body and body.strip() and request.mimetype not in ("application/json", ""):
            raise Problem(415, "send the body as application/json", headers=limit_headers)
        try:
            message = build_request(
                route,
                path_values,
                {k: request.args.getlist(k) for k in request.args},
                body,
                subject=caller.sub if caller else "",
            )
        except BadRequest as exc:
            violations = (
                [
                    {
                        "@type": "type.googleapis.com/google.rpc.BadRequest",
                        "fieldViolations": [{"field": exc.field, "description": exc.description}],
                    }
                ]
                if exc.field
                else []
            )
            raise Problem(
                400, str(exc), code="INVALID_ARGUMENT", details=violations, headers=limit_headers
            ) from None
        reply = self._call(route, message, caller, request_id, limit_headers)
        response = Response(_json_bytes(to_json(reply)), content_type="application/json")
        for name, value in limit_headers:
            response.headers[name] = value
        return response

    def _composite(
        self, request: Request, composite: Composite, values: dict[str, str], request_id: str
    ) -> Response:
        caller = self._authenticate(request)
        limit_headers = self._limit(composite.name, request, caller)
        metadata = (("x-request-id", request_id), ("authorization", f"Bearer {caller.token}"))
        try:
            document = composite.handler(values, metadata, caller)
        except Problem as problem:
            problem.headers.extend(limit_headers)
            raise
        response = Response(_json_bytes(document), content_type="application/json")
        for name, value in limit_headers:
            response.headers[name] = value
        return response

    def _limit(
        self, route_name: str, request: Request, caller: Caller | None
    ) -> list[tuple[str, str]]:
        """Take one request from the caller's buckets for the route: the RateLimit headers to
        answer with, or a 429 problem carrying them and Retry-After."""
        decision = self._limiter.check(route_name, _limit_keys(request, caller))
        headers = decision.headers()
        if not decision.allowed:
            raise Problem(
                429,
                f"rate limit {decision.policy.name!r} reached; retry after"
                f" {math.ceil(decision.retry_after)} s",
                code="RESOURCE_EXHAUSTED",
                headers=headers,
            )
        return headers

    def _preflight(self, request: Request) -> Response:
        origin = request.headers.get("Origin", "")
        if origin not in self._settings.cors_origins:
            raise Problem(403, f"origin {origin or '(none)'} is not allowed")
        response = Response(status=204)
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, PUT, PATCH, DELETE"
        response.headers["Access-Control-Allow-Headers"] = (
            "Authorization, Content-Type, X-Request-Id"
        )
        response.headers["Access-Control-Max-Age"] = "600"
        return response

    def _authenticate(self, request: Request) -> Caller:
        realm = self._settings.realm
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if not header or scheme.lower() != "bearer" or not token.strip():
            # RFC 6750 §3.1: no error code when the request carried no credentials at all.
            raise Problem(
                401,
                "this route needs an access token: Authorization: Bearer <token>",
                code="UNAUTHENTICATED",
                headers=[("WWW-Authenticate", f'Bearer realm="{realm}"')],
            )
        try:
            return self._verifier.verify(token.strip())
        except InvalidToken as exc:
            challenge = (
                f'Bearer realm="{realm}", error="invalid_token",'
                f' error_description="{exc.description}"'
            )
            raise Problem(
                401,
                exc.description,
                code="UNAUTHENTICATED",
                headers=[("WWW-Authenticate", challenge)],
            ) from None
        except KeysUnavailable:
            raise Problem(
                503,
                "access tokens cannot be checked right now: try again",
                code="UNAVAILABLE",
                headers=[("Retry-After", "5")],
            ) from None

    def _call(
        self,
        route: Route,
        message: Any,
        caller: Caller | None,
        request_id: str,
        limit_headers: Sequence[tuple[str, str]],
    ) -> Any:
        call = self._calls.get(route.rpc_path)
        if call is None:
            reply_class = message_class(route.method.output_type)
            call = self._channel_for(route).unary_unary(
                route.rpc_path,
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=reply_class.FromString,
            )
            self._calls[route.rpc_path] = call
        metadata = [("x-request-id", request_id)]
        if caller is not None:
            metadata.append(("authorization", f"Bearer {caller.token}"))
        try:
            return call(message, timeout=self._settings.deadline_s, metadata=tuple(metadata))
        except grpc.RpcError as error:
            problem = from_rpc_error(error, route.method.containing_service.name)
            problem.headers.extend(limit_headers)
            raise problem from None


def _limit_keys(request: Request, caller: Caller | None) -> list[str]:
    if caller is None:
        return [f"ip:{request.remote_addr or 'unknown'}"]
    return [f"client:{caller.client_id}", f"user:{caller.sub}"]


def _trace_id() -> str:
    parent = telemetry.current_traceparent()
    return parent.split("-")[1] if parent else ""


def _json_bytes(document: Mapping[str, Any]) -> bytes:
    import json

    return json.dumps(document).encode()
