"""HTTP/JSON to gRPC and back, as grpc-gateway and Envoy's transcoder do.

The request message is filled from, in this order: the JSON body (``body: "*"``: the whole
message; ``body: "field"``: that field), the query string (every field not bound by the path or
the body; ``a.b=1`` for nested fields, a repeated field by repeating the parameter), then the
path variables, which win. JSON is protojson: lowerCamelCase names (the proto names are accepted
too), enums by name, int64 as strings, the well-known types in their JSON forms. The response is
the message in protojson.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf import descriptor, json_format, message, message_factory

from gateway.routing import Route

_BOOL = {"true": True, "false": False, "1": True, "0": False}


class BadRequest(ValueError):
    """The HTTP request cannot be a request of the route's RPC; ``field`` names what is wrong
    (empty when it is the body as a whole)."""

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}" if field else description)
        self.field = field
        self.description = description


def message_class(desc: descriptor.Descriptor) -> type[message.Message]:
    """The generated class of a message descriptor."""
    return message_factory.GetMessageClass(desc)


def _field(desc: descriptor.Descriptor, name: str) -> descriptor.FieldDescriptor | None:
    by_name = desc.fields_by_name.get(name)
    if by_name is not None:
        return by_name
    return next((f for f in desc.fields if f.json_name == name), None)


def _scalar(fd: descriptor.FieldDescriptor, raw: str) -> Any:
    """A query or path value as protojson would spell it for ``fd``."""
    if fd.type == fd.TYPE_BOOL:
        if raw.lower() not in _BOOL:
            raise BadRequest(fd.json_name, "must be true or false")
        return _BOOL[raw.lower()]
    return raw  # protojson parses numbers, enums and well-known types from strings


def _put(
    target: dict[str, Any], desc: descriptor.Descriptor, path: str, values: Sequence[str]
) -> None:
    """Set ``path`` (``a.b.c``) in the JSON-shaped ``target`` from its string ``values``."""
    head, _, rest = path.partition(".")
    fd = _field(desc, head)
    if fd is None:
        raise BadRequest(path, f"is not a field of {desc.full_name}")
    key = fd.json_name
    if rest:
        if fd.message_type is None or fd.is_repeated:
            raise BadRequest(path, f"{head} has no fields to set")
        child = target.setdefault(key, {})
        if not isinstance(child, dict):
            raise BadRequest(path, "is set twice")
        _put(child, fd.message_type, rest, values)
        return
    if fd.message_type is not None and not fd.message_type.full_name.startswith("google.protobuf"):
        raise BadRequest(path, "is a message: set its fields (name.field=value)")
    if fd.name != key:
        target.pop(fd.name, None)  # one spelling only: protojson refuses a field set twice
    if fd.is_repeated:
        target[key] = [_scalar(fd, v) for v in values]
    else:
        if len(values) > 1:
            raise BadRequest(path, "is given more than once")
        target[key] = _scalar(fd, values[0])


def _from_body(route: Route, desc: descriptor.Descriptor, body: bytes) -> dict[str, Any]:
    """The JSON-shaped request as far as the body sets it."""
    if not route.body:
        if body.strip():
            raise BadRequest("", f"{route.name} takes no body")
        return {}
    try:
        parsed = json.loads(body) if body.strip() else {}
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("", f"the body is not JSON: {exc}") from None
    if route.body != "*":
        fd = _field(desc, route.body)
        assert fd is not None  # checked when the route was built
        return {fd.json_name: parsed}
    if not isinstance(parsed, dict):
        raise BadRequest("", "the body must be a JSON object")
    return parsed


def build_request(
    route: Route,
    path_values: Mapping[str, str],
    query: Mapping[str, Sequence[str]],
    body: bytes,
    *,
    subject: str = "",
) -> message.Message:
    """The RPC's request message for one HTTP request; BadRequest naming the field otherwise.
    ``subject`` (the verified caller) overrides the route's ``subject_field``."""
    desc = route.method.input_type
    shaped = _from_body(route, desc, body)
    bound: set[str] = set()  # top-level fields the path or the body set
    for name in path_values:
        fd = _field(desc, name.split(".")[0])
        if fd is not None:
            bound.add(fd.name)
    if route.body == "*":
        bound |= {fd.name for key in shaped if (fd := _field(desc, key)) is not None}
    elif route.body:
        bound.add(route.body)
    for name, values in query.items():
        fd = _field(desc, name.split(".")[0])
        if fd is not None and fd.name in bound:
            raise BadRequest(name, "is set by the path or the body; it cannot be a parameter too")
        _put(shaped, desc, name, values)
    for name, value in path_values.items():
        _put(shaped, desc, name, [value])
    if route.subject_field:
        fd = _field(desc, route.subject_field)
        assert fd is not None  # checked when the route was built
        shaped.pop(fd.name, None)
        shaped[fd.json_name] = subject
    request = message_class(desc)()
    try:
        json_format.ParseDict(shaped, request)
    except json_format.ParseError as exc:
        raise BadRequest("", str(exc)) from None
    return request


def to_json(reply: message.Message) -> dict[str, Any]:
    """The reply in protojson (lowerCamelCase, defaults omitted)."""
    return json_format.MessageToDict(reply)
