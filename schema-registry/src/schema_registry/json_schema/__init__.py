"""JSON Schema subjects (schemaType JSON), as Confluent's json-schema-provider handles them.

`parse_schema` reads and validates a text against the metaschema of the draft its `$schema`
names (draft-07 when it names none or one Confluent does not know), with `$ref`s to referenced
schemas resolved by reference name or `$id`; `canonical_string` / `normalized_string` are
Confluent's canonicalString() / normalize(); `check_pair` is Confluent's SchemaDiff under its
STRICT policy, its reasons named by Difference.Type.
"""

from __future__ import annotations

from schema_registry.json_schema._compat import check_pair, differences
from schema_registry.json_schema._parse import (
    JsonSchema,
    canonical_string,
    normalized_string,
    parse_schema,
)
from schema_registry.json_schema._provider import JsonSchemaProvider

__all__ = [
    "JsonSchema",
    "JsonSchemaProvider",
    "canonical_string",
    "check_pair",
    "differences",
    "normalized_string",
    "parse_schema",
]
