"""Avro schema parsing: what is accepted, what is rejected and why, and the canonical form.

Canonical form and fingerprint are cross-checked against fastavro, an independent
implementation of the specification's Parsing Canonical Form and CRC-64-AVRO.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import fastavro.schema
import pytest

from schema_registry.avro import AvroSchema, InvalidSchema, check_pair, parse_schema


def avro(schema: Any, *refs: AvroSchema, **options: bool) -> AvroSchema:
    return parse_schema(json.dumps(schema), refs, **options)


def rec(name: str, *fields: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "record", "name": name, "fields": list(fields), **extra}


def fld(name: str, type_: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, **extra}


# --- invalid schemas: every class of mistake, with the words the user needs to see ----------

_INVALID: list[tuple[str, str, str]] = [
    # (id, schema text, expected fragment of the message)
    ("empty text", "", "the schema is empty"),
    ("blank text", "   \n", "the schema is empty"),
    ("not JSON", "{", "not valid JSON: Expecting property name"),
    ("bare word", "string", "not valid JSON"),
    ("NaN is not JSON", "NaN", "NaN is not a JSON value"),
    (
        "number",
        "42",
        "a schema must be a type name string, an object or a union array, not a number",
    ),
    ("JSON null", "null", "not null"),
    ("object without type", "{}", "missing 'type' attribute"),
    ("unknown type name", '"Foo"', "unknown type name 'Foo'"),
    ("unknown type object", '{"type": "Foo"}', "unknown type name 'Foo'"),
    (
        "unknown field type, looked up in namespace",
        json.dumps(rec("R", fld("a", "Missing"), namespace="com.acme")),
        "at /fields/0/type: unknown type name 'Missing' (looked up as 'com.acme.Missing' or "
        "'Missing')",
    ),
    (
        "use before definition",
        json.dumps(rec("R", fld("a", "B"), fld("b", rec("B")))),
        "unknown type name 'B'",
    ),
    ("type wrapped in an object", '{"type": {"type": "int"}}', "'type' must be a type name string"),
    ("bare type keyword", '"record"', "unknown type name 'record'"),
    ("record without name", '{"type": "record", "fields": []}', "missing 'name'"),
    ("name not a string", '{"type": "record", "name": 1, "fields": []}', "'name' must be a string"),
    ("bad name", json.dumps(rec("1abc")), "invalid name '1abc'"),
    ("bad name character", json.dumps(rec("a-b")), "invalid name 'a-b'"),
    ("empty name", json.dumps(rec("")), "invalid name ''"),
    (
        "bad namespace",
        json.dumps(rec("R", namespace="a..b")),
        "invalid namespace 'a..b' component ''",
    ),
    ("bad dotted name", json.dumps(rec("com.1x.R")), "namespace 'com.1x' component '1x'"),
    ("namespace not a string", json.dumps(rec("R", namespace=5)), "'namespace' must be a string"),
    ("named after a primitive", json.dumps(rec("int")), "'int' is a primitive type name"),
    ("record without fields", '{"type": "record", "name": "R"}', "needs a 'fields' array"),
    (
        "fields not an array",
        '{"type": "record", "name": "R", "fields": {}}',
        "needs a 'fields' array",
    ),
    ("field not an object", json.dumps(rec("R", "a")), "at /fields/0: a field must be an object"),
    (
        "field without name",
        '{"type":"record","name":"R","fields":[{"type":"int"}]}',
        "field without",
    ),
    (
        "bad field name",
        json.dumps(rec("R", fld("my-field", "int"))),
        "invalid field name 'my-field'",
    ),
    (
        "duplicate field",
        json.dumps(rec("R", fld("a", "int"), fld("a", "long"))),
        "at /fields/1/name: duplicate field 'a' in record 'R'",
    ),
    (
        "field without type",
        '{"type":"record","name":"R","fields":[{"name":"a"}]}',
        "field 'a' has no 'type'",
    ),
    ("bad order", json.dumps(rec("R", fld("a", "int", order="up"))), "expected 'ascending'"),
    (
        "aliases not strings",
        json.dumps(rec("R", aliases=[1])),
        "'aliases' must be an array of strings",
    ),
    (
        "field aliases not a list",
        json.dumps(rec("R", fld("a", "int", aliases="b"))),
        "at /fields/0/aliases: 'aliases' must be an array of strings",
    ),
    (
        "redefined name",
        json.dumps(rec("R", fld("a", rec("S")), fld("b", rec("S")))),
        "the named type 'S' is already defined",
    ),
    (
        "record redefines itself",
        json.dumps(rec("R", fld("a", rec("R")))),
        "the named type 'R' is already defined",
    ),
    ("enum without symbols", '{"type": "enum", "name": "E"}', "needs a 'symbols' array"),
    ("enum symbol not a string", '{"type":"enum","name":"E","symbols":[1]}', "must be strings"),
    ("bad enum symbol", '{"type":"enum","name":"E","symbols":["A B"]}', "symbol 'A B'"),
    (
        "duplicate enum symbol",
        '{"type":"enum","name":"E","symbols":["A","B","A"]}',
        "at /symbols/2: duplicate symbol 'A' in enum 'E'",
    ),
    (
        "enum default not a symbol",
        '{"type":"enum","name":"E","symbols":["A"],"default":"Z"}',
        "enum 'E' default \"Z\" is not one of its symbols",
    ),
    ("fixed without size", '{"type": "fixed", "name": "F"}', "needs an integer 'size'"),
    ("fixed negative size", '{"type": "fixed", "name": "F", "size": -1}', "got -1"),
    ("fixed size as string", '{"type": "fixed", "name": "F", "size": "16"}', 'got "16"'),
    ("fixed size as float", '{"type": "fixed", "name": "F", "size": 16.0}', "got 16.0"),
    ("fixed size as boolean", '{"type": "fixed", "name": "F", "size": true}', "got true"),
    (
        "fixed size too large",
        '{"type": "fixed", "name": "F", "size": 2147483648}',
        "got 2147483648",
    ),
    ("array without items", '{"type": "array"}', "array without 'items'"),
    ("map without values", '{"type": "map"}', "map without 'values'"),
    ("bad array items", '{"type": "array", "items": "Nope"}', "at /items: unknown type name"),
    ("nested union", '["null", ["int", "string"]]', "at /1: a union may not immediately contain"),
    ("duplicate primitive branch", '["int", "string", "int"]', "duplicate union branch 'int'"),
    (
        "duplicate branch via logical type",
        '["long", {"type": "long", "logicalType": "timestamp-millis"}]',
        "duplicate union branch 'long' (already at /0)",
    ),
    (
        "duplicate array branch",
        '[{"type":"array","items":"int"}, {"type":"array","items":"string"}]',
        "duplicate union branch 'array'",
    ),
    (
        "duplicate named branch",
        json.dumps([rec("R"), "R"]),
        "duplicate union branch 'R'",
    ),
]

_BAD_DEFAULTS: list[tuple[str, Any, Any, str]] = [
    # (id, field type, default, expected fragment)
    ("int default string", "int", "1", "expected a 32-bit integer"),
    ("int default float", "int", 1.5, "expected a 32-bit integer"),
    ("int default 1.0", "int", 1.0, "expected a 32-bit integer"),
    ("int default too large", "int", 2**31, "expected a 32-bit integer"),
    ("int default boolean", "int", True, "expected a 32-bit integer"),
    ("long default too large", "long", 2**63, "expected a 64-bit integer"),
    ("float default string", "float", "1.5", "expected a number"),
    ("double default null", "double", None, "expected a number"),
    ("boolean default 0", "boolean", 0, "expected true or false"),
    ("null default 0", "null", 0, "expected null"),
    ("string default number", "string", 1, "expected a string"),
    ("bytes default beyond \\u00ff", "bytes", "\u0100", "range \\u0000-\\u00ff"),
    (
        "enum default unknown symbol",
        {"type": "enum", "name": "E", "symbols": ["A"]},
        "B",
        "symbols ['A']",
    ),
    ("fixed default wrong length", {"type": "fixed", "name": "F", "size": 2}, "abc", "string of 2"),
    ("array default not a list", {"type": "array", "items": "int"}, {}, "expected a JSON array"),
    ("array default bad item", {"type": "array", "items": "int"}, [1, "x"], "item 1: expected"),
    ("map default bad value", {"type": "map", "values": "int"}, {"k": "v"}, "key 'k': expected"),
    ("record default missing field", rec("Inner", fld("x", "int")), {}, "field 'x' is missing"),
    ("record default bad field", rec("Inner", fld("x", "int")), {"x": "1"}, "field 'x': expected"),
    (
        "union default for a later branch",
        ["null", "string"],
        "x",
        'must be a value of the union\'s first branch "null" (expected null)',
    ),
    ("union default for no branch", ["string", "int"], 1.5, 'first branch "string"'),
    ("empty union default", [], None, "an empty union has no values"),
]


@pytest.mark.parametrize(("text", "expected"), [pytest.param(t, e, id=i) for i, t, e in _INVALID])
def test_invalid_schema(text: str, expected: str) -> None:
    with pytest.raises(InvalidSchema) as excinfo:
        parse_schema(text)
    assert expected in str(excinfo.value)
    assert str(excinfo.value).startswith("Invalid schema")


@pytest.mark.parametrize(
    ("field_type", "default", "expected"),
    [pytest.param(t, d, e, id=i) for i, t, d, e in _BAD_DEFAULTS],
)
def test_invalid_default(field_type: Any, default: Any, expected: str) -> None:
    schema = rec("R", fld("ok", "int"), fld("f", field_type, default=default))
    with pytest.raises(InvalidSchema) as excinfo:
        avro(schema)
    message = str(excinfo.value)
    shown = json.dumps(default, separators=(",", ":"), ensure_ascii=False)
    assert message.startswith(f"Invalid schema at /fields/1/default: invalid default {shown}")
    assert "for field 'f' of type" in message
    assert expected in message
    # Defaults are a validation concern only: the same schema parses when validation is off.
    assert avro(schema, validate_defaults=False).name == "R"


_GOOD_DEFAULTS: list[tuple[str, Any, Any]] = [
    ("int", "int", -(2**31)),
    ("long", "long", 2**63 - 1),
    ("float from int", "float", 1),
    ("double NaN spelled as string", "double", "NaN"),
    ("double -Infinity", "double", "-Infinity"),
    ("bytes latin-1", "bytes", "\u00ff\u0000"),
    ("fixed", {"type": "fixed", "name": "F", "size": 2}, "\u00ab\u00cd"),
    ("enum", {"type": "enum", "name": "E", "symbols": ["A", "B"]}, "B"),
    ("null first in union", ["null", "string"], None),
    ("string first in union", ["string", "null"], "x"),
    ("array", {"type": "array", "items": ["null", "int"]}, [None, None]),
    ("map", {"type": "map", "values": "long"}, {"a": 1}),
    (
        "record using the inner field default",
        rec("Inner", fld("x", "int"), fld("y", "int", default=3)),
        {"x": 1},
    ),
]


@pytest.mark.parametrize(
    ("field_type", "default"), [pytest.param(t, d, id=i) for i, t, d in _GOOD_DEFAULTS]
)
def test_valid_default(field_type: Any, default: Any) -> None:
    avro(rec("R", fld("f", field_type, default=default)))


def test_union_default_matching_a_later_branch_is_accepted_when_not_strict() -> None:
    # Avro Java >= 1.11.3 (AVRO-3649) accepts this; the registry can opt in.
    schema = rec("R", fld("f", ["null", "string"], default="x"))
    with pytest.raises(InvalidSchema):
        avro(schema)
    assert avro(schema, strict_union_defaults=False).name == "R"
    with pytest.raises(InvalidSchema, match="matches no branch of the union"):
        avro(rec("R", fld("f", ["null", "string"], default=1)), strict_union_defaults=False)


def test_recursive_record_default() -> None:
    node = rec("Node", fld("v", "int"), fld("next", ["null", "Node"], default=None))
    schema = rec("Holder", fld("n", node, default={"v": 1, "next": None}))
    assert avro(schema).name == "Holder"
    with pytest.raises(InvalidSchema, match="field 'v': expected a 32-bit integer"):
        avro(rec("Holder", fld("n", node, default={"v": "x"})))


def test_nesting_limit() -> None:
    deep: Any = "int"
    for _ in range(99):  # 99 arrays + the int = 100 levels
        deep = {"type": "array", "items": deep}
    avro(deep)
    with pytest.raises(InvalidSchema, match="nested more than 100 levels"):
        avro({"type": "array", "items": deep})
    with pytest.raises(InvalidSchema, match="nested too deeply"):
        parse_schema("[" * 100_000 + "]" * 100_000)


# --- names, namespaces, references ----------------------------------------------------------


def test_namespaces_and_name_resolution() -> None:
    schema = avro(
        rec(
            "Outer",
            fld("inner", rec("Inner", fld("x", "int"))),  # inherits com.acme
            fld("again", "Inner"),  # short name, resolved in the enclosing namespace
            fld("qualified", "com.acme.Inner"),
            fld("other", rec("Other", namespace="org.x", fields=[])),
            fld("dotted", rec("net.y.Dotted", namespace="ignored.because.dotted")),
            fld("global", rec("Global", namespace="")),  # "" = the null namespace
            fld("global_again", "Global"),  # falls back to the null namespace
            namespace="com.acme",
        )
    )
    assert schema.name == "com.acme.Outer"
    assert schema.canonical == (
        '{"name":"com.acme.Outer","type":"record","fields":['
        '{"name":"inner","type":{"name":"com.acme.Inner","type":"record","fields":'
        '[{"name":"x","type":"int"}]}},'
        '{"name":"again","type":"com.acme.Inner"},'
        '{"name":"qualified","type":"com.acme.Inner"},'
        '{"name":"other","type":{"name":"org.x.Other","type":"record","fields":[]}},'
        '{"name":"dotted","type":{"name":"net.y.Dotted","type":"record","fields":[]}},'
        '{"name":"global","type":{"name":"Global","type":"record","fields":[]}},'
        '{"name":"global_again","type":"Global"}]}'
    )


ADDRESS_TEXT = json.dumps(rec("Address", fld("street", "string"), namespace="com.acme"))
ORDER_TEXT = json.dumps(rec("Order", fld("ship_to", "com.acme.Address"), namespace="com.acme"))


def test_references_supply_named_types() -> None:
    address = parse_schema(ADDRESS_TEXT)
    order = parse_schema(ORDER_TEXT, [address])
    assert order.name == "com.acme.Order"
    # The canonical form is of the resolved schema: the referenced type is inlined.
    assert order.canonical == (
        '{"name":"com.acme.Order","type":"record","fields":[{"name":"ship_to","type":'
        '{"name":"com.acme.Address","type":"record","fields":[{"name":"street","type":"string"}]}}]}'
    )
    # ... and the text and to_json() stay as given.
    assert order.text == ORDER_TEXT
    assert order.to_json() == json.loads(ORDER_TEXT)
    with pytest.raises(InvalidSchema, match=re.escape("unknown type name 'com.acme.Address'")):
        parse_schema(ORDER_TEXT)
    # Short names resolve against references too, within the enclosing namespace.
    short = parse_schema(json.dumps(rec("O", fld("a", "Address"), namespace="com.acme")), [address])
    assert "com.acme.Address" in short.canonical


def test_transitive_references() -> None:
    address = parse_schema(ADDRESS_TEXT)
    order = parse_schema(ORDER_TEXT, [address])
    batch = parse_schema(
        json.dumps(rec("Batch", fld("orders", {"type": "array", "items": "com.acme.Order"}))),
        [order],
    )
    assert '"com.acme.Address"' in batch.canonical
    # Passing a shared dependency again (same object or an equal re-parse) is fine.
    parse_schema(json.dumps(rec("B2", fld("o", "com.acme.Order"))), [address, order])
    parse_schema(
        json.dumps(rec("B3", fld("o", "com.acme.Order"))), [parse_schema(ADDRESS_TEXT), order]
    )


def test_conflicting_or_redefined_reference_types() -> None:
    address = parse_schema(ADDRESS_TEXT)
    other = parse_schema(json.dumps(rec("Address", fld("zip", "int"), namespace="com.acme")))
    differently = re.escape("define the named type 'com.acme.Address' differently")
    with pytest.raises(InvalidSchema, match=differently):
        parse_schema(ORDER_TEXT, [address, other])
    with pytest.raises(InvalidSchema, match=re.escape("'com.acme.Address' is already defined")):
        parse_schema(ADDRESS_TEXT, [address])


# --- canonical form, fingerprint, equality --------------------------------------------------

_CANONICAL: list[tuple[str, Any, str]] = [
    ("primitive", "int", '"int"'),
    ("primitive object form", {"type": "int"}, '"int"'),
    ("logical type stripped", {"type": "long", "logicalType": "timestamp-millis"}, '"long"'),
    (
        "decimal attributes stripped",
        {"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": 2},
        '"bytes"',
    ),
    ("union", ["null", {"type": "string"}], '["null","string"]'),
    ("array", {"items": "int", "type": "array"}, '{"type":"array","items":"int"}'),
    ("map", {"values": "int", "type": "map"}, '{"type":"map","values":"int"}'),
    (
        "enum keeps order, drops default and doc",
        {
            "symbols": ["B", "A"],
            "type": "enum",
            "name": "E",
            "namespace": "n",
            "doc": "d",
            "default": "A",
        },
        '{"name":"n.E","type":"enum","symbols":["B","A"]}',
    ),
    (
        "fixed",
        {"size": 16, "type": "fixed", "name": "md5", "aliases": ["x"]},
        '{"name":"md5","type":"fixed","size":16}',
    ),
    (
        "record drops default, order, aliases, doc, extra props",
        rec(
            "R",
            fld("a", "int", default=1, order="descending", aliases=["b"], doc="x", extra=1),
            namespace="ns",
            doc="y",
            aliases=["Q"],
            custom={"k": 1},
        ),
        '{"name":"ns.R","type":"record","fields":[{"name":"a","type":"int"}]}',
    ),
    (
        "recursive record by full name",
        rec("L", fld("next", ["null", "L"]), namespace="ns"),
        '{"name":"ns.L","type":"record","fields":[{"name":"next","type":["null","ns.L"]}]}',
    ),
    (
        "error is written as record",
        {"type": "error", "name": "Oops", "fields": []},
        '{"name":"Oops","type":"record","fields":[]}',
    ),
    ("empty union", [], "[]"),
]


@pytest.mark.parametrize(
    ("schema", "canonical"), [pytest.param(s, c, id=i) for i, s, c in _CANONICAL]
)
def test_canonical_form(schema: Any, canonical: str) -> None:
    assert avro(schema).canonical == canonical


_FASTAVRO_CROSS_CHECK: list[tuple[str, Any]] = [
    (i, s) for i, s, _ in _CANONICAL if i not in ("error is written as record", "empty union")
] + [
    (
        "nested namespaces",
        rec(
            "Outer",
            fld("a", rec("A", fld("e", {"type": "enum", "name": "E", "symbols": ["X"]}))),
            fld("b", {"type": "map", "values": "A"}),
            fld(
                "c",
                {
                    "type": "array",
                    "items": ["null", "E", {"type": "fixed", "name": "F", "size": 3}],
                },
            ),
            namespace="com.example.deep",
        ),
    ),
    ("unicode doc", rec("U", fld("a", "string", doc="caf\u00e9 \u2603"))),
]


@pytest.mark.parametrize("schema", [pytest.param(s, id=i) for i, s in _FASTAVRO_CROSS_CHECK])
def test_canonical_form_and_fingerprint_match_fastavro(schema: Any) -> None:
    ours = avro(schema)
    theirs = fastavro.schema.to_parsing_canonical_form(fastavro.schema.parse_schema(schema))
    assert ours.canonical == theirs
    # fastavro prints the 64-bit fingerprint as little-endian bytes.
    assert ours.fingerprint.to_bytes(8, "little").hex() == fastavro.schema.fingerprint(
        theirs, "CRC-64-AVRO"
    )


def test_fingerprint_known_values() -> None:
    # Values from Apache Avro's share/test/data/schema-tests.txt (Java's signed longs).
    assert parse_schema('"null"').fingerprint == 7195948357588979594
    assert parse_schema('{"type": "int"}').fingerprint == 8247732601305521295


def test_equality_and_hash_follow_the_canonical_form() -> None:
    a = parse_schema('{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]}')
    b = parse_schema(
        '{ "type" : "record", "name" : "R", "doc": "docs do not matter",\n'
        '  "fields" : [ {"name": "a", "type": {"type": "int"}, "default": 0} ] }'
    )
    c = parse_schema('{"type":"record","name":"R","fields":[{"name":"a","type":"long"}]}')
    assert a == b
    assert hash(a) == hash(b)
    assert a != c
    assert len({a, b, c}) == 2
    assert a.text != b.text
    assert a != a.canonical  # not equal to its own string


def test_schema_is_immutable_and_to_json_is_a_copy() -> None:
    schema = parse_schema('{"type":"enum","name":"E","symbols":["A"]}')
    with pytest.raises(dataclasses.FrozenInstanceError):
        schema.text = "x"  # type: ignore[misc]
    data = schema.to_json()
    assert isinstance(data, dict)
    data["name"] = "Changed"
    assert schema.to_json() == {"type": "enum", "name": "E", "symbols": ["A"]}
    assert parse_schema('"string"').to_json() == "string"
    assert parse_schema('"string"').name is None
    assert parse_schema('["null","int"]').to_json() == ["null", "int"]


def test_null_default_is_a_default_and_absent_is_not() -> None:
    writer = avro(rec("R", fld("a", "int")))
    with_null = avro(rec("R", fld("a", "int"), fld("b", ["null", "int"], default=None)))
    without = avro(rec("R", fld("a", "int"), fld("b", ["null", "int"])))
    assert check_pair(with_null, writer) == []
    assert [i.rule for i in check_pair(without, writer)] == ["READER_FIELD_MISSING_DEFAULT_VALUE"]


def test_unknown_attributes_and_logical_types_are_kept_but_not_validated() -> None:
    # Avro Java ignores invalid logical types rather than rejecting the schema.
    schema = avro({"type": "bytes", "logicalType": "decimal", "precision": -1, "connect.name": "x"})
    assert schema.canonical == '"bytes"'
    assert schema.to_json() == {
        "type": "bytes",
        "logicalType": "decimal",
        "precision": -1,
        "connect.name": "x",
    }
