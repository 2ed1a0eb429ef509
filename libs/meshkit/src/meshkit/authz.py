"""Permission checks before every RPC: who the caller is, and whether the service's policy lets
them do what the contract says the RPC does.

The contract declares it. Every RPC in proto/ carries ``option (mesh.api.v1.access) =
{permission: "orders.read", resource: "order_id"}`` or ``{public: true}``. grpc.health.v1 and
server reflection are public by declaration here (``PUBLIC_SERVICES``). An RPC that declares
nothing is denied.

The caller proves who it is with ``authorization: Bearer <access token>`` metadata. That is one of
identity's RFC 9068 JWTs, verified against identity's JWKS (meshkit.tokens):
- a user's token gives ``User::"<sub>"``, a child of ``Role::"<role>"`` for each of its roles;
- a service's client_credentials token (its roles hold "service"; its sub is the service's client
  id) gives ``Service::"<sub>"``. A service may say whom it acts for with ``mesh-on-behalf-of``
  metadata (``acting_for``), so orders' saga calls inventory as orders, on behalf of the order's
  customer. The on-behalf-of of anyone else is ignored.

No token on a private RPC is UNAUTHENTICATED, naming what to send. A bad token is UNAUTHENTICATED
with the reason.

The service's policy decides. That is ``policy.cedar`` in its package, in Cedar's own language,
evaluated by the Cedar engine (cedarpy). Deny is the default, and a ``forbid`` overrides any
``permit``. Each request is ``(principal, Action::"<permission>", resource, context)``:
- The resource is ``<Type>::"resource"``. Type comes from the resource field: order_id gives Order,
  and no field gives Request. Its one attribute, ``owner``, is the principal itself when the caller
  owns the resource and ``User::""`` otherwise.
- The owner comes from the service's resolver for that field (``Authorizer.owners``). With no
  resource field, it comes from the request's ``subject_field``: PlaceOrder's customer_id.
- ``context.on_behalf_of`` is the user a service acts for, or "".

Policies therefore see ownership, never ids. A decision depends only on the principal, the action,
the resource type and whether the principal owns the resource, so it is cached on exactly that:
the Cedar engine costs ~50 us, and a cached decision costs a dict lookup.

A denial is PERMISSION_DENIED naming the permission (ErrorInfo reason PERMISSION_DENIED, metadata
permission and resource), and an audit record (``meshkit.audit``, outcome DENIED) through the
service's outbox.

While a handler runs, ``current_principal()`` is the verified caller, and a saga step's
``acting_for(customer)`` makes the service's outgoing calls act for that customer.
``current_peer()`` is where the call came from. Audit records read all three.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Protocol

import cedarpy
from google.protobuf import descriptor_pool

from meshkit.errors import PermissionDenied, Unauthenticated, Unavailable
from meshkit.tokens import InvalidToken, KeysUnavailable

log = logging.getLogger("meshkit.authz")

# Public by declaration: health checks and reflection (grpcurl's `list` and `describe`).
PUBLIC_SERVICES = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)
ON_BEHALF_OF = "mesh-on-behalf-of"
ACCESS_OPTION = "mesh.api.v1.access"
SERVICE_ROLE = "service"
POLICY_FILE = "policy.cedar"
HOW_TO_AUTHENTICATE = (
    "send metadata 'authorization: Bearer <access token>' (identity's OAuth token endpoint,"
    " or for local use: mesh token --role customer)"
)

_principal: ContextVar[Principal | None] = ContextVar("meshkit_principal", default=None)
_peer: ContextVar[str] = ContextVar("meshkit_peer", default="")
_acting_for: ContextVar[str] = ContextVar("meshkit_acting_for", default="")


@dataclass(frozen=True)
class Principal:
    """A verified caller: a user, or a service (``service`` set) acting on behalf of a user."""

    subject: str
    roles: tuple[str, ...] = ()
    client_id: str = ""
    scope: str = ""
    service: str = ""
    on_behalf_of: str = ""
    token: str = field(default="", repr=False)  # forwarded downstream; never logged

    @property
    def uid(self) -> str:
        """Its Cedar entity uid, e.g. ``User::"u-1"`` or ``Service::"orders"``."""
        return _uid("Service" if self.service else "User", self.subject)


def current_principal() -> Principal | None:
    """The verified caller of the RPC this thread is handling (None outside one, or public)."""
    return _principal.get()


def current_peer() -> str:
    """The address of the RPC this thread is handling (grpc's peer string), or ""."""
    return _peer.get()


@contextlib.contextmanager
def acting_for(subject: str) -> Iterator[None]:
    """Within the block, this service's outgoing calls act for ``subject`` (with the service's
    own credentials), and audit records name ``subject`` as the one acted for: a saga step
    running later, on a worker thread, for the customer who placed the order."""
    token = _acting_for.set(subject)
    principal_token = _principal.set(None)
    try:
        yield
    finally:
        _principal.reset(principal_token)
        _acting_for.reset(token)


def current_acting_for() -> str:
    """The subject set by ``acting_for`` (or "")."""
    return _acting_for.get()


@contextlib.contextmanager
def bound(principal: Principal | None, peer: str) -> Iterator[None]:
    """Make ``principal`` and ``peer`` current for the block (the interceptor's job)."""
    p, a = _principal.set(principal), _peer.set(peer)
    try:
        yield
    finally:
        _peer.reset(a)
        _principal.reset(p)


@dataclass(frozen=True)
class Rule:
    """What an RPC's contract declares about who may call it."""

    method: str  # /package.Service/Method
    public: bool = False
    permission: str = ""
    resource: str = ""  # request field with the resource id
    subject_field: str = ""  # request field naming whose request it is
    declared: bool = True

    @functools.cached_property
    def resource_type(self) -> str:
        """The Cedar entity type of the resource: ``order_id`` -> ``Order``; else ``Request``."""
        return _type_of(self.resource) if self.resource else "Request"


def _type_of(field_name: str) -> str:
    base = re.sub(r"_id$", "", field_name)
    return "".join(part.capitalize() for part in base.split("_")) or "Request"


def rule_of(method: str) -> Rule:
    """The rule ``method`` (``/package.Service/Method``) declares, from the generated
    descriptors (the contract's ``mesh.api.v1.access`` option). The option is looked up by name
    in the descriptor pool (every contract that uses it imports it), so meshkit stays free of
    generated code."""
    service, _, name = method.lstrip("/").partition("/")
    if service in PUBLIC_SERVICES:
        return Rule(method, public=True)
    pool = descriptor_pool.Default()
    try:
        descriptor = pool.FindMethodByName(f"{service}.{name}")
        extension = pool.FindExtensionByName(ACCESS_OPTION)
    except KeyError:
        return Rule(method, declared=False)
    options: Any = descriptor.GetOptions()
    if not options.HasExtension(extension):
        return Rule(method, declared=False)
    access: Any = options.Extensions[extension]
    return Rule(
        method,
        public=access.public,
        permission=access.permission,
        resource=access.resource,
        subject_field=access.subject_field,
        declared=access.public or bool(access.permission),
    )


@dataclass(frozen=True)
class Decision:
    """A policy's answer, with the ids of the policies that decided it (for the log)."""

    allowed: bool
    reasons: tuple[str, ...] = ()


class Policy:
    """A Cedar policy set, parsed once, with a decision cache. Thread-safe."""

    def __init__(self, text: str, *, name: str = "policy", cache_size: int = 10_000) -> None:
        try:
            self._policies = cedarpy.PolicySet.from_str(text)
        except ValueError as exc:
            raise ValueError(f"{name}: not a valid Cedar policy: {exc}") from None
        self.name = name
        self.text = text
        self._cache: dict[tuple[Any, ...], Decision] = {}
        self._cache_size = cache_size
        self._lock = threading.Lock()

    @classmethod
    def from_package(cls, package: str) -> Policy:
        """The ``policy.cedar`` shipped in ``package``; FileNotFoundError when it has none."""
        text = (resources.files(package) / POLICY_FILE).read_text(encoding="utf-8")
        return cls(text, name=f"{package}/{POLICY_FILE}")

    def decide(
        self, principal: Principal, permission: str, resource_type: str, owned: bool
    ) -> Decision:
        """Whether ``principal`` may ``permission`` on a ``resource_type`` it does (``owned``)
        or does not own."""
        key = (
            principal.service,
            principal.subject,
            principal.roles,
            bool(principal.on_behalf_of),
            permission,
            resource_type,
            owned,
        )
        decision = self._cache.get(key)
        if decision is None:
            decision = self._evaluate(principal, permission, resource_type, owned)
            with self._lock:
                if len(self._cache) >= self._cache_size:
                    self._cache.pop(next(iter(self._cache)), None)
                self._cache[key] = decision
        return decision

    def _evaluate(
        self, principal: Principal, permission: str, resource_type: str, owned: bool
    ) -> Decision:
        kind = "Service" if principal.service else "User"
        me = {"type": kind, "id": principal.subject}
        nobody = {"type": "User", "id": ""}
        entities: list[dict[Any, Any]] = [
            {
                "uid": me,
                "attrs": {},
                "parents": []
                if principal.service
                else [{"type": "Role", "id": role} for role in principal.roles],
            },
            {
                "uid": {"type": resource_type, "id": "resource"},
                "attrs": {"owner": {"__entity": me if owned else nobody}},
                "parents": [],
            },
        ]
        request = {
            "principal": _uid(kind, principal.subject),
            "action": _uid("Action", permission),
            "resource": _uid(resource_type, "resource"),
            "context": {"on_behalf_of": principal.on_behalf_of},
        }
        result = cedarpy.is_authorized(request, self._policies, entities)
        errors = list(result.diagnostics.errors)
        if errors:
            log.warning("%s: errors evaluating %s for %s: %s", self.name, permission, kind, errors)
        return Decision(result.allowed, tuple(result.diagnostics.reasons))


def _uid(kind: str, ident: str) -> str:
    escaped = ident.replace("\\", "\\\\").replace('"', '\\"')
    return f'{kind}::"{escaped}"'


class Verifier(Protocol):
    """What verifies a bearer token (meshkit.tokens.TokenVerifier, or identity's own keys)."""

    def verify(self, token: str) -> Any:
        """The caller (with sub, client_id, scope, roles, token), or raise."""
        ...


class OwnerResolver(Protocol):
    """Who owns the resource ``resource_id`` names: the owner's subject, or None (unknown).
    ``request`` is the RPC's request and ``seconds_left`` what remains of its deadline (None:
    no deadline), for a resolver that may wait for a resource the caller was promised, e.g. a
    read model catching up with the caller's own write."""

    def __call__(self, resource_id: str, request: Any, seconds_left: float | None) -> str | None:
        """The owner's subject, or None."""
        ...


def by_id(lookup: Callable[[str], str | None]) -> OwnerResolver:
    """An OwnerResolver from a plain ``id -> owner`` lookup (most resources)."""

    def resolve(resource_id: str, request: Any, seconds_left: float | None) -> str | None:
        return lookup(resource_id)

    return resolve


DenialRecorder = Callable[[Principal | None, Rule, str, str], None]


class Authorizer:
    """Decides, for one service, whether an RPC may run (see the module doc). Thread-safe.

    ``owners`` maps a resource field (``order_id``) to an ``OwnerResolver`` giving the subject
    owning that resource (None: unknown; ``by_id`` makes one of a plain lookup).
    ``on_denied(principal, rule, resource_id, why)`` records a denial (the kit writes an audit
    record).
    """

    def __init__(
        self,
        service: str,
        verifier: Verifier | None,
        policy: Policy | None,
        *,
        owners: Mapping[str, OwnerResolver] | None = None,
        on_denied: DenialRecorder | None = None,
    ) -> None:
        self.service = service
        self.verifier = verifier
        self.policy = policy
        self.owners: dict[str, OwnerResolver] = dict(owners or {})
        self.on_denied = on_denied
        self._rules: dict[str, Rule] = {}

    def rule(self, method: str) -> Rule:
        """``method``'s rule, read once from the contracts."""
        rule = self._rules.get(method)
        if rule is None:
            rule = self._rules[method] = rule_of(method)
        return rule

    def authenticate(self, metadata: Sequence[tuple[str, Any]] | None) -> Principal | None:
        """The caller its ``authorization`` metadata proves (None when it sends none).
        Raises Unauthenticated for a bad token, Unavailable when keys cannot be had."""
        token = ""
        on_behalf_of = ""
        for key, value in metadata or ():
            if key == "authorization" and isinstance(value, str):
                scheme, _, token = value.partition(" ")
                if scheme.lower() != "bearer" or not token.strip():
                    raise Unauthenticated(
                        f"the authorization metadata is not a bearer token: {HOW_TO_AUTHENTICATE}",
                        reason="BAD_AUTHORIZATION",
                    )
                token = token.strip()
            elif key == ON_BEHALF_OF and isinstance(value, str):
                on_behalf_of = value
        if not token:
            return None
        if self.verifier is None:
            raise Unavailable(
                "this service cannot verify tokens: no token issuer is configured"
                " (MESH_AUTH_JWKS_URL, or identity's http_port in mesh.toml)",
                reason="NO_TOKEN_ISSUER",
            )
        try:
            caller = self.verifier.verify(token)
        except InvalidToken as exc:
            raise Unauthenticated(
                f"the access token is not accepted: {exc.description}", reason="INVALID_TOKEN"
            ) from None
        except KeysUnavailable as exc:
            raise Unavailable(f"cannot verify the access token now: {exc}") from None
        is_service = SERVICE_ROLE in caller.roles
        return Principal(
            subject=caller.sub,
            roles=tuple(caller.roles),
            client_id=caller.client_id,
            scope=caller.scope,
            service=caller.sub if is_service else "",
            on_behalf_of=on_behalf_of if is_service else "",
            token=token,
        )

    def authorize(
        self,
        rule: Rule,
        principal: Principal | None,
        request: Any,
        seconds_left: float | None = None,
    ) -> None:
        """Raise Unauthenticated / PermissionDenied unless ``principal`` may call ``rule``'s RPC
        with ``request`` (``seconds_left``: of the call's deadline, for owner resolvers that
        wait). Records every denial."""
        if not rule.declared:
            self._deny(
                principal,
                rule,
                "",
                f"{rule.method} declares no permission (mesh.api.v1.access) and is denied",
            )
        if rule.public:
            return
        if principal is None:
            raise Unauthenticated(
                f"{rule.method} needs an access token: {HOW_TO_AUTHENTICATE}",
                reason="MISSING_TOKEN",
                metadata={"permission": rule.permission},
            )
        resource_id, owner = self._resource(rule, request, seconds_left)
        if self.policy is None:
            self._deny(principal, rule, resource_id, f"{self.service} has no policy")
        assert self.policy is not None
        me = principal.on_behalf_of if principal.service else principal.subject
        owned = bool(owner) and owner == me
        decision = self.policy.decide(principal, rule.permission, rule.resource_type, owned)
        if not decision.allowed:
            whose = "" if not resource_id else f" on {rule.resource_type} {resource_id}"
            self._deny(principal, rule, resource_id, f"permission {rule.permission} denied{whose}")

    def _resource(
        self, rule: Rule, request: Any, seconds_left: float | None
    ) -> tuple[str, str | None]:
        """(resource id, its owner's subject or None)."""
        if rule.resource:
            resource_id = str(getattr(request, rule.resource, "") or "")
            resolve = self.owners.get(rule.resource)
            owner = (
                resolve(resource_id, request, seconds_left)
                if resolve is not None and resource_id
                else None
            )
            return resource_id, owner
        if rule.subject_field:
            owner = str(getattr(request, rule.subject_field, "") or "")
            return owner, owner or None
        return "", None

    def _deny(self, principal: Principal | None, rule: Rule, resource_id: str, why: str) -> None:
        if self.on_denied is not None:
            try:
                self.on_denied(principal, rule, resource_id, why)
            except Exception:
                log.exception("could not record the denial of %s", rule.method)
        raise PermissionDenied(
            why,
            reason="PERMISSION_DENIED",
            metadata={"permission": rule.permission, "resource": resource_id},
        )
