"""Routes from the contracts: every RPC annotated with ``google.api.http`` is a route.

The table is built from the protobuf descriptors of the installed contracts (gen/), so adding an
annotation in proto/ and running ``make gen`` adds a route, with no gateway code. Path templates
follow google/api/http.proto: literal segments, ``*`` and ``**``, variables ``{field.path}`` and
``{field=segments}``, and a trailing ``:verb``. A route's access rule (public, the field the
caller's subject fills, the roles it needs) is the method's ``mesh.api.v1.access`` option.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import descriptor

from mesh.api.v1 import access_pb2

# googleapis-common-protos' modules: types-protobuf's google-stubs, which mypy reads for the
# google namespace, do not cover google.api, so they are typed Any here.
annotations_pb2: Any = importlib.import_module("google.api.annotations_pb2")

METHODS = ("get", "put", "post", "delete", "patch")


class RouteError(ValueError):
    """An annotation the gateway cannot serve; the message names the method and the problem."""


@dataclass(frozen=True)
class Route:
    """One HTTP method and path template, bound to one RPC."""

    http_method: str  # GET, POST, ...
    template: str  # /v1/orders/{order_id}
    method: descriptor.MethodDescriptor
    body: str  # "" (no body), "*" (the whole request) or a field name
    pattern: re.Pattern[str] = field(repr=False)
    variables: tuple[str, ...] = ()  # field paths, in the order of the pattern's groups
    public: bool = False
    subject_field: str = ""
    roles: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """``GET /v1/orders/{order_id}``: how logs, limits and docs name the route."""
        return f"{self.http_method} {self.template}"

    @property
    def service(self) -> str:
        """The full name of the RPC's service, e.g. ``shop.orders.v1.OrdersService``."""
        return self.method.containing_service.full_name

    @property
    def rpc_path(self) -> str:
        """The gRPC method path: ``/shop.orders.v1.OrdersService/GetOrder``."""
        return f"/{self.service}/{self.method.name}"

    @property
    def package(self) -> str:
        """The proto package of the RPC, e.g. ``shop.orders.v1``."""
        return self.method.containing_service.file.package

    def match(self, path: str) -> dict[str, str] | None:
        """The path variables (field path -> value) when ``path`` matches, else None."""
        found = self.pattern.fullmatch(path)
        if found is None:
            return None
        return {name: found.group(f"v{i}") for i, name in enumerate(self.variables)}


def compile_template(template: str) -> tuple[re.Pattern[str], tuple[str, ...]]:
    """The regular expression of a path template and its variables' field paths."""
    if not template.startswith("/"):
        raise RouteError(f"path template {template!r} must start with /")
    verb = ""
    last = template.rsplit("/", 1)[-1]
    if ":" in last and "}" not in last.split(":", 1)[1]:
        template, verb = template.rsplit(":", 1)
    variables: list[str] = []
    parts: list[str] = []
    position = 0
    for variable in re.finditer(r"\{([^}=]+)(?:=([^}]*))?\}", template):
        parts.append(_segments(template[position : variable.start()]))
        inner = variable.group(2) or "*"
        parts.append(f"(?P<v{len(variables)}>{_segments(inner, inside=True)})")
        variables.append(variable.group(1).strip())
        position = variable.end()
    parts.append(_segments(template[position:]))
    if verb:
        parts.append(re.escape(f":{verb}"))
    return re.compile("".join(parts)), tuple(variables)


def _segments(text: str, *, inside: bool = False) -> str:
    out = []
    for piece in re.split(r"(\*\*|\*)", text):
        if piece == "**":
            out.append(".+" if inside else "(?:.+)")
        elif piece == "*":
            out.append("[^/]+")
        else:
            out.append(re.escape(piece))
    return "".join(out)


def _route(method: descriptor.MethodDescriptor, rule: Any) -> Iterator[Route]:
    options = method.GetOptions()
    access: access_pb2.Access = options.Extensions[access_pb2.access]  # type: ignore[index]
    kind = rule.WhichOneof("pattern")
    if kind is None or kind == "custom":
        raise RouteError(f"{method.full_name}: only get/put/post/delete/patch routes are served")
    template = getattr(rule, kind)
    pattern, variables = compile_template(template)
    fields = method.input_type.fields_by_name
    for variable in variables:
        if variable.split(".")[0] not in fields:
            raise RouteError(f"{method.full_name}: path variable {variable!r} is not a field")
    if rule.body not in ("", "*") and rule.body not in fields:
        raise RouteError(f"{method.full_name}: body {rule.body!r} is not a field")
    if access.subject_field and access.subject_field not in fields:
        raise RouteError(
            f"{method.full_name}: subject_field {access.subject_field!r} is not a field"
        )
    yield Route(
        kind.upper(),
        template,
        method,
        rule.body,
        pattern,
        variables,
        access.public,
        access.subject_field,
        tuple(access.roles),
    )
    for extra in rule.additional_bindings:
        yield from _route(method, extra)


def routes_of(services: Iterable[descriptor.ServiceDescriptor]) -> list[Route]:
    """Every annotated RPC of ``services``, most specific template first (literal characters
    outrank variables, so ``/v1/orders:search`` is tried before ``/v1/orders/{order_id}``)."""
    found: list[Route] = []
    for service in services:
        for method in service.methods:
            options = method.GetOptions()
            if options.HasExtension(annotations_pb2.http):
                found.extend(_route(method, options.Extensions[annotations_pb2.http]))
    seen: dict[tuple[str, str], Route] = {}
    for route in found:
        key = (route.http_method, route.pattern.pattern)
        if key in seen:
            raise RouteError(
                f"{route.name} is bound to both {seen[key].method.full_name} and"
                f" {route.method.full_name}"
            )
        seen[key] = route
    return sorted(found, key=lambda r: (-len(re.sub(r"\{[^}]*\}", "", r.template)), r.template))


def installed_services(
    packages: Iterable[str] = ("shop", "mesh"),
) -> list[descriptor.ServiceDescriptor]:
    """The services of every generated ``*_pb2`` module under ``packages`` (gen/)."""
    services: list[descriptor.ServiceDescriptor] = []
    for top in packages:
        root = importlib.import_module(top)
        for module in pkgutil.walk_packages(root.__path__, prefix=f"{top}."):
            if module.name.endswith("_pb2"):
                file = importlib.import_module(module.name).DESCRIPTOR
                services.extend(file.services_by_name.values())
    return services


class RouteTable:
    """The routes, matched by HTTP method and path."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = list(routes)

    @classmethod
    def from_contracts(cls) -> RouteTable:
        """Every annotated RPC of the installed contracts."""
        return cls(routes_of(installed_services()))

    def match(self, http_method: str, path: str) -> tuple[Route, dict[str, str]] | list[str]:
        """The route and its path variables; or, when nothing matches, the HTTP methods the
        path allows (empty: no route has this path at all)."""
        allowed: list[str] = []
        for route in self.routes:
            variables = route.match(path)
            if variables is None:
                continue
            if route.http_method == http_method:
                return route, variables
            allowed.append(route.http_method)
        return sorted(set(allowed))
