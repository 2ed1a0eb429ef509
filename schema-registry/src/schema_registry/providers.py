"""The schema types the registry stores and checks: one `SchemaProvider` per `schemaType`.

The registry's rules (ids, versions, modes, levels, references, deletes) are the same for every
type; what differs is how a text is parsed and validated, what its canonical and normalized
forms are, and when a reader can read a writer's data. That is a provider, as in Confluent's
`SchemaProvider` / `ParsedSchema`. `PROVIDERS` holds the ones this registry has; a schema may
only reference schemas of its own type.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, Protocol

from schema_registry import avro
from schema_registry.compatibility import Incompatibility
from schema_registry.json_schema import JsonSchemaProvider
from schema_registry.protobuf._provider import ProtobufProvider


class SchemaProvider(Protocol):
    """What the registry needs of a schema type. A parsed schema is opaque to the registry:
    only its provider reads it."""

    #: Confluent's `schemaType` ("AVRO", "PROTOBUF", "JSON").
    schema_type: str

    def parse(
        self, text: str, references: Sequence[Any], *, new: bool, names: Sequence[str] = ()
    ) -> Any:
        """``text`` parsed, with ``references`` (parsed schemas of this type, in the order the
        request names them, under the reference ``names``: an Avro full name, a JSON `$ref`, a
        .proto import path) available to it; raises `errors.InvalidSchema`. ``new``: a schema
        being registered or checked, validated fully; else a stored one, read leniently so a
        stricter parser never locks a subject (Confluent re-reads stored schemas the same way)."""
        ...

    def owns(self, parsed: Any) -> bool:
        """Whether ``parsed`` is a schema of this type."""
        ...

    def canonical(self, parsed: Any, references: Sequence[Any]) -> str:
        """The text stored and fingerprinted: Confluent's `canonicalString()`."""
        ...

    def normalized(self, parsed: Any, references: Sequence[Any]) -> str:
        """Confluent's `normalize()` text (?normalize=true, or config normalize)."""
        ...

    def formatted(self, parsed: Any, format: str) -> str | None:
        """The text in a `?format=` Confluent names for this type (lower case; Avro:
        `resolved`, referenced types written out; Protobuf: `serialized`, the base64
        FileDescriptorProto, `ignore_extensions`); None for the stored canonical text, which
        is also the answer to a format the type does not know (Confluent's, too)."""
        ...

    def check_pair(self, reader: Any, writer: Any) -> list[Incompatibility]:
        """Every reason ``reader`` cannot read data written with ``writer`` (empty: it can)."""
        ...


class AvroProvider:
    """AVRO: `schema_registry.avro` (Avro Java's parser, canonical form and
    `SchemaCompatibility`, rule for rule)."""

    schema_type = "AVRO"

    def parse(
        self, text: str, references: Sequence[Any], *, new: bool, names: Sequence[str] = ()
    ) -> avro.AvroSchema:
        # Avro finds a referenced type by its full name, whatever the reference is called.
        if new:
            # Confluent runs Avro Java >= 1.11.3 (AVRO-3649), which accepts a union default
            # that matches any branch, not only the first: accept what the original accepts.
            return avro.parse_schema(text, references, strict_union_defaults=False)
        return avro.parse_schema(text, references, validate_defaults=False)

    def owns(self, parsed: Any) -> bool:
        return isinstance(parsed, avro.AvroSchema)

    def canonical(self, parsed: Any, references: Sequence[Any]) -> str:
        return avro.canonical_string(parsed, references)

    def normalized(self, parsed: Any, references: Sequence[Any]) -> str:
        return avro.normalized_string(parsed, references)

    def formatted(self, parsed: Any, format: str) -> str | None:
        return avro.resolved_string(parsed) if format == "resolved" else None

    def check_pair(self, reader: Any, writer: Any) -> list[Incompatibility]:
        return avro.check_pair(reader, writer)


PROVIDERS: Final[dict[str, SchemaProvider]] = {
    "AVRO": AvroProvider(),
    "JSON": JsonSchemaProvider(),
    "PROTOBUF": ProtobufProvider(),
}


def provider_of(parsed: Any) -> SchemaProvider:
    """The provider that parsed ``parsed``."""
    for candidate in PROVIDERS.values():
        if candidate.owns(parsed):
            return candidate
    raise TypeError(f"no schema type owns {type(parsed).__name__}")


def check_pair(reader: Any, writer: Any) -> list[Incompatibility]:
    """The pair check of the readers' type; schemas of two types are never compatible, as
    Confluent answers ("Incompatible because of different schema type")."""
    reader_type = provider_of(reader)
    if not reader_type.owns(writer):
        writer_type = provider_of(writer).schema_type
        message = (
            f"Incompatible because of different schema type: the reader is "
            f"{reader_type.schema_type}, the writer {writer_type}"
        )
        return [
            Incompatibility(
                rule="SCHEMA_TYPE_MISMATCH",
                path="",
                message=message,
                reader_fragment=reader_type.schema_type,
                writer_fragment=writer_type,
            )
        ]
    return reader_type.check_pair(reader, writer)
