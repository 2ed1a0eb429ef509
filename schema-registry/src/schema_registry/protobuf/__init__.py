"""Protobuf support for the schema registry: PROTOBUF subjects, as Confluent's ProtobufSchema.

`parse_schema` compiles a schema (.proto text or base64 FileDescriptorProto) with protoc, its
references serving as its imports (raises `InvalidSchema`, answered 42201); `canonical_string`
and `normalized_string` render it back to .proto (the stored text and Confluent's normalize());
`serialized_string` is the base64 FileDescriptorProto confluent-kafka's deserializer asks for
(`?format=serialized`); `compare` lists Confluent's `Difference`s between two schemas and
`check_pair` turns the incompatible ones into `Incompatibility` reasons.
"""

from __future__ import annotations

import base64

from schema_registry.compatibility import Incompatibility
from schema_registry.errors import InvalidSchema
from schema_registry.protobuf._diff import (
    COMPATIBLE_CHANGES,
    DESCRIPTIONS,
    Difference,
    DifferenceType,
    compare,
)
from schema_registry.protobuf._render import render
from schema_registry.protobuf._schema import DEFAULT_NAME, ProtobufSchema, parse_schema

__all__ = [
    "COMPATIBLE_CHANGES",
    "DEFAULT_NAME",
    "Difference",
    "DifferenceType",
    "InvalidSchema",
    "ProtobufSchema",
    "canonical_string",
    "check_pair",
    "compare",
    "ignore_extensions_string",
    "normalized_string",
    "parse_schema",
    "serialized_string",
]


def canonical_string(schema: ProtobufSchema) -> str:
    """The .proto text stored for ``schema`` (Confluent's canonicalString())."""
    return schema.source


def normalized_string(schema: ProtobufSchema) -> str:
    """Confluent's normalize(): imports, options, fields, oneofs, constants, ranges sorted."""
    return render(schema.file, schema.dependencies, normalize=True)


def ignore_extensions_string(schema: ProtobufSchema) -> str:
    """``?format=ignore_extensions``: the text without extension ranges and extends."""
    return render(schema.file, schema.dependencies, ignore_extensions=True)


def serialized_string(schema: ProtobufSchema) -> str:
    """``?format=serialized``: the base64 FileDescriptorProto (what confluent-kafka's
    ProtobufDeserializer builds its descriptor pool from)."""
    return base64.standard_b64encode(schema.file.SerializeToString(deterministic=True)).decode()


def check_pair(reader: ProtobufSchema, writer: ProtobufSchema) -> list[Incompatibility]:
    """Why ``reader`` cannot read ``writer``'s data: Confluent's isBackwardCompatible, the
    differences from the writer (original) to the reader (update) that are not compatible."""
    return [_reason(d) for d in compare(writer, reader) if not d.compatible]


def _reason(difference: Difference) -> Incompatibility:
    rule = difference.type.value
    template = DESCRIPTIONS.get(difference.type, "")
    sentence = template.format(p=difference.path, u="reader", o="writer") if template else rule
    # Confluent's Difference.toString(), its two %s left as Confluent leaves them
    confluent = template.format(p=difference.path, u="%s", o="%s") if template else ""
    fragments = ""
    if difference.update or difference.original:
        fragments = f"; reader: {difference.update or '-'}; writer: {difference.original or '-'}"
    return Incompatibility(
        rule=rule,
        path=difference.path,
        message=f"{difference.path}: {sentence} [{rule}]{fragments}",
        reader_fragment=difference.update,
        writer_fragment=difference.original,
        detail=f'{{errorType:"{rule}", description:"{confluent}"}}',
    )
