"""Confluent's text forms of an Avro schema: the canonical string and the normalized one.

Confluent Schema Registry identifies an Avro schema by `AvroSchema.canonicalString()`, which is
Avro Java's `Schema.toString(referencedSchemas, false)`, not by the text a client sent. So
`"name": "com.example.User"` and `"name": "User", "namespace": "com.example"`, or a field type
`{"type": "long"}` and `"long"`, are one schema with one id. With `?normalize=true` (or config
`normalize`) it first rewrites the schema with `AvroSchemaUtils.toNormalizedString` (full names,
properties and aliases sorted) and takes the canonical string of that.

* `canonical_string` writes what Avro Java's `toJson` writes, byte for byte: keys in Avro's
  order (`type`, `name`, `namespace`, `doc`, then the type's own, custom properties in the order
  written, `aliases` last); names short, with `namespace` only where it differs from the
  enclosing one (`"namespace": ""` for a null namespace inside a non-null one); a named type in
  full at its first use and by name after; a primitive without properties as its bare name; a
  field's `order` only when not ascending; numbers as Jackson writes them (`1.0E10`) and strings
  escaped as Jackson escapes them (`\\u001F`).
* `resolved_string` is the same with nothing known beforehand: referenced types are written out
  in full where first used (Confluent's `?format=resolved`).
* `normalized_string` follows `toNormalizedString`: full names, no `namespace`, `order` always,
  docs, aliases and defaults after the type's own keys, custom properties (and the keys of JSON
  objects inside them and in defaults) sorted as Java's TreeMap sorts them.

Named types defined by references are known names in both forms. Two deliberate deviations from
Java, both where Java's output would change what the schema means or break our own re-parse:
Avro Java knows only each reference's top-level name, so a type nested inside a referenced
schema would be written out again in full (our parser, rightly, refuses a second definition);
and Java's `toNormalizedString` drops a field default that `JacksonUtils.toObject` cannot convert
to the field's type (an integer default of a double field, say), which silently removes the
default: we keep it as written. Where Java writes a logical type's properties twice (`decimal`'s
`logicalType` and `precision` before the sorted properties that hold them again), we write them
once, first: re-parsed, both texts are the same schema.

Every writer is a loop over an explicit stack, not a recursion, so schemas nested through long
reference chains cannot exhaust Python's stack.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Final, TypeAlias

from schema_registry.avro._model import (
    Array,
    Enum,
    Field,
    Fixed,
    JsonValue,
    Map,
    Named,
    Node,
    Primitive,
    Record,
    Union,
)

if TYPE_CHECKING:
    from schema_registry.avro._schema import AvroSchema

__all__ = ["canonical_string", "normalized_string", "resolved_string"]

#: Avro Java's Schema.SCHEMA_RESERVED: keys that are never properties of a schema (a primitive's
#: "doc" or "name" is dropped, not kept as a property).
_SCHEMA_RESERVED: Final = frozenset(
    {"doc", "fields", "items", "name", "namespace", "size", "symbols", "values", "type", "aliases"}
)
_ENUM_RESERVED: Final = _SCHEMA_RESERVED | {"default"}
#: Schema.Type names: a name equal to one is always written qualified (Name.shouldWriteFull).
_TYPE_NAMES: Final = frozenset(
    {"record", "enum", "array", "map", "union", "fixed", "string", "bytes", "int", "long"}
    | {"float", "double", "boolean", "null"}
)

_FLOATS: Final = ("float", "double")
#: What Double.parseDouble reads that is also a plain number (no hex, no "d" suffix).
_JAVA_DOUBLE: Final = re.compile(
    r"[+-]?(?:NaN|Infinity|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)"
)

# A writer's work list holds literal text and schemas still to be written (with the namespace
# they are written in, None for the null namespace, as Avro Java's Name keeps it).
_Item: TypeAlias = str | tuple[Node, str | None]


def canonical_string(schema: AvroSchema, references: Sequence[AvroSchema]) -> str:
    """Confluent's `canonicalString()`: the schema as Avro Java's `Schema.toString(refs, false)`
    writes it, with every named type the references define written by name."""
    return _Canonical(_reference_names(references)).write(schema._root)


def resolved_string(schema: AvroSchema) -> str:
    """Confluent's `formattedString("resolved")` (Avro `Schema.toString()`): the canonical
    writing with referenced types written out in full at their first use."""
    return _Canonical(set()).write(schema._root)


def normalized_string(schema: AvroSchema, references: Sequence[AvroSchema]) -> str:
    """Confluent's `AvroSchemaUtils.toNormalizedString` (see the module docstring for the two
    deviations). Its canonical string is what `?normalize=true` registers."""
    return _Normalized(_reference_names(references)).write(schema._root)


def _reference_names(references: Sequence[AvroSchema]) -> set[str]:
    return {name for ref in references for name in ref._named}


def _run(root: Node, expand: _Expand) -> str:
    """Write `root`, expanding schemas into text and further schemas until only text is left."""
    out: list[str] = []
    stack: list[_Item] = [(root, None)]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
        else:
            stack.extend(reversed(expand(*item)))
    return "".join(out)


class _Expand:
    """One step of a writer: a schema into text and the schemas nested in it, in order."""

    def __call__(self, node: Node, space: str | None) -> list[_Item]:
        raise NotImplementedError


# --- the canonical string (Avro Java's Schema.toJson) ---------------------------------------


class _Canonical(_Expand):
    def __init__(self, known: set[str]) -> None:
        self.known = known  # names written once already (or supplied by references)

    def write(self, root: Node) -> str:
        return _run(root, self)

    def __call__(self, node: Node, space: str | None) -> list[_Item]:
        if isinstance(node, Primitive):
            props = _props_text(node.props, _SCHEMA_RESERVED)
            return [f'{{"type":"{node.kind}"{props}}}' if props else f'"{node.kind}"']
        if isinstance(node, Array | Map):
            key, inner = (
                ("items", node.items) if isinstance(node, Array) else ("values", node.values)
            )
            tail = _props_text(node.props, _SCHEMA_RESERVED) + "}"
            return [f'{{"type":"{node.kind}","{key}":', (inner, space), tail]
        if isinstance(node, Union):
            return _union_items(node, space)
        if node.fullname in self.known:
            return [_string(_qualified(node.fullname, space))]
        self.known.add(node.fullname)
        return self._named(node, space)

    def _named(self, node: Record | Enum | Fixed, space: str | None) -> list[_Item]:
        own = node.namespace or None
        head = f'{{"type":"{node.kind}","name":{_string(node.name)}'
        if own is not None and own != space:
            head += f',"namespace":{_string(own)}'
        elif own is None and space is not None:  # a null namespace inside a non-null one
            head += ',"namespace":""'
        if node.doc is not None:
            head += f',"doc":{_string(node.doc)}'
        reserved = _ENUM_RESERVED if isinstance(node, Enum) else _SCHEMA_RESERVED
        tail = _props_text(node.props, reserved) + _aliases_text(node, own) + "}"
        if isinstance(node, Enum):
            symbols = ",".join(_string(s) for s in node.symbols)
            default = "" if node.default is None else f',"default":{_string(node.default)}'
            return [f'{head},"symbols":[{symbols}]{default}{tail}']
        if isinstance(node, Fixed):
            return [f'{head},"size":{node.size}{tail}']
        return _record_items(head, node, own, _field_tail, tail)


def _field_tail(f: Field) -> str:
    text = "" if f.doc is None else f',"doc":{_string(f.doc)}'
    if f.has_default:
        text += ',"default":' + _json(_parsed_default(f))
    if f.order not in (None, "ascending"):
        text += f',"order":"{f.order}"'
    if f.aliases:
        text += ',"aliases":[' + ",".join(_string(a) for a in dict.fromkeys(f.aliases)) + "]"
    return text + _props_text(f.props, frozenset())


def _parsed_default(f: Field) -> JsonValue:
    """The default as Avro Java holds it: a string default of a float or double field is read
    as a number there (Schema.parseField: new DoubleNode(Double.parseDouble(text)))."""
    value = f.default
    if isinstance(value, str) and isinstance(f.type, Primitive) and f.type.kind in _FLOATS:
        text = value.strip(" \t\n\r")
        if _JAVA_DOUBLE.fullmatch(text):
            return float(text.removeprefix("+").replace("Infinity", "inf"))
    return value


def _aliases_text(node: Named, own: str | None) -> str:
    if not node.alias_order:
        return ""
    return ',"aliases":[' + ",".join(_string(_qualified(a, own)) for a in node.alias_order) + "]"


def _qualified(fullname: str, space: str | None) -> str:
    """Name.getQualified: short within its own namespace, unless the short name is a type's."""
    own, _, short = fullname.rpartition(".")
    if own and own == space and short not in _TYPE_NAMES:
        return short
    return fullname


def _record_items(
    head: str, node: Record, space: str | None, field_tail: Callable[[Field], str], tail: str
) -> list[_Item]:
    """A record's `fields` between `head` and `tail`: each field's name, its type (written in
    `space`, the record's namespace) and `field_tail` of it."""
    items: list[_Item] = [head + ',"fields":[']
    for i, f in enumerate(node.fields):
        items.append(("," if i else "") + f'{{"name":{_string(f.name)},"type":')
        items.append(_item(f.type, space))
        items.append(field_tail(f) + "}")
    items.append("]" + tail)
    return items


def _item(node: Node, space: str | None) -> _Item:
    """A schema to write, or at once its text when it is a bare primitive (most are: this
    keeps a wide record's writing to one step per field)."""
    if isinstance(node, Primitive) and not node.props:
        return f'"{node.kind}"'
    return (node, space)


def _union_items(node: Union, space: str | None) -> list[_Item]:
    items: list[_Item] = ["["]
    for i, branch in enumerate(node.branches):
        if i:
            items.append(",")
        items.append(_item(branch, space))
    items.append("]")
    return items


def _props_text(props: dict[str, JsonValue], reserved: frozenset[str]) -> str:
    if not props:
        return ""
    return "".join(
        f",{_string(key)}:{_json(value)}" for key, value in props.items() if key not in reserved
    )


# --- the normalized string (Confluent's AvroSchemaUtils.toNormalizedString) ------------------


class _Normalized(_Expand):
    def __init__(self, known: set[str]) -> None:
        self.known = known

    def write(self, root: Node) -> str:
        return _run(root, self)

    def __call__(self, node: Node, space: str | None) -> list[_Item]:
        if isinstance(node, Union):
            return _union_items(node, space)
        if isinstance(node, Primitive):
            logical, written = _logical_text(node)
            props = logical + _sorted_props_text(node.props, _SCHEMA_RESERVED | written)
            return [f'{{"type":"{node.kind}"{props}}}' if props else f'"{node.kind}"']
        if isinstance(node, Array | Map):
            key, inner = (
                ("items", node.items) if isinstance(node, Array) else ("values", node.values)
            )
            logical, written = _logical_text(node)
            tail = logical + _sorted_props_text(node.props, _SCHEMA_RESERVED | written) + "}"
            return [f'{{"type":"{node.kind}","{key}":', (inner, space), tail]
        if node.fullname in self.known:
            return [_string(node.fullname)]
        self.known.add(node.fullname)
        # Schema.Type.getName(): an error is a RECORD, so it is written "record" here.
        kind = "record" if isinstance(node, Record) else node.kind
        head = f'{{"name":{_string(node.fullname)},"type":"{kind}"'
        tail = _normalized_named_tail(node) + "}"
        if isinstance(node, Enum):
            return [head + ',"symbols":[' + ",".join(_string(s) for s in node.symbols) + "]" + tail]
        if isinstance(node, Fixed):
            return [f'{head},"size":{node.size}{tail}']
        return _record_items(head, node, None, _normalized_field_tail, tail)


def _normalized_named_tail(node: Record | Enum | Fixed) -> str:
    logical, written = _logical_text(node)
    text = logical
    if node.doc:
        text += f',"doc":{_string(node.doc)}'
    if node.alias_order:
        # Schema.getAliases(): full names, and ".A" for a null-namespace alias of a type that
        # has a namespace (so that re-parsing keeps it out of the type's namespace).
        shown = {a if "." in a or not node.namespace else f".{a}" for a in node.alias_order}
        text += ',"aliases":[' + ",".join(_string(a) for a in _java_sorted(shown)) + "]"
    if isinstance(node, Enum) and node.default is not None:
        text += f',"default":{_string(node.default)}'
    reserved = _ENUM_RESERVED if isinstance(node, Enum) else _SCHEMA_RESERVED
    return text + _sorted_props_text(node.props, reserved | written)


def _normalized_field_tail(f: Field) -> str:
    # Java writes f.order().toString(), the enum constant's name: "ASCENDING" unless told.
    text = f',"order":"{(f.order or "ascending").upper()}"'
    if f.doc is not None:
        text += f',"doc":{_string(f.doc)}'
    if f.aliases:
        text += ',"aliases":[' + ",".join(_string(a) for a in _java_sorted(set(f.aliases))) + "]"
    if f.has_default:
        text += ',"default":' + _json(_parsed_default(f), sort=True, shape=f.type)
    return text + _sorted_props_text(f.props, frozenset())


def _sorted_props_text(props: dict[str, JsonValue], reserved: Iterable[str]) -> str:
    if not props:
        return ""
    skip = frozenset(reserved)
    keys = _java_sorted(k for k in props if k not in skip)
    return "".join(f",{_string(k)}:{_json(props[k], sort=True)}" for k in keys)


def _logical_text(node: Node) -> tuple[str, frozenset[str]]:
    """The logical type props Confluent writes first (setLogicalProps) when Avro Java accepts
    the logical type on this schema, and which property keys that wrote."""
    props = node.props if not isinstance(node, Union) else {}
    if not props:
        return "", frozenset()
    name = props.get("logicalType")
    if not isinstance(name, str) or not _valid_logical_type(node, name, props):
        return "", frozenset()
    text = f',"logicalType":{_string(name)}'
    if name != "decimal":
        return text, frozenset({"logicalType"})
    precision, scale = props["precision"], props.get("scale", 0)
    text += f',"precision":{precision}'
    if scale != 0:
        text += f',"scale":{scale}'
        return text, frozenset({"logicalType", "precision", "scale"})
    return text, frozenset({"logicalType", "precision"})


_LOGICAL_KINDS: Final = {
    "date": ("int",),
    "time-millis": ("int",),
    "time-micros": ("long",),
    "timestamp-millis": ("long",),
    "timestamp-micros": ("long",),
    "timestamp-nanos": ("long",),
    "local-timestamp-millis": ("long",),
    "local-timestamp-micros": ("long",),
    "local-timestamp-nanos": ("long",),
    "big-decimal": ("bytes",),
    "uuid": ("string", "fixed"),
    "duration": ("fixed",),
    "decimal": ("bytes", "fixed"),
}
_FIXED_SIZES: Final = {"uuid": 16, "duration": 12}


def _valid_logical_type(node: Node, name: str, props: dict[str, JsonValue]) -> bool:
    """LogicalTypes.fromSchemaIgnoreInvalid (Avro 1.12) is not null for this schema."""
    if node.kind not in _LOGICAL_KINDS.get(name, ()):
        return False
    if isinstance(node, Fixed) and name in _FIXED_SIZES:
        return node.size == _FIXED_SIZES[name]
    if name != "decimal":
        return True
    precision, scale = props.get("precision"), props.get("scale", 0)
    if not (_java_int(precision) and _java_int(scale)):
        return False
    assert isinstance(precision, int) and isinstance(scale, int)
    if precision <= 0 or scale < 0 or scale > precision:
        return False
    if isinstance(node, Fixed):
        # Decimal.maxPrecision: floor(log10(2^(8*size-1) - 1)) digits fit in `size` bytes.
        biggest = 2 ** (8 * node.size - 1) - 1 if node.size else 0
        return precision <= (len(str(biggest)) - 1 if biggest > 0 else 0)
    return True


def _java_int(value: JsonValue) -> bool:
    """Jackson's isInt(): a JSON integer that fits Java's int."""
    return isinstance(value, int) and not isinstance(value, bool) and -(2**31) <= value < 2**31


def _java_sorted(keys: Iterable[str]) -> list[str]:
    """Sorted as Java's String.compareTo sorts (UTF-16 code units, not code points)."""
    return sorted(keys, key=lambda k: k.encode("utf-16-be", "surrogatepass"))


# --- JSON values as Jackson writes them -------------------------------------------------------


class _Float32(float):
    """A float default of a `float` field: Java holds a Float and writes its shortest form."""


def _json(value: JsonValue, *, sort: bool = False, shape: Node | None = None) -> str:
    """A JSON value as Jackson writes it: no spaces, Java's number and string spellings;
    with `sort`, object keys sorted (Confluent's SortingNodeFactory); with `shape`, numbers
    of `float` positions rounded to a Java float (JacksonUtils.toObject)."""
    if not isinstance(value, list | dict):
        while isinstance(shape, Union) and shape.branches:
            shape = shape.branches[0]
        return _scalar(value, shape)
    out: list[str] = []
    stack: list[tuple[bool, object, Node | None]] = [(False, value, shape)]
    while stack:
        literal, item, node = stack.pop()
        if literal:
            out.append(str(item))
            continue
        node = node.branches[0] if isinstance(node, Union) and node.branches else node
        if isinstance(item, list):
            inner = node.items if isinstance(node, Array) else None
            stack.append((True, "]", None))
            for i, element in reversed(list(enumerate(item))):
                stack.append((False, element, inner))
                if i:
                    stack.append((True, ",", None))
            out.append("[")
        elif isinstance(item, dict):
            keys = _java_sorted(item) if sort else list(item)
            stack.append((True, "}", None))
            for i, key in reversed(list(enumerate(keys))):
                stack.append((False, item[key], _member_shape(node, key)))
                stack.append((True, ("," if i else "") + _string(key) + ":", None))
            out.append("{")
        else:
            out.append(_scalar(item, node))
    return "".join(out)


def _member_shape(node: Node | None, key: str) -> Node | None:
    if isinstance(node, Map):
        return node.values
    if isinstance(node, Record):
        found = node.field_named(key)
        return found.type if found is not None else None
    return None


def _scalar(value: object, node: Node | None) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if isinstance(node, Primitive) and node.kind == "float":
            return _java_float(value)
        return _java_double(value)
    return _string(str(value))


_ESCAPES: Final = {i: f"\\u{i:04X}" for i in range(0x20)} | {
    ord('"'): '\\"',
    ord("\\"): "\\\\",
    0x08: "\\b",
    0x09: "\\t",
    0x0A: "\\n",
    0x0C: "\\f",
    0x0D: "\\r",
}


def _string(text: str) -> str:
    """A JSON string as Jackson escapes it: the short escapes, other controls as \\u00XX in
    upper case; everything else (non-ASCII included) as is."""
    return '"' + text.translate(_ESCAPES) + '"'


def _java_double(value: float) -> str:
    """Double.toString as Jackson writes a double (non-finite ones quoted)."""
    if math.isnan(value):
        return '"NaN"'
    if math.isinf(value):
        return '"Infinity"' if value > 0 else '"-Infinity"'
    return _java_decimal(repr(value))


def _java_float(value: float) -> str:
    """Float.toString of the value rounded to a Java float: its shortest round-tripping form."""
    try:
        single = struct.unpack("<f", struct.pack("<f", value))[0]
    except OverflowError:
        single = math.copysign(math.inf, value)
    if not math.isfinite(single):
        return _java_double(single)
    for digits in range(1, 10):
        text = f"{single:.{digits - 1}e}"
        if struct.unpack("<f", struct.pack("<f", float(text)))[0] == single:
            return _java_decimal(text)
    return _java_decimal(repr(single))  # pragma: no cover - 9 digits always round-trip


def _java_decimal(text: str) -> str:
    """Java's spelling of a finite decimal number: plain between 10^-3 and 10^7 ("0.001",
    "1.0"), else computerized scientific notation ("1.0E7", "1.5E-4")."""
    sign, digit_tuple, exponent = Decimal(text).as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digit_tuple)).lstrip("0")
    minus = "-" if sign else ""
    if not digits:
        return f"{minus}0.0"
    stripped = digits.rstrip("0")
    exponent += len(digits) - len(stripped)
    digits = stripped
    power = len(digits) - 1 + exponent  # of the first digit
    if -3 <= power < 7:
        if power >= 0:
            whole = digits[: power + 1].ljust(power + 1, "0")
            return f"{minus}{whole}.{digits[power + 1 :] or '0'}"
        return f"{minus}0.{'0' * (-power - 1)}{digits}"
    return f"{minus}{digits[0]}.{digits[1:] or '0'}E{power}"
