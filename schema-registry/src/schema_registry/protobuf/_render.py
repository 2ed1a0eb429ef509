"""FileDescriptorProto -> .proto text: the canonical (stored) and normalized forms.

The shape is Confluent's `ProtobufSchemaUtils.toString`: syntax, package, imports, options, then
messages before enums (message order kept: clients' message indexes count messages), each
message as reserved ranges, options, fields, oneofs, extension ranges, extends, nested types;
two-space indents. Type names are written fully qualified (`.pkg.Msg`), as protoc resolved
them. `normalize` is Confluent's `normalize()`: imports, options, fields (by number), oneofs
(by first number), enum constants, reserved and extension ranges sorted; `syntax = "proto2"`
left out. The text compiles back to the same descriptor, up to that order: `parse` checks it
every time by compiling it.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterable
from typing import Any, Final

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_encoding,
    text_format,
    unknown_fields,
)
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

FDP = descriptor_pb2.FieldDescriptorProto

SCALAR_NAMES: Final[dict[int, str]] = {
    FDP.TYPE_DOUBLE: "double",
    FDP.TYPE_FLOAT: "float",
    FDP.TYPE_INT64: "int64",
    FDP.TYPE_UINT64: "uint64",
    FDP.TYPE_INT32: "int32",
    FDP.TYPE_FIXED64: "fixed64",
    FDP.TYPE_FIXED32: "fixed32",
    FDP.TYPE_BOOL: "bool",
    FDP.TYPE_STRING: "string",
    FDP.TYPE_BYTES: "bytes",
    FDP.TYPE_UINT32: "uint32",
    FDP.TYPE_SFIXED32: "sfixed32",
    FDP.TYPE_SFIXED64: "sfixed64",
    FDP.TYPE_SINT32: "sint32",
    FDP.TYPE_SINT64: "sint64",
}
_MAX_FIELD: Final = 536870911
_MAX_ENUM: Final = 2147483647


def render(
    file: descriptor_pb2.FileDescriptorProto,
    dependencies: dict[str, descriptor_pb2.FileDescriptorProto],
    *,
    normalize: bool = False,
    ignore_extensions: bool = False,
) -> str:
    """``file`` as .proto text; ``dependencies`` (by import name) give custom options their
    names and types."""
    return _Renderer(file, dependencies, normalize, ignore_extensions).file()


def is_map_entry(message: descriptor_pb2.DescriptorProto) -> bool:
    """A map field's synthetic entry message (not a message of its own in .proto)."""
    return message.options.map_entry


def json_name(name: str) -> str:
    """protoc's default json_name (ToJsonName: drop '_', capitalize the letter after it)."""
    out: list[str] = []
    upper = False
    for char in name:
        if char == "_":
            upper = True
        elif upper:
            out.append(char.upper())
            upper = False
        else:
            out.append(char)
    return "".join(out)


class _Renderer:
    def __init__(
        self,
        file: descriptor_pb2.FileDescriptorProto,
        dependencies: dict[str, descriptor_pb2.FileDescriptorProto],
        normalize: bool,
        ignore_extensions: bool,
    ) -> None:
        self.proto = file
        self.dependencies = dependencies
        self.normalize = normalize
        self.ignore_extensions = ignore_extensions
        self.proto3 = file.syntax == "proto3"
        self._pool: descriptor_pool.DescriptorPool | None = None

    # --- file ---------------------------------------------------------------------------

    def file(self) -> str:
        f = self.proto
        out: list[str] = []
        if f.syntax == "editions":
            out.append(f'edition = "{_edition(f.edition)}";\n')
        elif f.syntax == "proto3" or not self.normalize:
            out.append(f'syntax = "{f.syntax or "proto2"}";\n')
        if f.HasField("package"):
            out.append(f"package {f.package};\n")
        public = set(f.public_dependency)
        weak = set(f.weak_dependency)
        plain = [d for i, d in enumerate(f.dependency) if i not in public and i not in weak]
        weaks = [d for i, d in enumerate(f.dependency) if i in weak]
        publics = [d for i, d in enumerate(f.dependency) if i in public]
        if f.dependency:
            out.append("\n")
            for kind, names in (("", plain), ("weak ", weaks), ("public ", publics)):
                for name in sorted(set(names)) if self.normalize else names:
                    out.append(f'import {kind}"{name}";\n')
        options = self.options(f.options, "google.protobuf.FileOptions")
        if options:
            out.append("\n")
            out.extend(f"option {o};\n" for o in options)
        messages = [m for m in f.message_type if not is_map_entry(m)]
        if messages or f.enum_type:
            out.append("\n")
            out.extend(self.message(m) for m in messages)
            out.extend(self.enum(e) for e in f.enum_type)
        if f.extension and not self.ignore_extensions:
            out.append("\n")
            out.extend(self.extends(f.extension))
        if f.service:
            out.append("\n")
            out.extend(self.service(s) for s in f.service)
        return "".join(out)

    # --- messages -----------------------------------------------------------------------

    def message(self, m: descriptor_pb2.DescriptorProto, keyword: str = "message") -> str:
        return f"{keyword} {m.name} {{{self.message_body(m)}}}\n"

    def message_body(self, m: descriptor_pb2.DescriptorProto) -> str:  # noqa: PLR0912 (toString(MessageElement))
        out: list[str] = []
        reserved = self.reserved(m.reserved_range, m.reserved_name, _MAX_FIELD, exclusive=True)
        if reserved:
            out.append("\n")
            out.extend(_indent(r) for r in reserved)
        options = self.options(m.options, "google.protobuf.MessageOptions")
        if options:
            out.append("\n")
            out.extend(_indent(f"option {o};\n") for o in options)
        nested = {f".{n.name}": n for n in m.nested_type}
        real_oneofs = {
            i for i, f in enumerate(m.field) if f.HasField("oneof_index") and not f.proto3_optional
        }
        plain = [f for i, f in enumerate(m.field) if i not in real_oneofs]
        if self.normalize:
            plain.sort(key=lambda f: f.number)
        groups = {f.type_name.rsplit(".", 1)[-1] for f in m.field if f.type == FDP.TYPE_GROUP}
        if plain:
            out.append("\n")
            out.extend(_indent(self.field(f, m, nested)) for f in plain)
        oneofs: list[tuple[str, list[FDP]]] = []
        for index, decl in enumerate(m.oneof_decl):
            members = [
                f for i, f in enumerate(m.field) if i in real_oneofs and f.oneof_index == index
            ]
            if members:
                oneofs.append((decl.name, members))
        if self.normalize:
            oneofs = [(n, sorted(fs, key=lambda f: f.number)) for n, fs in oneofs]
            oneofs.sort(key=lambda o: o[1][0].number)
        if oneofs:
            out.append("\n")
            for name, members in oneofs:
                decl = m.oneof_decl[members[0].oneof_index]
                body = [
                    _indent(f"option {o};\n")
                    for o in self.options(decl.options, "google.protobuf.OneofOptions")
                ]
                body.extend(_indent(self.field(f, m, nested, in_oneof=True)) for f in members)
                out.append(_indent(f"oneof {name} {{\n{''.join(body)}}}\n"))
        if m.extension_range and not self.ignore_extensions:
            out.append("\n")
            ranges = (
                sorted(m.extension_range, key=lambda r: r.start)
                if self.normalize
                else list(m.extension_range)
            )
            for r in ranges:
                end = "max" if r.end - 1 >= _MAX_FIELD else str(r.end - 1)
                span = str(r.start) if r.end - 1 == r.start else f"{r.start} to {end}"
                opts = self.options(r.options, "google.protobuf.ExtensionRangeOptions")
                suffix = f" [{', '.join(opts)}]" if opts else ""
                out.append(_indent(f"extensions {span}{suffix};\n"))
        if m.extension and not self.ignore_extensions:
            out.append("\n")
            out.extend(_indent(e) for e in self.extends(m.extension))
        types = [n for n in m.nested_type if not is_map_entry(n) and n.name not in groups]
        if types or m.enum_type:
            out.append("\n")
            out.extend(_indent(self.message(n)) for n in types)
            out.extend(_indent(self.enum(e)) for e in m.enum_type)
        return "".join(out)

    def field(
        self,
        f: FDP,
        parent: descriptor_pb2.DescriptorProto | None,
        nested: dict[str, descriptor_pb2.DescriptorProto],
        *,
        in_oneof: bool = False,
    ) -> str:
        entry = self.map_entry(f, parent)
        if entry is not None:
            key, value = entry.field[0], entry.field[1]
            head = f"map<{self.type_of(key)}, {self.type_of(value)}> {f.name} = {f.number}"
        elif f.type == FDP.TYPE_GROUP:
            group = self.group_type(f, parent)
            label = self.label(f, in_oneof)
            body = self.message_body(group) if group is not None else ""
            return f"{label}group {f.type_name.rsplit('.', 1)[-1]} = {f.number} {{{body}}}\n"
        else:
            head = f"{self.label(f, in_oneof)}{self.type_of(f)} {f.name} = {f.number}"
        options = self.field_options(f)
        suffix = f" [{', '.join(options)}]" if options else ""
        return f"{head}{suffix};\n"

    def label(self, f: FDP, in_oneof: bool) -> str:
        if in_oneof:
            return ""
        if f.label == FDP.LABEL_REPEATED:
            return "repeated "
        if f.label == FDP.LABEL_REQUIRED:
            return "required "
        if self.proto.syntax == "editions":
            return ""
        if self.proto3:
            return "optional " if f.proto3_optional else ""
        return "optional "

    def map_entry(
        self, f: FDP, parent: descriptor_pb2.DescriptorProto | None
    ) -> descriptor_pb2.DescriptorProto | None:
        if parent is None or f.type != FDP.TYPE_MESSAGE or f.label != FDP.LABEL_REPEATED:
            return None
        short = f.type_name.rsplit(".", 1)[-1]
        for n in parent.nested_type:
            if n.name == short and is_map_entry(n) and f.type_name.endswith(f".{n.name}"):
                return n
        return None

    def group_type(
        self, f: FDP, parent: descriptor_pb2.DescriptorProto | None
    ) -> descriptor_pb2.DescriptorProto | None:
        short = f.type_name.rsplit(".", 1)[-1]
        for n in parent.nested_type if parent is not None else self.proto.message_type:
            if n.name == short:
                return n
        return None

    @staticmethod
    def type_of(f: FDP) -> str:
        if f.type in (FDP.TYPE_MESSAGE, FDP.TYPE_ENUM, FDP.TYPE_GROUP):
            return f.type_name
        return SCALAR_NAMES[f.type]

    def field_options(self, f: FDP) -> list[str]:
        out: list[str] = []
        if f.HasField("default_value"):
            out.append(f"default = {self.default(f)}")
        if f.HasField("json_name") and f.json_name != json_name(f.name):
            out.append(f"json_name = {_quote(f.json_name)}")
        out.extend(self.options(f.options, "google.protobuf.FieldOptions"))
        return sorted(out) if self.normalize else out

    @staticmethod
    def default(f: FDP) -> str:
        value = f.default_value
        if f.type == FDP.TYPE_STRING:
            return _quote(value)
        if f.type == FDP.TYPE_BYTES:
            return f'"{value}"'  # protoc keeps a bytes default C-escaped already
        return value

    def extends(self, fields: Iterable[FDP]) -> list[str]:
        by_extendee: dict[str, list[FDP]] = {}
        for f in fields:
            by_extendee.setdefault(f.extendee, []).append(f)
        out = []
        for extendee, members in by_extendee.items():
            body = "".join(_indent(self.field(f, None, {})) for f in members)
            out.append(f"extend {extendee} {{\n{body}}}\n")
        return out

    # --- enums and services -------------------------------------------------------------

    def enum(self, e: descriptor_pb2.EnumDescriptorProto) -> str:
        out = [f"enum {e.name} {{"]
        reserved = self.reserved(e.reserved_range, e.reserved_name, _MAX_ENUM, exclusive=False)
        if reserved:
            out.append("\n")
            out.extend(_indent(r) for r in reserved)
        options = self.options(e.options, "google.protobuf.EnumOptions")
        if not reserved and (options or e.value):
            out.append("\n")
        out.extend(_indent(f"option {o};\n") for o in options)
        values = list(e.value)
        if self.normalize:
            values.sort(key=lambda v: (v.number, v.name))
        for v in values:
            opts = self.options(v.options, "google.protobuf.EnumValueOptions")
            suffix = f" [{', '.join(opts)}]" if opts else ""
            out.append(_indent(f"{v.name} = {v.number}{suffix};\n"))
        out.append("}\n")
        return "".join(out)

    def service(self, s: descriptor_pb2.ServiceDescriptorProto) -> str:
        out = [f"service {s.name} {{"]
        options = self.options(s.options, "google.protobuf.ServiceOptions")
        if options:
            out.append("\n")
            out.extend(_indent(f"option {o};\n") for o in options)
        if s.method:
            out.append("\n")
        for m in s.method:
            request = f"{'stream ' if m.client_streaming else ''}{m.input_type}"
            response = f"{'stream ' if m.server_streaming else ''}{m.output_type}"
            line = f"rpc {m.name} ({request}) returns ({response})"
            opts = self.options(m.options, "google.protobuf.MethodOptions")
            if opts:
                line += " {\n" + "".join(_indent(f"option {o};\n") for o in opts) + "}"
            out.append(_indent(line + ";\n"))
        out.append("}\n")
        return "".join(out)

    def reserved(
        self, ranges: Iterable[Any], names: Iterable[str], maximum: int, *, exclusive: bool
    ) -> list[str]:
        spans: list[tuple[int, str]] = []
        for r in ranges:
            end = r.end - 1 if exclusive else r.end
            text = (
                str(r.start)
                if end == r.start
                else f"{r.start} to {'max' if end >= maximum else end}"
            )
            spans.append((r.start, text))
        quoted = [_quote(n) for n in names]
        if self.normalize:
            spans.sort()
            return [f"reserved {t};\n" for _, t in spans] + [
                f"reserved {q};\n" for q in sorted(quoted)
            ]
        out = []
        if spans:
            out.append(f"reserved {', '.join(t for _, t in spans)};\n")
        if quoted:
            out.append(f"reserved {', '.join(quoted)};\n")
        return out

    # --- options ------------------------------------------------------------------------

    def options(self, options: Message, full_name: str) -> list[str]:
        """``name = value`` for every option set, custom ones as ``(full.name)``; custom
        options are read through a pool of the schema's files, which knows their names."""
        if not options.ByteSize():
            return []
        message = options
        if not _known_only(options):
            message = self.pool_message(full_name, options.SerializeToString())
        out: list[str] = []
        for fd, value in message.ListFields():
            if fd.name == "map_entry":
                continue
            name = f"({fd.full_name})" if fd.is_extension else fd.name
            for item in value if fd.is_repeated else [value]:
                out.append(f"{name} = {_literal(fd, item)}")
        return sorted(out) if self.normalize else out

    def pool_message(self, full_name: str, raw: bytes) -> Message:
        if self._pool is None:
            pool = descriptor_pool.DescriptorPool()
            pool.Add(_descriptor_proto())
            for dep in self.dependencies.values():
                if dep.name != "google/protobuf/descriptor.proto":
                    _try_add(pool, dep)
            _try_add(pool, self.proto)
            self._pool = pool
        cls = message_factory.GetMessageClass(self._pool.FindMessageTypeByName(full_name))
        return cls.FromString(raw)


def _try_add(
    pool: descriptor_pool.DescriptorPool, file: descriptor_pb2.FileDescriptorProto
) -> None:
    # A file already there under another name: its extensions are known anyway.
    with contextlib.suppress(TypeError, ValueError):
        pool.Add(file)


@functools.cache
def _descriptor_proto() -> descriptor_pb2.FileDescriptorProto:
    """descriptor.proto itself (one, read-only), which every custom option extends."""
    proto = descriptor_pb2.FileDescriptorProto()
    descriptor_pb2.DESCRIPTOR.CopyToProto(proto)
    return proto


def _known_only(options: Message) -> bool:
    """Whether every option set is known to ``options``' own pool (custom options from the
    schema's files are unknown fields there, unless this process loaded those files)."""
    return len(unknown_fields.UnknownFieldSet(options)) == 0


def _literal(fd: FieldDescriptor, value: Any) -> str:
    if fd.message_type is not None:
        return "{ " + text_format.MessageToString(value, as_one_line=True) + " }"
    if fd.enum_type is not None:
        found = fd.enum_type.values_by_number.get(value)
        return found.name if found is not None else str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, bytes):
        return '"' + text_encoding.CEscape(value, as_utf8=False) + '"'
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    return str(value)


def _quote(text: str) -> str:
    return '"' + text_encoding.CEscape(text, as_utf8=True) + '"'  # type: ignore[arg-type]


def _indent(text: str) -> str:
    return "".join(f"  {line}" if line.strip() else line for line in text.splitlines(True))


def _edition(value: int) -> str:
    name: str = descriptor_pb2.Edition.Name(value)  # type: ignore[arg-type]
    return name.removeprefix("EDITION_")
