"""Confluent's protobuf compatibility rules (`protobuf/diff/*.java`) over FileDescriptorProtos.

`compare(original, update)` lists every `Difference` between two schemas, with Confluent's
`Difference.Type` names and paths (`#/Message/3`, `#/Message/oneof/5`, `#/Message/Nested/2`),
walking as `SchemaDiff`, `MessageSchemaDiff`, `FieldSchemaDiff` and `EnumSchemaDiff` do: messages
and enums by name, fields by number (oneof members alike), enum constants by number. A change is
incompatible unless its type is in `COMPATIBLE_CHANGES`. protoc has already resolved every type
name, so Confluent's name resolution (its `Context.resolve`) has nothing left to do here; map
fields are the synthetic map-entry messages, which (like Confluent's parsed text) are no messages
of their own. A message type from another file is compared with its counterpart unless both are
local or both files are identical (Confluent: unless both are local or the same subject-version).
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

from google.protobuf import descriptor_pb2

from schema_registry.protobuf._render import is_map_entry
from schema_registry.protobuf._schema import ProtobufSchema

FDP = descriptor_pb2.FieldDescriptorProto
DP = descriptor_pb2.DescriptorProto


class DifferenceType(Enum):
    """Confluent's `Difference.Type`."""

    PACKAGE_CHANGED = "PACKAGE_CHANGED"
    MESSAGE_ADDED = "MESSAGE_ADDED"
    MESSAGE_REMOVED = "MESSAGE_REMOVED"
    MESSAGE_MOVED = "MESSAGE_MOVED"
    ENUM_ADDED = "ENUM_ADDED"
    ENUM_REMOVED = "ENUM_REMOVED"
    ENUM_CONST_ADDED = "ENUM_CONST_ADDED"
    ENUM_CONST_CHANGED = "ENUM_CONST_CHANGED"
    ENUM_CONST_REMOVED = "ENUM_CONST_REMOVED"
    FIELD_ADDED = "FIELD_ADDED"
    FIELD_REMOVED = "FIELD_REMOVED"
    FIELD_NAME_CHANGED = "FIELD_NAME_CHANGED"
    FIELD_KIND_CHANGED = "FIELD_KIND_CHANGED"
    FIELD_SCALAR_KIND_CHANGED = "FIELD_SCALAR_KIND_CHANGED"
    FIELD_NAMED_TYPE_CHANGED = "FIELD_NAMED_TYPE_CHANGED"
    FIELD_NUMERIC_LABEL_CHANGED = "FIELD_NUMERIC_LABEL_CHANGED"
    FIELD_STRING_OR_BYTES_LABEL_CHANGED = "FIELD_STRING_OR_BYTES_LABEL_CHANGED"
    REQUIRED_FIELD_ADDED = "REQUIRED_FIELD_ADDED"
    REQUIRED_FIELD_REMOVED = "REQUIRED_FIELD_REMOVED"
    ONEOF_ADDED = "ONEOF_ADDED"
    ONEOF_REMOVED = "ONEOF_REMOVED"
    ONEOF_FIELD_ADDED = "ONEOF_FIELD_ADDED"
    ONEOF_FIELD_REMOVED = "ONEOF_FIELD_REMOVED"
    ONEOF_FIELD_MOVED_TO_TOP_LEVEL = "ONEOF_FIELD_MOVED_TO_TOP_LEVEL"
    MULTIPLE_FIELDS_MOVED_TO_ONEOF = "MULTIPLE_FIELDS_MOVED_TO_ONEOF"
    FIELD_MOVED_TO_EXISTING_ONEOF = "FIELD_MOVED_TO_EXISTING_ONEOF"


T = DifferenceType

#: SchemaDiff.COMPATIBLE_CHANGES.
COMPATIBLE_CHANGES: Final = frozenset(
    {
        T.MESSAGE_ADDED,
        T.MESSAGE_MOVED,
        T.ENUM_ADDED,
        T.ENUM_REMOVED,
        T.ENUM_CONST_ADDED,
        T.ENUM_CONST_CHANGED,
        T.ENUM_CONST_REMOVED,
        T.FIELD_ADDED,
        T.FIELD_REMOVED,
        T.FIELD_NAME_CHANGED,
        T.FIELD_STRING_OR_BYTES_LABEL_CHANGED,
        T.ONEOF_ADDED,
        T.ONEOF_REMOVED,
        T.ONEOF_FIELD_ADDED,
        T.ONEOF_FIELD_MOVED_TO_TOP_LEVEL,
    }
)

#: Difference.error(): what Confluent says of each incompatible type ({u}: the update
#: schema, {o}: the original, in Confluent's order of its two %s).
DESCRIPTIONS: Final[dict[DifferenceType, str]] = {
    T.PACKAGE_CHANGED: (
        "The package at '{p}' in the {u} schema does not match the package in the {o} schema"
    ),
    T.MESSAGE_REMOVED: ("The {u} schema is missing a MESSAGE type at path '{p}' in the {o} schema"),
    T.FIELD_KIND_CHANGED: (
        "The type of a field at path '{p}' in the {u} schema does not match the {o} schema"
    ),
    T.FIELD_SCALAR_KIND_CHANGED: (
        "The kind of a SCALAR field at path '{p}' in the {u} schema does not "
        "match its kind in the {o} schema"
    ),
    T.FIELD_NAMED_TYPE_CHANGED: (
        "The type of a MESSAGE field at path '{p}' in the {u} schema does not "
        "match its type in the {o} schema"
    ),
    T.FIELD_NUMERIC_LABEL_CHANGED: (
        "The label for a NUMERIC field at path '{p}' in the {u} schema does not "
        "match its label in the {o} schema"
    ),
    T.REQUIRED_FIELD_ADDED: (
        "A required field at path '{p}' in the {u} schema is missing in the {o} schema"
    ),
    T.REQUIRED_FIELD_REMOVED: (
        "The {u} schema is missing a required field at path: '{p}' in the {o} schema"
    ),
    T.ONEOF_FIELD_REMOVED: (
        "The {u} schema is missing a oneof field at path '{p}' in the {o} schema"
    ),
    T.ONEOF_FIELD_MOVED_TO_TOP_LEVEL: (
        "The oneof field at path '{p}' in the {o} schema was moved out of its "
        "oneof to a top-level field in the {u} schema"
    ),
    T.MULTIPLE_FIELDS_MOVED_TO_ONEOF: (
        "Multiple fields in the oneof at path '{p}' in the {u} schema are outside "
        "a oneof in the {o} schema"
    ),
    T.FIELD_MOVED_TO_EXISTING_ONEOF: (
        "A field in the oneof at path '{p}' in the {u} schema is outside an "
        "existing oneof in the {o} schema"
    ),
}


@dataclass(frozen=True, slots=True)
class Difference:
    """One difference: Confluent's (type, fullPath), with the two sides' fragments."""

    type: DifferenceType
    path: str
    original: str = ""
    update: str = ""

    @property
    def compatible(self) -> bool:
        """Whether Confluent lets this change pass (SchemaDiff.COMPATIBLE_CHANGES)."""
        return self.type in COMPATIBLE_CHANGES

    def __str__(self) -> str:
        return f"{self.type.value} {self.path}"


# Scalar groups a field may move within (FieldSchemaDiff.scalarKind): the wire types agree.
_SCALAR_KIND: Final[dict[int, str]] = {
    FDP.TYPE_INT32: "GENERAL_NUMBER",
    FDP.TYPE_INT64: "GENERAL_NUMBER",
    FDP.TYPE_UINT32: "GENERAL_NUMBER",
    FDP.TYPE_UINT64: "GENERAL_NUMBER",
    FDP.TYPE_BOOL: "GENERAL_NUMBER",
    FDP.TYPE_ENUM: "GENERAL_NUMBER",
    FDP.TYPE_SINT32: "SIGNED_NUMBER",
    FDP.TYPE_SINT64: "SIGNED_NUMBER",
    FDP.TYPE_STRING: "STRING_OR_BYTES",
    FDP.TYPE_BYTES: "STRING_OR_BYTES",
    FDP.TYPE_FIXED32: "FIXED32",
    FDP.TYPE_SFIXED32: "FIXED32",
    FDP.TYPE_FIXED64: "FIXED64",
    FDP.TYPE_SFIXED64: "FIXED64",
    FDP.TYPE_FLOAT: "FLOAT",
    FDP.TYPE_DOUBLE: "DOUBLE",
}


@dataclass(frozen=True, slots=True)
class _Type:
    """A message or enum of one side, by full name (Context.TypeElementInfo)."""

    proto: DP | descriptor_pb2.EnumDescriptorProto
    package: str
    file: str  # "" for the schema's own file
    file_bytes: bytes
    syntax: str


class _Side:
    def __init__(self, schema: ProtobufSchema) -> None:
        self.types: dict[str, _Type] = {}
        for name, dep in schema.dependencies.items():
            self._collect(dep, name)
        self._collect(schema.file, "")

    def _collect(self, file: descriptor_pb2.FileDescriptorProto, name: str) -> None:
        raw = file.SerializeToString(deterministic=True) if name else b""
        prefix = f".{file.package}" if file.package else ""

        def walk(
            messages: list[DP], enums: list[descriptor_pb2.EnumDescriptorProto], scope: str
        ) -> None:
            for e in enums:
                self.types[f"{scope}.{e.name}"] = _Type(e, file.package, name, raw, file.syntax)
            for m in messages:
                full = f"{scope}.{m.name}"
                self.types[full] = _Type(m, file.package, name, raw, file.syntax)
                walk(list(m.nested_type), list(m.enum_type), full)

        walk(list(file.message_type), list(file.enum_type), prefix)


@dataclass
class _Context:
    original: _Side
    update: _Side
    original_syntax: str
    update_syntax: str
    path: list[str] = field(default_factory=list)
    open: set[int] = field(default_factory=set)
    found: list[Difference] = field(default_factory=list)

    def add(self, kind: DifferenceType, *extra: str, original: str = "", update: str = "") -> None:
        path = "#/" + "/".join([*self.path, *extra])
        self.found.append(Difference(kind, path, original, update))

    def sub(self, local_name: str) -> _Context:
        return _Context(
            self.original,
            self.update,
            self.original_syntax,
            self.update_syntax,
            local_name.split("."),
            set(self.open),
        )


def compare(original: ProtobufSchema, update: ProtobufSchema) -> list[Difference]:
    """Every difference from ``original`` to ``update`` (SchemaDiff.compare)."""
    ctx = _Context(_Side(original), _Side(update), original.file.syntax, update.file.syntax)
    if original.file.package != update.file.package:
        ctx.add(T.PACKAGE_CHANGED)
    _compare_types(
        ctx,
        list(original.file.message_type),
        list(original.file.enum_type),
        list(update.file.message_type),
        list(update.file.enum_type),
    )
    return ctx.found


def _messages(messages: list[DP], groups: AbstractSet[str]) -> dict[str, tuple[int, DP]]:
    kept = [m for m in messages if not is_map_entry(m) and m.name not in groups]
    return {m.name: (i, m) for i, m in enumerate(kept)}


def _compare_types(
    ctx: _Context,
    original_messages: list[DP],
    original_enums: list[descriptor_pb2.EnumDescriptorProto],
    update_messages: list[DP],
    update_enums: list[descriptor_pb2.EnumDescriptorProto],
    *,
    original_groups: AbstractSet[str] = frozenset(),
    update_groups: AbstractSet[str] = frozenset(),
) -> None:
    """SchemaDiff.compareTypeElements."""
    before = _messages(original_messages, original_groups)
    after = _messages(update_messages, update_groups)
    for name in [*before, *(n for n in after if n not in before)]:
        ctx.path.append(name)
        if name not in after:
            ctx.add(T.MESSAGE_REMOVED, original=f"message {name}")
        elif name not in before:
            ctx.add(T.MESSAGE_ADDED, update=f"message {name}")
        else:
            _compare_message(ctx, before[name][1], after[name][1])
            if before[name][0] != after[name][0]:
                # Moving a message is compatible: a message index is read with its writer's schema.
                ctx.add(T.MESSAGE_MOVED)
        ctx.path.pop()
    enums_before = {e.name: e for e in original_enums}
    enums_after = {e.name: e for e in update_enums}
    for name in [*enums_before, *(n for n in enums_after if n not in enums_before)]:
        ctx.path.append(name)
        if name not in enums_after:
            ctx.add(T.ENUM_REMOVED)
        elif name not in enums_before:
            ctx.add(T.ENUM_ADDED)
        else:
            _compare_enum(ctx, enums_before[name], enums_after[name])
        ctx.path.pop()


def _compare_enum(
    ctx: _Context,
    original: descriptor_pb2.EnumDescriptorProto,
    update: descriptor_pb2.EnumDescriptorProto,
) -> None:
    """EnumSchemaDiff.compare (by number; with aliases, the last name for a number)."""
    before = {v.number: v.name for v in original.value}
    after = {v.number: v.name for v in update.value}
    for number in sorted(before.keys() | after.keys()):
        if number not in after:
            ctx.add(T.ENUM_CONST_REMOVED, str(number))
        elif number not in before:
            ctx.add(T.ENUM_CONST_ADDED, str(number))
        elif before[number] != after[number]:
            ctx.add(
                T.ENUM_CONST_CHANGED, str(number), original=before[number], update=after[number]
            )


def _fields(message: DP) -> tuple[dict[int, FDP], dict[int, str], dict[str, list[FDP]]]:
    by_number: dict[int, FDP] = {}
    oneof_of: dict[int, str] = {}
    oneofs: dict[str, list[FDP]] = {}
    for f in message.field:
        if f.type == FDP.TYPE_GROUP:
            continue  # Confluent's walk reads fields and oneofs; groups are neither
        by_number[f.number] = f
        if f.HasField("oneof_index") and not f.proto3_optional:
            name = message.oneof_decl[f.oneof_index].name
            oneof_of[f.number] = name
            oneofs.setdefault(name, []).append(f)
    return by_number, oneof_of, oneofs


def _compare_message(ctx: _Context, original: DP, update: DP) -> None:  # noqa: PLR0912 (MessageSchemaDiff.compare)
    """MessageSchemaDiff.compare."""
    if id(original) in ctx.open:
        return
    ctx.open.add(id(original))
    try:
        before, before_oneof, before_oneofs = _fields(original)
        after, after_oneof, after_oneofs = _fields(update)
        deleted = {
            name
            for name, members in before_oneofs.items()
            if name not in after_oneofs and not any(f.number in after for f in members)
        }
        for name, members in after_oneofs.items():
            origins: set[str] = set()
            moved_in = 0
            for f in members:
                if f.number in before_oneof:
                    origins.add("oneof:" + before_oneof[f.number])
                elif f.number in before:
                    origins.add(f"field:{f.number}")
                    moved_in += 1
            if len(origins) > 1:
                kind = (
                    T.MULTIPLE_FIELDS_MOVED_TO_ONEOF
                    if moved_in > 1
                    else T.FIELD_MOVED_TO_EXISTING_ONEOF
                )
                ctx.add(kind, name)
        for name in sorted(before_oneofs.keys() | after_oneofs.keys()):
            if name not in after_oneofs:
                ctx.add(T.ONEOF_REMOVED, name)
            elif name not in before_oneofs:
                ctx.add(T.ONEOF_ADDED, name)
        for number in sorted(before.keys() | after.keys()):
            old, new = before.get(number), after.get(number)
            old_oneof, new_oneof = before_oneof.get(number), after_oneof.get(number)
            if new is None:
                assert old is not None
                if old_oneof is not None:
                    if old_oneof not in deleted:
                        ctx.add(T.ONEOF_FIELD_REMOVED, old_oneof, str(number), original=old.name)
                else:
                    kind = (
                        T.REQUIRED_FIELD_REMOVED
                        if old.label == FDP.LABEL_REQUIRED
                        else T.FIELD_REMOVED
                    )
                    ctx.add(kind, str(number), original=old.name)
            elif old is None:
                if new_oneof is not None:
                    ctx.add(T.ONEOF_FIELD_ADDED, new_oneof, str(number), update=new.name)
                else:
                    kind = (
                        T.REQUIRED_FIELD_ADDED if new.label == FDP.LABEL_REQUIRED else T.FIELD_ADDED
                    )
                    ctx.add(kind, str(number), update=new.name)
            else:
                if old_oneof is not None and new_oneof is None:
                    ctx.add(T.ONEOF_FIELD_MOVED_TO_TOP_LEVEL, str(number))
                where = [new_oneof, str(number)] if new_oneof is not None else [str(number)]
                ctx.path.extend(where)
                _compare_field(
                    ctx,
                    old,
                    new,
                    old_in_oneof=old_oneof is not None,
                    new_in_oneof=new_oneof is not None,
                )
                del ctx.path[-len(where) :]
        _compare_types(
            ctx,
            list(original.nested_type),
            list(original.enum_type),
            list(update.nested_type),
            list(update.enum_type),
            original_groups=_groups(original),
            update_groups=_groups(update),
        )
    finally:
        ctx.open.discard(id(original))


def _label(f: FDP, syntax: str, in_oneof: bool) -> str | None:
    """The label as Confluent's parsed text has it: none for oneof members and proto3's
    implicit presence."""
    if in_oneof:
        return None
    if f.label == FDP.LABEL_REPEATED:
        return "REPEATED"
    if f.label == FDP.LABEL_REQUIRED:
        return "REQUIRED"
    if syntax == "proto3" and not f.proto3_optional:
        return None
    return "OPTIONAL"


def _groups(message: DP) -> set[str]:
    return {f.type_name.rsplit(".", 1)[-1] for f in message.field if f.type == FDP.TYPE_GROUP}


def _compare_field(
    ctx: _Context, old: FDP, new: FDP, *, old_in_oneof: bool, new_in_oneof: bool
) -> None:
    """FieldSchemaDiff.compare."""
    if old.name != new.name:
        ctx.add(T.FIELD_NAME_CHANGED, original=old.name, update=new.name)
    old_map = _map_entry(ctx.original, old)
    new_map = _map_entry(ctx.update, new)
    old_label = None if old_map else _label(old, ctx.original_syntax, old_in_oneof)
    new_label = None if new_map else _label(new, ctx.update_syntax, new_in_oneof)
    _compare_types_of(
        ctx, old, new, old_label=old_label, new_label=new_label, old_map=old_map, new_map=new_map
    )


def _map_entry(side: _Side, f: FDP) -> DP | None:
    if f.type != FDP.TYPE_MESSAGE or f.label != FDP.LABEL_REPEATED:
        return None
    found = side.types.get(f.type_name)
    if found is not None and isinstance(found.proto, DP) and is_map_entry(found.proto):
        return found.proto
    return None


def _kind(side: _Side, f: FDP, entry: DP | None) -> str:
    if entry is not None:
        return "MAP"
    if f.type in (FDP.TYPE_MESSAGE, FDP.TYPE_GROUP):
        return "MESSAGE"
    return "SCALAR"


def _describe(f: FDP) -> str:
    from schema_registry.protobuf._render import SCALAR_NAMES

    return f"{f.type_name or SCALAR_NAMES.get(f.type, '?')} {f.name} = {f.number}"


def _compare_types_of(
    ctx: _Context,
    old: FDP,
    new: FDP,
    *,
    old_label: str | None,
    new_label: str | None,
    old_map: DP | None,
    new_map: DP | None,
) -> None:
    """FieldSchemaDiff.compareLabelsAndTypes."""
    old_kind, new_kind = _kind(ctx.original, old, old_map), _kind(ctx.update, new, new_map)
    if old_kind != new_kind:
        ctx.add(T.FIELD_KIND_CHANGED, original=_describe(old), update=_describe(new))
    elif old_kind == "SCALAR":
        old_scalar, new_scalar = _SCALAR_KIND[old.type], _SCALAR_KIND[new.type]
        if old_scalar != new_scalar:
            ctx.add(T.FIELD_SCALAR_KIND_CHANGED, original=_describe(old), update=_describe(new))
        elif old_label is not None and new_label is not None and old_label != new_label:
            kind = (
                T.FIELD_STRING_OR_BYTES_LABEL_CHANGED
                if old_scalar == "STRING_OR_BYTES"
                else T.FIELD_NUMERIC_LABEL_CHANGED
            )
            ctx.add(
                kind,
                original=f"{old_label.lower()} {_describe(old)}",
                update=f"{new_label.lower()} {_describe(new)}",
            )
    elif old_kind == "MESSAGE":
        _compare_message_types(ctx, old, new)
    elif old_map is not None and new_map is not None:
        for o, n in zip(old_map.field[:2], new_map.field[:2], strict=True):
            _compare_types_of(
                ctx,
                o,
                n,
                old_label=None,
                new_label=None,
                old_map=_map_entry(ctx.original, o),
                new_map=_map_entry(ctx.update, n),
            )


def _compare_message_types(ctx: _Context, old: FDP, new: FDP) -> None:
    """FieldSchemaDiff.compareMessageTypes."""
    old_type, new_type = ctx.original.types.get(old.type_name), ctx.update.types.get(new.type_name)
    if old_type is None or new_type is None:
        if old.type_name != new.type_name:
            ctx.add(T.FIELD_NAMED_TYPE_CHANGED, original=_describe(old), update=_describe(new))
        return
    old_local = _local(old.type_name, old_type.package)
    new_local = _local(new.type_name, new_type.package)
    if old_local != new_local:
        ctx.add(T.FIELD_NAMED_TYPE_CHANGED, original=_describe(old), update=_describe(new))
        return
    if not old_type.file and not new_type.file:
        return  # both local: their own walk compares them
    if old_type.file and new_type.file and old_type.file_bytes == new_type.file_bytes:
        return  # the same file on both sides (Confluent: the same subject and version)
    sub = ctx.sub(old_local)
    sub.original_syntax, sub.update_syntax = old_type.syntax, new_type.syntax
    assert isinstance(old_type.proto, DP) and isinstance(new_type.proto, DP)
    _compare_message(sub, old_type.proto, new_type.proto)
    ctx.found.extend(sub.found)
    if any(not d.compatible for d in sub.found):
        ctx.add(T.FIELD_NAMED_TYPE_CHANGED, original=_describe(old), update=_describe(new))


def _local(type_name: str, package: str) -> str:
    name = type_name.lstrip(".")
    return name[len(package) + 1 :] if package and name.startswith(package + ".") else name
