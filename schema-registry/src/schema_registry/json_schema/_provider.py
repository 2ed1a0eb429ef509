"""`JsonSchemaProvider`: schemaType JSON for the registry's `PROVIDERS` table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from schema_registry.compatibility import Incompatibility
from schema_registry.json_schema._compat import check_pair
from schema_registry.json_schema._parse import (
    JsonSchema,
    canonical_string,
    normalized_string,
    parse_schema,
)


class JsonSchemaProvider:
    """JSON: Confluent's JsonSchema (parse against the declared draft's metaschema, canonical
    and normalized strings) and its SchemaDiff rules. Stateless, thread-safe.

    ``parse`` resolves a `$ref` to a referenced schema by that schema's `$id`, and by the
    reference's name when ``names`` (the request's reference names, in order) is passed."""

    schema_type = "JSON"

    def parse(
        self, text: str, references: Sequence[Any], *, new: bool, names: Sequence[str] = ()
    ) -> JsonSchema:
        return parse_schema(text, references, new=new, names=names)

    def owns(self, parsed: Any) -> bool:
        return isinstance(parsed, JsonSchema)

    def canonical(self, parsed: Any, references: Sequence[Any]) -> str:
        return canonical_string(parsed)

    def normalized(self, parsed: Any, references: Sequence[Any]) -> str:
        return normalized_string(parsed)

    def formatted(self, parsed: Any, format: str) -> str | None:
        return None  # Confluent's JsonSchema knows no formats: the canonical text

    def check_pair(self, reader: Any, writer: Any) -> list[Incompatibility]:
        return check_pair(reader, writer)
