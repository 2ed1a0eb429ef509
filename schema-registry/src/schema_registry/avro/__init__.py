"""Avro support for the schema registry: parsing/validation and exact compatibility checking.

The registry server calls three things: `parse_schema` once per submitted schema (raising
`InvalidSchema`, which becomes Confluent error 42201), then `check_compatibility` (or
`check_pair`) per register/compatibility request. Compatibility follows Apache Avro Java's
`SchemaCompatibility`, which is what Confluent Schema Registry uses; see `_compat` for the
rules and the two reporting-only deviations.
"""

from schema_registry.avro._canonical import canonical_string, normalized_string, resolved_string
from schema_registry.avro._compat import check_compatibility, check_pair
from schema_registry.avro._schema import AvroSchema, has_lone_surrogate, parse_schema
from schema_registry.compatibility import COMPATIBILITY_LEVELS, Incompatibility
from schema_registry.errors import InvalidSchema

__all__ = [
    "COMPATIBILITY_LEVELS",
    "AvroSchema",
    "Incompatibility",
    "InvalidSchema",
    "canonical_string",
    "check_compatibility",
    "check_pair",
    "has_lone_surrogate",
    "normalized_string",
    "parse_schema",
    "resolved_string",
]
