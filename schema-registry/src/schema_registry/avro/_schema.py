"""Parsing and validation of Avro schemas into `AvroSchema` values.

The parser is our own rather than fastavro's: fastavro accepts schemas the registry must reject
(for example a union default that matches a later branch) and does not keep the resolved graph
with field positions and aliases that the compatibility checker needs. Validation follows the
Avro specification, choosing Avro Java's behaviour (what Confluent Schema Registry runs) where
the specification is silent; every deviation from Java is noted where it is made.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from schema_registry import jsontext
from schema_registry.avro._model import (
    PRIMITIVE_TYPES,
    Array,
    Enum,
    Field,
    Fixed,
    JsonValue,
    Map,
    Named,
    NamedNode,
    Node,
    Primitive,
    Record,
    Union,
    canonical_form,
    compact_json,
    crc64_avro,
    to_full_json,
)
from schema_registry.errors import InvalidSchema


@dataclass(frozen=True, eq=False, slots=True)
class AvroSchema:
    """A parsed, validated Avro schema; build it with `parse_schema`.

    Equality and hashing use `canonical` (Parsing Canonical Form of the resolved schema), so two
    schemas that differ only in docs, defaults, aliases, logical types or extra properties are
    equal here. That is the Avro notion of "same schema for decoding"; registry identity (which
    must also see defaults and docs) needs the text or another normal form.
    """

    text: str
    canonical: str
    fingerprint: int
    """CRC-64-AVRO (Rabin) fingerprint of `canonical`, unsigned."""
    name: str | None
    _root: Node = field(repr=False)
    _named: Mapping[str, NamedNode] = field(repr=False)

    def to_json(self) -> JsonValue:
        """The schema as given, as fresh JSON data (dict, list or str)."""
        value: JsonValue = json.loads(self.text)
        return value

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AvroSchema):
            return NotImplemented
        return self.canonical == other.canonical

    def __hash__(self) -> int:
        return hash(self.canonical)


_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_FIELD_ORDERS: Final = frozenset({"ascending", "descending", "ignore"})
_MAX_FIXED_SIZE: Final = 2**31 - 1
_MAX_TEXT_IN_MESSAGE: Final = 120
# Parsing and checking recurse once per nesting level; this bound keeps both well inside
# Python's default recursion limit even when called from deep server stacks. Real schemas
# nest a few dozen levels at most.
MAX_NESTING_DEPTH: Final = 100
# The same bound for the whole graph, with referenced schemas' types written out where they are
# used (as canonical form and the compatibility check walk it): a level costs the check up to
# five frames, so this keeps every walk inside the default recursion limit of 1000 with room for
# the caller's own stack. Real schemas nest a few dozen levels, references included.
MAX_EXPANDED_DEPTH: Final = 150


def expanded_depth(root: Node) -> int:
    """How deep ``root``'s types nest once every named type is written out at its first use
    (later uses are a name): the depth recursive writers reach. Iterative, so any depth is safe
    to measure; children are visited in order (pushed reversed), so "first use" is the one a
    recursive writer meets first."""
    deepest = 0
    seen: set[str] = set()
    stack: list[tuple[Node, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(node, Array):
            stack.append((node.items, depth + 1))
        elif isinstance(node, Map):
            stack.append((node.values, depth + 1))
        elif isinstance(node, Union):
            stack.extend((branch, depth + 1) for branch in reversed(node.branches))
        elif isinstance(node, Record) and node.fullname not in seen:
            seen.add(node.fullname)
            stack.extend((f.type, depth + 1) for f in reversed(node.fields))
    return deepest


def parse_schema(
    text: str,
    references: Sequence[AvroSchema] = (),
    *,
    validate_defaults: bool = True,
    strict_union_defaults: bool = True,
) -> AvroSchema:
    """Parse and validate an Avro schema.

    Named types defined by `references` (already parsed, in dependency order) may be used by
    full name. Raises `InvalidSchema` with a message that names the location (a JSON pointer
    into the schema) and the problem.

    `validate_defaults=False` skips default checking (Confluent only validates defaults of newly
    registered schemas, so stored ones can be re-read leniently). With `strict_union_defaults`
    (the Avro specification up to 1.11) a union field's default must match the union's first
    branch; Avro Java 1.11.3+ (AVRO-3649) accepts a default matching any branch, which is what
    `strict_union_defaults=False` does.
    """
    if not text.strip():
        raise InvalidSchema("Invalid schema: the schema is empty")
    try:
        data: JsonValue = jsontext.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise InvalidSchema(
            f"Invalid schema: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except InvalidSchema:
        raise
    except ValueError:
        # int() refuses more digits than sys.get_int_max_str_digits() (quadratic conversion
        # otherwise); json.loads let its ValueError out, which answered 500.
        raise InvalidSchema(
            f"Invalid schema: a number has more than {sys.get_int_max_str_digits()} digits"
        ) from None
    except RecursionError:
        raise InvalidSchema("Invalid schema: the JSON is nested too deeply") from None
    if "\\u" in text and has_lone_surrogate(data):
        # json.loads keeps a lone "\ud800" as is: no UTF-8 can store it (it answered 500).
        raise InvalidSchema("Invalid schema: a \\u escape is half of a surrogate pair")
    known: dict[str, NamedNode] = {}
    for ref in references:
        for fullname, node in ref._named.items():
            _add_reference_type(known, fullname, node)
    parser = _Parser(known, strict_union_defaults=strict_union_defaults)
    try:
        root = parser.parse(data, "", "")
        if validate_defaults:
            parser.check_defaults()
    except RecursionError:
        raise InvalidSchema("Invalid schema: the schema is nested too deeply") from None
    depth = expanded_depth(root)
    if depth > MAX_EXPANDED_DEPTH:
        # Each referenced type may nest MAX_NESTING_DEPTH levels in its own text, and a chain
        # of them stacks up: eleven schemas of 90 nested arrays each overflowed the stack of
        # every recursive walk (canonical form, compatibility) with a 500.
        raise InvalidSchema(
            f"Invalid schema: types are nested {depth} levels deep through the referenced "
            f"schemas; at most {MAX_EXPANDED_DEPTH} are accepted"
        )
    canonical = canonical_form(root)
    return AvroSchema(
        text=text,
        canonical=canonical,
        fingerprint=crc64_avro(canonical.encode()),
        name=root.fullname if isinstance(root, Named) else None,
        _root=root,
        _named=parser.names,
    )


def has_lone_surrogate(data: object) -> bool:
    """Whether decoded JSON holds a lone UTF-16 surrogate (json.loads keeps "\\ud800" as is,
    and no UTF-8 store or response can carry it). Too deep to check: False (the parser
    refuses what is this deep)."""
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    except RecursionError:
        return False
    return False


def _reject_constant(token: str) -> JsonValue:
    raise InvalidSchema(f"Invalid schema: not valid JSON: {token} is not a JSON value")


def _add_reference_type(known: dict[str, NamedNode], fullname: str, node: NamedNode) -> None:
    existing = known.get(fullname)
    if existing is None or existing is node:
        known[fullname] = node
        return
    # Two references may each carry their own parse of a shared dependency; that is fine as
    # long as they agree on everything, including defaults.
    if compact_json(to_full_json(existing)) != compact_json(to_full_json(node)):
        raise InvalidSchema(
            f"Invalid schema: references define the named type '{fullname}' differently"
        )


def _where(path: str) -> str:
    return path or "/"


def _short(value: JsonValue) -> str:
    text = compact_json(value)
    return text if len(text) <= _MAX_TEXT_IN_MESSAGE else text[: _MAX_TEXT_IN_MESSAGE - 1] + "…"


def _json_kind(value: JsonValue) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


class _Parser:
    """One parse: the name table plus the defaults to validate once every type is complete."""

    def __init__(self, known: dict[str, NamedNode], *, strict_union_defaults: bool) -> None:
        self.names: dict[str, NamedNode] = dict(known)
        self._strict_union_defaults = strict_union_defaults
        self._defaults: list[tuple[Field, str]] = []
        self._depth = 0

    # -- schemas ---------------------------------------------------------------------------

    def parse(self, data: JsonValue, namespace: str, path: str) -> Node:
        self._depth += 1
        try:
            if self._depth > MAX_NESTING_DEPTH:
                raise InvalidSchema(
                    f"Invalid schema: types are nested more than {MAX_NESTING_DEPTH} levels deep"
                )
            return self._parse(data, namespace, path)
        finally:
            self._depth -= 1

    def _parse(self, data: JsonValue, namespace: str, path: str) -> Node:
        if isinstance(data, str):
            return self._reference(data, namespace, path)
        if isinstance(data, list):
            return self._union(data, namespace, path)
        if isinstance(data, dict):
            return self._object(data, namespace, path)
        raise InvalidSchema(
            f"Invalid schema at {_where(path)}: a schema must be a type name string, an object "
            f"or a union array, not {_json_kind(data)} ({_short(data)})"
        )

    def _reference(self, name: str, namespace: str, path: str) -> Node:
        if name in PRIMITIVE_TYPES:
            return Primitive(name)
        # Avro Java: an unqualified name is looked up in the enclosing namespace, then in the
        # null namespace.
        candidates = [name] if "." in name or not namespace else [f"{namespace}.{name}", name]
        for candidate in candidates:
            found = self.names.get(candidate)
            if found is not None:
                return found
        tried = " or ".join(f"'{c}'" for c in candidates)
        raise InvalidSchema(
            f"Invalid schema at {_where(path)}: unknown type name '{name}' (looked up as "
            f"{tried}); a named type must be defined before it is used, or be supplied by a "
            "schema reference"
        )

    def _object(self, data: dict[str, JsonValue], namespace: str, path: str) -> Node:
        type_name = data.get("type")
        if "type" not in data:
            raise InvalidSchema(f"Invalid schema at {_where(path)}: missing 'type' attribute")
        if not isinstance(type_name, str):
            raise InvalidSchema(
                f"Invalid schema at {_where(path)}/type: 'type' must be a type name string, "
                f"not {_json_kind(type_name)} ({_short(type_name)}); write a nested schema "
                "directly instead of wrapping it in another object"
            )
        if type_name in PRIMITIVE_TYPES:
            return Primitive(type_name, {k: v for k, v in data.items() if k != "type"})
        parse_complex = self._complex_parsers.get(type_name)
        if parse_complex is not None:
            return parse_complex(self, data, namespace, path)
        # Avro Java accepts {"type": "SomeDefinedName"} as a reference to a named type.
        return self._reference(type_name, namespace, path + "/type")

    def _array(self, data: dict[str, JsonValue], namespace: str, path: str) -> Node:
        if "items" not in data:
            raise InvalidSchema(f"Invalid schema at {_where(path)}: array without 'items'")
        items = self.parse(data["items"], namespace, path + "/items")
        return Array(items, _props(data, {"type", "items"}))

    def _map(self, data: dict[str, JsonValue], namespace: str, path: str) -> Node:
        if "values" not in data:
            raise InvalidSchema(f"Invalid schema at {_where(path)}: map without 'values'")
        values = self.parse(data["values"], namespace, path + "/values")
        return Map(values, _props(data, {"type", "values"}))

    def _union(self, data: list[JsonValue], namespace: str, path: str) -> Node:
        branches: list[Node] = []
        seen: dict[str, int] = {}
        for i, item in enumerate(data):
            branch_path = f"{path}/{i}"
            branch = self.parse(item, namespace, branch_path)
            if isinstance(branch, Union):
                raise InvalidSchema(
                    f"Invalid schema at {branch_path}: a union may not immediately contain "
                    "another union"
                )
            # Unnamed types may appear once per kind; named types once per full name.
            key = branch.fullname if isinstance(branch, Named) else branch.kind
            if key in seen:
                raise InvalidSchema(
                    f"Invalid schema at {branch_path}: duplicate union branch '{key}' (already "
                    f"at {path}/{seen[key]})"
                )
            seen[key] = i
            branches.append(branch)
        return Union(tuple(branches))

    def _named_header(
        self, data: dict[str, JsonValue], namespace: str, path: str
    ) -> tuple[str, str, tuple[str, ...], str | None]:
        """Full name, its namespace, the fully qualified aliases (in the order written, each
        once) and the doc of a named type."""
        name = data.get("name")
        if not isinstance(name, str):
            what = "missing 'name'" if name is None else f"'name' must be a string, not {name!r}"
            raise InvalidSchema(f"Invalid schema at {_where(path)}: {what}")
        if "." in name:
            space, _, simple = name.rpartition(".")
        else:
            simple = name
            space_attr = data.get("namespace")
            if space_attr is not None and not isinstance(space_attr, str):
                raise InvalidSchema(
                    f"Invalid schema at {_where(path)}/namespace: 'namespace' must be a string"
                )
            space = namespace if space_attr is None else space_attr
        _check_name(simple, f"{_where(path)}/name", "name")
        if space:
            for part in space.split("."):
                _check_name(part, f"{_where(path)}", f"namespace '{space}' component")
        if simple in PRIMITIVE_TYPES:
            raise InvalidSchema(
                f"Invalid schema at {_where(path)}/name: '{simple}' is a primitive type name "
                "and cannot name a record, enum or fixed"
            )
        fullname = f"{space}.{simple}" if space else simple
        if fullname in self.names:
            raise InvalidSchema(
                f"Invalid schema at {_where(path)}/name: the named type '{fullname}' is already "
                "defined (in this schema or a reference); names cannot be redefined"
            )
        # Avro Java's Name: a dotted alias is already qualified (".A" names A in the null
        # namespace), an undotted one is in the type's namespace.
        aliases = tuple(
            dict.fromkeys(
                a.removeprefix(".") if "." in a else (f"{space}.{a}" if space else a)
                for a in _string_list(data, "aliases", path)
            )
        )
        doc = data.get("doc")
        return fullname, space, aliases, doc if isinstance(doc, str) else None

    def _record(self, data: dict[str, JsonValue], namespace: str, path: str) -> Node:
        fullname, space, aliases, doc = self._named_header(data, namespace, path)
        fields_data = data.get("fields")
        if not isinstance(fields_data, list):
            raise InvalidSchema(
                f"Invalid schema at {_where(path)}: record '{fullname}' needs a 'fields' array"
            )
        kind = "error" if data["type"] == "error" else "record"
        record = Record(
            kind,
            fullname,
            frozenset(aliases),
            doc,
            _props(data, {"type", "name", "namespace", "aliases", "doc", "fields"}),
            alias_order=aliases,
        )
        # Registered before the fields are parsed so that fields can refer to the record.
        self.names[fullname] = record
        for pos, field_data in enumerate(fields_data):
            record.add_field(self._field(record, field_data, pos, space, f"{path}/fields"))
        return record

    def _field(
        self, record: Record, data: JsonValue, pos: int, namespace: str, fields_path: str
    ) -> Field:
        path = f"{fields_path}/{pos}"
        if not isinstance(data, dict):
            raise InvalidSchema(f"Invalid schema at {path}: a field must be an object")
        name = data.get("name")
        if not isinstance(name, str):
            raise InvalidSchema(f"Invalid schema at {path}: field without a string 'name'")
        _check_name(name, f"{path}/name", "field name")
        if record.field_named(name) is not None:
            raise InvalidSchema(
                f"Invalid schema at {path}/name: duplicate field '{name}' in record "
                f"'{record.fullname}'"
            )
        if "type" not in data:
            raise InvalidSchema(f"Invalid schema at {path}: field '{name}' has no 'type'")
        field_type = self.parse(data["type"], namespace, path + "/type")
        order = data.get("order")
        if isinstance(order, str):
            # Avro Java reads Order.valueOf(text.toUpperCase()): any case is one order (and
            # Confluent's normalized form writes "ASCENDING").
            order = order.lower()
        if order is not None and order not in _FIELD_ORDERS:
            raise InvalidSchema(
                f"Invalid schema at {path}/order: field '{name}' has order {_short(order)}; "
                "expected 'ascending', 'descending' or 'ignore'"
            )
        doc = data.get("doc")
        result = Field(
            name=name,
            type=field_type,
            pos=pos,
            has_default="default" in data,
            default=data.get("default"),
            aliases=tuple(_string_list(data, "aliases", path)),
            order=order if isinstance(order, str) else None,
            doc=doc if isinstance(doc, str) else None,
            props=_props(data, {"name", "type", "default", "aliases", "order", "doc"}),
        )
        if result.has_default:
            self._defaults.append((result, path))
        return result

    def _enum(self, data: dict[str, JsonValue], namespace: str, path: str) -> Node:
        fullname, _, aliases, doc = self._named_header(data, namespace, path)
        symbols = data.get("symbols")
        if not isinstance(symbols, list):
            raise InvalidSchema(
                f"Invalid schema at {_where(path)}: enum '{fullname}' needs a 'symbols' array"
            )
        seen: set[str] = set()
        for i, symbol in enumerate(symbols):
            if not isinstance(symbol, str):
                raise InvalidSchema(
                    f"Invalid schema at {path}/symbols/{i}: enum symbols must be strings"
                )
            _check_name(symbol, f"{path}/symbols/{i}", f"enum '{fullname}' symbol")
            if symbol in seen:
                raise InvalidSchema(
                    f"Invalid schema at {path}/symbols/{i}: duplicate symbol '{symbol}' in enum "
                    f"'{fullname}'"
                )
            seen.add(symbol)
        default = data.get("default")
        if default is not None and (not isinstance(default, str) or default not in seen):
            raise InvalidSchema(
                f"Invalid schema at {path}/default: enum '{fullname}' default {_short(default)} "
                f"is not one of its symbols {_short(symbols)}"
            )
        enum = Enum(
            "enum",
            fullname,
            frozenset(aliases),
            doc,
            _props(data, {"type", "name", "namespace", "aliases", "doc", "symbols", "default"}),
            alias_order=aliases,
            symbols=tuple(s for s in symbols if isinstance(s, str)),
            default=default,
        )
        self.names[fullname] = enum
        return enum

    def _fixed(self, data: dict[str, JsonValue], namespace: str, path: str) -> Node:
        fullname, _, aliases, doc = self._named_header(data, namespace, path)
        size = data.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= _MAX_FIXED_SIZE:
            raise InvalidSchema(
                f"Invalid schema at {_where(path)}/size: fixed '{fullname}' needs an integer "
                f"'size' between 0 and {_MAX_FIXED_SIZE}, got {_short(size)}"
            )
        fixed = Fixed(
            "fixed",
            fullname,
            frozenset(aliases),
            doc,
            _props(data, {"type", "name", "namespace", "aliases", "doc", "size"}),
            alias_order=aliases,
            size=size,
        )
        self.names[fullname] = fixed
        return fixed

    _complex_parsers: Final[
        Mapping[str, Callable[[_Parser, dict[str, JsonValue], str, str], Node]]
    ] = {
        "record": _record,
        "error": _record,
        "enum": _enum,
        "fixed": _fixed,
        "array": _array,
        "map": _map,
    }

    # -- defaults --------------------------------------------------------------------------

    def check_defaults(self) -> None:
        """Validate every field default; done after parsing because a default may be a value
        of a record type that was still being defined when the field was read."""
        for f, path in self._defaults:
            problem = self._default_problem(f.type, f.default)
            if problem is not None:
                raise InvalidSchema(
                    f"Invalid schema at {path}/default: invalid default {_short(f.default)} for "
                    f"field '{f.name}' of type {_short_type(f.type)}: {problem}"
                )

    def _default_problem(self, node: Node, value: JsonValue) -> str | None:
        """Why `value` is not a valid default for `node`, or None when it is."""
        if isinstance(node, Primitive):
            check, expected = _PRIMITIVE_DEFAULTS[node.kind]
            return None if check(value) else f"expected {expected}"
        if isinstance(node, Enum):
            if isinstance(value, str) and value in node.symbols:
                return None
            return f"expected one of the symbols {list(node.symbols)}"
        if isinstance(node, Fixed):
            if _is_byte_string(value) and isinstance(value, str) and len(value) == node.size:
                return None
            return f"expected a string of {node.size} characters in the range \\u0000-\\u00ff"
        if isinstance(node, Union):
            return self._union_default_problem(node, value)
        return self._container_default_problem(node, value)

    def _container_default_problem(
        self, node: Array | Map | Record, value: JsonValue
    ) -> str | None:
        if isinstance(node, Array):
            if not isinstance(value, list):
                return "expected a JSON array"
            for i, item in enumerate(value):
                problem = self._default_problem(node.items, item)
                if problem is not None:
                    return f"item {i}: {problem}"
            return None
        if not isinstance(value, dict):
            return "expected a JSON object"
        if isinstance(node, Map):
            for key, item in value.items():
                problem = self._default_problem(node.values, item)
                if problem is not None:
                    return f"value of key '{key}': {problem}"
            return None
        for f in node.fields:
            if f.name in value:
                problem = self._default_problem(f.type, value[f.name])
                if problem is not None:
                    return f"field '{f.name}': {problem}"
            elif not f.has_default:
                return f"field '{f.name}' is missing and has no default of its own"
        return None

    def _union_default_problem(self, node: Union, value: JsonValue) -> str | None:
        if not node.branches:
            return "an empty union has no values"
        if self._strict_union_defaults:
            problem = self._default_problem(node.branches[0], value)
            if problem is None:
                return None
            return (
                f"a union default must be a value of the union's first branch "
                f"{_short_type(node.branches[0])} ({problem})"
            )
        if any(self._default_problem(b, value) is None for b in node.branches):
            return None
        return "the value matches no branch of the union"


def _check_name(name: str, where: str, what: str) -> None:
    if not _NAME_RE.match(name):
        raise InvalidSchema(
            f"Invalid schema at {where}: invalid {what} '{name}'; names must start with "
            "[A-Za-z_] and contain only [A-Za-z0-9_]"
        )


def _string_list(data: dict[str, JsonValue], key: str, path: str) -> list[str]:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidSchema(f"Invalid schema at {path}/{key}: '{key}' must be an array of strings")
    return [v for v in value if isinstance(v, str)]


def _props(data: dict[str, JsonValue], reserved: set[str]) -> dict[str, JsonValue]:
    return {k: v for k, v in data.items() if k not in reserved}


def _short_type(node: Node) -> str:
    text = canonical_form(node)
    return text if len(text) <= _MAX_TEXT_IN_MESSAGE else text[: _MAX_TEXT_IN_MESSAGE - 1] + "…"


def _is_int(value: JsonValue, bits: int) -> bool:
    limit = 1 << (bits - 1)
    return isinstance(value, int) and not isinstance(value, bool) and -limit <= value < limit


def _is_number(value: JsonValue) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return math.isfinite(value) if isinstance(value, float) else True
    # The Avro JSON encoding spells non-finite floats as strings.
    return value in ("NaN", "Infinity", "-Infinity")


def _is_byte_string(value: JsonValue) -> bool:
    # Spec: bytes and fixed defaults are strings whose code points 0-255 are the byte values.
    return isinstance(value, str) and all(ord(c) <= 0xFF for c in value)


_PRIMITIVE_DEFAULTS: Final[Mapping[str, tuple[Callable[[JsonValue], bool], str]]] = {
    "null": (lambda v: v is None, "null"),
    "boolean": (lambda v: isinstance(v, bool), "true or false"),
    "int": (lambda v: _is_int(v, 32), "a 32-bit integer"),
    "long": (lambda v: _is_int(v, 64), "a 64-bit integer"),
    "float": (_is_number, "a number"),
    "double": (_is_number, "a number"),
    "bytes": (_is_byte_string, "a string of characters in the range \\u0000-\\u00ff"),
    "string": (lambda v: isinstance(v, str), "a string"),
}
