"""Control's domain: what a document and a namespace may be, and what a JSON Schema finds wrong
with a document, named as a field path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from control.domain.model import MAX_DOCUMENT_BYTES, check_namespace, check_size, parse_object
from control.domain.schema import MAX_VIOLATIONS, Schema
from meshkit.errors import FailedPrecondition, InvalidArgument, Violations

REPO = Path(__file__).resolve().parents[3]
ORDERS_SCHEMA = REPO / "proto/shop/orders/v1/config/orders.schema.json"


def fields(error: InvalidArgument) -> dict[str, str]:
    return {v.field: v.description for v in error.violations}


@pytest.mark.parametrize("name", ["orders", "flags", "a", "shop.orders_v1-x", "0"])
def test_namespace_names_follow_the_contract(name: str) -> None:
    violations = Violations()
    check_namespace(violations, name)
    assert violations.items == []


@pytest.mark.parametrize("name", ["", "Orders", "-x", ".x", "a/b", "a b", "x" * 65, "ö"])
def test_bad_namespace_names_are_refused_naming_the_field(name: str) -> None:
    violations = Violations()
    check_namespace(violations, name)
    assert [v.field for v in violations.items] == ["namespace"]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("[1, 2]", "must be a JSON object, not an array"),
        ('"x"', "must be a JSON object, not a string"),
        ("null", "must be a JSON object, not null"),
        ('{"a": 1,}', "is not JSON"),
        ('{"a": NaN}', "NaN is not JSON"),
        ('{"a": Infinity}', "Infinity is not JSON"),
        ('{"a": 1, "a": 2}', "appears twice"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ],
)
def test_a_document_must_be_one_strict_json_object(text: str, why: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_object(text, "document")
    assert why in fields(caught.value)["document"]


def test_a_document_keeps_its_values() -> None:
    assert parse_object('{"a": {"b": [1, 2.5, "x", true, null]}}', "document") == {
        "a": {"b": [1, 2.5, "x", True, None]}
    }


def test_size_is_counted_in_utf8_bytes() -> None:
    violations = Violations()
    check_size(violations, "é" * (MAX_DOCUMENT_BYTES // 2), "document")
    assert violations.items == []
    check_size(violations, "é" * (MAX_DOCUMENT_BYTES // 2 + 1), "document")
    assert [v.field for v in violations.items] == ["document"]


def test_the_orders_schema_holds_the_order_contracts_bound() -> None:
    schema = Schema(ORDERS_SCHEMA.read_text())
    assert schema.violations({"max_lines_per_order": 50}) == []
    assert schema.violations({}) == []  # the service's default applies
    assert fields_of(schema, {"max_lines_per_order": 0}) == {
        "max_lines_per_order": "must be at least 1 (is 0)"
    }
    assert fields_of(schema, {"max_lines_per_order": 101}) == {
        "max_lines_per_order": "must be at most 100 (is 101)"
    }
    assert fields_of(schema, {"max_lines_per_order": 2.5}) == {
        "max_lines_per_order": "must be an integer, not a number"
    }
    assert fields_of(schema, {"max_line_per_order": 5}) == {
        "max_line_per_order": "is not a field of this namespace's schema"
    }
    assert schema.parsed["properties"]["max_lines_per_order"]["default"] == 50


def fields_of(schema: Schema, document: object) -> dict[str, str]:
    return {v.field: v.description for v in schema.violations(document)}


NESTED = {
    "type": "object",
    "properties": {
        "lines": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"sku": {"type": "string"}, "quantity": {"minimum": 1}},
                "required": ["sku"],
            },
        },
        "flags": {"type": "object", "additionalProperties": {"enum": ["on", "off"]}},
        "mode": {"const": "strict"},
        "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 5},
    },
}


def test_errors_name_the_path_into_the_document() -> None:
    schema = Schema(json.dumps(NESTED))
    found = fields_of(
        schema,
        {
            "lines": [{"sku": "a", "quantity": 1}, {"quantity": 0}],
            "flags": {"new.checkout": "maybe"},
            "mode": "loose",
            "name": "ABCDEFG",
        },
    )
    assert found == {
        "lines[1].sku": "is required",
        "lines[1].quantity": "must be at least 1 (is 0)",
        'flags["new.checkout"]': 'must be one of "on", "off" (is "maybe")',
        "mode": 'must be "strict" (is "loose")',
        "name": found["name"],
    }
    assert found["name"].startswith(("must match", "must be at most 5"))


def test_the_best_match_comes_first_and_the_list_is_bounded() -> None:
    schema = Schema(
        json.dumps(
            {
                "type": "object",
                "properties": {f"k{i}": {"type": "integer"} for i in range(30)},
            }
        )
    )
    problems = schema.violations({f"k{i}": "x" for i in range(30)})
    assert len(problems) == MAX_VIOLATIONS
    # A type error at the top outranks everything below it.
    assert [v.field for v in schema.violations([])] == ["document"]


@pytest.mark.parametrize(
    ("draft", "valid_there"),
    [
        ("http://json-schema.org/draft-04/schema#", True),  # exclusiveMaximum is a boolean there
        ("http://json-schema.org/draft-07/schema#", False),
        ("https://json-schema.org/draft/2020-12/schema", False),
    ],
)
def test_the_draft_is_the_one_the_schema_names(draft: str, valid_there: bool) -> None:
    bound = {"maximum": 5, "exclusiveMaximum": True}
    text = json.dumps({"$schema": draft, "type": "object", "properties": {"n": bound}})
    if valid_there:
        assert Schema(text).violations({"n": 4}) == []
        assert [v.field for v in Schema(text).violations({"n": 5})] == ["n"]
    else:
        with pytest.raises(InvalidArgument) as caught:
            Schema(text)
        assert list(fields(caught.value)) == ["schema.properties.n.exclusiveMaximum"]


def test_an_unknown_draft_is_refused_not_guessed() -> None:
    with pytest.raises(InvalidArgument) as caught:
        Schema(json.dumps({"$schema": "https://example.com/my-draft", "type": "object"}))
    assert "names no JSON Schema draft" in fields(caught.value)["schema.$schema"]


def test_a_schema_that_is_not_a_schema_is_refused_naming_its_bad_part() -> None:
    with pytest.raises(InvalidArgument) as caught:
        Schema(json.dumps({"type": "object", "properties": {"n": {"minimum": "one"}}}))
    assert "is not a valid JSON Schema" in fields(caught.value)["schema.properties.n.minimum"]
    with pytest.raises(InvalidArgument) as caught:
        Schema("not json")
    assert "is not JSON" in fields(caught.value)["schema"]


def test_a_remote_reference_is_never_fetched() -> None:
    schema = Schema(json.dumps({"$ref": "https://example.com/elsewhere.json"}))
    with pytest.raises(FailedPrecondition) as caught:
        schema.violations({})
    assert caught.value.reason == "SCHEMA_UNRESOLVABLE"


def test_the_same_schema_is_the_same_whatever_its_layout() -> None:
    schema = Schema('{"type": "object", "properties": {"a": {"maximum": 1}}}')
    assert schema.same_as('{\n  "properties": {"a": {"maximum": 1}},\n  "type": "object"\n}')
    assert not schema.same_as('{"type": "object", "properties": {"a": {"maximum": 1.0}}}')
    assert not schema.same_as('{"type": "object", "properties": {"a": {"maximum": true}}}')
    assert not schema.same_as("not json")
