"""Parsing PROTOBUF schemas: .proto text or a base64 FileDescriptorProto, compiled by protoc.

A schema is what Confluent's `ProtobufSchema` accepts: .proto source, or (what confluent-kafka's
ProtobufSerializer sends) a base64 serialized FileDescriptorProto, which is rendered to .proto
first so that both take the one path through protoc. protoc runs in process (grpcio-tools'
`_protoc_compiler.get_protos`), over a temporary directory holding the schema and the files its
references provide; `google/protobuf/*.proto` come from the copies grpcio-tools bundles, without
references. protoc's errors become `InvalidSchema` with protoc's own words and positions.

References are the parsed schemas of the request's references with their names, the import
paths they serve (Confluent's way). Without names, each import that is not a bundled well-known
type is paired with one: first by the file name a reference was sent under (a serialized
descriptor carries its name), then the rest in order, which is the order confluent-kafka writes
them in (its `_resolve_dependencies` walks the file's dependencies, skipping builtins).
"""

from __future__ import annotations

import ast
import base64
import binascii
import importlib.resources
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from typing import Any, Final

from google.protobuf import descriptor_pb2
from google.protobuf.message import DecodeError
from grpc_tools import _protoc_compiler  # type: ignore[import-untyped]

from schema_registry.errors import InvalidSchema

#: The name a schema is compiled under when nothing names it (Confluent's DEFAULT_NAME).
DEFAULT_NAME: Final = "default.proto"
#: Imports resolved from grpcio-tools' bundled sources, never from references.
WELL_KNOWN_PREFIX: Final = "google/protobuf/"
#: What confluent-kafka skips when it lists a file's references (its `_is_builtin`).
_CLIENT_BUILTINS: Final = ("confluent/", "google/protobuf/", "google/type/")

_WKT_DIR: Final = str(importlib.resources.files("grpc_tools") / "_proto")
_BASE64: Final = re.compile(r"[A-Za-z0-9+/=\s]+")
_IMPORT: Final = re.compile(r'\bimport\s+(?:(?:public|weak)\s+)?(?:"([^"]*)"|\'([^\']*)\')\s*;')
_COMMENT: Final = re.compile(r"//[^\n]*|/\*.*?\*/", re.DOTALL)
_SERIALIZED: Final = re.compile(rb"AddSerializedFile\((b'(?:[^'\\]|\\.)*')\)")


class ProtobufSchema:
    """A compiled PROTOBUF schema: its FileDescriptorProto (`file`) and those of every file it
    imports, directly or not, by import name (`dependencies`, well-known types included).
    Immutable by contract: nothing may change the protos after parse. `source` is the .proto
    text it compiles from, computed once (the canonical rendering)."""

    __slots__ = ("_source", "dependencies", "file")

    def __init__(
        self,
        file: descriptor_pb2.FileDescriptorProto,
        dependencies: dict[str, descriptor_pb2.FileDescriptorProto],
    ) -> None:
        self.file = file
        self.dependencies = dependencies
        self._source: str | None = None

    @property
    def source(self) -> str:
        """The canonical .proto text of `file` (what the registry stores)."""
        if self._source is None:
            from schema_registry.protobuf._render import render

            self._source = render(self.file, self.dependencies)
        return self._source

    def __repr__(self) -> str:
        return f"ProtobufSchema({self.file.name!r}, package={self.file.package!r})"


def parse_schema(
    text: str,
    references: Sequence[ProtobufSchema],
    *,
    name: str = DEFAULT_NAME,
    names: Sequence[str] = (),
) -> ProtobufSchema:
    """``text`` (.proto source or base64 FileDescriptorProto) compiled with ``references``
    available as its imports, each under its reference name in ``names`` (the import path,
    as Confluent resolves them); without names, paired with the imports as the module says.
    Raises `InvalidSchema` with protoc's message."""
    stripped = text.strip()
    if not stripped:
        raise InvalidSchema("Invalid schema: the schema is empty")
    if _BASE64.fullmatch(stripped):
        descriptor = _decode_descriptor(stripped)
        if descriptor is not None:
            name = descriptor.name or name
            imports = list(descriptor.dependency)
            from schema_registry.protobuf._render import render

            files = _pair(imports, references, names)
            return _compile(name, render(descriptor, files), files)
    imports = [a or b for a, b in _IMPORT.findall(_COMMENT.sub(" ", text))]
    return _compile(name, text, _pair(imports, references, names))


def _decode_descriptor(text: str) -> descriptor_pb2.FileDescriptorProto | None:
    """The FileDescriptorProto a base64 text holds; None when it is not one (then the text
    is read as .proto source, whose error protoc reports)."""
    try:
        raw = base64.b64decode("".join(text.split()), validate=True)
        descriptor = descriptor_pb2.FileDescriptorProto.FromString(raw)
    except (binascii.Error, ValueError, DecodeError):
        return None
    meant = descriptor.message_type or descriptor.enum_type or descriptor.service
    if not (meant or descriptor.package or descriptor.syntax or descriptor.dependency):
        return None  # a word like "abcd" decodes to an empty descriptor: not meant as one
    return descriptor


def _pair(
    imports: Sequence[str], references: Sequence[ProtobufSchema], names: Sequence[str]
) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    """The files the imports resolve to: each reference under its name (or the import it is
    paired with), with the files it imports itself."""
    if names and len(names) == len(references):
        return _files(dict(zip(names, references, strict=True)))
    wanted = [i for i in dict.fromkeys(imports) if not i.startswith(WELL_KNOWN_PREFIX)]
    if len(wanted) > len(references):
        # Fewer references than imports: the client left the builtins out (confluent-kafka
        # does); pair the others, and protoc reports any import left unresolved.
        wanted = [i for i in wanted if not i.startswith(_CLIENT_BUILTINS)]
    pending = list(references)
    paired: dict[str, ProtobufSchema] = {}
    for imported in wanted:  # first by the name a reference was sent under
        for ref in pending:
            if ref.file.name == imported:
                paired[imported] = ref
                pending.remove(ref)
                break
    for imported in wanted:
        if imported not in paired and pending:
            paired[imported] = pending.pop(0)
    return _files(paired)


def _files(paired: dict[str, ProtobufSchema]) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    files: dict[str, descriptor_pb2.FileDescriptorProto] = {}
    for imported, ref in paired.items():
        for dep_name, dep in ref.dependencies.items():
            files.setdefault(dep_name, dep)
        own = descriptor_pb2.FileDescriptorProto()
        own.CopyFrom(ref.file)
        own.name = imported
        files[imported] = own
    return files


def _compile(
    name: str, text: str, files: dict[str, descriptor_pb2.FileDescriptorProto]
) -> ProtobufSchema:
    from schema_registry.protobuf._render import render

    if name.startswith(WELL_KNOWN_PREFIX) or name in files or not name.endswith(".proto"):
        name = DEFAULT_NAME if DEFAULT_NAME not in files else "schema-registry-default.proto"
    root = tempfile.mkdtemp(prefix="sr-proto-")
    try:
        for file_name, file in files.items():
            if file_name.startswith(WELL_KNOWN_PREFIX):
                continue  # protoc reads the bundled copy
            _write(root, file_name, render(file, files))
        _write(root, name, text)
        try:
            generated = _protoc_compiler.get_protos(
                name.encode(), [root.encode(), _WKT_DIR.encode()]
            )
        except _protoc_compiler.ProtocErrors as exc:
            raise InvalidSchema(_protoc_message(exc, name)) from None
    finally:
        shutil.rmtree(root, ignore_errors=True)
    compiled = [_descriptor_of(code) for _, code in generated]
    main = compiled[-1]
    dependencies = {f.name: files.get(f.name, f) for f in compiled[:-1]}
    return ProtobufSchema(main, dependencies)


def _write(root: str, file_name: str, text: str) -> None:
    path = os.path.normpath(os.path.join(root, file_name))
    if not path.startswith(root + os.sep):
        raise InvalidSchema(f"Invalid schema: import path {file_name!r} leaves the source tree")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", errors="surrogatepass") as out:
        out.write(text)


def _protoc_message(exc: Any, name: str) -> str:
    parts = []
    for error in exc.errors():
        where = error.filename.decode(errors="replace")
        line = "" if error.line < 0 else f":{error.line + 1}:{error.column + 1}"
        label = "schema" if where == name else where
        parts.append(f"{label}{line}: {error.message.decode(errors='replace')}")
    return "Invalid schema: " + "; ".join(parts or ["protoc failed"])


def _descriptor_of(code: bytes) -> descriptor_pb2.FileDescriptorProto:
    """The FileDescriptorProto protoc serialized into the Python module it generated (the
    in-process compiler answers with generated code, not a descriptor set)."""
    found = _SERIALIZED.search(code)
    if found is None:  # pragma: no cover - every generated module registers its file
        raise InvalidSchema("Invalid schema: protoc generated no file descriptor")
    return descriptor_pb2.FileDescriptorProto.FromString(ast.literal_eval(found.group(1).decode()))
