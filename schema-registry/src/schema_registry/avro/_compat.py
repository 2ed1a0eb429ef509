"""Avro reader/writer compatibility, rule for rule as Apache Avro Java's `SchemaCompatibility`.

Confluent Schema Registry decides Avro compatibility with
`org.apache.avro.SchemaCompatibility.checkReaderWriterCompatibility`, so that class, not the
prose of the specification, is the contract here. What it does, and so what we do:

* Same type on both sides: primitives match; arrays and maps recurse into items/values; fixed,
  enum and record first compare names: the *unqualified* names must be equal, or the writer's
  full name must be one of the reader's aliases. Fixed sizes must be equal. Every writer enum
  symbol must be a reader symbol unless the reader enum has a default. Every reader field is
  looked up in the writer by name, then by the reader field's aliases; a reader field missing
  from the writer needs a default (`"default": null` counts); writer-only fields are skipped.
* Writer union: each writer branch must be readable. Union vs union reports one
  MISSING_UNION_BRANCH per unreadable writer branch (no detail from inside the branch, as Java);
  a non-union reader reports the branch's own incompatibilities under the branch index.
* Reader union, non-union writer: compatible if *any* reader branch reads the writer (Java's
  checker; the specification's "first match" only decides which branch a decoder picks).
* Promotions: int->long/float/double, long->float/double, float->double, string<->bytes.
* Logical types are ignored: only the underlying types are compared (so, as in Java and
  Confluent, changing a decimal's precision or scale is not flagged).
* Recursion: a (reader, writer) pair being checked further up the stack is assumed compatible,
  and results are memoized per pair of node identities, so recursive schemas terminate.

Two deliberate differences from Java, both about reporting only:

* A reader field missing from the writer whose type is an enum with an enum-level default and
  that has no field default: Java checks the enum against the *writer record* and reports a
  spurious TYPE_MISMATCH (ENUM vs RECORD) at `/fields/N/type`. The verdict (incompatible) is
  right, because enum defaults only replace unknown symbols (see Java's
  `TestSchemaCompatibilityEnumDefaults.enumDefaultNotAppliedWhenWriterFieldMissing`), so we
  report the real cause, READER_FIELD_MISSING_DEFAULT_VALUE at `/fields/N`.
* A reader field whose name and aliases match several writer fields makes Java throw; we report
  it as an AMBIGUOUS_FIELD_MATCH incompatibility at `/fields/N`.

Locations are Java's JSON pointers: they follow the reader schema, except that a writer union
branch index is appended where the writer is a union (`/fields/1/type/2`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final

from schema_registry import compatibility
from schema_registry.avro._model import (
    Array,
    Enum,
    Field,
    Fixed,
    Map,
    Named,
    NamedNode,
    Node,
    Primitive,
    Record,
    Union,
    compact_json,
    to_full_json,
    type_label,
)
from schema_registry.avro._schema import AvroSchema
from schema_registry.compatibility import Incompatibility

NAME_MISMATCH: Final = "NAME_MISMATCH"
FIXED_SIZE_MISMATCH: Final = "FIXED_SIZE_MISMATCH"
MISSING_ENUM_SYMBOLS: Final = "MISSING_ENUM_SYMBOLS"
READER_FIELD_MISSING_DEFAULT_VALUE: Final = "READER_FIELD_MISSING_DEFAULT_VALUE"
TYPE_MISMATCH: Final = "TYPE_MISMATCH"
MISSING_UNION_BRANCH: Final = "MISSING_UNION_BRANCH"
AMBIGUOUS_FIELD_MATCH: Final = "AMBIGUOUS_FIELD_MATCH"


# reader type -> writer types it can read besides its own
_PROMOTIONS: Final[dict[str, frozenset[str]]] = {
    "long": frozenset({"int"}),
    "float": frozenset({"int", "long"}),
    "double": frozenset({"int", "long", "float"}),
    "string": frozenset({"bytes"}),
    "bytes": frozenset({"string"}),
}
_FRAGMENT_IN_MESSAGE: Final = 200


def check_pair(reader: AvroSchema, writer: AvroSchema) -> list[Incompatibility]:
    """Every reason `reader` cannot read data written with `writer` (empty = compatible)."""
    found = _Checker().check(reader._root, writer._root)
    fragments: dict[int, str] = {}
    return [_materialize(f, fragments) for f in found]


def check_compatibility(
    level: str, new: AvroSchema, existing: Sequence[AvroSchema]
) -> list[Incompatibility]:
    """`schema_registry.compatibility.check_compatibility` with Avro's `check_pair`."""
    return compatibility.check_compatibility(level, new, existing, check_pair)


# --- the checker ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Found:
    """An incompatibility with its location relative to the (reader, writer) pair it was found
    under, so that memoized results can be re-rooted wherever the pair recurs."""

    rule: str
    tokens: tuple[str, ...]
    fields: tuple[str, ...]
    detail: str
    sentence: str
    reader: Node
    writer: Node

    def under(self, tokens: tuple[str, ...], field: str | None) -> _Found:
        fields = (field, *self.fields) if field is not None else self.fields
        return replace(self, tokens=tokens + self.tokens, fields=fields)


_Result = tuple[_Found, ...]


class _Checker:
    """One reader/writer comparison; memoizes by node identity like Java's `ReaderWriter`."""

    def __init__(self) -> None:
        # None marks a pair in progress further up the stack.
        self._memo: dict[tuple[int, int], _Result | None] = {}

    def check(self, reader: Node, writer: Node) -> _Result:
        key = (id(reader), id(writer))
        if key in self._memo:
            # In progress: assume compatible; any real problem is reported by the outer visit.
            return self._memo[key] or ()
        self._memo[key] = None
        result = self._calculate(reader, writer)
        self._memo[key] = result
        return result

    def _child(
        self, tokens: tuple[str, ...], reader: Node, writer: Node, field: str | None = None
    ) -> _Result:
        return tuple(f.under(tokens, field) for f in self.check(reader, writer))

    def _calculate(self, reader: Node, writer: Node) -> _Result:
        if type_label(reader) == type_label(writer):
            return self._same_type(reader, writer)
        if isinstance(writer, Union):
            result: list[_Found] = []
            for i, branch in enumerate(writer.branches):
                result.extend(self._child((str(i),), reader, branch))
            return tuple(result)
        if isinstance(reader, Union):
            # Java returns at the first compatible branch; `any` keeps that evaluation order.
            if any(not self.check(branch, writer) for branch in reader.branches):
                return ()
            return (_missing_union_branch(reader, writer, (), writer),)
        if isinstance(reader, Primitive) and writer.kind in _PROMOTIONS.get(reader.kind, ()):
            return ()
        detail = (
            f"reader type: {type_label(reader)} not compatible with writer type: "
            f"{type_label(writer)}"
        )
        sentence = f"reader type {type_label(reader)} cannot read writer type {type_label(writer)}"
        return (_Found(TYPE_MISMATCH, (), (), detail, sentence, reader, writer),)

    def _same_type(self, reader: Node, writer: Node) -> _Result:
        if isinstance(reader, Array) and isinstance(writer, Array):
            return self._child(("items",), reader.items, writer.items)
        if isinstance(reader, Map) and isinstance(writer, Map):
            return self._child(("values",), reader.values, writer.values)
        if isinstance(reader, Union) and isinstance(writer, Union):
            return tuple(
                _missing_union_branch(reader, writer, (str(i),), branch)
                for i, branch in enumerate(writer.branches)
                if self.check(reader, branch)
            )
        if isinstance(reader, Named) and isinstance(writer, Named):
            return _check_names(reader, writer) + self._named_body(reader, writer)
        return ()  # identical primitive types

    def _named_body(self, reader: NamedNode, writer: NamedNode) -> _Result:
        if isinstance(reader, Record) and isinstance(writer, Record):
            return self._record_fields(reader, writer)
        if isinstance(reader, Enum) and isinstance(writer, Enum):
            return _check_enum_symbols(reader, writer)
        if isinstance(reader, Fixed) and isinstance(writer, Fixed) and reader.size != writer.size:
            detail = f"expected: {writer.size}, found: {reader.size}"
            sentence = (
                f"reader fixed '{reader.fullname}' has size {reader.size} but writer fixed "
                f"'{writer.fullname}' has size {writer.size}"
            )
            return (_Found(FIXED_SIZE_MISMATCH, ("size",), (), detail, sentence, reader, writer),)
        return ()

    def _record_fields(self, reader: Record, writer: Record) -> _Result:
        result: list[_Found] = []
        for reader_field in reader.fields:
            tokens = ("fields", str(reader_field.pos))
            matches = _writer_fields(writer, reader_field)
            if len(matches) > 1:
                names = ", ".join(f"'{m.name}'" for m in matches)
                sentence = (
                    f"reader field '{reader_field.name}' matches several writer fields by name "
                    f"or alias ({names})"
                )
                result.append(
                    _Found(
                        AMBIGUOUS_FIELD_MATCH,
                        tokens,
                        (reader_field.name,),
                        sentence,
                        sentence,
                        reader,
                        writer,
                    )
                )
            elif matches:
                result.extend(
                    self._child(
                        (*tokens, "type"), reader_field.type, matches[0].type, reader_field.name
                    )
                )
            elif not reader_field.has_default:
                sentence = (
                    f"reader field '{reader_field.name}' has no default value and is missing "
                    f"from the writer record '{writer.fullname}'"
                )
                result.append(
                    _Found(
                        READER_FIELD_MISSING_DEFAULT_VALUE,
                        tokens,
                        (reader_field.name,),
                        reader_field.name,
                        sentence,
                        reader,
                        writer,
                    )
                )
        return tuple(result)


def _writer_fields(writer: Record, reader_field: Field) -> list[Field]:
    """Writer fields matching the reader field by name or by one of the reader field's aliases
    (distinct, in lookup order)."""
    matches: list[Field] = []
    for name in (reader_field.name, *reader_field.aliases):
        found = writer.field_named(name)
        if found is not None and all(found is not m for m in matches):
            matches.append(found)
    return matches


def _check_names(reader: NamedNode, writer: NamedNode) -> _Result:
    if reader.name == writer.name or writer.fullname in reader.aliases:
        return ()
    sentence = (
        f"reader {reader.kind} '{reader.fullname}' does not match writer {writer.kind} "
        f"'{writer.fullname}': the unqualified names differ and the reader has no alias "
        f"'{writer.fullname}'"
    )
    return (
        _Found(
            NAME_MISMATCH, ("name",), (), f"expected: {writer.fullname}", sentence, reader, writer
        ),
    )


def _check_enum_symbols(reader: Enum, writer: Enum) -> _Result:
    missing = sorted(set(writer.symbols) - set(reader.symbols))
    if not missing or reader.default is not None:
        return ()
    detail = "[" + ", ".join(missing) + "]"
    sentence = (
        f"writer enum symbols {detail} are missing from reader enum '{reader.fullname}', which "
        "has no default symbol to read them as"
    )
    return (_Found(MISSING_ENUM_SYMBOLS, ("symbols",), (), detail, sentence, reader, writer),)


def _missing_union_branch(
    reader: Node, writer: Node, tokens: tuple[str, ...], writer_branch: Node
) -> _Found:
    label = type_label(writer_branch)
    what = f"{label} '{writer_branch.fullname}'" if isinstance(writer_branch, Named) else label
    return _Found(
        MISSING_UNION_BRANCH,
        tokens,
        (),
        f"reader union lacking writer type: {label}",
        f"no branch of the reader union can read writer type {what}",
        reader,
        writer,
    )


# --- reporting -----------------------------------------------------------------------------


def _materialize(found: _Found, fragments: dict[int, str]) -> Incompatibility:
    path = "/" + "/".join(t.replace("~", "~0").replace("/", "~1") for t in found.tokens)
    reader_fragment = _fragment(found.reader, fragments)
    writer_fragment = _fragment(found.writer, fragments)
    field = f" '{'.'.join(found.fields)}'" if found.fields else ""
    message = (
        f"{path}{field}: {found.sentence} [{found.rule}]; "
        f"reader: {_shorten(reader_fragment)}; writer: {_shorten(writer_fragment)}"
    )
    return Incompatibility(
        rule=found.rule,
        path=path,
        message=message,
        reader_fragment=reader_fragment,
        writer_fragment=writer_fragment,
        detail=found.detail,
    )


def _fragment(node: Node, cache: dict[int, str]) -> str:
    text = cache.get(id(node))
    if text is None:
        text = compact_json(to_full_json(node))
        cache[id(node)] = text
    return text


def _shorten(text: str) -> str:
    if len(text) <= _FRAGMENT_IN_MESSAGE:
        return text
    return text[: _FRAGMENT_IN_MESSAGE - 1] + "…"
