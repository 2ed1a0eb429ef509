"""The registry's PROTOBUF `SchemaProvider` (see `schema_registry.providers`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from schema_registry.compatibility import Incompatibility
from schema_registry.errors import InvalidSchema
from schema_registry.protobuf import (
    ProtobufSchema,
    canonical_string,
    check_pair,
    ignore_extensions_string,
    normalized_string,
    parse_schema,
    serialized_string,
)


class ProtobufProvider:
    """PROTOBUF: `schema_registry.protobuf` (protoc compiles, Confluent's diff rules check).
    Stateless and thread safe; nothing is cached beyond each parsed schema's own text."""

    schema_type = "PROTOBUF"

    def parse(
        self, text: str, references: Sequence[Any], *, new: bool, names: Sequence[str] = ()
    ) -> ProtobufSchema:
        refs = [r for r in references if isinstance(r, ProtobufSchema)]
        if len(refs) != len(references):  # the registry checks types first; never trust it
            raise InvalidSchema("Invalid schema: a PROTOBUF schema can only import PROTOBUF ones")
        return parse_schema(text, refs, names=names)

    def owns(self, parsed: Any) -> bool:
        return isinstance(parsed, ProtobufSchema)

    def canonical(self, parsed: Any, references: Sequence[Any]) -> str:
        return canonical_string(parsed)

    def normalized(self, parsed: Any, references: Sequence[Any]) -> str:
        return normalized_string(parsed)

    def formatted(self, parsed: Any, format: str) -> str | None:
        if format == "serialized":
            return serialized_string(parsed)
        if format == "ignore_extensions":
            return ignore_extensions_string(parsed)
        return None

    def check_pair(self, reader: Any, writer: Any) -> list[Incompatibility]:
        return check_pair(reader, writer)
