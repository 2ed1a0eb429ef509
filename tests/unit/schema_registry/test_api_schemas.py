"""Schemas by id, listing and types over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.registry import field, in_process, record, register

from schema_registry.client import RegistryClient

A1 = record("A", field("a"))
B1 = record("B", field("b"))


@pytest.fixture(params=["memory", "sqlite"])
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RegistryClient]:
    with in_process(request.param, tmp_path) as client:
        yield client


def test_schema_by_id_has_confluents_shape(api: RegistryClient) -> None:
    found = register(api, "s", A1)
    reply = api.get(f"/schemas/ids/{found['id']}")
    assert reply.status == 200
    body = reply.json()
    assert set(body) == {"schema"}, "schemaType is omitted for AVRO, references when empty"
    assert json.loads(body["schema"]) == json.loads(A1)
    raw = api.get(f"/schemas/ids/{found['id']}/schema")
    assert json.loads(raw.body) == json.loads(A1)
    assert api.get(f"/schemas/ids/{found['id']}?fetchMaxId=true").json()["maxId"] == 1


def test_the_subject_parameter_is_a_hint_never_a_filter(api: RegistryClient) -> None:
    found = register(api, "orders-value", A1)
    # ckp's deserializer sends ?subject=<topic>-value whatever subject the id lives under.
    reply = api.get(f"/schemas/ids/{found['id']}?subject=unrelated-value")
    assert reply.status == 200
    assert json.loads(reply.json()["schema"]) == json.loads(A1)
    query = "?subject=nope&format=&reference_format=&findTags=PII"
    assert api.get(f"/schemas/ids/{found['id']}{query}").status == 200


@pytest.mark.parametrize(
    "path",
    [
        "/schemas/ids/99",
        "/schemas/ids/99/schema",
        "/schemas/ids/99/subjects",
        "/schemas/ids/99/versions",
    ],
)
def test_unknown_ids_are_40403(api: RegistryClient, path: str) -> None:
    reply = api.get(path)
    assert (reply.status, reply.error_code) == (404, 40403)
    assert reply.json()["message"] == "Schema 99 not found"


@pytest.mark.parametrize(
    "text",
    [
        "abc",
        "1_0",  # int() reads 10
        "%D9%A1",  # ARABIC-INDIC DIGIT ONE: int() reads 1
        "2147483648",  # beyond Java's Integer (Jersey cannot convert it)
        "9223372036854775808",  # beyond SQLite's integers: answered 500
        "9" * 5000,  # beyond int()'s digit limit
    ],
)
def test_ids_that_are_not_java_integers_are_not_found(api: RegistryClient, text: str) -> None:
    reply = api.get(f"/schemas/ids/{text}")
    assert (reply.status, reply.error_code) == (404, 404)


@pytest.mark.parametrize("value", ["1_0", "9223372036854775808", "%201"])
def test_a_number_parameter_that_is_not_a_java_integer_is_400(
    api: RegistryClient, value: str
) -> None:
    reply = api.get(f"/subjects?offset={value}")
    assert reply.status == 400, reply.body


def test_subjects_and_versions_of_an_id(api: RegistryClient) -> None:
    api.put("/config", {"compatibility": "NONE"})
    register(api, "one", A1)
    register(api, "two", B1)
    register(api, "two", A1)
    register(api, "three", A1)
    assert api.get("/schemas/ids/1/subjects").json() == ["one", "three", "two"]
    assert api.get("/schemas/ids/1/versions?offset=0&limit=-1").json() == [
        {"subject": "one", "version": 1},
        {"subject": "three", "version": 1},
        {"subject": "two", "version": 2},
    ]
    api.delete("/subjects/three")
    assert api.get("/schemas/ids/1/subjects").json() == ["one", "two"]
    assert api.get("/schemas/ids/1/subjects?deleted=true").json() == ["one", "three", "two"]
    assert api.get("/schemas/ids/1/versions?deleted=True&offset=1&limit=1").json() == [
        {"subject": "three", "version": 1}
    ]


def test_schema_types_lists_what_is_supported(api: RegistryClient) -> None:
    assert sorted(api.get("/schemas/types").json()) == ["AVRO", "JSON", "PROTOBUF"]


def test_list_schemas(api: RegistryClient) -> None:
    api.put("/config", {"compatibility": "NONE"})
    register(api, "a", A1)
    register(api, "b", B1)
    register(api, "b", A1)
    everything = api.get("/schemas").json()
    assert [(s["subject"], s["version"], s["id"]) for s in everything] == [
        ("a", 1, 1),
        ("b", 1, 2),
        ("b", 2, 1),
    ]
    assert all("schema" in s for s in everything)
    latest = api.get("/schemas?latestOnly=true").json()
    assert [(s["subject"], s["version"]) for s in latest] == [("a", 1), ("b", 2)]
    assert [s["subject"] for s in api.get("/schemas?subjectPrefix=b").json()] == ["b", "b"]
    api.delete("/subjects/a")
    assert [s["subject"] for s in api.get("/schemas").json()] == ["b", "b"]
    assert len(api.get("/schemas?deleted=true").json()) == 3
    assert len(api.get("/schemas?offset=1&limit=1").json()) == 1


def test_ids_are_never_reused_after_a_hard_delete(api: RegistryClient) -> None:
    register(api, "s", A1)
    api.delete("/subjects/s")
    api.delete("/subjects/s?permanent=true")
    assert register(api, "t", B1)["id"] == 2
    assert register(api, "s", A1)["id"] == 1, "the same content keeps its id"


def test_a_union_default_may_match_any_branch_as_in_confluent(api: RegistryClient) -> None:
    # Avro Java >= 1.11.3 (what Confluent runs) accepts it; a first-branch-only rule would not.
    schema = record("U", field("u", ["null", "string"], default="x"))
    assert "id" in register(api, "u", schema)
    bad = record("V", field("v", ["null", "int"], default="x"))
    reply = api.post("/subjects/v/versions", {"schema": bad})
    assert (reply.status, reply.json()["error_code"]) == (422, 42201)
