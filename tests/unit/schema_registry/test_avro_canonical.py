"""Confluent's canonical and normalized strings of Avro schemas (schema_registry.avro).

The vectors marked "Confluent" are copied from confluentinc/schema-registry's own tests:
avro-serializer/src/test/java/io/confluent/kafka/serializers/AvroSchemaTest.java
(testNormalization, testNormalizationPreservesMetadataForPrimitiveTypes),
avro-serializer/.../KafkaAvroSerializerTest.java (testResolvedFormat) and
core/src/test/java/io/confluent/kafka/schemaregistry/rest/RestApiTest.java
(testSchemaNormalization, testNormalizeConfigFallback*). The others spell out Avro Java's
Schema.toJson rules (names and namespaces, key order, Jackson's numbers and escapes).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

from schema_registry.avro import (
    AvroSchema,
    canonical_string,
    normalized_string,
    parse_schema,
    resolved_string,
)


def canonical(text: str, refs: Sequence[AvroSchema] = ()) -> str:
    return canonical_string(parse_schema(text, refs), refs)


def normalized(text: str, refs: Sequence[AvroSchema] = ()) -> str:
    """What ?normalize=true stores: the canonical string of the normalized schema."""
    return canonical(normalized_string(parse_schema(text, refs), refs), refs)


# --- Confluent's vectors -----------------------------------------------------------------------


def test_confluent_normalization_vector() -> None:
    text = (
        '{"type":"record","name":"myrecord","doc":"hi\\"there",'
        '"fields":[{"type":"string","name":"f1","doc":"bye\\"now"}]}'
    )
    expected = (
        '{"type":"record","name":"myrecord","doc":"hi\\"there",'
        '"fields":[{"name":"f1","type":"string","doc":"bye\\"now"}]}'
    )
    assert canonical(text) == expected
    assert normalized(text) == expected


def test_confluent_normalization_keeps_metadata_of_primitive_types() -> None:
    text = json.dumps(
        {
            "connect.name": "some.scope.Envelope",
            "fields": [
                {
                    "default": None,
                    "name": "before",
                    "type": [
                        "null",
                        {
                            "connect.name": "some.scope.Value",
                            "fields": [
                                {
                                    "name": "created_at",
                                    "type": {
                                        "connect.name": "io.debezium.time.Timestamp",
                                        "connect.version": 1,
                                        "type": "long",
                                    },
                                },
                                {"name": "normal_long", "type": "long"},
                            ],
                            "name": "Value",
                            "type": "record",
                        },
                    ],
                },
                {"default": None, "name": "after", "type": ["null", "Value"]},
            ],
            "name": "Envelope",
            "namespace": "some.scope",
            "type": "record",
        }
    )
    expected = (
        '{"type":"record","name":"Envelope","namespace":"some.scope","fields":['
        '{"name":"before","type":["null",{"type":"record","name":"Value","fields":['
        '{"name":"created_at","type":{"type":"long",'
        '"connect.name":"io.debezium.time.Timestamp","connect.version":1}},'
        '{"name":"normal_long","type":"long"}],"connect.name":"some.scope.Value"}],'
        '"default":null},'
        '{"name":"after","type":["null","Value"],"default":null}],'
        '"connect.name":"some.scope.Envelope"}'
    )
    assert canonical(text) == expected
    assert normalized(text) == expected


USER = (
    '{"namespace": "example.avro", "type": "record", "name": "User",'
    '"fields": [{"name": "name", "type": "string"}]}'
)
ACCOUNT = (
    '{"namespace": "example.avro", "type": "record", "name": "Account",'
    '"fields": [{"name": "accountNumber", "type": "string"}]}'
)


def test_confluent_references_are_names_and_resolved_format_writes_them_out() -> None:
    refs = [parse_schema(USER), parse_schema(ACCOUNT)]
    schema = parse_schema('[ "example.avro.User", "example.avro.Account" ]', refs)
    assert canonical_string(schema, refs) == '["example.avro.User","example.avro.Account"]'
    assert resolved_string(schema) == (
        '[{"type":"record","name":"User","namespace":"example.avro",'
        '"fields":[{"name":"name","type":"string"}]}'
        ',{"type":"record","name":"Account","namespace":"example.avro",'
        '"fields":[{"name":"accountNumber","type":"string"}]}]'
    )


def test_confluent_normalize_sorts_field_properties() -> None:
    text = (
        '{"type":"record","name":"myrecord","fields":'
        '[{"type":"string","name":"field1","zprop":"z","aprop":"a"}]}'
    )
    assert canonical(text) == (
        '{"type":"record","name":"myrecord","fields":'
        '[{"name":"field1","type":"string","zprop":"z","aprop":"a"}]}'
    )
    assert normalized(text) == (
        '{"type":"record","name":"myrecord","fields":'
        '[{"name":"field1","type":"string","aprop":"a","zprop":"z"}]}'
    )


def test_confluent_schema_normalization_with_references() -> None:
    refs = [
        parse_schema(
            '{"type":"record","name":"Subrecord1","namespace":"otherns",'
            '"fields":[{"name":"field1","type":"string"}]}'
        ),
        parse_schema(
            '{"type":"record","name":"Subrecord2","namespace":"otherns",'
            '"fields":[{"name":"field2","type":"string"}]}'
        ),
    ]
    one = (
        '{"type":"record","name":"myrecord","fields":[{"type":{"type":"int"},"name":"field0"},'
        '{"name":"field1","type":"otherns.Subrecord1"},'
        '{"name":"field2","type":"otherns.Subrecord2"}],"extraMetadata": {"a": 1, "b": 2}}'
    )
    two = one.replace('{"type":{"type":"int"},', '{"type":"int",').replace(
        '{"a": 1, "b": 2}', '{"b": 2, "a": 1}'
    )
    fields = (
        '"fields":[{"name":"field0","type":"int"},{"name":"field1","type":"otherns.Subrecord1"},'
        '{"name":"field2","type":"otherns.Subrecord2"}]'
    )
    assert canonical(one, refs) == (
        f'{{"type":"record","name":"myrecord",{fields},"extraMetadata":{{"a":1,"b":2}}}}'
    )
    assert canonical(two, refs) == (
        f'{{"type":"record","name":"myrecord",{fields},"extraMetadata":{{"b":2,"a":1}}}}'
    )
    assert (
        normalized(one, refs)
        == normalized(two, refs)
        == (f'{{"type":"record","name":"myrecord",{fields},"extraMetadata":{{"a":1,"b":2}}}}')
    )


# --- names and namespaces ----------------------------------------------------------------------

USER_FILE = json.dumps(
    {
        "type": "record",
        "name": "User",
        "namespace": "com.example",
        "doc": "A user.",
        "fields": [{"name": "id", "type": "long"}, {"name": "name", "type": "string"}],
    },
    indent=2,
)
# confluent-kafka-go's avrov2 serializer (hamba/avro) writes the full name and no namespace,
# and a primitive as an object.
USER_GO = (
    '{"name":"com.example.User","doc":"A user.","type":"record","fields":['
    '{"name":"id","type":{"type":"long"}},{"name":"name","type":{"type":"string"}}]}'
)
USER_CANONICAL = (
    '{"type":"record","name":"User","namespace":"com.example","doc":"A user.","fields":['
    '{"name":"id","type":"long"},{"name":"name","type":"string"}]}'
)


@pytest.mark.parametrize("text", [USER_FILE, USER_GO], ids=["file", "full-name"])
def test_both_spellings_of_a_name_are_one_canonical_string(text: str) -> None:
    assert canonical(text) == USER_CANONICAL
    assert normalized(text) == USER_CANONICAL


def test_a_primitive_without_properties_is_its_name() -> None:
    assert canonical('{"type": "long"}') == '"long"'
    assert canonical('{"type": "string", "doc": "reserved keys are no properties"}') == '"string"'
    assert canonical('{"type":"array","items":{"type":"int"},"doc":"x"}') == (
        '{"type":"array","items":"int"}'
    )


def test_namespaces_are_written_where_they_change() -> None:
    text = json.dumps(
        {
            "type": "record",
            "name": "Outer",
            "namespace": "a.b",
            "fields": [
                {
                    "name": "same",
                    "type": {
                        "type": "record",
                        "name": "Inner",
                        "fields": [{"name": "x", "type": "int"}],
                    },
                },
                {"name": "other", "type": {"type": "enum", "name": "c.d.Color", "symbols": ["R"]}},
                {
                    "name": "bare",
                    "type": {"type": "fixed", "name": "Hash", "namespace": "", "size": 4},
                },
                {"name": "again", "type": "Inner"},
                {"name": "color", "type": "c.d.Color"},
                {"name": "hash", "type": "Hash"},
            ],
        }
    )
    expected = (
        '{"type":"record","name":"Outer","namespace":"a.b","fields":['
        '{"name":"same","type":{"type":"record","name":"Inner","fields":'
        '[{"name":"x","type":"int"}]}},'
        '{"name":"other","type":{"type":"enum","name":"Color","namespace":"c.d",'
        '"symbols":["R"]}},'
        '{"name":"bare","type":{"type":"fixed","name":"Hash","namespace":"","size":4}},'
        '{"name":"again","type":"Inner"},'
        '{"name":"color","type":"c.d.Color"},'
        '{"name":"hash","type":"Hash"}]}'
    )
    assert canonical(text) == expected
    assert canonical(expected) == expected, "the canonical string is its own canonical string"


def test_a_nested_type_inherits_the_namespace_of_the_type_it_is_defined_in() -> None:
    text = (
        '{"type":"record","name":"R","namespace":"x","fields":[{"name":"i","type":'
        '{"type":"record","name":"y.I","fields":[{"name":"e","type":'
        '{"type":"enum","name":"E","symbols":["A"]}}]}},{"name":"e2","type":"y.E"}]}'
    )
    assert canonical(text) == (
        '{"type":"record","name":"R","namespace":"x","fields":[{"name":"i","type":'
        '{"type":"record","name":"I","namespace":"y","fields":[{"name":"e","type":'
        '{"type":"enum","name":"E","symbols":["A"]}}]}},{"name":"e2","type":"y.E"}]}'
    )


def test_a_name_that_is_a_type_name_is_written_qualified() -> None:
    text = (
        '{"type":"record","name":"R","namespace":"n","fields":['
        '{"name":"a","type":{"type":"fixed","name":"record","size":1}},'
        '{"name":"b","type":"record"}]}'
    )
    assert canonical(text) == (
        '{"type":"record","name":"R","namespace":"n","fields":['
        '{"name":"a","type":{"type":"fixed","name":"record","size":1}},'
        '{"name":"b","type":"n.record"}]}'
    )


def test_named_types_of_nested_references_are_known_names() -> None:
    base = parse_schema('{"type":"enum","name":"shop.Currency","symbols":["EUR"]}')
    money = parse_schema(
        '{"type":"record","name":"shop.Money","fields":[{"name":"c","type":"shop.Currency"}]}',
        [base],
    )
    order = (
        '{"type":"record","name":"shop.Order","fields":[{"name":"total","type":"shop.Money"},'
        '{"name":"c","type":"shop.Currency"}]}'
    )
    expected = (
        '{"type":"record","name":"Order","namespace":"shop","fields":['
        '{"name":"total","type":"Money"},{"name":"c","type":"Currency"}]}'
    )
    assert canonical(order, [money]) == expected
    assert resolved_string(parse_schema(order, [money])) == (
        '{"type":"record","name":"Order","namespace":"shop","fields":['
        '{"name":"total","type":{"type":"record","name":"Money","fields":[{"name":"c","type":'
        '{"type":"enum","name":"Currency","symbols":["EUR"]}}]}},{"name":"c","type":"Currency"}]}'
    )


# --- key order, properties, logical types --------------------------------------------------------


def test_properties_keep_their_order_and_normalize_sorts_them_deeply() -> None:
    text = (
        '{"type":"record","name":"P","fields":[{"name":"s","type":'
        '{"type":"string","doc":"dropped","avro.java.string":"String"}}],'
        '"zz":1,"aa":{"y":1.5,"x":[1e10,0.001,1e-4,100]}}'
    )
    assert canonical(text) == (
        '{"type":"record","name":"P","fields":[{"name":"s","type":'
        '{"type":"string","avro.java.string":"String"}}],'
        '"zz":1,"aa":{"y":1.5,"x":[1.0E10,0.001,1.0E-4,100]}}'
    )
    assert normalized(text) == (
        '{"type":"record","name":"P","fields":[{"name":"s","type":'
        '{"type":"string","avro.java.string":"String"}}],'
        '"aa":{"x":[1.0E10,0.001,1.0E-4,100],"y":1.5},"zz":1}'
    )


def test_logical_types() -> None:
    decimal = '{"type":"bytes","scale":2,"precision":4,"logicalType":"decimal","connect.name":"x"}'
    assert canonical(decimal) == decimal
    assert normalized(decimal) == (
        '{"type":"bytes","logicalType":"decimal","precision":4,"scale":2,"connect.name":"x"}'
    )
    millis = '{"type":"long","connect.version":1,"logicalType":"timestamp-millis"}'
    assert canonical(millis) == millis
    assert normalized(millis) == (
        '{"type":"long","logicalType":"timestamp-millis","connect.version":1}'
    )
    # Avro Java ignores a logical type on the wrong type: it is an ordinary property then.
    wrong = '{"type":"string","logicalType":"date","a":1}'
    assert normalized(wrong) == '{"type":"string","a":1,"logicalType":"date"}'
    uuid = '{"type":"fixed","name":"U","size":16,"logicalType":"uuid"}'
    assert canonical(uuid) == uuid
    assert normalized(uuid) == uuid


def test_fields_aliases_orders_defaults_and_numbers() -> None:
    text = (
        '{"type":"record","name":"F","namespace":"n","aliases":["Old","m.Older","Old"],'
        '"fields":[{"name":"a","type":"int","order":"ascending","aliases":["b","c"],'
        '"default":1,"doc":"d"},{"name":"z","type":"double","order":"DESCENDING",'
        '"default":1e10},{"name":"f","type":"float","default":0.1,"order":"ignore"}]}'
    )
    assert canonical(text) == (
        '{"type":"record","name":"F","namespace":"n","fields":['
        '{"name":"a","type":"int","doc":"d","default":1,"aliases":["b","c"]},'
        '{"name":"z","type":"double","default":1.0E10,"order":"descending"},'
        '{"name":"f","type":"float","default":0.1,"order":"ignore"}],'
        '"aliases":["Old","m.Older"]}'
    )
    assert normalized_string(parse_schema(text), ()) == (
        '{"name":"n.F","type":"record","fields":['
        '{"name":"a","type":"int","order":"ASCENDING","doc":"d","aliases":["b","c"],'
        '"default":1},'
        '{"name":"z","type":"double","order":"DESCENDING","default":1.0E10},'
        '{"name":"f","type":"float","order":"IGNORE","default":0.1}],'
        '"aliases":["m.Older","n.Old"]}'
    )
    assert normalized(text) == (
        '{"type":"record","name":"F","namespace":"n","fields":['
        '{"name":"a","type":"int","doc":"d","default":1,"aliases":["b","c"]},'
        '{"name":"z","type":"double","default":1.0E10,"order":"descending"},'
        '{"name":"f","type":"float","default":0.1,"order":"ignore"}],'
        '"aliases":["m.Older","Old"]}'
    )


def test_normalized_aliases_and_properties_in_any_order_are_one_string() -> None:
    one = (
        '{"type":"record","name":"n.R","aliases":["B","A"],"x":1,"y":2,'
        '"fields":[{"name":"f","type":"int","aliases":["q","p"]}]}'
    )
    two = (
        '{"type":"record","name":"n.R","aliases":["A","B"],"y":2,"x":1,'
        '"fields":[{"name":"f","type":"int","aliases":["p","q"]}]}'
    )
    assert canonical(one) != canonical(two)
    assert normalized(one) == normalized(two)


def test_errors_enums_and_docs() -> None:
    text = (
        '{"type":"error","name":"Oops","fields":[{"name":"e","type":{"type":"enum","name":"E",'
        '"doc":"d","symbols":["A","B"],"default":"B","aliases":["F"]}}]}'
    )
    assert canonical(text) == text, "already in Avro's key order: type, name, doc, own keys"
    assert normalized_string(parse_schema(text), ()) == (
        '{"name":"Oops","type":"record","fields":[{"name":"e","type":{"name":"E","type":"enum",'
        '"symbols":["A","B"],"doc":"d","aliases":["F"],"default":"B"},"order":"ASCENDING"}]}'
    )


def test_strings_are_escaped_as_jackson_escapes_them() -> None:
    text = json.dumps({"type": "fixed", "name": "X", "size": 1, "doc": 'tab\there\x1f/é"'})
    assert canonical(text) == (
        '{"type":"fixed","name":"X","doc":"tab\\there\\u001F/é\\"","size":1}'
    )


@pytest.mark.parametrize(
    ("default", "written"),
    [
        ('"NaN"', '"NaN"'),
        ('"-Infinity"', '"-Infinity"'),
        ("1", "1"),
        ("2.5e-5", "2.5E-5"),
        ("1234567.0", "1234567.0"),
        ("12345678.0", "1.2345678E7"),
        ("-0.0", "-0.0"),
    ],
)
def test_double_defaults_are_written_as_java_writes_doubles(default: str, written: str) -> None:
    field = f'{{"name":"d","type":"double","default":{default}}}'
    text = f'{{"type":"record","name":"D","fields":[{field}]}}'
    assert canonical(text).endswith(f'"default":{written}}}]}}')


def test_the_canonical_string_parses_back_to_itself() -> None:
    text = (
        '{"type":"record","name":"T","namespace":"a","fields":['
        '{"name":"u","type":["null",{"type":"record","name":"b.U","fields":['
        '{"name":"v","type":{"type":"map","values":"a.T"}}]}],"default":null},'
        '{"name":"w","type":{"type":"array","items":"b.U","x":[1.5]}}]}'
    )
    once = canonical(text)
    assert canonical(once) == once
    assert normalized(once) == normalized(text)
