"""Avro reader/writer compatibility, as a table.

The first part ports Apache Avro Java's own tables (`TestSchemas`, `TestSchemaCompatibility`,
`TestSchemaCompatibility{TypeMismatch,MissingUnionBranch,NameMismatch,FixedSizeMismatch,
MissingEnumSymbols,ReaderFieldMissingDefaultValue,Multiple}`): same schemas, same expected
incompatibility type, Java message (our `detail`) and location, so a deviation from Java's
behaviour fails here. The rest covers what those tables do not: the full promotion matrix,
aliases, enum defaults, recursion, nested paths, logical types, references and every
compatibility level.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from schema_registry.avro import (
    COMPATIBILITY_LEVELS,
    AvroSchema,
    Incompatibility,
    check_compatibility,
    check_pair,
    parse_schema,
)

# --- schema builders (mirroring org.apache.avro.TestSchemas) --------------------------------

_NO_DEFAULT = object()


def fld(name: str, type_: Any, default: Any = _NO_DEFAULT, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "type": type_}
    if default is not _NO_DEFAULT:
        out["default"] = default
    out.update(extra)
    return out


def rec(name: str, *fields: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "record", "name": name, "fields": list(fields), **extra}


def enum(name: str, symbols: str, default: str | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "enum", "name": name, "symbols": list(symbols), **extra}
    if default is not None:
        out["default"] = default
    return out


def fixed(name: str, size: int, **extra: Any) -> dict[str, Any]:
    return {"type": "fixed", "name": name, "size": size, **extra}


def array(items: Any) -> dict[str, Any]:
    return {"type": "array", "items": items}


def amap(values: Any) -> dict[str, Any]:
    return {"type": "map", "values": values}


NULL, BOOLEAN, INT, LONG = "null", "boolean", "int", "long"
FLOAT, DOUBLE, STRING, BYTES = "float", "double", "string", "bytes"

INT_ARRAY, LONG_ARRAY, STRING_ARRAY = array(INT), array(LONG), array(STRING)
INT_MAP, LONG_MAP, STRING_MAP = amap(INT), amap(LONG), amap(STRING)

ENUM1_AB = enum("Enum1", "AB")
ENUM1_AB_NS1 = enum("Enum1", "AB", namespace="namespace1")
ENUM1_AB_NS2 = enum("Enum1", "AB", namespace="namespace2")
ENUM1_ABC = enum("Enum1", "ABC")
ENUM1_BC = enum("Enum1", "BC")
ENUM2_AB = enum("Enum2", "AB")
ENUM_ABC_ENUM_DEFAULT_A = enum("Enum", "ABC", "A")
ENUM_AB_ENUM_DEFAULT_A = enum("Enum", "AB", "A")
ENUM_ABC_ENUM_DEFAULT_A_RECORD = rec("Record", fld("Field", enum("Schema", "ABC", "A")))
ENUM_AB_ENUM_DEFAULT_A_RECORD = rec("Record", fld("Field", enum("Schema", "AB", "A")))
ENUM_ABC_FIELD_DEFAULT_B_ENUM_DEFAULT_A_RECORD = rec(
    "Record", fld("Field", enum("Schema", "ABC", "A"), "B")
)
ENUM_AB_FIELD_DEFAULT_A_ENUM_DEFAULT_B_RECORD = rec(
    "Record", fld("Field", enum("Schema", "AB", "B"), "A")
)

EMPTY_UNION: list[Any] = []
NULL_UNION, INT_UNION, LONG_UNION = [NULL], [INT], [LONG]
FLOAT_UNION, DOUBLE_UNION, STRING_UNION, BYTES_UNION = [FLOAT], [DOUBLE], [STRING], [BYTES]
INT_STRING_UNION, STRING_INT_UNION = [INT, STRING], [STRING, INT]
INT_FLOAT_UNION, INT_LONG_UNION = [INT, FLOAT], [INT, LONG]
INT_LONG_FLOAT_DOUBLE_UNION = [INT, LONG, FLOAT, DOUBLE]
NULL_INT_ARRAY_UNION, NULL_INT_MAP_UNION = [NULL, INT_ARRAY], [NULL, INT_MAP]

FIXED_4_BYTES, FIXED_8_BYTES = fixed("Fixed", 4), fixed("Fixed", 8)

EMPTY_RECORD1, EMPTY_RECORD2 = rec("Record1"), rec("Record2")
A_INT_RECORD1 = rec("Record1", fld("a", INT))
A_LONG_RECORD1 = rec("Record1", fld("a", LONG))
A_INT_B_INT_RECORD1 = rec("Record1", fld("a", INT), fld("b", INT))
A_DINT_RECORD1 = rec("Record1", fld("a", INT, 0))
A_INT_B_DINT_RECORD1 = rec("Record1", fld("a", INT), fld("b", INT, 0))
A_DINT_B_DINT_RECORD1 = rec("Record1", fld("a", INT, 0), fld("b", INT, 0))
A_DINT_B_DFIXED_4_BYTES_RECORD1 = rec("Record1", fld("a", INT, 0), fld("b", FIXED_4_BYTES))
A_DINT_B_DFIXED_8_BYTES_RECORD1 = rec("Record1", fld("a", INT, 0), fld("b", FIXED_8_BYTES))
A_DINT_B_DINT_STRING_UNION_RECORD1 = rec("Record1", fld("a", INT, 0), fld("b", INT_STRING_UNION, 0))
A_DINT_B_DINT_UNION_RECORD1 = rec("Record1", fld("a", INT, 0), fld("b", INT_UNION, 0))
A_DINT_B_DENUM_1_RECORD1 = rec("Record1", fld("a", INT, 0), fld("b", ENUM1_AB))
A_DINT_B_DENUM_2_RECORD1 = rec("Record1", fld("a", INT, 0), fld("b", ENUM2_AB))


def _ns_record(inner_namespace: str) -> dict[str, Any]:
    inner = rec("InnerRecord1", fld("a", INT), namespace=inner_namespace)
    return rec("Record1", fld("f1", [NULL, array(inner)]))


NS_RECORD1, NS_RECORD2 = _ns_record("ns1"), _ns_record("ns2")

INT_LIST_RECORD = rec("List", fld("head", INT), fld("tail", "List"))
LONG_LIST_RECORD = rec("List", fld("head", LONG), fld("tail", "List"))

# TestSchemaCompatibility's record without a name is written as "Record" here (JSON needs one).
WRITER_SCHEMA = rec("Record", fld("oldfield1", INT), fld("oldfield2", STRING))


def avro(schema: Any) -> AvroSchema:
    return parse_schema(json.dumps(schema))


def triples(found: list[Incompatibility]) -> list[tuple[str, str, str]]:
    return [(i.rule, i.detail, i.path) for i in found]


# --- ported: COMPATIBLE_READER_WRITER_TEST_CASES -------------------------------------------

_JAVA_COMPATIBLE: list[tuple[str, Any, Any]] = [
    ("boolean<-boolean", BOOLEAN, BOOLEAN),
    ("int<-int", INT, INT),
    ("long<-int", LONG, INT),
    ("long<-long", LONG, LONG),
    ("float<-int", FLOAT, INT),
    ("float<-long", FLOAT, LONG),
    ("double<-long", DOUBLE, LONG),
    ("double<-int", DOUBLE, INT),
    ("double<-float", DOUBLE, FLOAT),
    ("string<-string", STRING, STRING),
    ("bytes<-bytes", BYTES, BYTES),
    ("int[]<-int[]", INT_ARRAY, INT_ARRAY),
    ("long[]<-int[]", LONG_ARRAY, INT_ARRAY),
    ("map<int><-map<int>", INT_MAP, INT_MAP),
    ("map<long><-map<int>", LONG_MAP, INT_MAP),
    ("enum AB<-AB", ENUM1_AB, ENUM1_AB),
    ("enum ABC<-AB", ENUM1_ABC, ENUM1_AB),
    ("string<-bytes", STRING, BYTES),
    ("bytes<-string", BYTES, STRING),
    ("[]<-[]", EMPTY_UNION, EMPTY_UNION),
    ("[float]<-[]", FLOAT_UNION, EMPTY_UNION),
    ("[float]<-[int]", FLOAT_UNION, INT_UNION),
    ("[float]<-[long]", FLOAT_UNION, LONG_UNION),
    ("[float]<-[int,long]", FLOAT_UNION, INT_LONG_UNION),
    ("[int]<-[int]", INT_UNION, INT_UNION),
    ("[int,string]<-[string,int]", INT_STRING_UNION, STRING_INT_UNION),
    ("[int]<-[]", INT_UNION, EMPTY_UNION),
    ("[long]<-[]", LONG_UNION, EMPTY_UNION),
    ("[long]<-[int]", LONG_UNION, INT_UNION),
    ("[double]<-[int]", DOUBLE_UNION, INT_UNION),
    ("[double]<-[long]", DOUBLE_UNION, LONG_UNION),
    ("[double]<-[float]", DOUBLE_UNION, FLOAT_UNION),
    ("[string]<-[]", STRING_UNION, EMPTY_UNION),
    ("[string]<-[bytes]", STRING_UNION, BYTES_UNION),
    ("[bytes]<-[]", BYTES_UNION, EMPTY_UNION),
    ("[bytes]<-[string]", BYTES_UNION, STRING_UNION),
    ("[double]<-[int,float]", DOUBLE_UNION, INT_FLOAT_UNION),
    ("float<-[int,float]", FLOAT, INT_FLOAT_UNION),
    ("long<-[int,long]", LONG, INT_LONG_UNION),
    ("double<-[int,float]", DOUBLE, INT_FLOAT_UNION),
    ("double<-[int,long,float,double]", DOUBLE, INT_LONG_FLOAT_DOUBLE_UNION),
    ("float<-[float]", FLOAT, FLOAT_UNION),
    ("[int]<-int", INT_UNION, INT),
    ("int<-[int]", INT, INT_UNION),
    ("fixed4<-fixed4", FIXED_4_BYTES, FIXED_4_BYTES),
    ("empty<-empty", EMPTY_RECORD1, EMPTY_RECORD1),
    ("empty<-{a:int}", EMPTY_RECORD1, A_INT_RECORD1),
    ("{a:int}<-{a:int}", A_INT_RECORD1, A_INT_RECORD1),
    ("{a:int=0}<-{a:int}", A_DINT_RECORD1, A_INT_RECORD1),
    ("{a:int=0}<-{a:int=0}", A_DINT_RECORD1, A_DINT_RECORD1),
    ("{a:int}<-{a:int=0}", A_INT_RECORD1, A_DINT_RECORD1),
    ("{a:long}<-{a:int}", A_LONG_RECORD1, A_INT_RECORD1),
    ("{a:int}<-{a:int,b:int}", A_INT_RECORD1, A_INT_B_INT_RECORD1),
    ("{a:int=0}<-{a:int,b:int}", A_DINT_RECORD1, A_INT_B_INT_RECORD1),
    ("{a:int,b:int=0}<-{a:int}", A_INT_B_DINT_RECORD1, A_INT_RECORD1),
    ("{a=0,b=0}<-empty", A_DINT_B_DINT_RECORD1, EMPTY_RECORD1),
    ("{a=0,b=0}<-{a:int}", A_DINT_B_DINT_RECORD1, A_INT_RECORD1),
    ("{a:int,b:int}<-{a=0,b=0}", A_INT_B_INT_RECORD1, A_DINT_B_DINT_RECORD1),
    ("int-list<-int-list (recursive)", INT_LIST_RECORD, INT_LIST_RECORD),
    ("long-list<-long-list (recursive)", LONG_LIST_RECORD, LONG_LIST_RECORD),
    ("long-list<-int-list (recursive, promoted)", LONG_LIST_RECORD, INT_LIST_RECORD),
    ("null<-null", NULL, NULL),
    (
        "enum AB default A<-enum ABC (field without default)",
        ENUM_AB_ENUM_DEFAULT_A_RECORD,
        ENUM_ABC_ENUM_DEFAULT_A_RECORD,
    ),
    (
        "enum AB default B, field default A<-enum ABC",
        ENUM_AB_FIELD_DEFAULT_A_ENUM_DEFAULT_B_RECORD,
        ENUM_ABC_FIELD_DEFAULT_B_ENUM_DEFAULT_A_RECORD,
    ),
    ("inner records in different namespaces", NS_RECORD1, NS_RECORD2),
    # TestSchemaCompatibility.testValidateSchemaPair*/NewFieldWithDefault
    ("missing second writer field", rec("Record", fld("oldfield1", INT)), WRITER_SCHEMA),
    ("missing first writer field", rec("Record", fld("oldfield2", STRING)), WRITER_SCHEMA),
    ("all fields", WRITER_SCHEMA, WRITER_SCHEMA),
    (
        "new field with default",
        rec("Record", fld("oldfield1", INT), fld("newfield1", INT, 42)),
        WRITER_SCHEMA,
    ),
    ("array reader<-array writer", array(STRING), STRING_ARRAY),
    ("enum from other namespace (names compare unqualified)", ENUM1_AB_NS1, ENUM1_AB_NS2),
    ("[null,int[]]<-[null,int[]]", NULL_INT_ARRAY_UNION, NULL_INT_ARRAY_UNION),
    ("[null,map<int>]<-[null,map<int>]", NULL_INT_MAP_UNION, NULL_INT_MAP_UNION),
    ("[null]<-null", NULL_UNION, NULL),
]


@pytest.mark.parametrize(
    ("reader", "writer"), [pytest.param(r, w, id=i) for i, r, w in _JAVA_COMPATIBLE]
)
def test_java_compatible_pairs(reader: Any, writer: Any) -> None:
    assert check_pair(avro(reader), avro(writer)) == []


# --- ported: the per-incompatibility-type Java tables ----------------------------------------

_T = "TYPE_MISMATCH"
_U = "MISSING_UNION_BRANCH"
_N = "NAME_MISMATCH"
_F = "FIXED_SIZE_MISMATCH"
_E = "MISSING_ENUM_SYMBOLS"
_D = "READER_FIELD_MISSING_DEFAULT_VALUE"


def _tm(reader_type: str, writer_type: str) -> str:
    return f"reader type: {reader_type} not compatible with writer type: {writer_type}"


def _lack(writer_type: str) -> str:
    return f"reader union lacking writer type: {writer_type}"


RECORD1_WITH_INT = rec("Record1", fld("field1", INT))
RECORD2_WITH_INT = rec("Record2", fld("field1", INT))

_JAVA_INCOMPATIBLE: list[tuple[str, Any, Any, list[tuple[str, str, str]]]] = [
    # TestSchemaCompatibilityTypeMismatch
    ("null<-int", NULL, INT, [(_T, _tm("NULL", "INT"), "/")]),
    ("null<-long", NULL, LONG, [(_T, _tm("NULL", "LONG"), "/")]),
    ("boolean<-int", BOOLEAN, INT, [(_T, _tm("BOOLEAN", "INT"), "/")]),
    ("int<-null", INT, NULL, [(_T, _tm("INT", "NULL"), "/")]),
    ("int<-boolean", INT, BOOLEAN, [(_T, _tm("INT", "BOOLEAN"), "/")]),
    ("int<-long", INT, LONG, [(_T, _tm("INT", "LONG"), "/")]),
    ("int<-float", INT, FLOAT, [(_T, _tm("INT", "FLOAT"), "/")]),
    ("int<-double", INT, DOUBLE, [(_T, _tm("INT", "DOUBLE"), "/")]),
    ("long<-float", LONG, FLOAT, [(_T, _tm("LONG", "FLOAT"), "/")]),
    ("long<-double", LONG, DOUBLE, [(_T, _tm("LONG", "DOUBLE"), "/")]),
    ("float<-double", FLOAT, DOUBLE, [(_T, _tm("FLOAT", "DOUBLE"), "/")]),
    ("double<-string", DOUBLE, STRING, [(_T, _tm("DOUBLE", "STRING"), "/")]),
    ("fixed<-string", FIXED_4_BYTES, STRING, [(_T, _tm("FIXED", "STRING"), "/")]),
    ("string<-boolean", STRING, BOOLEAN, [(_T, _tm("STRING", "BOOLEAN"), "/")]),
    ("string<-int", STRING, INT, [(_T, _tm("STRING", "INT"), "/")]),
    ("bytes<-null", BYTES, NULL, [(_T, _tm("BYTES", "NULL"), "/")]),
    ("bytes<-int", BYTES, INT, [(_T, _tm("BYTES", "INT"), "/")]),
    ("record<-int", A_INT_RECORD1, INT, [(_T, _tm("RECORD", "INT"), "/")]),
    ("int[]<-long[]", INT_ARRAY, LONG_ARRAY, [(_T, _tm("INT", "LONG"), "/items")]),
    ("map<-array", INT_MAP, INT_ARRAY, [(_T, _tm("MAP", "ARRAY"), "/")]),
    ("array<-map", INT_ARRAY, INT_MAP, [(_T, _tm("ARRAY", "MAP"), "/")]),
    ("map<int><-map<long>", INT_MAP, LONG_MAP, [(_T, _tm("INT", "LONG"), "/values")]),
    ("int<-enum", INT, ENUM2_AB, [(_T, _tm("INT", "ENUM"), "/")]),
    ("enum<-int", ENUM2_AB, INT, [(_T, _tm("ENUM", "INT"), "/")]),
    (
        "float<-[int,long,float,double]",
        FLOAT,
        INT_LONG_FLOAT_DOUBLE_UNION,
        [(_T, _tm("FLOAT", "DOUBLE"), "/3")],
    ),
    ("long<-[int,float]", LONG, INT_FLOAT_UNION, [(_T, _tm("LONG", "FLOAT"), "/1")]),
    ("int<-[int,float]", INT, INT_FLOAT_UNION, [(_T, _tm("INT", "FLOAT"), "/1")]),
    (
        "int-list<-long-list (recursive)",
        INT_LIST_RECORD,
        LONG_LIST_RECORD,
        [(_T, _tm("INT", "LONG"), "/fields/0/type")],
    ),
    # TestSchemaCompatibility.testValidateArrayWriterSchema / testValidatePrimitiveWriterSchema
    ("map<string><-string[]", STRING_MAP, STRING_ARRAY, [(_T, _tm("MAP", "ARRAY"), "/")]),
    ("int<-string", INT, STRING, [(_T, _tm("INT", "STRING"), "/")]),
    # TestSchemaCompatibilityMissingUnionBranch
    ("[int]<-[int,string]", INT_UNION, INT_STRING_UNION, [(_U, _lack("STRING"), "/1")]),
    ("[string]<-[int,string]", STRING_UNION, INT_STRING_UNION, [(_U, _lack("INT"), "/0")]),
    (
        "[int]<-[int,Record1]",
        INT_UNION,
        [INT, RECORD1_WITH_INT],
        [(_U, _lack("RECORD"), "/1")],
    ),
    (
        "[int]<-[int,Record2]",
        INT_UNION,
        [INT, RECORD2_WITH_INT],
        [(_U, _lack("RECORD"), "/1")],
    ),
    (
        "[int,Record1]<-[int,Record2] (no detail from inside the branch)",
        [INT, RECORD1_WITH_INT],
        [INT, RECORD2_WITH_INT],
        [(_U, _lack("RECORD"), "/1")],
    ),
    ("[int]<-[int,enum]", INT_UNION, [INT, ENUM1_AB], [(_U, _lack("ENUM"), "/1")]),
    ("[int]<-[int,fixed]", INT_UNION, [INT, FIXED_4_BYTES], [(_U, _lack("FIXED"), "/1")]),
    ("[int]<-[int,boolean]", INT_UNION, [INT, BOOLEAN], [(_U, _lack("BOOLEAN"), "/1")]),
    ("[int]<-[long]", INT_UNION, LONG_UNION, [(_U, _lack("LONG"), "/0")]),
    ("[int]<-[float]", INT_UNION, FLOAT_UNION, [(_U, _lack("FLOAT"), "/0")]),
    ("[int]<-[double]", INT_UNION, DOUBLE_UNION, [(_U, _lack("DOUBLE"), "/0")]),
    ("[int]<-[bytes]", INT_UNION, BYTES_UNION, [(_U, _lack("BYTES"), "/0")]),
    ("[int]<-[int,int[]]", INT_UNION, [INT, INT_ARRAY], [(_U, _lack("ARRAY"), "/1")]),
    ("[int]<-[int,map]", INT_UNION, [INT, INT_MAP], [(_U, _lack("MAP"), "/1")]),
    ("[int]<-[int,null]", INT_UNION, [INT, NULL], [(_U, _lack("NULL"), "/1")]),
    (
        "[int]<-[int,long,float,double] (one per writer branch)",
        INT_UNION,
        INT_LONG_FLOAT_DOUBLE_UNION,
        [(_U, _lack("LONG"), "/1"), (_U, _lack("FLOAT"), "/2"), (_U, _lack("DOUBLE"), "/3")],
    ),
    (
        "record field [int]<-[int,string]",
        A_DINT_B_DINT_UNION_RECORD1,
        A_DINT_B_DINT_STRING_UNION_RECORD1,
        [(_U, _lack("STRING"), "/fields/1/type/1")],
    ),
    (
        "[int,string]<-[int,string,long] (testUnionReaderWriterSubsetIncompatibility)",
        INT_STRING_UNION,
        [INT, STRING, LONG],
        [(_U, _lack("LONG"), "/2")],
    ),
    # TestSchemaCompatibilityNameMismatch
    ("enum Enum1<-Enum2", ENUM1_AB, ENUM2_AB, [(_N, "expected: Enum2", "/name")]),
    ("record Record2<-Record1", EMPTY_RECORD2, EMPTY_RECORD1, [(_N, "expected: Record1", "/name")]),
    (
        "fixed Fixed<-AnotherName",
        FIXED_4_BYTES,
        fixed("AnotherName", 4),
        [(_N, "expected: AnotherName", "/name")],
    ),
    (
        "record field enum Enum1<-Enum2",
        A_DINT_B_DENUM_1_RECORD1,
        A_DINT_B_DENUM_2_RECORD1,
        [(_N, "expected: Enum2", "/fields/1/type/name")],
    ),
    # TestSchemaCompatibilityFixedSizeMismatch
    ("fixed 4<-8", FIXED_4_BYTES, FIXED_8_BYTES, [(_F, "expected: 8, found: 4", "/size")]),
    ("fixed 8<-4", FIXED_8_BYTES, FIXED_4_BYTES, [(_F, "expected: 4, found: 8", "/size")]),
    (
        "record field fixed 8<-4",
        A_DINT_B_DFIXED_8_BYTES_RECORD1,
        A_DINT_B_DFIXED_4_BYTES_RECORD1,
        [(_F, "expected: 4, found: 8", "/fields/1/type/size")],
    ),
    (
        "record field fixed 4<-8",
        A_DINT_B_DFIXED_4_BYTES_RECORD1,
        A_DINT_B_DFIXED_8_BYTES_RECORD1,
        [(_F, "expected: 8, found: 4", "/fields/1/type/size")],
    ),
    # TestSchemaCompatibilityMissingEnumSymbols
    ("enum AB<-ABC", ENUM1_AB, ENUM1_ABC, [(_E, "[C]", "/symbols")]),
    ("enum BC<-ABC", ENUM1_BC, ENUM1_ABC, [(_E, "[A]", "/symbols")]),
    (
        "record field enum AB<-ABC",
        rec("Record1", fld("field1", ENUM1_AB)),
        rec("Record1", fld("field1", ENUM1_ABC)),
        [(_E, "[C]", "/fields/0/type/symbols")],
    ),
    # TestSchemaCompatibilityReaderFieldMissingDefaultValue
    ("{a:int}<-empty", A_INT_RECORD1, EMPTY_RECORD1, [(_D, "a", "/fields/0")]),
    ("{a:int,b:int=0}<-empty", A_INT_B_DINT_RECORD1, EMPTY_RECORD1, [(_D, "a", "/fields/0")]),
    # TestSchemaCompatibility.testValidateSchemaNewField
    (
        "new field without default",
        rec("Record", fld("oldfield1", INT), fld("newfield1", INT)),
        WRITER_SCHEMA,
        [(_D, "newfield1", "/fields/1")],
    ),
]


# TestSchemaCompatibilityMultiple: one pair, nine incompatibilities, in Java's order.
def _multiple(reader: bool) -> dict[str, Any]:
    sub_fields = [
        fld("identical_1_field", LONG, 42),
        *([fld("extra_no_default_field", LONG)] if reader else []),
        fld("fixed_length_mismatch_field", fixed("fixed_length_mismatch_type", 4 if reader else 8)),
        fld("union_missing_branches_field", [BOOLEAN] if reader else [BOOLEAN, DOUBLE, STRING]),
        fld("reader_union_does_not_support_type_field", [BOOLEAN] if reader else LONG),
        fld(
            "record_fqn_mismatch_field",
            rec(
                "recordA",
                fld("A_field_0", BOOLEAN, True),
                fld("array_type_mismatch_field", array(STRING if reader else BOOLEAN)),
                namespace="not_nsA" if reader else "nsA",
            ),
        ),
    ]
    return rec(
        "base",
        fld(
            "check_enum_symbols_field", enum("check_enum_symbols_type", "AC" if reader else "ABCD")
        ),
        fld(
            "check_enum_name_field",
            enum("check_enum_name_type" if reader else "check_enum_name_type_ERR", "ABCD"),
        ),
        fld("type_mismatch_field", STRING if reader else LONG),
        fld("sub_record", rec("sub_record_type", *sub_fields)),
    )


_JAVA_INCOMPATIBLE.append(
    (
        "TestSchemaCompatibilityMultiple",
        _multiple(reader=True),
        _multiple(reader=False),
        [
            (_E, "[B, D]", "/fields/0/type/symbols"),
            (_N, "expected: check_enum_name_type_ERR", "/fields/1/type/name"),
            (_T, _tm("STRING", "LONG"), "/fields/2/type"),
            (_D, "extra_no_default_field", "/fields/3/type/fields/1"),
            (_F, "expected: 8, found: 4", "/fields/3/type/fields/2/type/size"),
            (_U, _lack("DOUBLE"), "/fields/3/type/fields/3/type/1"),
            (_U, _lack("STRING"), "/fields/3/type/fields/3/type/2"),
            (_U, _lack("LONG"), "/fields/3/type/fields/4/type"),
            (_T, _tm("STRING", "BOOLEAN"), "/fields/3/type/fields/5/type/fields/1/type/items"),
        ],
    )
)


@pytest.mark.parametrize(
    ("reader", "writer", "expected"),
    [pytest.param(r, w, e, id=i) for i, r, w, e in _JAVA_INCOMPATIBLE],
)
def test_java_incompatible_pairs(
    reader: Any, writer: Any, expected: list[tuple[str, str, str]]
) -> None:
    found = check_pair(avro(reader), avro(writer))
    assert triples(found) == expected
    for inc in found:
        # Fragments are valid compact JSON, and the message carries path, rule and fragments.
        json.loads(inc.reader_fragment)
        json.loads(inc.writer_fragment)
        assert inc.message.startswith(inc.path)
        assert f"[{inc.rule}]" in inc.message
        assert inc.reader_fragment[:50] in inc.message
        assert inc.writer_fragment[:50] in inc.message


# --- promotion matrix ----------------------------------------------------------------------

_PRIMITIVES = (NULL, BOOLEAN, INT, LONG, FLOAT, DOUBLE, BYTES, STRING)
# (reader, writer) pairs the Avro spec allows besides identical types; written out by hand.
_ALLOWED_PROMOTIONS = {
    (LONG, INT),
    (FLOAT, INT),
    (FLOAT, LONG),
    (DOUBLE, INT),
    (DOUBLE, LONG),
    (DOUBLE, FLOAT),
    (STRING, BYTES),
    (BYTES, STRING),
}


@pytest.mark.parametrize(
    ("reader", "writer"),
    [pytest.param(r, w, id=f"{r}<-{w}") for r in _PRIMITIVES for w in _PRIMITIVES],
)
def test_primitive_promotion_matrix(reader: str, writer: str) -> None:
    found = check_pair(avro(reader), avro(writer))
    if reader == writer or (reader, writer) in _ALLOWED_PROMOTIONS:
        assert found == []
    else:
        assert triples(found) == [(_T, _tm(reader.upper(), writer.upper()), "/")]
    # The same verdict holds one level down, inside a record field, array and map.
    nested = check_pair(avro(rec("R", fld("f", reader))), avro(rec("R", fld("f", writer))))
    assert [i.path for i in nested] == [i.path.replace("/", "/fields/0/type", 1) for i in found]
    in_array = check_pair(avro(array(reader)), avro(array(writer)))
    assert [i.path for i in in_array] == ["/items" for _ in found]


# --- our own table: rules Java's tables do not exercise -------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    reader: Any
    writer: Any
    expected: list[tuple[str, str]]  # (rule, path); empty = compatible


NS_NEW = rec("New", fld("a", INT), namespace="ns", aliases=["Old"])
ENUM_FIELD_NO_DEFAULT = rec("R", fld("a", INT), fld("color", enum("Color", "RGB", "R")))
LIST_WITH_NULL = rec("Node", fld("value", INT), fld("next", [NULL, "Node"], None))
LONG_LIST_WITH_NULL = rec("Node", fld("value", LONG), fld("next", [NULL, "Node"], None))
MUTUAL_A = rec("A", fld("b", [NULL, rec("B", fld("a", [NULL, "A"], None), fld("x", INT))], None))
MUTUAL_A_X_LONG = rec(
    "A", fld("b", [NULL, rec("B", fld("a", [NULL, "A"], None), fld("x", LONG))], None)
)
MUTUAL_A_NEW_FIELD = rec(
    "A",
    fld("b", [NULL, rec("B", fld("a", [NULL, "A"], None), fld("x", INT), fld("y", INT))], None),
)

_OWN_CASES = [
    # names and aliases
    Case("record alias names the writer", NS_NEW, rec("Old", fld("a", INT), namespace="ns"), []),
    Case(
        "alias is qualified with the reader's namespace",
        NS_NEW,
        rec("Old", fld("a", INT), namespace="elsewhere"),
        [(_N, "/name")],
    ),
    Case(
        "fully qualified alias",
        rec("New", fld("a", INT), namespace="ns", aliases=["elsewhere.Old"]),
        rec("Old", fld("a", INT), namespace="elsewhere"),
        [],
    ),
    Case(
        "writer aliases are not used",
        rec("New", fld("a", INT)),
        rec("Old", fld("a", INT), aliases=["New"]),
        [(_N, "/name")],
    ),
    Case(
        "same unqualified name, different namespaces",
        rec("R", fld("a", INT), namespace="one"),
        rec("R", fld("a", INT), namespace="two"),
        [],
    ),
    Case(
        "enum alias",
        enum("Suit", "HS", aliases=["OldSuit"]),
        enum("OldSuit", "HS"),
        [],
    ),
    Case(
        "fixed alias but size differs",
        fixed("Md5", 16, aliases=["Hash"]),
        fixed("Hash", 20),
        [(_F, "/size")],
    ),
    Case(
        "fixed name and size both differ",
        fixed("A", 4),
        fixed("B", 8),
        [(_N, "/name"), (_F, "/size")],
    ),
    # fields and aliases
    Case(
        "reader field alias finds the renamed writer field",
        rec("R", fld("new_name", INT, aliases=["old_name"])),
        rec("R", fld("old_name", INT)),
        [],
    ),
    Case(
        "field matched by alias is still type checked",
        rec("R", fld("new_name", INT, aliases=["old_name"])),
        rec("R", fld("old_name", STRING)),
        [(_T, "/fields/0/type")],
    ),
    Case(
        "writer field aliases are not used",
        rec("R", fld("new_name", INT)),
        rec("R", fld("old_name", INT, aliases=["new_name"])),
        [(_D, "/fields/0")],
    ),
    Case(
        "reader field matching two writer fields",
        rec("R", fld("a", INT, aliases=["b"])),
        rec("R", fld("a", INT), fld("b", INT)),
        [("AMBIGUOUS_FIELD_MATCH", "/fields/0")],
    ),
    Case(
        "null default counts as a default",
        rec("R", fld("a", INT), fld("email", [NULL, STRING], None)),
        rec("R", fld("a", INT)),
        [],
    ),
    Case(
        "writer-only fields are skipped",
        rec("R", fld("a", INT)),
        rec("R", fld("z", STRING), fld("a", INT), fld("y", array(STRING))),
        [],
    ),
    Case(
        "field order does not matter",
        rec("R", fld("b", STRING), fld("a", INT)),
        rec("R", fld("a", INT), fld("b", STRING)),
        [],
    ),
    Case(
        "every missing field is reported",
        rec("R", fld("a", INT), fld("b", INT), fld("c", INT, 1), fld("d", INT)),
        rec("R", fld("c", INT)),
        [(_D, "/fields/0"), (_D, "/fields/1"), (_D, "/fields/3")],
    ),
    # enums
    Case(
        "enum default absorbs unknown writer symbols", enum("E", "AB", "A"), enum("E", "ABCD"), []
    ),
    Case("enum: reader with more symbols", enum("E", "ABCD"), enum("E", "AB"), []),
    Case("enum: symbol order is irrelevant", enum("E", "BA"), enum("E", "AB"), []),
    Case(
        "enum: removed symbol without default",
        enum("E", "AB"),
        enum("E", "ABCD"),
        [(_E, "/symbols")],
    ),
    Case(
        # Java reports a spurious TYPE_MISMATCH ENUM/RECORD at /fields/1/type; same verdict.
        "enum default does not stand in for a missing field",
        ENUM_FIELD_NO_DEFAULT,
        rec("R", fld("a", INT)),
        [(_D, "/fields/1")],
    ),
    Case(
        "missing enum field with a field default",
        rec("R", fld("a", INT), fld("color", enum("Color", "RGB", "R"), "G")),
        rec("R", fld("a", INT)),
        [],
    ),
    # unions
    Case("nullable reader reads non-null writer", [NULL, STRING], STRING, []),
    Case("non-null reader vs nullable writer", STRING, [NULL, STRING], [(_T, "/0")]),
    Case("reader union reads writer by promotion", [NULL, LONG], INT, []),
    Case("reader union: no branch fits", [NULL, STRING], INT, [(_U, "/")]),
    Case("empty reader union", [], INT, [(_U, "/")]),
    Case("empty writer union is readable by anything", INT, [], []),
    Case(
        "reader union with an evolved record branch",
        [NULL, rec("Rec", fld("a", INT), fld("b", STRING, "x"))],
        rec("Rec", fld("a", INT)),
        [],
    ),
    Case(
        "reader union whose only record branch cannot read the writer record",
        [NULL, rec("Rec", fld("a", INT), fld("b", STRING))],
        rec("Rec", fld("a", INT)),
        [(_U, "/")],
    ),
    Case(
        "union branch found by record alias",
        [NULL, rec("NewRec", fld("a", INT), aliases=["OldRec"])],
        [NULL, rec("OldRec", fld("a", INT))],
        [],
    ),
    Case(
        "union branches reordered",
        [STRING, NULL, rec("Rec", fld("a", INT))],
        [rec("Rec", fld("a", INT)), NULL, STRING],
        [],
    ),
    Case(
        "record reader vs nullable record writer",
        rec("Rec", fld("a", INT)),
        [NULL, rec("Rec", fld("a", INT))],
        [(_T, "/0")],
    ),
    Case(
        "non-union reader vs writer union: each branch's own problems",
        rec("Rec", fld("a", INT)),
        [rec("Rec", fld("a", STRING)), rec("Other", fld("a", INT))],
        [(_T, "/0/fields/0/type"), (_N, "/1/name")],
    ),
    # arrays and maps recursively
    Case("array of records", array(A_LONG_RECORD1), array(A_INT_RECORD1), []),
    Case(
        "array of records, missing field",
        array(A_INT_B_INT_RECORD1),
        array(A_INT_RECORD1),
        [(_D, "/items/fields/1")],
    ),
    Case("map of arrays", amap(array(DOUBLE)), amap(array(FLOAT)), []),
    Case("map of arrays mismatch", amap(array(INT)), amap(array(FLOAT)), [(_T, "/values/items")]),
    # recursion
    Case("recursive list, same", LIST_WITH_NULL, LIST_WITH_NULL, []),
    Case("recursive list, promoted", LONG_LIST_WITH_NULL, LIST_WITH_NULL, []),
    Case("recursive list, narrowed", LIST_WITH_NULL, LONG_LIST_WITH_NULL, [(_T, "/fields/0/type")]),
    Case("mutual recursion, promoted", MUTUAL_A_X_LONG, MUTUAL_A, []),
    Case(
        "mutual recursion, narrowed",
        MUTUAL_A,
        MUTUAL_A_X_LONG,
        [(_U, "/fields/0/type/1")],
    ),
    Case(
        "mutual recursion, new field without default is reported once",
        MUTUAL_A_NEW_FIELD,
        MUTUAL_A,
        [(_U, "/fields/0/type/1")],
    ),
    Case(
        "recursive reader, non-recursive writer",
        LIST_WITH_NULL,
        rec("Node", fld("value", INT), fld("next", [NULL, rec("Tail", fld("value", INT))], None)),
        [(_U, "/fields/1/type/1")],
    ),
    # logical types are ignored; underlying types decide (as Avro Java / Confluent)
    Case(
        "decimal precision/scale change is not checked",
        {"type": "bytes", "logicalType": "decimal", "precision": 3, "scale": 3},
        {"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": 2},
        [],
    ),
    Case(
        "timestamp-millis reads plain long",
        {"type": "long", "logicalType": "timestamp-millis"},
        LONG,
        [],
    ),
    Case(
        "date (int) reads into timestamp (long) by promotion",
        {"type": "long", "logicalType": "timestamp-millis"},
        {"type": "int", "logicalType": "date"},
        [],
    ),
    Case(
        "date (int) cannot read timestamp (long)",
        {"type": "int", "logicalType": "date"},
        {"type": "long", "logicalType": "timestamp-millis"},
        [(_T, "/")],
    ),
    Case(
        "uuid string reads bytes",
        {"type": "string", "logicalType": "uuid"},
        BYTES,
        [],
    ),
    # protocol errors resolve like records
    Case("error reads record", {**A_LONG_RECORD1, "type": "error"}, A_INT_RECORD1, []),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in _OWN_CASES])
def test_own_cases(case: Case) -> None:
    found = check_pair(avro(case.reader), avro(case.writer))
    assert [(i.rule, i.path) for i in found] == case.expected


# --- messages and fragments ----------------------------------------------------------------


ORDER_V1 = rec(
    "Order",
    fld("id", LONG),
    fld(
        "customer",
        rec(
            "Customer",
            fld("name", STRING),
            fld("addresses", array(rec("Address", fld("street", STRING), fld("zip", STRING)))),
        ),
    ),
    namespace="com.acme",
)
ORDER_V2 = rec(
    "Order",
    fld("id", LONG),
    fld(
        "customer",
        rec(
            "Customer",
            fld("name", STRING),
            fld(
                "addresses",
                array(
                    rec("Address", fld("street", STRING), fld("zip", INT), fld("country", STRING))
                ),
            ),
        ),
    ),
    fld("customer_email", STRING),
    namespace="com.acme",
)


def test_messages_name_the_field_path_rule_and_fragments() -> None:
    found = check_pair(avro(ORDER_V2), avro(ORDER_V1))
    assert [(i.rule, i.path) for i in found] == [
        (_T, "/fields/1/type/fields/1/type/items/fields/1/type"),
        (_D, "/fields/1/type/fields/1/type/items/fields/2"),
        (_D, "/fields/2"),
    ]
    zip_type, country, email = found
    assert zip_type.message == (
        "/fields/1/type/fields/1/type/items/fields/1/type 'customer.addresses.zip': "
        'reader type INT cannot read writer type STRING [TYPE_MISMATCH]; reader: "int"; '
        'writer: "string"'
    )
    assert zip_type.reader_fragment == '"int"'
    assert zip_type.writer_fragment == '"string"'
    assert country.message.startswith(
        "/fields/1/type/fields/1/type/items/fields/2 'customer.addresses.country': reader field "
        "'country' has no default value and is missing from the writer record "
        "'com.acme.Address' [READER_FIELD_MISSING_DEFAULT_VALUE]; reader: "
    )
    # Record fragments are the records that hold the field (as in Java), fully qualified.
    assert json.loads(country.writer_fragment) == {
        "type": "record",
        "name": "com.acme.Address",
        "fields": [{"name": "street", "type": "string"}, {"name": "zip", "type": "string"}],
    }
    assert email.message.startswith(
        "/fields/2 'customer_email': reader field 'customer_email' has no default value and is "
        "missing from the writer record 'com.acme.Order'"
    )
    assert email.detail == "customer_email"
    # Long fragments are shortened in the message but complete in the fragment fields.
    assert len(email.reader_fragment) > 300
    assert email.reader_fragment not in email.message
    assert "…" in email.message


def test_recursive_fragment_is_finite() -> None:
    found = check_pair(avro(LIST_WITH_NULL), avro(LONG_LIST_WITH_NULL))
    assert found[0].reader_fragment == '"int"'
    whole = check_pair(avro(LIST_WITH_NULL), avro(INT))
    assert json.loads(whole[0].reader_fragment)["fields"][1]["type"] == ["null", "Node"]


def test_memoized_pair_is_reported_at_every_location() -> None:
    # The same (reader, writer) record pair sits under two fields: both locations reported.
    point_r = rec("Point", fld("x", INT))
    point_w = rec("Point", fld("x", LONG))
    reader = rec("Line", fld("start", point_r), fld("end", "Point"))
    writer = rec("Line", fld("start", point_w), fld("end", "Point"))
    found = check_pair(avro(reader), avro(writer))
    assert [(i.path, i.message.split(":")[0]) for i in found] == [
        ("/fields/0/type/fields/0/type", "/fields/0/type/fields/0/type 'start.x'"),
        ("/fields/1/type/fields/0/type", "/fields/1/type/fields/0/type 'end.x'"),
    ]


def test_json_pointer_escaping_is_not_needed_for_avro_names() -> None:
    # Avro names cannot contain '/' or '~', so paths are plain tokens joined by '/'.
    found = check_pair(avro(rec("R", fld("a_b", INT))), avro(rec("R")))
    assert found[0].path == "/fields/0"


# --- references ------------------------------------------------------------------------------

ADDRESS = rec("Address", fld("street", STRING), namespace="com.acme")
ADDRESS_V2 = rec("Address", fld("street", STRING), fld("zip", STRING), namespace="com.acme")


def test_compatibility_through_references() -> None:
    order = json.dumps(rec("Order", fld("ship_to", "com.acme.Address"), namespace="com.acme"))
    old = parse_schema(order, [avro(ADDRESS)])
    new = parse_schema(order, [avro(ADDRESS_V2)])
    # Same text, different referenced versions: the resolved schemas differ.
    assert old != new
    found = check_pair(new, old)
    assert [(i.rule, i.path) for i in found] == [(_D, "/fields/0/type/fields/1")]
    assert "'ship_to.zip'" in found[0].message
    assert check_pair(old, new) == []


# --- compatibility levels --------------------------------------------------------------------

V1 = avro(rec("User", fld("name", STRING)))
V2 = avro(rec("User", fld("name", STRING), fld("age", INT, 0)))
V3_AGE_REQUIRED = avro(rec("User", fld("name", STRING), fld("age", INT)))


def test_backward_checks_only_the_latest_but_transitive_checks_all() -> None:
    assert check_compatibility("BACKWARD", V3_AGE_REQUIRED, [V1, V2]) == []
    found = check_compatibility("BACKWARD_TRANSITIVE", V3_AGE_REQUIRED, [V1, V2])
    assert [(i.rule, i.path, i.direction, i.existing_index) for i in found] == [
        (_D, "/fields/1", "BACKWARD", 0)
    ]
    assert found[0].message.startswith(
        "BACKWARD: the new schema (reader) cannot read data written with existing schema 1 of 2 "
        "(writer): /fields/1 'age': reader field 'age' has no default value"
    )


def test_forward_makes_reader_and_writer_explicit() -> None:
    v1 = avro(rec("User", fld("name", STRING), fld("age", INT)))
    v2 = avro(rec("User", fld("name", STRING), fld("age", INT, 0)))
    new = avro(rec("User", fld("name", STRING)))
    assert check_compatibility("FORWARD", new, [v1, v2]) == []
    found = check_compatibility("FORWARD_TRANSITIVE", new, [v1, v2])
    assert [(i.rule, i.path, i.direction, i.existing_index) for i in found] == [
        (_D, "/fields/1", "FORWARD", 0)
    ]
    assert found[0].message.startswith(
        "FORWARD: existing schema 1 of 2 (reader) cannot read data written with the new schema "
        "(writer): /fields/1 'age'"
    )
    latest_only = check_compatibility("FORWARD", new, [v2, v1])
    assert "existing schema 2 of 2 (latest) (reader)" in latest_only[0].message


def test_full_checks_both_directions() -> None:
    old = avro(rec("User", fld("name", STRING), fld("id", INT)))
    new = avro(rec("User", fld("name", STRING), fld("email", STRING)))
    found = check_compatibility("FULL", new, [old])
    assert [(i.direction, i.rule, i.path) for i in found] == [
        ("BACKWARD", _D, "/fields/1"),  # new reads old: 'email' missing
        ("FORWARD", _D, "/fields/1"),  # old reads new: 'id' missing
    ]
    assert "'email'" in found[0].message
    assert "'id'" in found[1].message
    # Adding an optional field is fully compatible.
    optional = avro(rec("User", fld("name", STRING), fld("id", INT), fld("x", [NULL, INT], None)))
    assert check_compatibility("FULL", optional, [old]) == []


def test_full_transitive_reports_latest_first() -> None:
    v1 = avro(rec("E", fld("kind", enum("Kind", "AB"))))
    v2 = avro(rec("E", fld("kind", enum("Kind", "ABC"))))
    new = avro(rec("E", fld("kind", enum("Kind", "ABCD"))))
    assert [
        (i.direction, i.existing_index) for i in check_compatibility("FULL", new, [v1, v2])
    ] == [("FORWARD", 1)]
    found = check_compatibility("FULL_TRANSITIVE", new, [v1, v2])
    assert [(i.direction, i.existing_index, i.detail) for i in found] == [
        ("FORWARD", 1, "[D]"),
        ("FORWARD", 0, "[C, D]"),
    ]


@pytest.mark.parametrize("level", COMPATIBILITY_LEVELS)
def test_every_level_on_an_incompatible_and_a_compatible_change(level: str) -> None:
    # int -> string breaks both directions; everything but NONE must say so.
    old = avro(rec("R", fld("a", INT)))
    breaking = avro(rec("R", fld("a", STRING)))
    found = check_compatibility(level, breaking, [old])
    expected_directions = {
        "BACKWARD": ["BACKWARD"],
        "FORWARD": ["FORWARD"],
        "FULL": ["BACKWARD", "FORWARD"],
        "NONE": [],
    }[level.removesuffix("_TRANSITIVE")]
    assert [i.direction for i in found] == expected_directions
    assert check_compatibility(level, avro(rec("R", fld("a", INT), fld("b", INT, 1))), [old]) == []


@pytest.mark.parametrize("level", COMPATIBILITY_LEVELS)
def test_nothing_to_compare_with(level: str) -> None:
    assert check_compatibility(level, V3_AGE_REQUIRED, []) == []


def test_unknown_level_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown compatibility level 'backward'"):
        check_compatibility("backward", V1, [V2])


def test_incompatibility_is_immutable_and_comparable() -> None:
    first = check_pair(V3_AGE_REQUIRED, V1)
    assert first == check_pair(V3_AGE_REQUIRED, V1)
    with pytest.raises(AttributeError):
        first[0].rule = "X"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("reader", "writer", "fragments"),
    [
        # Union vs union: Java reports the two unions, the location names the writer branch.
        pytest.param(
            INT_UNION, INT_STRING_UNION, ('["int"]', '["int","string"]'), id="union<-union"
        ),
        # Non-union reader vs writer union: the branch itself is the writer fragment.
        pytest.param(STRING, [NULL, STRING], ('"string"', '"null"'), id="string<-[null,string]"),
        pytest.param([NULL, STRING], INT, ('["null","string"]', '"int"'), id="[null,string]<-int"),
        pytest.param(
            ENUM1_AB,
            ENUM1_ABC,
            (
                '{"type":"enum","name":"Enum1","symbols":["A","B"]}',
                '{"type":"enum","name":"Enum1","symbols":["A","B","C"]}',
            ),
            id="enum",
        ),
        pytest.param(
            {"type": "long", "logicalType": "timestamp-millis"},
            STRING,
            ('{"type":"long","logicalType":"timestamp-millis"}', '"string"'),
            id="logical type kept in fragment",
        ),
    ],
)
def test_fragments(reader: Any, writer: Any, fragments: tuple[str, str]) -> None:
    (found,) = check_pair(avro(reader), avro(writer))
    assert (found.reader_fragment, found.writer_fragment) == fragments
