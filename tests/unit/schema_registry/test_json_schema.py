"""JSON Schema subjects (schemaType JSON): Confluent's own diff cases, parsing, canonical forms,
the REST API with JSON subjects, and confluent-kafka's JSONSerializer against a real serve.

The diff cases are transcribed from confluentinc/schema-registry
json-schema-provider/src/test/resources/diff-schema-examples.json ("diff", by index) and
diff-combined-schema-examples.json ("combined"), as SchemaDiffTest runs them: the Differences
(type and path, order aside: Confluent's follows Java's HashSet) and STRICT compatibility.
"""

# ruff: noqa: E501  (the transcribed schemas stay one per line, as in Confluent's files)

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.registry import in_process, register, serve

from schema_registry.client import RegistryClient
from schema_registry.errors import InvalidSchema
from schema_registry.json_schema import (
    canonical_string,
    check_pair,
    differences,
    normalized_string,
    parse_schema,
)


def _case(
    source: str,
    index: int,
    description: str,
    original: str,
    update: str,
    changes: list[str],
    compatible: bool,
) -> Any:
    return pytest.param(original, update, changes, compatible, id=f"{source}-{index}-{description}")


CONFLUENT_CASES = [
    _case("diff", 0, "Anything can change to empty schema", '{"properties": {}}', "{}", [], True),
    _case(
        "diff",
        1,
        "Detect changes to id",
        '{"$id": "something"}',
        '{"$id": "something_else"}',
        ["ID_CHANGED #/"],
        True,
    ),
    _case(
        "diff",
        2,
        "Detect changes to title",
        '{"title": "something"}',
        '{"title": "something_else"}',
        ["TITLE_CHANGED #/"],
        True,
    ),
    _case(
        "diff",
        3,
        "Detect changes to description",
        '{"description": "something"}',
        '{"description": "something_else"}',
        ["DESCRIPTION_CHANGED #/"],
        True,
    ),
    _case(
        "diff",
        4,
        "Detect changes to simple schema type",
        '{"type": "object"}',
        '{"type": "array"}',
        ["TYPE_CHANGED #/"],
        False,
    ),
    _case(
        "diff",
        5,
        "Detect increased minLength string schema",
        '{"type": "string", "minLength": 10}',
        '{"type": "string", "minLength": 11}',
        ["MIN_LENGTH_INCREASED #/minLength"],
        False,
    ),
    _case(
        "diff",
        6,
        "Detect decreased minLength string schema",
        '{"type": "string", "minLength": 11}',
        '{"type": "string", "minLength": 10}',
        ["MIN_LENGTH_DECREASED #/minLength"],
        True,
    ),
    _case(
        "diff",
        7,
        "Detect increased maxLength string schema",
        '{"type": "string", "maxLength": 10}',
        '{"type": "string", "maxLength": 12}',
        ["MAX_LENGTH_INCREASED #/maxLength"],
        True,
    ),
    _case(
        "diff",
        8,
        "Detect decreased maxLength string schema",
        '{"type": "string", "maxLength": 12}',
        '{"type": "string", "maxLength": 10}',
        ["MAX_LENGTH_DECREASED #/maxLength"],
        False,
    ),
    _case(
        "diff",
        9,
        "Detect removed pattern from string schema",
        '{"type": "string", "pattern": "uuid"}',
        '{"type": "string"}',
        ["PATTERN_REMOVED #/pattern"],
        True,
    ),
    _case(
        "diff",
        10,
        "Detect changes to pattern string schema",
        '{"type": "string", "pattern": "date-time"}',
        '{"type": "string", "pattern": "uuid"}',
        ["PATTERN_CHANGED #/pattern"],
        False,
    ),
    _case(
        "diff",
        11,
        "Detect changes to pattern",
        '{"type": "string", "pattern": "date-time"}',
        '{"type": "string", "pattern": "date-time"}',
        [],
        True,
    ),
    _case(
        "diff",
        12,
        "Detect removed maximum number schema",
        '{"type": "number", "maximum": 10}',
        '{"type": "number"}',
        ["MAXIMUM_REMOVED #/maximum"],
        True,
    ),
    _case(
        "diff",
        13,
        "Detect increased maximum number schema",
        '{"type": "number", "maximum": 10}',
        '{"type": "number", "maximum": 11}',
        ["MAXIMUM_INCREASED #/maximum"],
        True,
    ),
    _case(
        "diff",
        14,
        "Detect decreased maximum number schema",
        '{"type": "number", "maximum": 11}',
        '{"type": "number", "maximum": 10}',
        ["MAXIMUM_DECREASED #/maximum"],
        False,
    ),
    _case(
        "diff",
        15,
        "Detect removed minimum number schema",
        '{"type": "number", "minimum": 10}',
        '{"type": "number"}',
        ["MINIMUM_REMOVED #/minimum"],
        True,
    ),
    _case(
        "diff",
        16,
        "Detect increased minimum number schema",
        '{"type": "number", "minimum": 10}',
        '{"type": "number", "minimum": 11}',
        ["MINIMUM_INCREASED #/minimum"],
        False,
    ),
    _case(
        "diff",
        17,
        "Detect decreased minimum number schema",
        '{"type": "number", "minimum": 11}',
        '{"type": "number", "minimum": 10}',
        ["MINIMUM_DECREASED #/minimum"],
        True,
    ),
    _case(
        "diff",
        18,
        "Detect removed multipleOf number schema",
        '{"type": "number", "multipleOf": 10}',
        '{"type": "number"}',
        ["MULTIPLE_OF_REMOVED #/multipleOf"],
        True,
    ),
    _case(
        "diff",
        19,
        "Detect reduced multipleOf number schema",
        '{"type": "number", "multipleOf": 10}',
        '{"type": "number", "multipleOf": 2}',
        ["MULTIPLE_OF_REDUCED #/multipleOf"],
        True,
    ),
    _case(
        "diff",
        20,
        "Detect changes to multipleOf number schema",
        '{"type": "number", "multipleOf": 10}',
        '{"type": "number", "multipleOf": 11}',
        ["MULTIPLE_OF_CHANGED #/multipleOf"],
        False,
    ),
    _case(
        "diff",
        21,
        "Detect narrowed change to number schema",
        '{"type": "number"}',
        '{"type": "integer"}',
        ["TYPE_NARROWED #/"],
        False,
    ),
    _case(
        "diff",
        22,
        "Detect extended change to number schema",
        '{"type": "integer"}',
        '{"type": "number"}',
        ["TYPE_EXTENDED #/"],
        True,
    ),
    _case(
        "diff",
        23,
        "Detect compatible change to not schema",
        '{"not": {"type": "number"}}',
        '{"not": {"type": "integer"}}',
        ["NOT_TYPE_NARROWED #/not"],
        True,
    ),
    _case(
        "diff",
        24,
        "Detect incompatible change to not schema",
        '{"not": {"type": "integer"}}',
        '{"not": {"type": "number"}}',
        ["NOT_TYPE_EXTENDED #/not"],
        False,
    ),
    _case(
        "diff",
        25,
        "Detect removed enum",
        '{"type": "string", "enum": ["red"]}',
        '{"type": "string"}',
        ["PRODUCT_TYPE_NARROWED #/"],
        True,
    ),
    _case(
        "diff",
        26,
        "Detect incompatible changes to const schema",
        '{"$schema": "http://json-schema.org/draft-07/schema#", "properties": {"foo": {"const": "red"}}}',
        '{"$schema": "http://json-schema.org/draft-07/schema#", "properties": {"foo": {"const": "blue"}}}',
        ["ENUM_ARRAY_CHANGED #/properties/foo/const"],
        False,
    ),
    _case(
        "diff",
        27,
        "Detect incompatible changes to enum schema",
        '{"allOf": [{"type": "string"}, {"enum": ["red"]}]}',
        '{"allOf": [{"type": "string"}, {"enum": ["blue"]}]}',
        ["COMBINED_TYPE_SUBSCHEMAS_CHANGED #/"],
        False,
    ),
    _case(
        "diff",
        28,
        "Detect compatible changes to enum schema",
        '{"allOf": [{"type": "string"}, {"enum": ["red"]}]}',
        '{"allOf": [{"enum": ["red", "blue"]}, {"type": "string"}]}',
        ["ENUM_ARRAY_EXTENDED #/allOf/1/enum"],
        True,
    ),
    _case(
        "diff",
        29,
        "Detect changes to type array",
        '{"type": ["object"]}',
        '{"type": ["object", "array"]}',
        ["SUM_TYPE_EXTENDED #/"],
        True,
    ),
    _case(
        "diff",
        30,
        "Detect changes to sub schemas",
        '{"oneOf": [{"type": "string"}]}',
        '{"oneOf": [{"type": "number"}]}',
        ["COMBINED_TYPE_SUBSCHEMAS_CHANGED #/"],
        False,
    ),
    _case(
        "diff",
        32,
        "Detect changes to remove properties",
        '{"properties": {"foo": {"type": "string"}}}',
        '{"properties": {"bar": {"type": "string"}}}',
        [
            "OPTIONAL_PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL #/properties/bar",
            "PROPERTY_REMOVED_FROM_OPEN_CONTENT_MODEL #/properties/foo",
        ],
        False,
    ),
    _case(
        "diff",
        33,
        "Detect change type of properties",
        '{"properties": {"foo": {"type": "string"}}}',
        '{"properties": {"foo": {"type": "number"}}}',
        ["TYPE_CHANGED #/properties/foo"],
        False,
    ),
    _case(
        "diff",
        34,
        "Detect optional property added to closed content model",
        '{"properties": {"foo": {"type": "string"}}, "additionalProperties": false}',
        '{"properties": {"foo": {"type": "string"}, "bar": {"type": "number"}}, "additionalProperties": false}',
        ["OPTIONAL_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL #/properties/bar"],
        True,
    ),
    _case(
        "diff",
        35,
        "Detect property added to partially open content model 1",
        '{"properties": {"foo": {"type": "string"}}, "additionalProperties": false, "patternProperties": {"^S_": {"type": "string"}, "^I_": {"type": "integer"}}}',
        '{"properties": {"foo": {"type": "string"}, "I_123": {"type": "number"}}, "additionalProperties": false, "patternProperties": {"^S_": {"type": "string"}, "^I_": {"type": "integer"}}}',
        [
            "TYPE_EXTENDED #/properties/I_123",
            "PROPERTY_ADDED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL #/properties/I_123",
            "OPTIONAL_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL #/properties/I_123",
        ],
        True,
    ),
    _case(
        "diff",
        36,
        "Detect property added to partially open content model 2",
        '{"properties": {"foo": {"type": "string"}}, "additionalProperties": {"type": "string"}}',
        '{"properties": {"foo": {"type": "string"}, "bar": {"type": "string"}}, "additionalProperties": {"type": "string"}}',
        [
            "PROPERTY_ADDED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL #/properties/bar",
            "OPTIONAL_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL #/properties/bar",
        ],
        True,
    ),
    _case(
        "diff",
        37,
        "Detect property added to partially open content model 3",
        '{"properties": {"foo": {"type": "string"}}, "additionalProperties": {"type": "string"}}',
        '{"properties": {"foo": {"type": "string"}, "bar": {"type": "number"}}, "additionalProperties": {"type": "string"}}',
        [
            "TYPE_CHANGED #/properties/bar",
            "PROPERTY_ADDED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL #/properties/bar",
            "OPTIONAL_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL #/properties/bar",
        ],
        False,
    ),
    _case(
        "diff",
        38,
        "Detect property added to partially open content model 4",
        '{"properties": {"foo": {"type": "string"}}, "additionalProperties": {"type": "string"}}',
        '{"properties": {"foo": {"type": "string"}, "bar": {"type": "string"}}, "required": ["bar"], "additionalProperties": {"type": "string"}}',
        [
            "PROPERTY_ADDED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL #/properties/bar",
            "REQUIRED_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL #/properties/bar",
        ],
        False,
    ),
    _case(
        "diff",
        39,
        "Detect property removed from partially open content model 1",
        '{"properties": {"foo": {"type": "string"}, "I_123": {"type": "integer"}}, "additionalProperties": false}',
        '{"properties": {"foo": {"type": "string"}}, "additionalProperties": false, "patternProperties": {"^S_": {"type": "string"}, "^I_": {"type": "number"}}}',
        [
            "TYPE_EXTENDED #/properties/I_123",
            "PROPERTY_REMOVED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL #/properties/I_123",
        ],
        True,
    ),
    _case(
        "diff",
        40,
        "Detect property removed from partially open content model 2",
        '{"properties": {"foo": {"type": "string"}, "bar": {"type": "string"}}, "additionalProperties": false}',
        '{"properties": {"foo": {"type": "string"}}, "additionalProperties": {"type": "string"}}',
        [
            "PROPERTY_REMOVED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL #/properties/bar",
            "ADDITIONAL_PROPERTIES_ADDED #/additionalProperties",
        ],
        True,
    ),
    _case(
        "diff",
        41,
        "Detect property removed from partially open content model 3",
        '{"properties": {"foo": {"type": "string"}, "bar": {"type": "number"}}, "additionalProperties": false}',
        '{"properties": {"foo": {"type": "string"}}, "additionalProperties": {"type": "string"}}',
        [
            "TYPE_CHANGED #/properties/bar",
            "PROPERTY_REMOVED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL #/properties/bar",
            "ADDITIONAL_PROPERTIES_ADDED #/additionalProperties",
        ],
        False,
    ),
    _case(
        "diff",
        42,
        "Detect property removed from partially open content model 4",
        '{"properties": {"foo": {"type": "string"}, "bar": {"oneOf": [{"type": "null"}, {"type": "string"}]}}, "additionalProperties": false}',
        '{"properties": {"foo": {"type": "string"}}, "additionalProperties": {"oneOf": [{"type": "null"}, {"type": "string"}]}}',
        [
            "PROPERTY_REMOVED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL #/properties/bar",
            "ADDITIONAL_PROPERTIES_ADDED #/additionalProperties",
        ],
        True,
    ),
    _case(
        "diff",
        45,
        "Detect changes to composed schema type",
        '{"oneOf": [{"properties": {"foo": {"type": "string"}}}]}',
        '{"oneOf": [{"properties": {"foo": {"type": "number"}}}]}',
        ["COMBINED_TYPE_SUBSCHEMAS_CHANGED #/"],
        False,
    ),
    _case(
        "diff",
        46,
        "Detect changes to validation criteria in composed schema type for singleton",
        '{"oneOf": [{"type": "string"}]}',
        '{"allOf": [{"type": "string"}]}',
        ["COMBINED_TYPE_EXTENDED #/"],
        True,
    ),
    _case(
        "diff",
        47,
        "Detect changes to validation criteria in composed schema type",
        '{"oneOf": [{"type": "string"}, {"type": "integer"}]}',
        '{"allOf": [{"type": "string"}]}',
        ["COMBINED_TYPE_CHANGED #/"],
        False,
    ),
    _case(
        "diff",
        48,
        "Detect changes to dependencies as array",
        '{"properties": {"foo": {"type": "number"}, "bar": {"type": "string"}}, "dependencies": {"foo": ["bar"]}}',
        '{"properties": {"foo": {"type": "number"}, "bar": {"type": "string"}}, "dependencies": {"bar": ["foo"]}}',
        [
            "DEPENDENCY_ARRAY_ADDED #/dependencies/bar",
            "DEPENDENCY_ARRAY_REMOVED #/dependencies/foo",
        ],
        False,
    ),
    _case(
        "diff",
        49,
        "Detect compatible changes to dependencies schemas",
        '{"dependencies": {"foo": {"type": "string"}, "bar": {"type": "string"}}}',
        '{"dependencies": {"foo": {"type": "string"}}}',
        ["DEPENDENCY_SCHEMA_REMOVED #/dependencies/bar"],
        True,
    ),
    _case(
        "diff",
        51,
        "Detect incompatible changes to dependencies schemas",
        '{"dependencies": {"foo": {"type": "string"}}}',
        '{"dependencies": {"foo": {"type": "number"}}}',
        ["TYPE_CHANGED #/dependencies/foo"],
        False,
    ),
    _case(
        "diff",
        52,
        "Detect changes to dependencies properties",
        '{"dependencies": {"foo": {"type": "string"}}}',
        '{"dependencies": {"bar": {"type": "string"}}}',
        [
            "DEPENDENCY_SCHEMA_ADDED #/dependencies/bar",
            "DEPENDENCY_SCHEMA_REMOVED #/dependencies/foo",
        ],
        False,
    ),
    _case(
        "diff",
        53,
        "Detect required array to be removed",
        '{"properties": {"foo": {"type": "string"}}, "required": ["foo"]}',
        '{"properties": {"foo": {"type": "string"}}}',
        ["REQUIRED_ATTRIBUTE_REMOVED #/required/foo"],
        True,
    ),
    _case(
        "diff",
        54,
        "Detect required array to be added",
        '{"properties": {"foo": {"type": "string"}}}',
        '{"properties": {"foo": {"type": "string"}}, "required": ["foo"]}',
        ["REQUIRED_ATTRIBUTE_ADDED #/required/foo"],
        False,
    ),
    _case(
        "diff",
        56,
        "Detect removed maxProperties",
        '{"properties": {}, "maxProperties": 1}',
        '{"properties": {}}',
        ["MAX_PROPERTIES_REMOVED #/maxProperties"],
        True,
    ),
    _case(
        "diff",
        57,
        "Detect increased maxProperties",
        '{"maxProperties": 1}',
        '{"maxProperties": 2}',
        ["MAX_PROPERTIES_INCREASED #/maxProperties"],
        True,
    ),
    _case(
        "diff",
        58,
        "Detect decreased maxProperties",
        '{"maxProperties": 2}',
        '{"maxProperties": 1}',
        ["MAX_PROPERTIES_DECREASED #/maxProperties"],
        False,
    ),
    _case(
        "diff",
        59,
        "Detect removed minProperties",
        '{"properties": {}, "minProperties": 2}',
        '{"properties": {}}',
        ["MIN_PROPERTIES_REMOVED #/minProperties"],
        True,
    ),
    _case(
        "diff",
        60,
        "Detect increased minProperties",
        '{"minProperties": 1}',
        '{"minProperties": 2}',
        ["MIN_PROPERTIES_INCREASED #/minProperties"],
        False,
    ),
    _case(
        "diff",
        61,
        "Detect decreased minProperties",
        '{"minProperties": 2}',
        '{"minProperties": 1}',
        ["MIN_PROPERTIES_DECREASED #/minProperties"],
        True,
    ),
    _case(
        "diff",
        62,
        "Detect changes to all items schema",
        '{"type": "array"}',
        '{"type": "array", "items": {"type": "string"}}',
        ["SCHEMA_ADDED #/items"],
        False,
    ),
    _case(
        "diff",
        63,
        "Detect changes to all items schema",
        '{"type": "array", "items": {"type": "string"}}',
        '{"type": "array"}',
        ["SCHEMA_REMOVED #/items"],
        True,
    ),
    _case(
        "diff",
        64,
        "Detect changes to items schema list",
        '{"type": "array", "items": [{"type": "string"}, {"type": "number"}]}',
        '{"type": "array"}',
        [
            "ITEM_REMOVED_FROM_OPEN_CONTENT_MODEL #/items/0",
            "ITEM_REMOVED_FROM_OPEN_CONTENT_MODEL #/items/1",
        ],
        True,
    ),
    _case(
        "diff",
        65,
        "Detect item added to partially open content model 1",
        '{"type": "array", "items": [{"type": "string"}, {"type": "number"}], "additionalItems": {"type": "string"}}',
        '{"type": "array", "items": [{"type": "string"}, {"type": "number"}, {"type": "string"}], "additionalItems": {"type": "string"}}',
        ["ITEM_ADDED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL #/items/2"],
        True,
    ),
    _case(
        "diff",
        66,
        "Detect item added to partially open content model 2",
        '{"type": "array", "items": [{"type": "string"}, {"type": "number"}], "additionalItems": {"type": "string"}}',
        '{"type": "array", "items": [{"type": "string"}, {"type": "number"}, {"type": "number"}], "additionalItems": {"type": "string"}}',
        [
            "TYPE_CHANGED #/items/2",
            "ITEM_ADDED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL #/items/2",
        ],
        False,
    ),
    _case(
        "diff",
        67,
        "Detect item removed from partially open content model 1",
        '{"type": "array", "items": [{"type": "string"}, {"type": "number"}, {"type": "string"}], "additionalItems": {"type": "string"}}',
        '{"type": "array", "items": [{"type": "string"}, {"type": "number"}], "additionalItems": {"type": "string"}}',
        ["ITEM_REMOVED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL #/items/2"],
        True,
    ),
    _case(
        "diff",
        69,
        "Detect item removed from partially open content model 3",
        '{"type": "array", "items": [{"type": "string"}, {"type": "number"}, {"type": "number"}], "additionalItems": {"type": "string"}}',
        '{"type": "array", "items": [{"type": "string"}, {"type": "number"}], "additionalItems": {"type": "string"}}',
        [
            "TYPE_CHANGED #/items/2",
            "ITEM_REMOVED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL #/items/2",
        ],
        False,
    ),
    _case(
        "diff",
        71,
        "Detect decreased maxItems",
        '{"type": "array", "maxItems": 2}',
        '{"type": "array", "maxItems": 1}',
        ["MAX_ITEMS_DECREASED #/maxItems"],
        False,
    ),
    _case(
        "diff",
        72,
        "Detect removed minItems",
        '{"type": "array", "minItems": 1}',
        '{"type": "array"}',
        ["MIN_ITEMS_REMOVED #/minItems"],
        True,
    ),
    _case(
        "diff",
        73,
        "Detect increased minItems",
        '{"type": "array", "minItems": 1}',
        '{"type": "array", "minItems": 2}',
        ["MIN_ITEMS_INCREASED #/minItems"],
        False,
    ),
    _case(
        "diff",
        74,
        "Detect decreased minItems",
        '{"type": "array", "minItems": 2}',
        '{"type": "array", "minItems": 1}',
        ["MIN_ITEMS_DECREASED #/minItems"],
        True,
    ),
    _case(
        "diff",
        75,
        "Detect unique items removed",
        '{"type": "array", "uniqueItems": true}',
        '{"type": "array"}',
        ["UNIQUE_ITEMS_REMOVED #/uniqueItems"],
        True,
    ),
    _case(
        "diff",
        78,
        "Detect compatible change of moving from reference schema",
        '{"$ref": "#/definitions/someRef", "definitions": {"someRef": {"type": "string"}}}',
        '{"type": "string"}',
        [],
        True,
    ),
    _case(
        "diff",
        80,
        "Detect removed boolean additional properties",
        '{"additionalProperties": true}',
        '{"additionalProperties": false}',
        ["ADDITIONAL_PROPERTIES_REMOVED #/additionalProperties"],
        False,
    ),
    _case(
        "diff",
        81,
        "Detect narrowing changes to additional properties schema",
        '{"additionalProperties": true}',
        '{"additionalProperties": {"type": "number"}}',
        ["ADDITIONAL_PROPERTIES_NARROWED #/additionalProperties"],
        False,
    ),
    _case(
        "diff",
        82,
        "Detect adding empty schema to open content model",
        '{"additionalProperties": true}',
        '{"additionalProperties": true, "properties": {"foo": true}}',
        ["PROPERTY_WITH_EMPTY_SCHEMA_ADDED_TO_OPEN_CONTENT_MODEL #/properties/foo"],
        True,
    ),
    _case(
        "diff",
        84,
        "Detect adding false to closed content model",
        '{"additionalProperties": false}',
        '{"additionalProperties": false, "properties": {"foo": false}}',
        ["OPTIONAL_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL #/properties/foo"],
        True,
    ),
    _case(
        "diff",
        85,
        "Detect removing false from closed content model",
        '{"additionalProperties": false, "properties": {"foo": false}}',
        '{"additionalProperties": false}',
        ["PROPERTY_WITH_FALSE_REMOVED_FROM_CLOSED_CONTENT_MODEL #/properties/foo"],
        True,
    ),
    _case(
        "diff",
        87,
        "Detect removed boolean additional items",
        '{"additionalItems": true}',
        '{"additionalItems": false}',
        ["ADDITIONAL_ITEMS_REMOVED #/additionalItems"],
        False,
    ),
    _case(
        "diff",
        89,
        "Detect adding empty schema to open content model for array",
        '{"type": "array", "additionalItems": true, "items": [{"type": "number"}]}',
        '{"type": "array", "additionalItems": true, "items": [{"type": "number"}, true]}',
        ["ITEM_WITH_EMPTY_SCHEMA_ADDED_TO_OPEN_CONTENT_MODEL #/items/1"],
        True,
    ),
    _case(
        "diff",
        90,
        "Detect removing empty schema from open content model for array",
        '{"type": "array", "additionalItems": true, "items": [{"type": "number"}, true]}',
        '{"type": "array", "additionalItems": true, "items": [{"type": "number"}]}',
        ["ITEM_REMOVED_FROM_OPEN_CONTENT_MODEL #/items/1"],
        True,
    ),
    _case(
        "diff",
        91,
        "Detect adding false to closed content model for array",
        '{"type": "array", "additionalItems": false, "items": [{"type": "number"}]}',
        '{"type": "array", "additionalItems": false, "items": [{"type": "number"}, false]}',
        ["ITEM_ADDED_TO_CLOSED_CONTENT_MODEL #/items/1"],
        True,
    ),
    _case(
        "diff",
        92,
        "Detect removing false from closed content model for array",
        '{"type": "array", "additionalItems": false, "items": [{"type": "number"}, false]}',
        '{"type": "array", "additionalItems": false, "items": [{"type": "number"}]}',
        ["ITEM_WITH_FALSE_REMOVED_FROM_CLOSED_CONTENT_MODEL #/items/1"],
        True,
    ),
    _case(
        "diff",
        93,
        "Detect adding to closed content model for array",
        '{"type": "array", "items": [{"type": "string"}, {"type": "number"}], "additionalItems": false}',
        '{"type": "array", "items": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}], "additionalItems": true}',
        [
            "ITEM_ADDED_TO_CLOSED_CONTENT_MODEL #/items/2",
            "ADDITIONAL_ITEMS_ADDED #/additionalItems",
        ],
        True,
    ),
    _case(
        "diff",
        96,
        "Detect adding to closed content model for array",
        '{"type": "array", "items": [{"type": "string"}], "additionalItems": false}',
        '{"type": "array", "items": [{"type": "string"}, {"type": "number"}], "additionalItems": false}',
        ["ITEM_ADDED_TO_CLOSED_CONTENT_MODEL #/items/1"],
        True,
    ),
    _case(
        "diff",
        98,
        "Detect adding number to partially open content model for array",
        '{"type": "array", "items": [{"type": "string"}], "additionalItems": {"type": "number"}}',
        '{"type": "array", "items": [{"type": "string"}, {"type": "number"}], "additionalItems": true}',
        [
            "ITEM_ADDED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL #/items/1",
            "ADDITIONAL_ITEMS_EXTENDED #/additionalItems",
        ],
        True,
    ),
    _case(
        "diff",
        99,
        "Detect change to oneOf schema",
        '{"type": "string"}',
        '{"oneOf": [{"type": "number"}, {"type": "string"}]}',
        ["SUM_TYPE_EXTENDED #/"],
        True,
    ),
    _case(
        "diff",
        102,
        "Detect change to oneOf schema",
        '{"type": "string", "maxLength": 3}',
        '{"oneOf": [{"type": "number"}, {"type": "string"}]}',
        ["MAX_LENGTH_REMOVED #/maxLength", "SUM_TYPE_EXTENDED #/"],
        True,
    ),
    _case(
        "combined",
        0,
        "Detect compatible change to combined schema",
        '{"type": "object", "properties": {"prop1": {"allOf": [{"enum": ["one", "two", "three"]}, {"type": "string"}, {"maxLength": 5}]}}}',
        '{"type": "object", "properties": {"prop1": {"allOf": [{"maxLength": 5}, {"enum": ["one", "two", "three"]}, {"type": "string"}]}}}',
        [],
        True,
    ),
    _case(
        "combined",
        3,
        "Detect combined schema with duplicates in update",
        '{"type": "object", "properties": {"prop1": {"allOf": [{"type": "string"}]}}}',
        '{"type": "object", "properties": {"prop1": {"allOf": [{"type": "string"}, {"type": "string"}]}}}',
        [],
        True,
    ),
    _case(
        "combined",
        6,
        "Detect compatible change to oneOf schema with more properties",
        '{"type": "object", "properties": {"prop1": {"oneOf": [{"type": "string", "maxLength": 5}]}}}',
        '{"type": "object", "properties": {"prop1": {"oneOf": [{"type": "boolean"}, {"type": "number"}, {"title": "my string", "type": "string", "maxLength": 8}]}}}',
        [
            "SUM_TYPE_EXTENDED #/properties/prop1",
            "TITLE_CHANGED #/properties/prop1/oneOf/0",
            "MAX_LENGTH_INCREASED #/properties/prop1/oneOf/0/maxLength",
        ],
        True,
    ),
    _case(
        "combined",
        7,
        "Detect incompatible change to oneOf schema",
        '{"type": "object", "properties": {"prop1": {"oneOf": [{"type": "number"}, {"type": "string"}]}}}',
        '{"type": "object", "properties": {"prop1": {"oneOf": [{"type": "string"}]}}}',
        ["SUM_TYPE_NARROWED #/properties/prop1"],
        False,
    ),
    _case(
        "combined",
        9,
        "Detect incompatible change to allOf schema",
        '{"type": "object", "properties": {"prop1": {"allOf": [{"type": "string"}]}}}',
        '{"type": "object", "properties": {"prop1": {"allOf": [{"enum": ["one", "two", "three"]}, {"type": "string"}]}}}',
        ["PRODUCT_TYPE_EXTENDED #/properties/prop1"],
        False,
    ),
    _case(
        "combined",
        12,
        "Detect compatible change from allOf to anyOf schema",
        '{"type": "object", "properties": {"prop1": {"allOf": [{"type": "string"}]}}}',
        '{"type": "object", "properties": {"prop1": {"anyOf": [{"type": "string"}]}}}',
        ["COMBINED_TYPE_EXTENDED #/properties/prop1"],
        True,
    ),
    _case(
        "combined",
        15,
        "Detect compatible change from allOf to anyOf schema with fewer properties",
        '{"type": "object", "properties": {"prop1": {"allOf": [{"type": "number"}, {"type": "string"}]}}}',
        '{"type": "object", "properties": {"prop1": {"anyOf": [{"type": "string"}]}}}',
        ["COMBINED_TYPE_EXTENDED #/properties/prop1", "PRODUCT_TYPE_NARROWED #/properties/prop1"],
        True,
    ),
    _case(
        "combined",
        18,
        "Detect compatible change from allOf to oneOf schema with more properties",
        '{"type": "object", "properties": {"prop1": {"allOf": [{"type": "number"}]}}}',
        '{"type": "object", "properties": {"prop1": {"oneOf": [{"type": "number"}, {"type": "string"}]}}}',
        ["COMBINED_TYPE_EXTENDED #/properties/prop1", "SUM_TYPE_EXTENDED #/properties/prop1"],
        True,
    ),
    _case(
        "combined",
        21,
        "Detect compatible change from oneOf to allOf schema",
        '{"type": "object", "properties": {"prop1": {"oneOf": [{"type": "string"}]}}}',
        '{"type": "object", "properties": {"prop1": {"allOf": [{"type": "string"}]}}}',
        ["COMBINED_TYPE_EXTENDED #/properties/prop1"],
        True,
    ),
    _case(
        "combined",
        24,
        "Detect compatible change from non-combined to anyOf schema",
        '{"type": "object", "properties": {"prop1": {"type": "string"}}}',
        '{"type": "object", "properties": {"prop1": {"anyOf": [{"type": "number"}, {"type": "string"}]}}}',
        ["SUM_TYPE_EXTENDED #/properties/prop1"],
        True,
    ),
    _case(
        "combined",
        27,
        "Detect incompatible change from non-combined to allOf schema",
        '{"type": "object", "properties": {"prop1": {"type": "string"}}}',
        '{"type": "object", "properties": {"prop1": {"allOf": [{"type": "number"}, {"type": "string"}]}}}',
        ["TYPE_CHANGED #/properties/prop1"],
        False,
    ),
]


@pytest.mark.parametrize(("original", "update", "changes", "compatible"), CONFLUENT_CASES)
def test_confluents_diff_cases(
    original: str, update: str, changes: list[str], compatible: bool
) -> None:
    writer, reader = parse_schema(original), parse_schema(update)
    found = [f"{d.type} {d.path}" for d in differences(writer, reader)]
    assert sorted(found) == sorted(changes)
    problems = check_pair(reader, writer)
    assert (not problems) is compatible
    for problem in problems:
        assert f"{problem.rule} {problem.path}" in changes
        assert problem.path in problem.message


@pytest.mark.parametrize(
    "text",
    [
        "[1, 2]",  # JsonSchema: an object or a boolean at the root
        '"string"',
        "{not json",
        '{"type": "strin"}',  # not in the draft-07 metaschema's type enum
        '{"$schema": "http://json-schema.org/draft-04/schema#", "exclusiveMaximum": 5}',
        '{"$schema": "https://json-schema.org/draft/2020-12/schema", "minLength": -1}',
        '{"properties": {"a": {"$ref": "other.json"}}}',  # resolves to nothing
        '{"$ref": "#/definitions/missing"}',
    ],
)
def test_invalid_schemas_are_refused(text: str) -> None:
    with pytest.raises(InvalidSchema, match="Invalid schema"):
        parse_schema(text)


def test_booleans_and_each_draft_parse() -> None:
    assert parse_schema("true").tree is True
    assert parse_schema("false").tree is False
    for url in (
        "http://json-schema.org/draft-04/schema#",
        "http://json-schema.org/draft-06/schema#",
        "http://json-schema.org/draft-07/schema#",
        "https://json-schema.org/draft/2019-09/schema",
        "https://json-schema.org/draft/2020-12/schema",
    ):
        assert parse_schema(json.dumps({"$schema": url, "type": "object"})).tree["$schema"] == url


def test_a_stored_schema_is_read_leniently() -> None:
    parse_schema('{"type": "strin"}', new=False)


def test_canonical_is_jacksons_compact_form_and_normalized_sorts_keys() -> None:
    parsed = parse_schema(
        '{ "type" : "object",\n "properties": {"b": {"maximum": 1e10},\n'
        ' "a": {"minimum": 0.5, "maxLength": 3, "title": "é"}}}'
    )
    assert canonical_string(parsed) == (
        '{"type":"object","properties":{"b":{"maximum":1.0E10},'
        '"a":{"minimum":0.5,"maxLength":3,"title":"é"}}}'
    )
    assert normalized_string(parsed) == (
        '{"properties":{"a":{"maxLength":3,"minimum":0.5,"title":"é"},'
        '"b":{"maximum":1.0E10}},"type":"object"}'
    )


def test_references_resolve_by_name_and_by_id() -> None:
    address = parse_schema('{"type": "object", "properties": {"city": {"type": "string"}}}')
    by_name = parse_schema(
        '{"properties": {"home": {"$ref": "address.json"}}}', [address], names=["address.json"]
    )
    assert differences(by_name, by_name) == []
    with_id = parse_schema('{"$id": "https://shop.example/money.json", "type": "integer"}')
    uses = parse_schema(
        '{"properties": {"total": {"$ref": "https://shop.example/money.json"}}}', [with_id]
    )
    widened = parse_schema('{"properties": {"total": {"type": "number"}}}')
    # the $id goes (ID_CHANGED, compatible) and integer widens to number
    assert [d.type for d in differences(uses, widened)] == ["ID_CHANGED", "TYPE_EXTENDED"]
    assert [p.rule for p in check_pair(uses, widened)] == ["TYPE_NARROWED"]


def test_a_recursive_schema_compares_with_itself() -> None:
    node = {
        "type": "object",
        "properties": {"next": {"$ref": "#/definitions/node"}, "v": {"type": "integer"}},
    }
    text = json.dumps({"definitions": {"node": node}, "$ref": "#/definitions/node"})
    assert differences(parse_schema(text), parse_schema(text)) == []


# ---------------------------------------------------------------- through the REST API

ORDER: dict[str, Any] = {
    "type": "object",
    "properties": {"id": {"type": "string"}, "qty": {"type": "integer"}},
    "required": ["id"],
}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[RegistryClient]:
    with in_process("memory", tmp_path) as client:
        yield client


def _json(schema: Any, **extra: Any) -> dict[str, Any]:
    return {"schema": json.dumps(schema), "schemaType": "JSON", **extra}


def _register(api: RegistryClient, subject: str, body: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = register(api, subject, body.pop("schema"), **body)
    return found


def test_register_evolve_and_refuse_through_the_api(api: RegistryClient) -> None:
    first = _register(api, "orders-value", _json(ORDER))
    body = api.get(f"/schemas/ids/{first['id']}").json()
    assert body["schemaType"] == "JSON"
    assert body["schema"] == canonical_string(parse_schema(json.dumps(ORDER)))
    widened = {**ORDER, "properties": {**ORDER["properties"], "qty": {"type": "number"}}}
    assert _register(api, "orders-value", _json(widened))["id"] != first["id"]
    narrowed = {**ORDER, "properties": {**ORDER["properties"], "qty": {"type": "integer"}}}
    narrowed["required"] = ["id", "qty"]
    reply = api.post("/subjects/orders-value/versions", _json(narrowed))
    assert reply.status == 409
    message = reply.json()["message"]
    assert "TYPE_NARROWED" in message and "#/properties/qty" in message
    check = api.post(
        "/compatibility/subjects/orders-value/versions/latest?verbose=true", _json(narrowed)
    ).json()
    assert check["is_compatible"] is False
    assert any("REQUIRED_ATTRIBUTE_ADDED" in m for m in check["messages"])


def test_lookup_finds_the_schema_sent_in_another_key_order(api: RegistryClient) -> None:
    found = _register(api, "s", _json(ORDER))
    reordered = {"required": ["id"], "properties": ORDER["properties"], "type": "object"}
    reply = api.post("/subjects/s", _json(reordered))
    assert reply.status == 200, reply.body
    assert reply.json()["id"] == found["id"]


def test_references_between_json_subjects(api: RegistryClient) -> None:
    money_id = "https://shop.example/money.json"
    total = {"type": "object", "properties": {"total": {"$ref": money_id}}}
    missing = api.post("/subjects/invoice/versions", _json(total))
    assert (missing.status, missing.error_code) == (422, 42201)
    _register(api, "money", _json({"$id": money_id, "type": "integer", "minimum": 0}))
    refs = [{"name": money_id, "subject": "money", "version": 1}]
    found = _register(api, "invoice", _json(total, references=refs))
    assert api.get(f"/schemas/ids/{found['id']}").json()["references"] == refs


def test_a_json_schema_cannot_reference_an_avro_one(api: RegistryClient) -> None:
    register(api, "avro-thing", json.dumps({"type": "record", "name": "T", "fields": []}))
    refs = [{"name": "T", "subject": "avro-thing", "version": 1}]
    reply = api.post("/subjects/j/versions", _json({"$ref": "T"}, references=refs))
    assert (reply.status, reply.error_code) == (422, 42201)
    assert "AVRO" in reply.json()["message"]


def test_schema_types_list_json(api: RegistryClient) -> None:
    assert "JSON" in api.get("/schemas/types").json()


# --------------------------------------------------- confluent-kafka's serdes, real serve


def test_confluent_kafkas_json_serializer_round_trips(tmp_path: Path) -> None:
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    schema = json.dumps({"title": "Order", **ORDER})
    with serve("--storage", "memory", cwd=tmp_path) as server:
        client = SchemaRegistryClient({"url": server.url})
        serializer = JSONSerializer(schema, client, conf={"auto.register.schemas": True})
        context = SerializationContext("orders", MessageField.VALUE)
        data = serializer({"id": "o-1", "qty": 2}, context)
        assert data is not None and data[0] == 0
        schema_id = int.from_bytes(data[1:5], "big")
        registered = client.get_latest_version("orders-value")
        assert registered.schema_id == schema_id
        assert registered.schema.schema_type == "JSON"
        deserializer = JSONDeserializer(None, schema_registry_client=client)
        assert deserializer(data, context) == {"id": "o-1", "qty": 2}
