"""The gateway's OpenAPI 3.1 document and its ``/docs`` page, generated from the route table.

Contract
--------
``openapi_document(routes, server_url=..., issuer=...)`` describes exactly what the edge serves:
one operation per route (operationId = the RPC's name, tag = its service), the path variables,
the query parameters the transcoder accepts, the JSON body, the reply and the RFC 9457 problems.
Schemas follow the protojson mapping the transcoder uses (gateway.transcoding):

- field names are the ``json_name`` (lowerCamelCase unless the proto says otherwise);
- 32-bit integers are JSON integers; 64-bit ones are strings (``format: int64``), as protojson
  writes them (a double cannot hold every int64);
- enums are strings, one of their value names; bytes are base64 strings;
- ``repeated`` is an array, ``map<k, v>`` an object whose values are ``v``;
- well-known types take their JSON forms (Timestamp: RFC 3339 string, Duration: ``"1.5s"``,
  Struct: object, Value: any JSON, wrappers: their scalar);
- a ``oneof`` lists all its fields; the schema's description says at most one may be set
  (JSON Schema could say so with ``oneOf``, but client generators turn that into unions of
  whole messages, which reads worse than the plain fields);
- no field is ``required``: proto3 JSON omits fields at their default value.

The field a route fills from the caller's token (``mesh.api.v1.access`` ``subject_field``) is not
a client input: it is left out of that route's body schema and query parameters, and the
operation's description says so. Path variables are left out of a ``body: "*"`` schema too
(the path wins over the body in the transcoder).

Routes of the gateway's own (an aggregation such as ``GET /v1/orders/{order_id}/details``) are
not in the route table: pass them as ``GatewayOperation``s, their replies described by the
messages they are made of.

The generated descriptors (gen/) carry no source info, so no proto comment reaches the
document: summaries and descriptions are built from the contract's names and options instead.

``docs_page(document)`` renders any such document as one self-contained HTML page (no script,
no stylesheet or font from elsewhere: the machine may be offline).

Both functions are pure: build the document once (it depends only on the routes) and serve it.
"""

from __future__ import annotations

import dataclasses
import html
import importlib.metadata
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from google.protobuf import descriptor

from gateway.problems import PROBLEM_TYPE
from gateway.routing import Route, RouteTable

TITLE = "meshkit shop API"
_REF = "#/components/schemas/"
_FD = descriptor.FieldDescriptor

_INT32 = {_FD.TYPE_INT32, _FD.TYPE_SINT32, _FD.TYPE_SFIXED32}
_UINT32 = {_FD.TYPE_UINT32, _FD.TYPE_FIXED32}
_INT64 = {_FD.TYPE_INT64, _FD.TYPE_SINT64, _FD.TYPE_SFIXED64}
_UINT64 = {_FD.TYPE_UINT64, _FD.TYPE_FIXED64}

_INT64_SCHEMA: dict[str, Any] = {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"}
_UINT64_SCHEMA: dict[str, Any] = {"type": "string", "format": "uint64", "pattern": "^[0-9]+$"}
_BYTES_SCHEMA: dict[str, Any] = {"type": "string", "contentEncoding": "base64"}

# The well-known types in their protojson forms (google/protobuf/*.proto, "JSON Mapping").
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {
        "type": "string",
        "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$",
        "description": "a duration in seconds with an s suffix, e.g. 1.5s",
    },
    "google.protobuf.FieldMask": {
        "type": "string",
        "description": "comma-separated lowerCamelCase field paths",
    },
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.NullValue": {"type": "null"},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
        "additionalProperties": True,
    },
    "google.protobuf.DoubleValue": {"type": "number", "format": "double"},
    "google.protobuf.FloatValue": {"type": "number", "format": "float"},
    "google.protobuf.Int64Value": _INT64_SCHEMA,
    "google.protobuf.UInt64Value": _UINT64_SCHEMA,
    "google.protobuf.Int32Value": {"type": "integer", "format": "int32"},
    "google.protobuf.UInt32Value": {"type": "integer", "minimum": 0, "maximum": 4294967295},
    "google.protobuf.BoolValue": {"type": "boolean"},
    "google.protobuf.StringValue": {"type": "string"},
    "google.protobuf.BytesValue": _BYTES_SCHEMA,
}
# Well-known types a query parameter can carry: the transcoder hands the raw string to protojson,
# which parses these from a string (a Struct or an Any cannot be one parameter).
_QUERY_WELL_KNOWN = {
    name
    for name, schema in _WELL_KNOWN.items()
    if schema.get("type") in ("string", "number", "integer", "boolean")
}
_QUERY_DEPTH = 4  # nested query parameters (a.b.c): deep enough, and a recursive message ends

# (status, components.responses name, description, extra headers)
_ERRORS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    (
        "400",
        "BadRequest",
        "The request is invalid (INVALID_ARGUMENT, FAILED_PRECONDITION,"
        " OUT_OF_RANGE); details name the field.",
        (),
    ),
    (
        "401",
        "Unauthorized",
        "No access token, or one that is invalid or expired.",
        ("WWW-Authenticate",),
    ),
    (
        "403",
        "Forbidden",
        "The caller lacks a role the route needs, or may not see this resource.",
        (),
    ),
    ("404", "NotFound", "No such resource (or no such route).", ()),
    (
        "429",
        "TooManyRequests",
        "A rate limit is reached: retry after Retry-After seconds.",
        ("RateLimit-Policy", "RateLimit", "Retry-After"),
    ),
    (
        "503",
        "ServiceUnavailable",
        "A backend (or the token keys) is unavailable: retry later.",
        ("Retry-After",),
    ),
    ("504", "GatewayTimeout", "The backend did not answer before the gateway's deadline.", ()),
    ("default", "Error", "Any other error (405, 409, 413, 415, 5xx), as a problem.", ()),
)
_PUBLIC_ERRORS = {"401", "403"}  # a public route has no token to refuse

_GRPC_CODES = [
    "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
    "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
]  # fmt: skip

_PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "An RFC 9457 problem. `code` is the gRPC status name when a backend or the"
    " gateway answered with one; `details` are the status's google.rpc details in protojson"
    " (e.g. google.rpc.BadRequest with fieldViolations naming the bad field).",
    "properties": {
        "type": {"type": "string", "format": "uri-reference", "default": "about:blank"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 100, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {"type": "string", "description": "the request's path"},
        "code": {"type": "string", "enum": _GRPC_CODES},
        "requestId": {"type": "string", "description": "as the X-Request-Id header"},
        "traceId": {"type": "string", "description": "the W3C trace id, when traced"},
        "details": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"@type": {"type": "string"}},
                "additionalProperties": True,
            },
        },
    },
    "required": ["type", "title", "status", "detail", "instance", "requestId"],
}

_HEADERS: dict[str, dict[str, Any]] = {
    "RateLimit-Policy": {
        "description": "The limits that apply (draft-ietf-httpapi-ratelimit-headers),"
        ' e.g. "default";q=600;w=60.',
        "schema": {"type": "string"},
    },
    "RateLimit": {
        "description": 'What is left of the closest limit, e.g. "default";r=42;t=1.',
        "schema": {"type": "string"},
    },
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer", "minimum": 0},
    },
    "WWW-Authenticate": {
        "description": "The Bearer challenge (RFC 6750), with error=invalid_token when a token"
        " was refused.",
        "schema": {"type": "string"},
    },
    "X-Request-Id": {
        "description": "The request's id: the client's own (a sane token) or a new one.",
        "schema": {"type": "string"},
    },
}


ReplyPart = descriptor.Descriptor | descriptor.FieldDescriptor | Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class GatewayOperation:
    """A route of the gateway's own (e.g. an aggregation over several RPCs), for the document.

    Its reply is a JSON object; ``reply`` maps each property to a message (its schema), a field
    (its JSON value: a repeated field is an array) or a literal JSON Schema. Path variables are
    strings. It needs a bearer token unless ``public``; its errors are the routes' problems.
    """

    http_method: str  # GET
    template: str  # /v1/orders/{order_id}/details
    operation_id: str  # GetOrderDetails
    tag: str  # the group it is listed under, e.g. OrdersService
    description: str
    reply: Mapping[str, ReplyPart] = dataclasses.field(default_factory=dict)
    public: bool = False


def openapi_document(
    routes: RouteTable,
    *,
    server_url: str,
    issuer: str,
    own: Iterable[GatewayOperation] = (),
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes`` (see the module's docstring for the mapping), and
    of the gateway's ``own`` routes.

    ``server_url`` is where clients send requests (e.g. ``http://127.0.0.1:8080``, or ``/`` for
    "where this document came from"); ``issuer`` is identity's base URL, for the OAuth 2 scheme.
    A new dict every call; JSON-serializable as it is.
    """
    issuer = issuer.rstrip("/")
    own = list(own)
    schemas = _Schemas(_reachable(routes.routes, own))
    paths: dict[str, dict[str, Any]] = {}
    tags: dict[str, str] = {}
    operation_ids: set[str] = set()
    service_tags = _service_tags(routes.routes)
    for route in sorted(routes.routes, key=lambda r: (_path_of(r.template), r.http_method)):
        tag = service_tags[route.service]
        tags.setdefault(tag, f"gRPC service `{route.service}`.")
        operation_id = _operation_id(route, tag, operation_ids)
        paths.setdefault(_path_of(route.template), {})[route.http_method.lower()] = _operation(
            route, operation_id, tag, schemas
        )
    for extra in own:
        tags.setdefault(extra.tag, "Routes of the gateway's own.")
        operation_id = _unique(extra.operation_id, operation_ids)
        paths.setdefault(_path_of(extra.template), {})[extra.http_method.lower()] = _own_operation(
            extra, operation_id, schemas
        )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": TITLE,
            "version": _version(),
            "description": _INFO_DESCRIPTION,
        },
        "servers": [{"url": server_url}],
        "tags": [{"name": name, "description": text} for name, text in sorted(tags.items())],
        "paths": paths,
        "components": {
            "schemas": {**dict(sorted(schemas.components.items())), "Problem": _PROBLEM_SCHEMA},
            "responses": {
                name: _error_response(text, headers) for _, name, text, headers in _ERRORS
            },
            "headers": _HEADERS,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": f"An access token from identity ({issuer}), sent as"
                    " `Authorization: Bearer <token>`.",
                },
                "oauth2": {
                    "type": "oauth2",
                    "description": "How to get that token: the authorization code flow with"
                    " PKCE (S256) for browsers and apps; devices use the device authorization"
                    f" grant (RFC 8628) at {issuer}/device_authorization, which OpenAPI cannot"
                    " describe. Discovery: "
                    f"{issuer}/.well-known/oauth-authorization-server.",
                    "flows": {
                        "authorizationCode": {
                            "authorizationUrl": f"{issuer}/authorize",
                            "tokenUrl": f"{issuer}/token",
                            "refreshUrl": f"{issuer}/token",
                            "scopes": {},
                        }
                    },
                },
            },
        },
        "security": [{"bearerAuth": []}],
    }


_INFO_DESCRIPTION = (
    "HTTP/JSON in front of the shop's gRPC services, generated from the same protos.\n\n"
    "Bodies are protojson: lowerCamelCase field names, enums by name, 64-bit integers as"
    " strings, timestamps as RFC 3339 strings; fields at their default value are omitted from"
    " replies, and an unknown field in a request is a 400.\n\n"
    "Every route needs a bearer access token from identity unless it says it is public."
    " Errors are RFC 9457 problems (application/problem+json). Rate-limited answers carry the"
    " RateLimit-Policy and RateLimit headers; a refusal is a 429 with Retry-After."
)


def _version() -> str:
    try:
        return importlib.metadata.version("gateway")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "0"


def _path_of(template: str) -> str:
    """The OpenAPI path of a template: ``{name=segments/*}`` becomes ``{name}``."""
    return re.sub(r"\{([^}=]+)=[^}]*\}", lambda m: "{" + m.group(1).strip() + "}", template)


def _service_tags(routes: Iterable[Route]) -> dict[str, str]:
    """Service full name -> tag: the short name, or the full one when two packages share it."""
    services = {r.service for r in routes}
    short = {s: s.rsplit(".", 1)[-1] for s in services}
    counts: dict[str, int] = {}
    for name in short.values():
        counts[name] = counts.get(name, 0) + 1
    return {s: short[s] if counts[short[s]] == 1 else s for s in services}


def _operation_id(route: Route, tag: str, taken: set[str]) -> str:
    """The RPC's name; qualified by its service, then numbered, when taken already (two services
    with one RPC name, or an RPC with additional bindings)."""
    qualified = f"{tag.replace('.', '_')}_{route.method.name}"
    if route.method.name in taken and qualified not in taken:
        taken.add(qualified)
        return qualified
    return _unique(route.method.name, taken)


def _unique(wanted: str, taken: set[str]) -> str:
    """``wanted``, or ``wanted2``, ``wanted3``... whichever is free; marked as taken."""
    found, number = wanted, 2
    while found in taken:
        found, number = f"{wanted}{number}", number + 1
    taken.add(found)
    return found


def _top(variable: str) -> str:
    return variable.split(".", maxsplit=1)[0]


def _operation(route: Route, operation_id: str, tag: str, schemas: _Schemas) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "tags": [tag],
        "summary": f"{route.method.name} ({route.service})",
        "description": _description(route),
        "x-grpc-method": route.rpc_path,
    }
    parameters = _parameters(route, schemas)
    if parameters:
        operation["parameters"] = parameters
    if route.body:
        operation["requestBody"] = {
            "required": False,  # an empty body is the empty message, as protojson reads it
            "content": {"application/json": {"schema": _body_schema(route, operation_id, schemas)}},
        }
    operation["responses"] = _responses(
        schemas.ref(route.method.output_type),
        f"The `{route.method.output_type.full_name}`.",
        public=route.public,
    )
    if route.public:
        operation["security"] = []
    elif route.roles:
        operation["x-roles"] = list(route.roles)
    return operation


def _description(route: Route) -> str:
    request = route.method.input_type
    lines = [f"Calls `{route.rpc_path}` (gRPC) with a `{request.full_name}`."]
    if route.public:
        lines.append("Public: no access token needed.")
    elif route.roles:
        lines.append(f"Needs an access token with the role {' or '.join(route.roles)}.")
    else:
        lines.append("Needs an access token.")
    subject = request.fields_by_name.get(route.subject_field) if route.subject_field else None
    if subject is not None:
        lines.append(
            f"`{subject.json_name}` is not an input: the gateway sets it to the caller's"
            " subject (the token's `sub`), whatever the request says."
        )
    return "\n\n".join(lines)


def _parameters(route: Route, schemas: _Schemas) -> list[dict[str, Any]]:
    """Path variables, then a query parameter for every field the path, the body and the token
    leave unset (none with ``body: "*"``: the body holds every other field)."""
    request = route.method.input_type
    parameters = [_path_parameter(route, v, schemas) for v in route.variables]
    if route.body == "*":
        return parameters
    bound = {_top(v) for v in route.variables} | {route.subject_field, route.body}
    for field in request.fields:
        if field.name not in bound:
            parameters.extend(_query_parameters(field, "", (request,), schemas))
    return parameters


def _responses(reply: dict[str, Any], description: str, *, public: bool) -> dict[str, Any]:
    ok_headers = {
        name: {"$ref": f"#/components/headers/{name}"}
        for name in ("RateLimit-Policy", "RateLimit", "X-Request-Id")
    }
    responses: dict[str, Any] = {
        "200": {
            "description": description,
            "headers": ok_headers,
            "content": {"application/json": {"schema": reply}},
        }
    }
    for status, name, _, _ in _ERRORS:
        if not (public and status in _PUBLIC_ERRORS):
            responses[status] = {"$ref": f"#/components/responses/{name}"}
    return responses


def _own_operation(extra: GatewayOperation, operation_id: str, schemas: _Schemas) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for name, part in extra.reply.items():
        if isinstance(part, descriptor.Descriptor):
            properties[name] = schemas.ref(part)
        elif isinstance(part, descriptor.FieldDescriptor):
            properties[name] = schemas.field(part)
        else:
            properties[name] = dict(part)
    reply = schemas.add(
        f"{operation_id}Response",
        {
            "type": "object",
            "description": f"The reply of {operation_id}.",
            "properties": properties,
        },
    )
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "tags": [extra.tag],
        "summary": f"{operation_id} (the gateway's own route)",
        "description": extra.description,
    }
    variables = re.findall(r"\{([^}=]+)(?:=[^}]*)?\}", extra.template)
    if variables:
        operation["parameters"] = [
            {"name": v.strip(), "in": "path", "required": True, "schema": {"type": "string"}}
            for v in variables
        ]
    operation["responses"] = _responses(reply, f"The reply of {operation_id}.", public=extra.public)
    if extra.public:
        operation["security"] = []
    return operation


def _path_parameter(route: Route, variable: str, schemas: _Schemas) -> dict[str, Any]:
    field = _field_at(route.method.input_type, variable)
    schema = schemas.field(field, repeated=False) if field is not None else {"type": "string"}
    parameter: dict[str, Any] = {
        "name": variable,
        "in": "path",
        "required": True,
        "schema": schema,
    }
    pattern = re.search(r"\{" + re.escape(variable) + r"\s*=([^}]*)\}", route.template)
    segments = pattern.group(1).strip() if pattern is not None else ""
    if "/" in segments or "**" in segments:
        parameter["description"] = (
            f"Matches the path segments {segments}; its slashes are part of the value."
        )
    return parameter


def _field_at(message: descriptor.Descriptor, path: str) -> descriptor.FieldDescriptor | None:
    """The field at ``a.b.c`` below ``message``, or None."""
    current: descriptor.Descriptor | None = message
    field = None
    for name in path.split("."):
        if current is None:
            return None
        field = current.fields_by_name.get(name)
        if field is None:
            return None
        current = field.message_type
    return field


def _query_parameters(
    field: descriptor.FieldDescriptor,
    prefix: str,
    seen: tuple[descriptor.Descriptor, ...],
    schemas: _Schemas,
) -> Iterator[dict[str, Any]]:
    """The query parameters of ``field`` as the transcoder reads them: scalars, enums and the
    string-shaped well-known types, a repeated one by repeating the parameter, and the fields of
    a singular message as ``name.field``. Maps, repeated messages and Struct-like types cannot be
    query parameters and get none."""
    name = f"{prefix}{field.json_name}"
    message = field.message_type
    if message is not None and message.GetOptions().map_entry:
        return
    if message is None or message.full_name in _QUERY_WELL_KNOWN:
        yield {"name": name, "in": "query", "required": False, "schema": schemas.field(field)}
        return
    if field.is_repeated or message.full_name.startswith("google.protobuf."):
        return
    if message in seen or len(seen) >= _QUERY_DEPTH:
        return
    for child in message.fields:
        yield from _query_parameters(child, f"{name}.", (*seen, message), schemas)


def _body_schema(route: Route, operation_id: str, schemas: _Schemas) -> dict[str, Any]:
    request = route.method.input_type
    if route.body != "*":
        field = request.fields_by_name[route.body]
        return schemas.field(field)
    dropped = {_top(v): "from the path" for v in route.variables}
    if route.subject_field:
        dropped[route.subject_field] = "the caller's subject, from the token"
    if not dropped:
        return schemas.ref(request)
    return schemas.derived(request, f"{operation_id}Body", dropped)


def _error_response(description: str, headers: Iterable[str]) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {PROBLEM_TYPE: {"schema": {"$ref": f"{_REF}Problem"}}},
    }
    names = ["X-Request-Id", *headers]
    response["headers"] = {n: {"$ref": f"#/components/headers/{n}"} for n in names}
    return response


def _reachable(
    routes: Iterable[Route], own: Iterable[GatewayOperation]
) -> set[descriptor.Descriptor | descriptor.EnumDescriptor]:
    """Every message and enum reachable from the routes' requests and replies."""
    found: set[descriptor.Descriptor | descriptor.EnumDescriptor] = set()
    pending = [d for r in routes for d in (r.method.input_type, r.method.output_type)]
    for extra in own:
        for part in extra.reply.values():
            if isinstance(part, descriptor.Descriptor):
                pending.append(part)
            elif isinstance(part, descriptor.FieldDescriptor) and part.message_type is not None:
                pending.append(part.message_type)
            elif isinstance(part, descriptor.FieldDescriptor) and part.enum_type is not None:
                found.add(part.enum_type)
    while pending:
        message = pending.pop()
        if message in found or message.full_name in _WELL_KNOWN:
            continue
        found.add(message)
        for field in message.fields:
            if field.enum_type is not None:
                found.add(field.enum_type)
            if field.message_type is not None:
                pending.append(field.message_type)
    return found


class _Schemas:
    """components.schemas, filled as references are made. Names are the message's name within
    its package (``Order``, ``Outer.Inner``) unless two reachable types share it; then the full
    name (``shop.orders.v1.Order``). A new name never shadows another, so names are stable for a
    given set of contracts."""

    def __init__(self, reachable: set[descriptor.Descriptor | descriptor.EnumDescriptor]) -> None:
        local = {d: _local_name(d) for d in reachable}
        counts: dict[str, int] = {}
        for name in local.values():
            counts[name] = counts.get(name, 0) + 1
        self._names = {d: n if counts[n] == 1 else d.full_name for d, n in local.items()}
        self.components: dict[str, dict[str, Any]] = {}

    def _name(self, desc: descriptor.Descriptor | descriptor.EnumDescriptor) -> str:
        name = self._names.get(desc)
        if name is None:  # not seen by _reachable: only possible for a derived body's parts
            name = self._names[desc] = self._free(desc.full_name)
        return name

    def _free(self, wanted: str) -> str:
        taken = set(self._names.values()) | set(self.components) | {"Problem"}
        name, number = wanted, 2
        while name in taken:
            name, number = f"{wanted}{number}", number + 1
        return name

    def ref(self, desc: descriptor.Descriptor | descriptor.EnumDescriptor) -> dict[str, Any]:
        """``{"$ref": ...}`` to the type's component (a well-known type: its inline schema)."""
        if desc.full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[desc.full_name])
        name = self._name(desc)
        if name not in self.components:
            self.components[name] = {}  # reserve first: a recursive message refers to itself
            if isinstance(desc, descriptor.EnumDescriptor):
                self.components[name] = _enum_schema(desc)
            else:
                self.components[name] = self._message(desc, {})
        return {"$ref": f"{_REF}{name}"}

    def add(self, wanted: str, schema: dict[str, Any]) -> dict[str, Any]:
        """A component of its own (under ``wanted``, or a free variant of it); its ``$ref``."""
        name = self._free(wanted)
        self.components[name] = schema
        return {"$ref": f"{_REF}{name}"}

    def derived(
        self, desc: descriptor.Descriptor, wanted: str, dropped: Mapping[str, str]
    ) -> dict[str, Any]:
        """A component of ``desc`` without the fields named in ``dropped`` (a route's body;
        field name -> where the gateway takes it from instead)."""
        return self.add(wanted, self._message(desc, dropped))

    def _message(self, desc: descriptor.Descriptor, dropped: Mapping[str, str]) -> dict[str, Any]:
        properties: dict[str, Any] = {}
        notes = [f"protobuf message `{desc.full_name}`."]
        for field in desc.fields:
            if field.name in dropped:
                continue
            schema = self.field(field)
            oneof = field.containing_oneof
            if oneof is not None and not _synthetic(oneof):
                others = [f.json_name for f in oneof.fields if f.name not in dropped]
                schema = {
                    **schema,
                    "description": f"oneof `{oneof.name}`: at most one of {', '.join(others)}.",
                }
            properties[field.json_name] = schema
        for oneof in desc.oneofs:
            if not _synthetic(oneof):
                members = ", ".join(f.json_name for f in oneof.fields if f.name not in dropped)
                notes.append(f"At most one of {members} is set (oneof `{oneof.name}`).")
        if dropped:
            notes.append(
                "Not in this body (the gateway sets them): "
                + ", ".join(
                    f"{desc.fields_by_name[name].json_name} ({source})"
                    for name, source in sorted(dropped.items())
                )
                + "."
            )
        return {"type": "object", "description": " ".join(notes), "properties": properties}

    def field(self, field: descriptor.FieldDescriptor, *, repeated: bool = True) -> dict[str, Any]:
        """The schema of a field's JSON value (``repeated=False``: of one element)."""
        message = field.message_type
        if message is not None and message.GetOptions().map_entry:
            value = message.fields_by_name["value"]
            return {"type": "object", "additionalProperties": self.field(value)}
        if message is not None:
            single = self.ref(message)
        elif field.enum_type is not None:
            single = self.ref(field.enum_type)
        else:
            single = _scalar(field)
        if repeated and field.is_repeated:
            return {"type": "array", "items": single}
        return single


def _local_name(desc: descriptor.Descriptor | descriptor.EnumDescriptor) -> str:
    package = desc.file.package
    return desc.full_name[len(package) + 1 :] if package else desc.full_name


def _synthetic(oneof: descriptor.OneofDescriptor) -> bool:
    """proto3 ``optional`` wraps its field in a oneof of one, named ``_field``: not a choice."""
    fields = list(oneof.fields)
    return len(fields) == 1 and oneof.name == f"_{fields[0].name}"


def _enum_schema(desc: descriptor.EnumDescriptor) -> dict[str, Any]:
    return {
        "type": "string",
        "enum": [v.name for v in desc.values],
        "description": f"protobuf enum `{desc.full_name}`, by value name.",
    }


def _scalar(field: descriptor.FieldDescriptor) -> dict[str, Any]:
    kind = field.type
    if kind in _INT32:
        return {"type": "integer", "format": "int32"}
    if kind in _UINT32:
        return {"type": "integer", "minimum": 0, "maximum": 4294967295}
    if kind in _INT64:
        return dict(_INT64_SCHEMA)
    if kind in _UINT64:
        return dict(_UINT64_SCHEMA)
    if kind == _FD.TYPE_DOUBLE:
        return {"type": "number", "format": "double"}
    if kind == _FD.TYPE_FLOAT:
        return {"type": "number", "format": "float"}
    if kind == _FD.TYPE_BOOL:
        return {"type": "boolean"}
    if kind == _FD.TYPE_BYTES:
        return dict(_BYTES_SCHEMA)
    return {"type": "string"}


# --- the /docs page --------------------------------------------------------------------------

_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:70em;padding:1em 2em;color:#222}
h1,h2,h3{line-height:1.2}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
section.op{border:1px solid #ddd;border-radius:6px;padding:.2em 1em 1em;margin:1em 0}
.method{display:inline-block;min-width:4.5em;font-weight:bold;font-family:monospace}
.get{color:#05a}.post{color:#070}.put{color:#a60}.delete{color:#b00}.patch{color:#708}
code,.path{font-family:ui-monospace,monospace}table{border-collapse:collapse;margin:.4em 0}
td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f5f5f5}.auth{font-style:italic}p.desc{white-space:pre-line}
nav ul{columns:2}
"""


def docs_page(document: Mapping[str, Any]) -> str:
    """One self-contained HTML page describing ``document`` (an OpenAPI 3.1 document, as
    ``openapi_document`` makes): every operation with its auth, parameters, body and
    responses, then every schema, linked by anchors. Uses no asset from elsewhere."""
    return _Docs(document).render()


class _Docs:
    """Renders one document; resolves its local ``$ref``s."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self.doc = document
        self.components: Mapping[str, Any] = document.get("components", {})

    def resolve(self, item: Mapping[str, Any]) -> Mapping[str, Any]:
        seen = 0
        while "$ref" in item and str(item["$ref"]).startswith("#/") and seen < 16:
            node: Any = self.doc
            for part in str(item["$ref"])[2:].split("/"):
                node = node.get(part, {}) if isinstance(node, Mapping) else {}
            item, seen = node, seen + 1
        return item

    def render(self) -> str:
        info = self.doc.get("info", {})
        title = _e(info.get("title", "API"))
        out = [
            "<!doctype html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{title}</title><style>{_STYLE}</style></head><body>",
            f"<h1>{title} <small>{_e(info.get('version', ''))}</small></h1>",
            f'<p class="desc">{_e(info.get("description", ""))}</p>',
            '<p>The machine-readable document: <a href="openapi.json">openapi.json</a>'
            f" (OpenAPI {_e(self.doc.get('openapi', ''))}).</p>",
        ]
        servers = [s.get("url", "") for s in self.doc.get("servers", [])]
        if servers:
            out.append("<p>Server: " + ", ".join(f"<code>{_e(s)}</code>" for s in servers) + "</p>")
        operations = list(self._operations())
        out.append('<nav><h2 id="operations">Operations</h2><ul>')
        for path, method, op in operations:
            out.append(
                f'<li><a href="#op-{_e(op.get("operationId", ""))}">'
                f'<span class="method {method}">{method.upper()}</span>'
                f' <span class="path">{_e(path)}</span></a> {_e(op.get("operationId", ""))}</li>'
            )
        out.append("</ul></nav>")
        out.extend(self._security())
        tags = {t.get("name"): t.get("description", "") for t in self.doc.get("tags", [])}
        for tag in sorted({(op.get("tags") or [""])[0] for _, _, op in operations}):
            out.append(f'<h2 id="tag-{_e(tag)}">{_e(tag or "Other")}</h2>')
            if tags.get(tag):
                out.append(f'<p class="desc">{_e(tags[tag])}</p>')
            for path, method, op in operations:
                if (op.get("tags") or [""])[0] == tag:
                    out.extend(self._operation(path, method, op))
        out.extend(self._schemas())
        out.append("</body></html>")
        return "\n".join(out) + "\n"

    def _operations(self) -> Iterator[tuple[str, str, Mapping[str, Any]]]:
        for path, item in self.doc.get("paths", {}).items():
            for method in ("get", "put", "post", "delete", "patch", "head", "options", "trace"):
                if method in item:
                    yield path, method, item[method]

    def _security(self) -> list[str]:
        schemes = self.components.get("securitySchemes", {})
        if not schemes:
            return []
        out = ['<h2 id="auth">Authentication</h2>', "<table><tr><th>scheme</th><th>how</th></tr>"]
        for name, scheme in schemes.items():
            how = [_e(scheme.get("type", ""))]
            if scheme.get("scheme"):
                how.append(f"{_e(scheme['scheme'])} ({_e(scheme.get('bearerFormat', ''))})")
            for flow, spec in scheme.get("flows", {}).items():
                urls = ", ".join(
                    f"{key}: <code>{_e(spec[key])}</code>"
                    for key in ("authorizationUrl", "tokenUrl", "refreshUrl")
                    if key in spec
                )
                how.append(f"{_e(flow)}: {urls}")
            how.append(f'<p class="desc">{_e(scheme.get("description", ""))}</p>')
            out.append(f"<tr><td><code>{_e(name)}</code></td><td>{'<br>'.join(how)}</td></tr>")
        out.append("</table>")
        default = self.doc.get("security", [])
        out.append(f"<p>Unless an operation says otherwise: {self._auth_text(default)}.</p>")
        return out

    @staticmethod
    def _auth_text(requirements: Iterable[Mapping[str, Any]]) -> str:
        alternatives = [" and ".join(sorted(r)) for r in requirements]
        alternatives = [a if a else "none" for a in alternatives]
        if not alternatives:
            return "public: no credentials needed"
        return "needs " + " or ".join(_e(a) for a in alternatives)

    def _operation(self, path: str, method: str, op: Mapping[str, Any]) -> list[str]:
        op_id = _e(op.get("operationId", ""))
        out = [
            f'<section class="op" id="op-{op_id}">',
            f'<h3><span class="method {method}">{method.upper()}</span>'
            f' <span class="path">{_e(path)}</span></h3>',
            f"<p><code>{op_id}</code>: {_e(op.get('summary', ''))}</p>",
        ]
        if op.get("description"):
            out.append(f'<p class="desc">{_e(op["description"])}</p>')
        security = op.get("security", self.doc.get("security", []))
        out.append(f'<p class="auth">Authentication: {self._auth_text(security)}.</p>')
        parameters = [self.resolve(p) for p in op.get("parameters", [])]
        if parameters:
            out.append("<h4>Parameters</h4><table>")
            out.append("<tr><th>name</th><th>in</th><th>required</th><th>type</th></tr>")
            for p in parameters:
                out.append(
                    f"<tr><td><code>{_e(p.get('name', ''))}</code></td><td>{_e(p.get('in', ''))}"
                    f"</td><td>{'yes' if p.get('required') else 'no'}</td>"
                    f"<td>{self._type(p.get('schema', {}))}"
                    f"{_desc(p.get('description', ''))}</td></tr>"
                )
            out.append("</table>")
        body = op.get("requestBody")
        if body:
            body = self.resolve(body)
            out.append("<h4>Request body</h4><table><tr><th>content type</th><th>type</th></tr>")
            for kind, media in body.get("content", {}).items():
                out.append(
                    f"<tr><td><code>{_e(kind)}</code></td>"
                    f"<td>{self._type(media.get('schema', {}))}</td></tr>"
                )
            out.append("</table>")
        out.append("<h4>Responses</h4><table>")
        out.append("<tr><th>status</th><th>description</th><th>body</th><th>headers</th></tr>")
        for status, unresolved in op.get("responses", {}).items():
            response = self.resolve(unresolved)
            bodies = "<br>".join(
                f"<code>{_e(kind)}</code>: {self._type(media.get('schema', {}))}"
                for kind, media in response.get("content", {}).items()
            )
            headers = ", ".join(f"<code>{_e(h)}</code>" for h in response.get("headers", {}))
            out.append(
                f"<tr><td>{_e(status)}</td><td>{_e(response.get('description', ''))}</td>"
                f"<td>{bodies}</td><td>{headers}</td></tr>"
            )
        out.append("</table></section>")
        return out

    def _schemas(self) -> list[str]:
        schemas = self.components.get("schemas", {})
        if not schemas:
            return []
        out = ['<h2 id="schemas">Schemas</h2>']
        for name, schema in schemas.items():
            out.append(f'<section class="op" id="schema-{_e(name)}"><h3>{_e(name)}</h3>')
            if schema.get("description"):
                out.append(f'<p class="desc">{_e(schema["description"])}</p>')
            properties = schema.get("properties")
            if properties:
                out.append("<table><tr><th>field</th><th>type</th></tr>")
                required = set(schema.get("required", []))
                for field, sub in properties.items():
                    mark = " (required)" if field in required else ""
                    out.append(
                        f"<tr><td><code>{_e(field)}</code>{mark}</td>"
                        f"<td>{self._type(sub)}{_desc(sub.get('description', ''))}</td></tr>"
                    )
                out.append("</table>")
            elif schema.get("type") == "object":
                out.append("<p>An object with no fields.</p>")
            else:
                out.append(f"<p>{self._type(schema)}</p>")
            out.append("</section>")
        return out

    def _type(self, schema: Mapping[str, Any], depth: int = 0) -> str:
        """The schema as a short phrase, e.g. ``array of <a>OrderLine</a>``."""
        if depth > 8:
            return "…"
        ref = schema.get("$ref")
        if isinstance(ref, str):
            name = ref.rsplit("/", 1)[-1]
            return f'<a href="#schema-{_e(name)}">{_e(name)}</a>'
        kind = schema.get("type")
        if kind == "array":
            return f"array of {self._type(schema.get('items', {}), depth + 1)}"
        if kind == "object" and isinstance(schema.get("additionalProperties"), Mapping):
            values = self._type(schema["additionalProperties"], depth + 1)
            return f"object (map of string to {values})"
        if "enum" in schema:
            return "one of " + ", ".join(f"<code>{_e(v)}</code>" for v in schema["enum"])
        if not kind:
            return "any JSON value"
        text = _e(kind if isinstance(kind, str) else " or ".join(kind))
        details = [schema[k] for k in ("format", "contentEncoding") if k in schema]
        if "pattern" in schema:
            details.append(f"pattern {schema['pattern']}")
        if details:
            text += " (" + ", ".join(_e(d) for d in details) + ")"
        return text


def _e(value: Any) -> str:
    return html.escape(value if isinstance(value, str) else json.dumps(value))


def _desc(text: str) -> str:
    return f'<br><small class="desc">{_e(text)}</small>' if text else ""
