"""PROTOBUF subjects: protoc-compiled schemas, Confluent's diff rules, the API, and
confluent-kafka's ProtobufSerializer and ProtobufDeserializer against a real registry.

The diff cases are transcribed from Confluent's own suite: every case of
confluentinc/schema-registry protobuf-provider/src/test/resources/diff-schema-examples.json
(run by SchemaDiffTest.checkCompatibilityUsingExamples): original and update schema, the files
their references import, the differences Confluent expects and whether they are compatible.
"""

# ruff: noqa: E501  (the transcribed schemas stay one per line, as in Confluent's file)
from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from support.registry import in_process, register, serve

from schema_registry.client import RegistryClient, subject_path
from schema_registry.errors import InvalidSchema
from schema_registry.protobuf import (
    canonical_string,
    check_pair,
    compare,
    normalized_string,
    parse_schema,
    serialized_string,
)

CONFLUENT_DIFF_CASES: Final = [
    pytest.param(
        'syntax = "proto3";\npackage foo;\nmessage TestMessage {\n    string test_string = 1;\n    .foo.TestMessage.Status test_int = 2;\n    message Status {\n    string test_string = 1;\n    }\n}',
        'syntax = "proto3";\npackage foo;\n\nmessage TestMessage {\n  string test_string = 1;\n  .foo.TestMessage.Status test_int = 2;\n  float test_float = 3;\n\n  message Status {\n    string test_string = 1;\n  }\n}\n',
        ["FIELD_ADDED #/TestMessage/3"],
        True,
        [],
        [],
        id="Allow addition of un-reserved property",
    ),
    pytest.param(
        'syntax = "proto3";\npackage foo;\nmessage TestMessage {\n    string test_string = 1;\n    .foo.TestMessage.Status test_int = 2;\n    message Status {\n    string test_string = 1;\n    }\n}',
        'syntax = "proto3";\npackage bar;\nmessage TestMessage {\n    string test_string = 1;\n    .bar.TestMessage.Status test_int = 2;\n    message Status {\n    string test_string = 1;\n    }\n}',
        ["PACKAGE_CHANGED #/"],
        False,
        [],
        [],
        id="Detect package change",
    ),
    pytest.param(
        'syntax = "proto3";\nmessage TestMessage {\n    string test_string = 1;\n    Status test_int = 2;\n    message Status {\n    string test_string = 1;\n    }\n}',
        'syntax = "proto3";\nmessage TestMessage {\n    string test_string = 1;\n    .TestMessage.Status test_int = 2;\n    message Status {\n    string test_string = 1;\n    }\n}',
        [],
        True,
        [],
        [],
        id="Detect change to name qualification",
    ),
    pytest.param(
        'syntax = "proto3";\npackage foo;\nmessage TestMessage {\n    string test_string = 1;\n    Status test_int = 2;\n    message Status {\n    string test_string = 1;\n    }\n}',
        'syntax = "proto3";\npackage foo;\nmessage TestMessage {\n    string test_string = 1;\n    .foo.TestMessage.Status test_int = 2;\n    message Status {\n    string test_string = 1;\n    }\n}',
        [],
        True,
        [],
        [],
        id="Detect change to name qualification with package",
    ),
    pytest.param(
        'syntax = "proto3";\nmessage TestMessage {\n    string test_string = 1;\n}',
        'syntax = "proto3";\nmessage TestMessage {\n    string test_string = 1;\n    string test_string2 = 2;\n}',
        ["FIELD_ADDED #/TestMessage/2"],
        True,
        [],
        [],
        id="Detect added field",
    ),
    pytest.param(
        'syntax = "proto2";\nmessage TestMessage {\n    optional string test_string = 1;\n}',
        'syntax = "proto2";\nmessage TestMessage {\n    optional string test_string = 1;\n    required string test_string2 = 2;\n}',
        ["REQUIRED_FIELD_ADDED #/TestMessage/2"],
        False,
        [],
        [],
        id="Detect added required field",
    ),
    pytest.param(
        'syntax = "proto3";\nmessage Wrapper {\n    int32 wrapperInt = 1;\n    message TestMessage {\n    string test_string = 1;\n}\n}',
        'syntax = "proto3";\nmessage Wrapper {\n    int32 wrapperInt = 1;\n    message TestMessage {\n    string test_string = 1;\n    string test_string2 = 2;\n}\n}',
        ["FIELD_ADDED #/Wrapper/TestMessage/2"],
        True,
        [],
        [],
        id="Detect added field to nested type",
    ),
    pytest.param(
        'syntax = "proto3";\nmessage TestMessage {\n    string test_string = 1;\n    string test_string2 = 2;\n}',
        'syntax = "proto3";\nmessage TestMessage {\n    string test_string = 1;\n}\n',
        ["FIELD_REMOVED #/TestMessage/2"],
        True,
        [],
        [],
        id="Detect removed field",
    ),
    pytest.param(
        'syntax = "proto2";\nmessage TestMessage {\n    optional string test_string = 1;\n    required string test_string2 = 2;\n}',
        'syntax = "proto2";\nmessage TestMessage {\n    optional string test_string = 1;\n}\n',
        ["REQUIRED_FIELD_REMOVED #/TestMessage/2"],
        False,
        [],
        [],
        id="Detect removed required field",
    ),
    pytest.param(
        'syntax = "proto3";\nmessage TestMessage {\n    string test_string = 1;\n}',
        'syntax = "proto3";\nmessage TestMessage {\n    string test_string = 2;\n}',
        ["FIELD_ADDED #/TestMessage/2", "FIELD_REMOVED #/TestMessage/1"],
        True,
        [],
        [],
        id="Detect changed field number",
    ),
    pytest.param(
        'syntax = "proto3";\nmessage TestMessage {\n    string test_string = 1;\n    int32 test_int = 2;\n}',
        'syntax = "proto3";\nmessage TestMessage {\n    string test_string = 1;\n    int64 test_int = 2;\n}',
        [],
        True,
        [],
        [],
        id="Detect compatible field number type change",
    ),
    pytest.param(
        'syntax = "proto3";\nmessage TestMessage {\n    string test_string = 1;\n    string test_string2 = 2;\n}',
        'syntax = "proto3";\nmessage TestMessage {\n    string test_string = 1;\n    bytes test_string2 = 2;\n}',
        [],
        True,
        [],
        [],
        id="Detect compatible field string type change",
    ),
    pytest.param(
        'syntax = "proto3";\nmessage TestMessage {\n    string test_string = 1;\n    int32 test_int = 2;\n}',
        'syntax = "proto3";\nmessage TestMessage {\n    string test_string = 1;\n    Status test_int = 2;\n}\nenum Status {\n    ACTIVE = 0;\n    INACTIVE = 1;\n}',
        ["ENUM_ADDED #/Status"],
        True,
        [],
        [],
        id="Detect field number type to enum change",
    ),
    pytest.param(
        'syntax = "proto3";\nmessage TestMessage {\n    string test_string = 1;\n    Status test_int = 2;\n}\nenum Status {\n    ACTIVE = 0;\n    INACTIVE = 1;\n}',
        'syntax = "proto3";\nmessage TestMessage {\n    string test_string = 1;\n    int32 test_int = 2;\n}',
        ["ENUM_REMOVED #/Status"],
        True,
        [],
        [],
        id="Detect enum type to field number change",
    ),
    pytest.param(
        'syntax = "proto3";\nmessage TestMessage {\n    string test_string = 1;\n    int32 test_int = 2;\n}',
        'syntax = "proto3";\nmessage TestMessage {\n    string test_string = 1;\n    .TestMessage.Status test_int = 2;\n    message Status {\n    string test_string = 1;\n    }\n}\nenum Status {\n    ACTIVE = 0;\n    INACTIVE = 1;\n}',
        [
            "ENUM_ADDED #/Status",
            "FIELD_KIND_CHANGED #/TestMessage/2",
            "MESSAGE_ADDED #/TestMessage/Status",
        ],
        False,
        [],
        [],
        id="Detect field number type to message with same name as enum",
    ),
    pytest.param(
        'syntax = "proto3";\nmessage TestMessage {\n    string test_string = 1;\n    .TestMessage.Status test_int = 2;\n    message Status {\n    string test_string = 1;\n    }\n}\nenum Status {\n    ACTIVE = 0;\n    INACTIVE = 1;\n}',
        'syntax = "proto3";\nmessage TestMessage {\n    string test_string = 1;\n    int32 test_int = 2;\n}',
        [
            "ENUM_REMOVED #/Status",
            "FIELD_KIND_CHANGED #/TestMessage/2",
            "MESSAGE_REMOVED #/TestMessage/Status",
        ],
        False,
        [],
        [],
        id="Detect message with same name as enum to field number change",
    ),
    pytest.param(
        'syntax = "proto3";\nmessage TestMessage {\n    string test_string = 1;\n    Status test_int = 2;\n}\nenum Status {\n    ACTIVE = 0;\n    INACTIVE = 1;\n}',
        'syntax = "proto3";\nmessage TestMessage {\n    string test_string = 1;\n    Status test_int = 2;\n}\nenum Status {\n    ACTIVE = 0;\n    NOT_ACTIVE = 1;\n}',
        ["ENUM_CONST_CHANGED #/Status/1"],
        True,
        [],
        [],
        id="Detect enum const change",
    ),
    pytest.param(
        'syntax = "proto3";\nmessage TestMessage {\n    string test_string = 1;\n    string test_string2 = 2;\n}',
        'syntax = "proto3";\nmessage TestMessage {\n    string test_string = 1;\n    oneof new_oneof {\n        string test_string2 = 2;\n        int32 other_id = 3;\n}\n}',
        ["ONEOF_ADDED #/TestMessage/new_oneof", "ONEOF_FIELD_ADDED #/TestMessage/new_oneof/3"],
        True,
        [],
        [],
        id="Detect compatible field to oneof change",
    ),
    pytest.param(
        'syntax = "proto3";\nmessage TestMessage {\n    string test_string = 1;\n    string test_string2 = 2;\n}',
        'syntax = "proto3";\nmessage TestMessage {\n    oneof new_oneof {\n    string test_string = 1;\n    string test_string2 = 2;\n        int32 other_id = 3;\n}\n}',
        [
            "MULTIPLE_FIELDS_MOVED_TO_ONEOF #/TestMessage/new_oneof",
            "ONEOF_ADDED #/TestMessage/new_oneof",
            "ONEOF_FIELD_ADDED #/TestMessage/new_oneof/3",
        ],
        False,
        [],
        [],
        id="Detect incompatible field to oneof change",
    ),
    pytest.param(
        'syntax = "proto3";\nmessage TestMessage {\n    oneof new_oneof {\n    string test_string = 1;\n    string test_string2 = 2;\n}\n}',
        'syntax = "proto3";\nmessage TestMessage {\n    oneof new_oneof {\n    string test_string = 1;\n    string test_string2 = 2;\n        int32 other_id = 3;\n}\n}',
        ["ONEOF_FIELD_ADDED #/TestMessage/new_oneof/3"],
        True,
        [],
        [],
        id="Detect compatible add field to oneof",
    ),
    pytest.param(
        'syntax = "proto3";\nmessage TestMessage {\n    oneof new_oneof {\n    string test_string = 1;\n    string test_string2 = 2;\n        int32 other_id = 3;\n}\n}',
        'syntax = "proto3";\nmessage TestMessage {\n    oneof new_oneof {\n    string test_string = 1;\n    string test_string2 = 2;\n}\n}',
        ["ONEOF_FIELD_REMOVED #/TestMessage/new_oneof/3"],
        False,
        [],
        [],
        id="Detect incompatible remove field from oneof",
    ),
    pytest.param(
        'syntax = "proto3";\nmessage TestMessage {\n    string test_string = 1;\n    string test_string2 = 2;\n}',
        'syntax = "proto3";\nmessage TestMessage {\n    string test_string = 1;\n    oneof new_oneof {\n    string test_string2 = 2;\n}\n}',
        ["ONEOF_ADDED #/TestMessage/new_oneof"],
        True,
        [],
        [],
        id="Detect compatible move field to oneof",
    ),
    pytest.param(
        'syntax = "proto3";\nmessage TestMessage {\n    string test_string = 1;\n    oneof new_oneof {\n    string test_string2 = 2;\n    string test_string3 = 3;\n}\n}',
        'syntax = "proto3";\nmessage TestMessage {\n    oneof new_oneof {\n    string test_string = 1;\n    string test_string2 = 2;\n    string test_string3 = 3;\n}\n}',
        ["FIELD_MOVED_TO_EXISTING_ONEOF #/TestMessage/new_oneof"],
        False,
        [],
        [],
        id="Detect incompatible move field to oneof",
    ),
    pytest.param(
        'syntax = "proto3";\nmessage TestMessage {\n    string test_string = 1;\n    oneof new_oneof {\n    string test_string2 = 2;\n    string test_string3 = 3;\n}\n}',
        'syntax = "proto3";\nmessage TestMessage {\n    oneof new_oneof_2 {\n    string test_string = 1;\n    string test_string2 = 2;\n    string test_string3 = 3;\n}\n}',
        [
            "FIELD_MOVED_TO_EXISTING_ONEOF #/TestMessage/new_oneof_2",
            "ONEOF_ADDED #/TestMessage/new_oneof_2",
            "ONEOF_REMOVED #/TestMessage/new_oneof",
        ],
        False,
        [],
        [],
        id="Detect incompatible move field to renamed oneof",
    ),
    pytest.param(
        'syntax = "proto3";\nmessage TestMessage {\n    string test_string = 1;\n    int32 test_int = 2;\n}',
        'syntax = "proto3";\nmessage TestMessage {\n    string test_string = 1;\n    TestMessage2 test_int = 2;\n}\nmessage TestMessage2 {\n    string s1 = 1;\n}',
        ["FIELD_KIND_CHANGED #/TestMessage/2", "MESSAGE_ADDED #/TestMessage2"],
        False,
        [],
        [],
        id="Detect incompatible field type change",
    ),
    pytest.param(
        'syntax = "proto3";\nmessage TestMessage {\n    string test_string = 1;\n    int32 test_int = 2;\n}',
        'syntax = "proto3";\nmessage TestMessage {\n    string test_string = 1;\n    string test_string2 = 2;\n}',
        ["FIELD_NAME_CHANGED #/TestMessage/2", "FIELD_SCALAR_KIND_CHANGED #/TestMessage/2"],
        False,
        [],
        [],
        id="Detect incompatible field type change",
    ),
    pytest.param(
        'syntax = "proto3";\nmessage TestMessage {\n    string test_string = 1;\n    TestMessage2 test_int = 2;\n}\nmessage TestMessage2 {\n    string s1 = 1;\n}',
        'syntax = "proto3";\nmessage TestMessage {\n    string test_string = 1;\n    TestMessage3 test_int = 2;\n}\nmessage TestMessage3 {\n    string s1 = 1;\n}',
        [
            "FIELD_NAMED_TYPE_CHANGED #/TestMessage/2",
            "MESSAGE_ADDED #/TestMessage3",
            "MESSAGE_REMOVED #/TestMessage2",
        ],
        False,
        [],
        [],
        id="Detect incompatible field type change",
    ),
    pytest.param(
        'syntax = "proto3";\nmessage TestMessage {\n    string test_string = 1;\n    map<string, int32> test_map_int = 2;\n}',
        'syntax = "proto3";\nmessage TestMessage {\n    string test_string = 1;\n    map<string, string> test_map_string = 2;\n}',
        ["FIELD_NAME_CHANGED #/TestMessage/2", "FIELD_SCALAR_KIND_CHANGED #/TestMessage/2"],
        False,
        [],
        [],
        id="Detect incompatible field type change",
    ),
    pytest.param(
        'syntax = "proto3";\nmessage TestMessage {\n    string test_string = 1;\n    map<string, Status> test_map = 2;\n    message Status {\n    string test_string = 1;\n    }\n}',
        'syntax = "proto3";\nmessage TestMessage {\n    string test_string = 1;\n    map<string, TestMessage.Status> test_map = 2;\n    message Status {\n    string test_string = 1;\n    }\n}',
        [],
        True,
        [],
        [],
        id="Detect compatible name qualification in map",
    ),
    pytest.param(
        'syntax = "proto3";\nmessage TestMessage {\n    string test_string = 1;\n    optional Status test_status = 2;\n    message Status {\n    string test_string = 1;\n    }\n}',
        'syntax = "proto3";\nmessage TestMessage {\n    string test_string = 1;\n    repeated Status test_status = 2;\n    message Status {\n    string test_string = 1;\n    }\n}',
        [],
        True,
        [],
        [],
        id="Detect compatible field label change for message",
    ),
    pytest.param(
        'syntax = "proto3";\nmessage TestMessage {\n    optional string test_string = 1;\n    Status test_status = 2;\n    message Status {\n    string test_string = 1;\n    }\n}',
        'syntax = "proto3";\nmessage TestMessage {\n    repeated string test_string = 1;\n    Status test_status = 2;\n    message Status {\n    string test_string = 1;\n    }\n}',
        ["FIELD_STRING_OR_BYTES_LABEL_CHANGED #/TestMessage/1"],
        True,
        [],
        [],
        id="Detect compatible field label change for string",
    ),
    pytest.param(
        'syntax = "proto3";\nmessage TestMessage {\n    optional bytes test_bytes = 1;\n    Status test_status = 2;\n    message Status {\n    string test_string = 1;\n    }\n}',
        'syntax = "proto3";\nmessage TestMessage {\n    repeated bytes test_bytes = 1;\n    Status test_status = 2;\n    message Status {\n    string test_string = 1;\n    }\n}',
        ["FIELD_STRING_OR_BYTES_LABEL_CHANGED #/TestMessage/1"],
        True,
        [],
        [],
        id="Detect compatible field label change for bytes",
    ),
    pytest.param(
        'syntax = "proto3";\nmessage TestMessage {\n    optional int32 test_int = 1;\n    Status test_status = 2;\n    message Status {\n    string test_string = 1;\n    }\n}',
        'syntax = "proto3";\nmessage TestMessage {\n    repeated int32 test_int = 1;\n    Status test_status = 2;\n    message Status {\n    string test_string = 1;\n    }\n}',
        ["FIELD_NUMERIC_LABEL_CHANGED #/TestMessage/1"],
        False,
        [],
        [],
        id="Detect incompatible field label change for number",
    ),
    pytest.param(
        'syntax = "proto3";\nmessage TestMessage {\n    string test_string = 1;\n}',
        'syntax = "proto3";\nmessage TestMessage {\n    string test_string = 1;\n}\nmessage TestMessage2 {\n    string test_string = 1;\n}',
        ["MESSAGE_ADDED #/TestMessage2"],
        True,
        [],
        [],
        id="Detect compatible message addition",
    ),
    pytest.param(
        'syntax = "proto3";\nmessage TestMessage {\n    string test_string = 1;\n}',
        'syntax = "proto3";\nmessage TestMessage2 {\n    string test_string = 1;\n}\nmessage TestMessage {\n    string test_string = 1;\n}',
        ["MESSAGE_ADDED #/TestMessage2", "MESSAGE_MOVED #/TestMessage"],
        True,
        [],
        [],
        id="Detect compatible message index change",
    ),
    pytest.param(
        'syntax = "proto3";\nmessage TestMessage {\n    string test_string = 1;\n}\nmessage TestMessage2 {\n    string test_string = 1;\n}',
        'syntax = "proto3";\nmessage TestMessage2 {\n    string test_string = 1;\n}\nmessage TestMessage {\n    string test_string = 1;\n}',
        ["MESSAGE_MOVED #/TestMessage", "MESSAGE_MOVED #/TestMessage2"],
        True,
        [],
        [],
        id="Detect compatible message index change",
    ),
    pytest.param(
        'syntax = "proto3";\nimport "google.proto";\nmessage TestMessage {\n    .io.confluent.cloud.demo.domain.GoogleHome test_string = 1;\n    }',
        'syntax = "proto3";\nimport "google2.proto";\nmessage TestMessage {\n    .io.confluent.cloud.demo.domain.GoogleHome test_string = 1;\n    }',
        ["FIELD_NAMED_TYPE_CHANGED #/TestMessage/1", "FIELD_SCALAR_KIND_CHANGED #/GoogleHome/1"],
        False,
        [
            (
                "google.proto",
                'syntax = "proto3";\n\npackage io.confluent.cloud.demo.domain;\n\noption java_outer_classname = "GoogleImpl";\n\nmessage GoogleHome {\n  int32 deviceID = 1;\n  bool enabled = 2;\n}',
            )
        ],
        [
            (
                "google2.proto",
                'syntax = "proto3";\n\npackage io.confluent.cloud.demo.domain;\n\noption java_outer_classname = "GoogleImpl2";\n\nmessage GoogleHome {\n  string deviceID = 1;\n  bool enabled = 2;\n}',
            )
        ],
        id="Detect incompatible import change",
    ),
    pytest.param(
        'syntax = "proto3";\nmessage TestMessage {\n    GoogleHome test_string = 1;\n    }\nmessage GoogleHome {\n  int32 deviceID = 1;\n  bool enabled = 2;\n}',
        'syntax = "proto3";\nimport "google.proto";\nmessage TestMessage {\n    .io.confluent.cloud.demo.domain.GoogleHome test_string = 1;\n    }',
        ["MESSAGE_REMOVED #/GoogleHome"],
        False,
        [],
        [
            (
                "google.proto",
                'syntax = "proto3";\n\npackage io.confluent.cloud.demo.domain;\n\noption java_outer_classname = "GoogleImpl";\n\nmessage GoogleHome {\n  int32 deviceID = 1;\n  bool enabled = 2;\n}',
            )
        ],
        id="Detect moving to import",
    ),
    pytest.param(
        'syntax = "proto3";\nimport "google.proto";\nmessage TestMessage {\n    .io.confluent.cloud.demo.domain.GoogleHome test_string = 1;\n    }',
        'syntax = "proto3";\nmessage TestMessage {\n    GoogleHome test_string = 1;\n    }\nmessage GoogleHome {\n  int32 deviceID = 1;\n  bool enabled = 2;\n}',
        ["MESSAGE_ADDED #/GoogleHome"],
        True,
        [
            (
                "google.proto",
                'syntax = "proto3";\n\npackage io.confluent.cloud.demo.domain;\n\noption java_outer_classname = "GoogleImpl";\n\nmessage GoogleHome {\n  int32 deviceID = 1;\n  bool enabled = 2;\n}',
            )
        ],
        [],
        id="Detect moving from import",
    ),
    pytest.param(
        'syntax = "proto3";\nimport "google.proto";\nmessage TestMessage {\n    .io.confluent.cloud.demo.domain.GoogleHome test_string = 1;\n    }',
        'syntax = "proto3";\nimport "google2.proto";\nmessage TestMessage {\n    .io.confluent.cloud.demo.domain2.GoogleHome test_string = 1;\n    }',
        [],
        True,
        [
            (
                "google.proto",
                'syntax = "proto3";\n\npackage io.confluent.cloud.demo.domain;\n\noption java_outer_classname = "GoogleImpl";\n\nmessage GoogleHome {\n  int32 deviceID = 1;\n  bool enabled = 2;\n}',
            )
        ],
        [
            (
                "google2.proto",
                'syntax = "proto3";\n\npackage io.confluent.cloud.demo.domain2;\n\noption java_outer_classname = "GoogleImpl2";\n\nmessage GoogleHome {\n  int32 deviceID = 1;\n  bool enabled = 2;\n}',
            )
        ],
        id="Detect import change with different remote package name",
    ),
    pytest.param(
        'syntax = "proto3";\nimport "google.proto";\nmessage TestMessage {\n    .io.confluent.cloud.demo.domain.outer.GoogleHome test_string = 1;\n    }',
        'syntax = "proto3";\nimport "google2.proto";\nmessage TestMessage {\n    .io.confluent.cloud.demo.domain2.outer.GoogleHome test_string = 1;\n    }',
        [],
        True,
        [
            (
                "google.proto",
                'syntax = "proto3";\n\npackage io.confluent.cloud.demo.domain;\n\noption java_outer_classname = "GoogleImpl";\n\nmessage outer {\n  message GoogleHome {\n  int32 deviceID = 1;\n  bool enabled = 2;\n}\n}',
            )
        ],
        [
            (
                "google2.proto",
                'syntax = "proto3";\n\npackage io.confluent.cloud.demo.domain2;\n\noption java_outer_classname = "GoogleImpl2";\n\nmessage outer {\n  message GoogleHome {\n  int32 deviceID = 1;\n  bool enabled = 2;\n}\n}',
            )
        ],
        id="Detect import change with different remote package nested name",
    ),
    pytest.param(
        'syntax = "proto3";\nimport "google.proto";\nmessage TestMessage {\n    .io.confluent.cloud.demo.domain.outer.GoogleHome test_string = 1;\n    }',
        'syntax = "proto3";\nimport "google2.proto";\nmessage TestMessage {\n    .io.confluent.cloud.demo.domain2.outer.GoogleHome test_string = 1;\n    }',
        [
            "FIELD_NAMED_TYPE_CHANGED #/TestMessage/1",
            "FIELD_SCALAR_KIND_CHANGED #/outer/GoogleHome/1",
        ],
        False,
        [
            (
                "google.proto",
                'syntax = "proto3";\n\npackage io.confluent.cloud.demo.domain;\n\noption java_outer_classname = "GoogleImpl";\n\nmessage outer {\n  message GoogleHome {\n  int32 deviceID = 1;\n  bool enabled = 2;\n}\n}',
            )
        ],
        [
            (
                "google2.proto",
                'syntax = "proto3";\n\npackage io.confluent.cloud.demo.domain2;\n\noption java_outer_classname = "GoogleImpl2";\n\nmessage outer {\n  message GoogleHome {\n  string deviceID = 1;\n  bool enabled = 2;\n}\n}',
            )
        ],
        id="Detect incompatible import change with different remote package nested name",
    ),
    pytest.param(
        'syntax = "proto3";\nimport "google.proto";\nmessage TestMessage {\n    .io.confluent.cloud.demo.domain.outer.GoogleHome test_string = 1;\n    }',
        'syntax = "proto3";\nimport "google.proto";\nmessage TestMessage {\n    .io.confluent.cloud.demo.domain2.outer.GoogleHome test_string = 1;\n    }',
        [
            "FIELD_NAMED_TYPE_CHANGED #/TestMessage/1",
            "FIELD_SCALAR_KIND_CHANGED #/outer/GoogleHome/1",
        ],
        False,
        [
            (
                "google.proto",
                'syntax = "proto3";\n\npackage io.confluent.cloud.demo.domain;\n\noption java_outer_classname = "GoogleImpl";\n\nmessage outer {\n  message GoogleHome {\n  int32 deviceID = 1;\n  bool enabled = 2;\n}\n}',
            )
        ],
        [
            (
                "google.proto",
                'syntax = "proto3";\n\npackage io.confluent.cloud.demo.domain2;\n\noption java_outer_classname = "GoogleImpl2";\n\nmessage outer {\n  message GoogleHome {\n  string deviceID = 1;\n  bool enabled = 2;\n}\n}',
            )
        ],
        id="Detect incompatible import change with same subject, different version",
    ),
    pytest.param(
        'syntax = "proto3";\nmessage Message {\n  oneof oldOneOf {\n    float field_float = 1;\n    int32 field_with_incompatible_type_change = 2;\n  }\n}\n',
        'syntax = "proto3";\nmessage Message {\n  oneof renamedOneOf {\n    float field_float = 1;\n    string field_with_incompatible_type_change = 2;\n  }\n}\n',
        [
            "FIELD_SCALAR_KIND_CHANGED #/Message/renamedOneOf/2",
            "ONEOF_ADDED #/Message/renamedOneOf",
            "ONEOF_REMOVED #/Message/oldOneOf",
        ],
        False,
        [],
        [],
        id="Detect incompatible field type change when enclosing oneof is renamed",
    ),
    pytest.param(
        'syntax = "proto3";\nmessage Message {\n  oneof oldOneOf {\n    float field_float = 1;\n    int32 field_with_incompatible_type_change = 2;\n  }\n}\n',
        'syntax = "proto3";\nmessage Message {\n  float field_float = 1;\n  sint64 field_with_incompatible_type_change = 2;\n}\n',
        [
            "FIELD_SCALAR_KIND_CHANGED #/Message/2",
            "ONEOF_FIELD_MOVED_TO_TOP_LEVEL #/Message/1",
            "ONEOF_FIELD_MOVED_TO_TOP_LEVEL #/Message/2",
            "ONEOF_REMOVED #/Message/oldOneOf",
        ],
        False,
        [],
        [],
        id="Detect incompatible field type change when field is moved out of a removed oneof",
    ),
    pytest.param(
        'syntax = "proto3";\nmessage Message {\n  float field_float = 1;\n  int32 field_with_incompatible_type_change = 2;\n}\n',
        'syntax = "proto3";\nmessage Message {\n  float field_float = 1;\n  oneof newOneOf {\n    sint64 field_with_incompatible_type_change = 2;\n  }\n}\n',
        ["FIELD_SCALAR_KIND_CHANGED #/Message/newOneOf/2", "ONEOF_ADDED #/Message/newOneOf"],
        False,
        [],
        [],
        id="Detect incompatible field type change when field is moved into a new oneof",
    ),
    pytest.param(
        'syntax = "proto3";\nmessage Message {\n  oneof oldOneOf {\n    float field_float = 1;\n    int32 field_int = 2;\n  }\n}\n',
        'syntax = "proto3";\nmessage Message {\n  oneof renamedOneOf {\n    float field_float = 1;\n    int32 field_int = 2;\n  }\n}\n',
        ["ONEOF_ADDED #/Message/renamedOneOf", "ONEOF_REMOVED #/Message/oldOneOf"],
        True,
        [],
        [],
        id="Detect compatible oneof rename with identical fields",
    ),
    pytest.param(
        'syntax = "proto3";\nmessage Message {\n  oneof oneof_a {\n    int32 field_1 = 1;\n    int32 field_2 = 2;\n  }\n  oneof oneof_b {\n    int32 field_3 = 3;\n  }\n}\n',
        'syntax = "proto3";\nmessage Message {\n  oneof oneof_a {\n    int32 field_1 = 1;\n  }\n  oneof oneof_b {\n    int32 field_3 = 3;\n    int32 field_2 = 2;\n  }\n}\n',
        ["FIELD_MOVED_TO_EXISTING_ONEOF #/Message/oneof_b"],
        False,
        [],
        [],
        id="Detect incompatible field move between two differently-named oneofs",
    ),
    pytest.param(
        'syntax = "proto3";\nmessage Message {\n  oneof oneof_a { int32 field_a = 1; }\n  oneof oneof_b { int32 field_b = 3; }\n}\n',
        'syntax = "proto3";\nmessage Message {\n  oneof oneof_b { int32 field_b = 3; int32 field_a = 1; }\n}\n',
        ["FIELD_MOVED_TO_EXISTING_ONEOF #/Message/oneof_b", "ONEOF_REMOVED #/Message/oneof_a"],
        False,
        [],
        [],
        id="Detect incompatible move of a field from a deleted oneof into an existing oneof",
    ),
    pytest.param(
        'syntax = "proto3";\nmessage Message {\n  oneof oneof_a { int32 field_a = 1; }\n  oneof oneof_b { int32 field_b = 2; }\n}\n',
        'syntax = "proto3";\nmessage Message {\n  oneof oneof_c { int32 field_a = 1; int32 field_b = 2; }\n}\n',
        [
            "FIELD_MOVED_TO_EXISTING_ONEOF #/Message/oneof_c",
            "ONEOF_ADDED #/Message/oneof_c",
            "ONEOF_REMOVED #/Message/oneof_a",
            "ONEOF_REMOVED #/Message/oneof_b",
        ],
        False,
        [],
        [],
        id="Detect incompatible merge of two oneofs into a new oneof",
    ),
    pytest.param(
        'syntax = "proto3";\nmessage Message {\n  oneof oneof_a { int32 field_a = 1; int32 field_b = 2; }\n}\n',
        'syntax = "proto3";\nmessage Message {\n  oneof oneof_a { int32 field_b = 2; }\n  oneof oneof_b { int32 field_a = 1; }\n}\n',
        ["ONEOF_ADDED #/Message/oneof_b"],
        True,
        [],
        [],
        id="Detect compatible move of a single field into a new singleton oneof from a surviving oneof",
    ),
    pytest.param(
        'syntax = "proto3";\nmessage Message {\n  oneof g { int32 a = 1; int32 b = 2; }\n}\n',
        'syntax = "proto3";\nmessage Message {\n  oneof g2 { int32 a = 1; }\n}\n',
        [
            "ONEOF_ADDED #/Message/g2",
            "ONEOF_FIELD_REMOVED #/Message/g/2",
            "ONEOF_REMOVED #/Message/g",
        ],
        False,
        [],
        [],
        id="Detect incompatible drop of a oneof member while renaming the oneof",
    ),
    pytest.param(
        'syntax = "proto3";\nmessage Message {\n  oneof oneof_x {\n    int32 field_a = 1;\n    int32 field_b = 2;\n  }\n}\n',
        'syntax = "proto3";\nmessage Message {\n  oneof oneof_x {\n    int32 field_a = 1;\n  }\n  int32 field_b = 2;\n}\n',
        ["ONEOF_FIELD_MOVED_TO_TOP_LEVEL #/Message/2"],
        True,
        [],
        [],
        id="Detect compatible move field out of a oneof to top level",
    ),
    pytest.param(
        'syntax = "proto3";\nmessage Message {\n  oneof oneof_x {\n    int32 field_a = 1;\n    int32 field_b = 2;\n  }\n}\n',
        'syntax = "proto3";\nmessage Message {\n  oneof oneof_x {\n    int32 field_a = 1;\n  }\n  string field_b = 2;\n}\n',
        ["FIELD_SCALAR_KIND_CHANGED #/Message/2", "ONEOF_FIELD_MOVED_TO_TOP_LEVEL #/Message/2"],
        False,
        [],
        [],
        id="Detect incompatible type change when field moved out of a oneof to top level",
    ),
]


def _with_deps(text: str, deps: list[tuple[str, str]]) -> Any:
    refs = [parse_schema(source, [], name=name) for name, source in deps]
    return parse_schema(text, refs)


@pytest.mark.parametrize(
    ("original", "update", "changes", "compatible", "original_deps", "update_deps"),
    CONFLUENT_DIFF_CASES,
)
def test_confluents_diff_examples(
    original: str,
    update: str,
    changes: list[str],
    compatible: bool,
    original_deps: list[tuple[str, str]],
    update_deps: list[tuple[str, str]],
) -> None:
    found = compare(_with_deps(original, original_deps), _with_deps(update, update_deps))
    assert sorted(str(d) for d in found) == changes
    assert all(d.compatible for d in found) == compatible
    reasons = check_pair(_with_deps(update, update_deps), _with_deps(original, original_deps))
    assert (not reasons) == compatible
    for reason in reasons:
        assert reason.message.startswith(reason.path), "the CLI prints the path of every break"


# --- parsing ---------------------------------------------------------------------------

MONEY: Final = (
    'syntax = "proto3";\npackage shop;\nmessage Money { string currency = 1; int64 units = 2; }\n'
)
ORDER: Final = """syntax = "proto3";
package shop.orders;
import "shop/money.proto";
import "google/protobuf/timestamp.proto";
message Order {
  shop.Money total = 1;
  google.protobuf.Timestamp placed_at = 2;
  map<string, int32> counts = 3;
  oneof payment { string card = 4; string voucher = 5; }
  optional string note = 6;
  Status status = 7;
  enum Status { STATUS_UNSPECIFIED = 0; STATUS_PLACED = 1; }
}
"""


def test_text_and_its_serialized_descriptor_are_one_schema() -> None:
    money = parse_schema(MONEY, [], name="shop/money.proto")
    order = parse_schema(ORDER, [money])
    again = parse_schema(serialized_string(order), [money])
    assert canonical_string(again) == canonical_string(order)
    assert compare(order, again) == []
    # the canonical text compiles to itself
    assert canonical_string(parse_schema(canonical_string(order), [money])) == canonical_string(
        order
    )
    assert "google/protobuf/timestamp.proto" in order.dependencies


def test_normalized_sorts_as_confluent_normalize_does() -> None:
    one = parse_schema('syntax = "proto3";\nmessage A { int32 b = 2; int32 a = 1; }', [])
    two = parse_schema('syntax = "proto3";\nmessage A { int32 a = 1; int32 b = 2; }', [])
    assert canonical_string(one) != canonical_string(two)
    assert normalized_string(one) == normalized_string(two)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            'syntax = "proto3";\nmessage A { Missing m = 1; }',
            'schema:2:13: "Missing" is not defined.',
        ),
        ('syntax = "proto3";\nmessage A { int32 a = 1; int32 b = 1; }', "has already been used"),
        ('syntax = "proto3";\nimport "shop/absent.proto";\n', "shop/absent.proto"),
        ("message {", "schema:1:9"),
    ],
)
def test_protoc_errors_are_invalid_schema_in_protocs_words(text: str, words: str) -> None:
    with pytest.raises(InvalidSchema, match=r"^Invalid schema: ") as caught:
        parse_schema(text, [])
    assert words in str(caught.value)


def test_custom_options_from_a_reference_keep_their_names() -> None:
    opts = parse_schema(
        'syntax = "proto3";\npackage acme;\nimport "google/protobuf/descriptor.proto";\n'
        "extend google.protobuf.FieldOptions { string pii = 50001; }\n",
        [],
        name="acme/opts.proto",
    )
    user = parse_schema(
        'syntax = "proto3";\nimport "acme/opts.proto";\nmessage U { string email = 1 [(acme.pii) = "mail"]; }',
        [opts],
    )
    assert '[(acme.pii) = "mail"]' in canonical_string(user)
    assert canonical_string(parse_schema(canonical_string(user), [opts])) == canonical_string(user)


def test_the_repositorys_grpc_contracts_render_and_compile_back() -> None:
    from shop.orders.v1 import orders_pb2

    parsed: dict[str, Any] = {}

    def load(descriptor: Any) -> Any:
        if descriptor.name not in parsed:
            refs = [
                load(d)
                for d in descriptor.dependencies
                if not d.name.startswith("google/protobuf/")
            ]
            text = base64.b64encode(descriptor.serialized_pb).decode()
            parsed[descriptor.name] = parse_schema(text, refs, name=descriptor.name)
            again = parse_schema(canonical_string(parsed[descriptor.name]), refs)
            assert canonical_string(again) == canonical_string(parsed[descriptor.name])
        return parsed[descriptor.name]

    orders = load(orders_pb2.DESCRIPTOR)
    assert "option (mesh.api.v1.access) = {" in canonical_string(orders)
    assert "option (google.api.http) = {" in canonical_string(orders)


def test_a_parse_takes_a_few_milliseconds() -> None:
    money = parse_schema(MONEY, [], name="shop/money.proto")
    start = time.perf_counter()
    for _ in range(20):
        parse_schema(ORDER, [money])
    per_parse = (time.perf_counter() - start) / 20
    assert per_parse < 0.05, f"{per_parse * 1000:.1f} ms a parse"


# --- the rules one by one (Confluent's diff types with their paths) ----------------------

P3: Final = 'syntax = "proto3";\n'


@pytest.mark.parametrize(
    ("writer", "reader", "rules"),
    [
        ("message A { int32 a = 1; }", "message A { int64 a = 1; }", []),
        (
            "message A { int32 a = 1; }",
            "message A { sint32 a = 1; }",
            ["FIELD_SCALAR_KIND_CHANGED #/A/1"],
        ),
        ("message A { string a = 1; }", "message A { bytes a = 1; }", []),
        ("message A { fixed32 a = 1; }", "message A { sfixed32 a = 1; }", []),
        (
            "message A { float a = 1; }",
            "message A { double a = 1; }",
            ["FIELD_SCALAR_KIND_CHANGED #/A/1"],
        ),
        (
            "message A { int32 a = 1; }",
            "message A { B a = 1; } message B {}",
            ["FIELD_KIND_CHANGED #/A/1"],
        ),
        ("message A { int32 a = 1; }", "message A { repeated int32 a = 1; }", []),
        (
            "message A { optional int32 a = 1; }",
            "message A { repeated int32 a = 1; }",
            ["FIELD_NUMERIC_LABEL_CHANGED #/A/1"],
        ),
        (
            "message A { map<string, int32> m = 1; }",
            "message A { map<string, string> m = 1; }",
            ["FIELD_SCALAR_KIND_CHANGED #/A/1"],
        ),
        (
            "message A { E e = 1; } enum E { X = 0; }",
            "message A { int32 e = 1; } enum E { X = 0; }",
            [],
        ),
        ("message A {} message B {}", "message A {}", ["MESSAGE_REMOVED #/B"]),
        (
            "message A { int32 a = 1; int32 b = 2; }",
            "message A { oneof o { int32 a = 1; int32 b = 2; } }",
            ["MULTIPLE_FIELDS_MOVED_TO_ONEOF #/A/o"],
        ),
        (
            "message A { oneof o { int32 a = 1; int32 b = 2; } }",
            "message A { oneof o { int32 a = 1; } }",
            ["ONEOF_FIELD_REMOVED #/A/o/2"],
        ),
        (
            "message A { B b = 1; } message B { int32 x = 1; }",
            "message A { C b = 1; } message C { int32 x = 1; }",
            ["FIELD_NAMED_TYPE_CHANGED #/A/1", "MESSAGE_REMOVED #/B"],
        ),
        ("enum E { X = 0; Y = 1; }", "enum E { X = 0; }", []),
    ],
)
def test_rules_and_paths(writer: str, reader: str, rules: list[str]) -> None:
    reasons = check_pair(parse_schema(P3 + reader, []), parse_schema(P3 + writer, []))
    assert sorted(f"{r.rule} {r.path}" for r in reasons) == rules


# --- through the API ---------------------------------------------------------------------


@pytest.fixture(params=["memory", "sqlite"])
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RegistryClient]:
    with in_process(request.param, tmp_path) as client:
        yield client


def _proto(client: RegistryClient, subject: str, text: str, **extra: Any) -> Any:
    return client.post(
        f"/subjects/{subject_path(subject)}/versions",
        {"schema": text, "schemaType": "PROTOBUF", **extra},
    )


def test_types_list_protobuf(api: RegistryClient) -> None:
    assert "PROTOBUF" in api.get("/schemas/types").json()


def test_register_evolve_and_refuse(api: RegistryClient) -> None:
    first = _proto(api, "orders-value", P3 + "package shop;\nmessage Order { string id = 1; }")
    assert first.status == 200, first.body
    again = _proto(
        api, "orders-value", P3 + "package shop;\nmessage Order {\n  string id = 1;\n}\n"
    )
    assert again.json()["id"] == first.json()["id"], "the same schema, however spaced, is one id"
    added = _proto(
        api, "orders-value", P3 + "package shop;\nmessage Order { string id = 1; int64 cents = 2; }"
    )
    assert added.status == 200, added.body
    body = {
        "schema": P3 + "package shop;\nmessage Order { string id = 1; double cents = 2; }",
        "schemaType": "PROTOBUF",
    }
    refused = api.post("/subjects/orders-value/versions", body)
    assert refused.status == 409
    check = api.post(
        "/compatibility/subjects/orders-value/versions/latest?verbose=true", body
    ).json()
    assert check["is_compatible"] is False
    assert any("#/Order/2" in m and "FIELD_SCALAR_KIND_CHANGED" in m for m in check["messages"])
    stored = api.get("/subjects/orders-value/versions/latest").json()
    assert stored["schemaType"] == "PROTOBUF"
    assert "int64 cents = 2;" in stored["schema"]


def test_references_are_imports_and_well_known_types_need_none(api: RegistryClient) -> None:
    assert _proto(api, "shop/money.proto", MONEY).status == 200
    ref = [{"name": "shop/money.proto", "subject": "shop/money.proto", "version": 1}]
    order = _proto(api, "orders-value", ORDER, references=ref)
    assert order.status == 200, order.body
    found = api.get(f"/schemas/ids/{order.json()['id']}").json()
    assert found["references"] == ref
    serialized = api.get(f"/schemas/ids/{order.json()['id']}?format=serialized").json()["schema"]
    from google.protobuf import descriptor_pb2

    descriptor = descriptor_pb2.FileDescriptorProto.FromString(base64.b64decode(serialized))
    assert list(descriptor.dependency) == ["shop/money.proto", "google/protobuf/timestamp.proto"]
    missing = _proto(api, "other-value", ORDER)
    assert (missing.status, missing.json()["error_code"]) == (422, 42201)
    assert "shop/money.proto" in missing.json()["message"]


def test_a_protobuf_schema_cannot_reference_an_avro_one(api: RegistryClient) -> None:
    register(api, "avro-money", '{"type": "record", "name": "Money", "fields": []}')
    ref = [{"name": "shop/money.proto", "subject": "avro-money", "version": 1}]
    reply = _proto(api, "orders-value", ORDER, references=ref)
    assert (reply.status, reply.json()["error_code"]) == (422, 42201)


# --- confluent-kafka's serdes against a real `schema-registry serve` ---------------------


def test_confluent_kafka_protobuf_serializer_and_deserializer(tmp_path: Path) -> None:
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer, ProtobufSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    from shop.common.v1 import common_pb2
    from shop.orders.v1 import orders_pb2

    with serve("--storage", "memory", cwd=tmp_path) as server:
        client = SchemaRegistryClient({"url": server.url})
        serializer = ProtobufSerializer(
            orders_pb2.Order,
            client,
            {"auto.register.schemas": True, "use.deprecated.format": False},
        )
        # A consumer has a client of its own: ckp caches a schema by id whatever the format
        # asked, and the register answer carries the stored .proto text, not the serialized form.
        consumer = SchemaRegistryClient({"url": server.url})
        deserializer = ProtobufDeserializer(
            orders_pb2.Order, {"use.deprecated.format": False}, consumer
        )
        order = orders_pb2.Order(
            order_id="o-1",
            total=common_pb2.Money(currency_code="EUR", units=12),
            status=orders_pb2.ORDER_STATUS_CONFIRMED,
        )
        order.created_at.FromSeconds(1_700_000_000)
        ctx = SerializationContext("orders.v1", MessageField.VALUE)
        data = serializer(order, ctx)
        assert data is not None and data[0] == 0
        assert deserializer(data, ctx) == order
        subjects = client.get_subjects()
        assert "orders.v1-value" in subjects
        assert "shop/common/v1/common.proto" in subjects, "references registered by import name"
        latest = client.get_latest_version("orders.v1-value")
        assert latest.schema.schema_type == "PROTOBUF"
        assert {r.name for r in latest.schema.references or []} >= {"shop/common/v1/common.proto"}
