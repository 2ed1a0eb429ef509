"""Resolved Avro schema graph: the node types the parser builds and the checker walks.

Named types are single node objects shared by every place that refers to them, so a recursive
schema is a cyclic graph and node identity is what the compatibility checker memoizes on.
Nodes are built by the parser and never mutated afterwards.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TypeAlias

JsonValue: TypeAlias = bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"] | None

PRIMITIVE_TYPES = frozenset(
    {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
)


@dataclass(eq=False, slots=True)
class Primitive:
    """A primitive type, possibly annotated with a logical type (ignored for resolution)."""

    kind: str
    props: dict[str, JsonValue] = field(default_factory=dict)


@dataclass(eq=False, slots=True)
class Array:
    """`{"type": "array", "items": ...}`."""

    items: Node
    props: dict[str, JsonValue] = field(default_factory=dict)
    kind: str = "array"


@dataclass(eq=False, slots=True)
class Map:
    """`{"type": "map", "values": ...}`."""

    values: Node
    props: dict[str, JsonValue] = field(default_factory=dict)
    kind: str = "map"


@dataclass(eq=False, slots=True)
class Union:
    """A union; branches are never unions themselves (validated by the parser)."""

    branches: tuple[Node, ...]
    kind: str = "union"


@dataclass(eq=False, slots=True)
class Named:
    """Common part of record, enum and fixed: names and aliases, all fully qualified."""

    kind: str
    fullname: str
    aliases: frozenset[str]
    doc: str | None
    props: dict[str, JsonValue]
    # `aliases` as written (fully qualified, first occurrence of each): canonical form keeps the
    # author's order, as Avro Java's LinkedHashSet does.
    alias_order: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The unqualified name (what Avro Java compares when matching named types)."""
        return self.fullname.rpartition(".")[2]

    @property
    def namespace(self) -> str:
        return self.fullname.rpartition(".")[0]


@dataclass(eq=False, slots=True)
class Fixed(Named):
    """`{"type": "fixed", "size": n}`."""

    size: int = 0


@dataclass(eq=False, slots=True)
class Enum(Named):
    """`{"type": "enum", "symbols": [...], "default": ...}`."""

    symbols: tuple[str, ...] = ()
    default: str | None = None


@dataclass(eq=False, slots=True)
class Field:
    """A record field. `has_default` distinguishes an absent default from `"default": null`."""

    name: str
    type: Node
    pos: int
    has_default: bool
    default: JsonValue
    aliases: tuple[str, ...]
    order: str | None
    doc: str | None
    props: dict[str, JsonValue]


@dataclass(eq=False, slots=True)
class Record(Named):
    """A record (or a protocol `error`, which resolves exactly like a record)."""

    fields: list[Field] = field(default_factory=list)
    # name -> field, kept in step with `fields` by `add_field`; lookups run per field per check.
    _by_name: dict[str, Field] = field(default_factory=dict, repr=False)

    def add_field(self, f: Field) -> None:
        self.fields.append(f)
        self._by_name[f.name] = f

    def field_named(self, name: str) -> Field | None:
        return self._by_name.get(name)


NamedNode: TypeAlias = Fixed | Enum | Record
Node: TypeAlias = Primitive | Array | Map | Union | NamedNode


_TYPE_LABELS = {kind: kind.upper() for kind in (*PRIMITIVE_TYPES, "array", "map", "union")} | {
    "record": "RECORD",
    "error": "RECORD",  # Java: an error is a RECORD schema with isError() set
    "enum": "ENUM",
    "fixed": "FIXED",
}


def type_label(node: Node) -> str:
    """Avro Java's `Schema.Type` name, used verbatim in Java-compatible detail strings."""
    return _TYPE_LABELS[node.kind]


# --- rendering -----------------------------------------------------------------------------


def canonical_form(node: Node) -> str:
    """Parsing Canonical Form (Avro spec): full names, only parsing attributes, fixed order.

    Named types are written in full at their first occurrence (depth first, JSON order) and by
    full name afterwards, which also makes recursive schemas finite.
    """
    out: list[str] = []
    _pcf(node, set(), out)
    return "".join(out)


def _pcf(node: Node, seen: set[str], out: list[str]) -> None:
    if isinstance(node, Primitive):
        out.append(f'"{node.kind}"')
    elif isinstance(node, Array):
        out.append('{"type":"array","items":')
        _pcf(node.items, seen, out)
        out.append("}")
    elif isinstance(node, Map):
        out.append('{"type":"map","values":')
        _pcf(node.values, seen, out)
        out.append("}")
    elif isinstance(node, Union):
        out.append("[")
        for i, branch in enumerate(node.branches):
            if i:
                out.append(",")
            _pcf(branch, seen, out)
        out.append("]")
    elif node.fullname in seen:
        out.append(json.dumps(node.fullname, ensure_ascii=False))
    else:
        seen.add(node.fullname)
        _pcf_named(node, seen, out)


def _pcf_named(node: NamedNode, seen: set[str], out: list[str]) -> None:
    out.append('{"name":' + json.dumps(node.fullname, ensure_ascii=False))
    if isinstance(node, Record):
        # PCF has no "error" type: errors resolve and encode as records.
        out.append(',"type":"record","fields":[')
        for i, f in enumerate(node.fields):
            if i:
                out.append(",")
            out.append('{"name":' + json.dumps(f.name, ensure_ascii=False) + ',"type":')
            _pcf(f.type, seen, out)
            out.append("}")
        out.append("]}")
    elif isinstance(node, Enum):
        symbols = ",".join(json.dumps(s, ensure_ascii=False) for s in node.symbols)
        out.append(f',"type":"enum","symbols":[{symbols}]}}')
    else:
        out.append(f',"type":"fixed","size":{node.size}}}')


def to_full_json(node: Node, seen: set[str] | None = None) -> JsonValue:
    """The node as JSON with every attribute (docs, defaults, aliases, logical types, extra
    properties) and fully qualified names, so a fragment is self-explanatory out of context.
    Named types already emitted (or in progress, for recursion) are written by full name."""
    seen = set() if seen is None else seen
    if isinstance(node, Primitive):
        return {"type": node.kind, **node.props} if node.props else node.kind
    if isinstance(node, Array):
        return {"type": "array", "items": to_full_json(node.items, seen), **node.props}
    if isinstance(node, Map):
        return {"type": "map", "values": to_full_json(node.values, seen), **node.props}
    if isinstance(node, Union):
        return [to_full_json(b, seen) for b in node.branches]
    if node.fullname in seen:
        return node.fullname
    seen.add(node.fullname)
    out: dict[str, JsonValue] = {"type": node.kind, "name": node.fullname}
    if node.doc is not None:
        out["doc"] = node.doc
    if node.aliases:
        out["aliases"] = list(sorted(node.aliases))
    if isinstance(node, Record):
        out["fields"] = [_field_json(f, seen) for f in node.fields]
    elif isinstance(node, Enum):
        out["symbols"] = list(node.symbols)
        if node.default is not None:
            out["default"] = node.default
    else:
        out["size"] = node.size
    out.update(node.props)
    return out


def _field_json(f: Field, seen: set[str]) -> JsonValue:
    out: dict[str, JsonValue] = {"name": f.name, "type": to_full_json(f.type, seen)}
    if f.has_default:
        out["default"] = f.default
    if f.aliases:
        out["aliases"] = list(f.aliases)
    if f.order is not None:
        out["order"] = f.order
    if f.doc is not None:
        out["doc"] = f.doc
    out.update(f.props)
    return out


def compact_json(value: JsonValue) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# --- fingerprint ---------------------------------------------------------------------------

_CRC64_EMPTY = 0xC15D213AA4D7A795


def _crc64_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_CRC64_EMPTY if fp & 1 else 0)
        table.append(fp)
    return tuple(table)


_CRC64_TABLE = _crc64_table()


def crc64_avro(data: bytes) -> int:
    """The Avro spec's 64-bit Rabin fingerprint ("CRC-64-AVRO"), as an unsigned int."""
    fp = _CRC64_EMPTY
    for byte in data:
        fp = (fp >> 8) ^ _CRC64_TABLE[(fp ^ byte) & 0xFF]
    return fp
