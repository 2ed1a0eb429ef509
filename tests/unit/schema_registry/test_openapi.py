"""The registry's GET /openapi.json: valid OpenAPI 3.1 (openapi-spec-validator), one operation for
every route the router serves and no operation without a route (so a new route without docs
fails here), Confluent's error shape with each route's codes, request bodies and query
parameters; served as application/json and cached like any other read."""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate
from support.registry import in_process

from schema_registry.api import Api
from schema_registry.openapi import MEDIA_TYPES, documented_routes, openapi_document
from schema_registry.registry import Registry
from schema_registry.storage import MemoryStorage

V1 = "application/vnd.schemaregistry.v1+json"


@pytest.fixture
def api() -> Iterator[Api]:
    storage = MemoryStorage()
    yield Api(Registry(storage))
    storage.close()


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return openapi_document("9.9.9")


def operation(doc: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    found: dict[str, Any] = doc["paths"][path][method.lower()]
    return found


def error_codes(doc: dict[str, Any], method: str, path: str) -> dict[int, list[int]]:
    """{HTTP status: the error_code values documented} of one operation."""
    out = {}
    for status, response in operation(doc, method, path)["responses"].items():
        if status == "200":
            continue
        schema = response["content"][V1]["schema"]
        assert schema["allOf"][0] == {"$ref": "#/components/schemas/ErrorMessage"}
        out[int(status)] = schema["allOf"][1]["properties"]["error_code"]["enum"]
    return out


def params(doc: dict[str, Any], method: str, path: str) -> dict[tuple[str, str], dict[str, Any]]:
    """{(in, name): parameter} of one operation, references resolved."""
    prefix = "#/components/parameters/"
    found = {}
    for ref in operation(doc, method, path).get("parameters", []):
        param = doc["components"]["parameters"][ref["$ref"].removeprefix(prefix)]
        found[(param["in"], param["name"])] = param
    return found


def test_the_document_is_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    validate(doc)  # raises, naming the place, when it is not
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["version"] == "9.9.9"


def test_every_route_is_documented_and_every_operation_is_a_route(api: Api) -> None:
    served = set(api.routes())
    documented = set(documented_routes())
    assert served - documented == set(), "routes without an operation in openapi.py"
    assert documented - served == set(), "operations without a route"
    doc = openapi_document("1")
    in_doc = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert in_doc == served


def test_every_error_answer_has_confluents_shape(doc: dict[str, Any]) -> None:
    assert doc["components"]["schemas"]["ErrorMessage"] == {
        "type": "object",
        "description": "Every error answer, as Confluent's ErrorMessage",
        "required": ["error_code", "message"],
        "properties": {"error_code": {"type": "integer"}, "message": {"type": "string"}},
    }
    for method, path in documented_routes():
        codes = error_codes(doc, method, path)
        assert codes[400] == [400]
        assert codes[406] == [406]
        assert codes[500] == [50001]
        for status, values in codes.items():
            assert all(str(v).startswith(str(status)) for v in values), (method, path, status)


def test_each_route_lists_the_codes_it_answers(doc: dict[str, Any]) -> None:
    version = "/subjects/{subject}/versions/{version}"
    assert error_codes(doc, "GET", version) == {
        400: [400],
        404: [404, 40401, 40402],
        406: [406],
        422: [42202],
        500: [50001],
    }
    register = error_codes(doc, "POST", "/subjects/{subject}/versions")
    assert register[409] == [409]
    assert register[422] == [42201, 42202, 42205, 42207, 42208, 42209]
    assert register[415] == [415]
    assert register[413] == [413]
    # Guarded writes (serve --auth): 401, 403 and 503 when identity cannot be asked.
    assert (register[401], register[403], register[503]) == ([401], [40301], [503])
    assert error_codes(doc, "GET", "/schemas/ids/{id}")[404] == [404, 40403]
    assert error_codes(doc, "GET", "/config/{subject}")[404] == [404, 40408]
    assert error_codes(doc, "DELETE", "/config/{subject}")[404] == [404, 40401]
    # Reads and the lookup are open: no credentials answers.
    assert 401 not in error_codes(doc, "POST", "/subjects/{subject}")
    assert 401 not in error_codes(doc, "GET", "/subjects")


def test_request_bodies(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    for method, path in [
        ("POST", "/subjects/{subject}"),
        ("POST", "/subjects/{subject}/versions"),
        ("POST", "/compatibility/subjects/{subject}/versions/{version}"),
    ]:
        body = operation(doc, method, path)["requestBody"]
        assert body["required"] is True
        assert set(body["content"]) == set(MEDIA_TYPES)
        assert body["content"][V1]["schema"] == {
            "$ref": "#/components/schemas/RegisterSchemaRequest"
        }
    request = schemas["RegisterSchemaRequest"]
    assert request["required"] == ["schema"]
    assert set(request["properties"]) == {
        "schema",
        "schemaType",
        "references",
        "metadata",
        "ruleSet",
        "id",
        "version",
    }
    config = operation(doc, "PUT", "/config/{subject}")["requestBody"]["content"][V1]["schema"]
    assert config == {"$ref": "#/components/schemas/ConfigUpdateRequest"}
    assert (
        "BACKWARD_TRANSITIVE"
        in schemas["ConfigUpdateRequest"]["properties"]["compatibility"]["enum"]
    )
    mode = operation(doc, "PUT", "/mode")["requestBody"]["content"][V1]["schema"]
    assert mode == {"$ref": "#/components/schemas/Mode"}
    assert "requestBody" not in operation(doc, "GET", "/subjects")


def test_query_and_path_parameters(doc: dict[str, Any]) -> None:
    assert set(params(doc, "GET", "/subjects")) == {
        ("query", "subjectPrefix"),
        ("query", "subject"),
        ("query", "deleted"),
        ("query", "deletedOnly"),
        ("query", "offset"),
        ("query", "limit"),
    }
    deleting = params(doc, "DELETE", "/subjects/{subject}/versions/{version}")
    assert set(deleting) == {("path", "subject"), ("path", "version"), ("query", "permanent")}
    assert deleting[("query", "permanent")]["schema"] == {"type": "boolean"}
    assert deleting[("path", "subject")]["required"] is True
    by_id = params(doc, "GET", "/schemas/ids/{id}")
    assert by_id[("path", "id")]["schema"]["type"] == "integer"
    assert ("query", "fetchMaxId") in by_id
    assert ("query", "format") in by_id
    assert ("query", "subject") in by_id  # a hint, never a filter
    assert set(params(doc, "POST", "/compatibility/subjects/{subject}/versions")) >= {
        ("query", "verbose"),
        ("query", "normalize"),
    }
    metadata = params(doc, "GET", "/subjects/{subject}/metadata")
    assert metadata[("query", "key")]["schema"]["type"] == "array"
    # Every path template's variables are declared on its operations.
    for method, path in documented_routes():
        variables = {part[1:-1] for part in path.split("/") if part.startswith("{")}
        declared = {name for where, name in params(doc, method, path) if where == "path"}
        assert declared == variables, (method, path)


def test_served_as_json_and_cached(api: Api) -> None:
    first = api.handle("GET", b"/openapi.json", b"", b"")
    head, _, body = first.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nContent-Type: application/json\r\n" in head
    assert json.loads(body) == openapi_document(metadata.version("schema-registry"))
    assert api.handle("GET", b"/openapi.json", b"", b"") is first  # a cached read


def test_served_over_http(tmp_path: Path) -> None:
    with in_process("memory", tmp_path) as client:
        reply = client.get("/openapi.json")
        assert reply.status == 200
        assert reply.headers["content-type"] == "application/json"
        validate(reply.json())
        assert client.request("HEAD", "/openapi.json").status == 200
