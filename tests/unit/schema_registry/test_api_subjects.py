"""Subjects and versions over HTTP: register, lookup, list, get, delete, references."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.registry import field, in_process, record, register

from schema_registry.client import RegistryClient

A1 = record("A", field("a"))
A2 = record("A", field("a"), field("b", "int", default=0))
A3 = record("A", field("a"), field("b", "int", default=0), field("c", "long", default=0))


@pytest.fixture(params=["memory", "sqlite"])
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RegistryClient]:
    with in_process(request.param, tmp_path) as client:
        yield client


def test_register_returns_id_and_version_and_is_idempotent(api: RegistryClient) -> None:
    first = register(api, "orders-value", A1)
    assert first["id"] == 1
    assert first["version"] == 1
    assert first["subject"] == "orders-value"
    assert json.loads(first["schema"]) == json.loads(A1)
    again = register(api, "orders-value", A1)
    assert (again["id"], again["version"]) == (1, 1)
    assert api.get("/subjects/orders-value/versions").json() == [1]


def test_whitespace_and_key_order_do_not_make_a_new_schema(api: RegistryClient) -> None:
    register(api, "s", A1)
    reordered = json.dumps(json.loads(A1), indent=4, sort_keys=True)
    assert register(api, "s", reordered)["version"] == 1


def test_the_same_schema_under_two_subjects_shares_one_id(api: RegistryClient) -> None:
    a = register(api, "one", A1)
    b = register(api, "two", A1)
    assert a["id"] == b["id"]
    assert api.get(f"/schemas/ids/{a['id']}/subjects").json() == ["one", "two"]


def test_a_doc_or_default_change_is_new_content(api: RegistryClient) -> None:
    register(api, "s", A1)
    documented = json.loads(A1)
    documented["doc"] = "now with a doc"
    second = register(api, "s", json.dumps(documented))
    assert (second["id"], second["version"]) == (2, 2)


def test_unknown_request_fields_are_stored_or_ignored_never_rejected(api: RegistryClient) -> None:
    metadata = {"properties": {"owner": "inventory"}, "tags": {}, "sensitive": []}
    rule_set = {"domainRules": [{"name": "r", "kind": "CONDITION", "type": "CEL", "expr": "true"}]}
    found = register(
        api,
        "s",
        A1,
        schemaType="AVRO",
        references=[],
        metadata=metadata,
        ruleSet=rule_set,
        schemaTagsToAdd=[],
        somethingNew={"x": 1},
    )
    got = api.get("/subjects/s/versions/1").json()
    assert got["metadata"] == metadata
    assert got["ruleSet"] == rule_set
    assert api.get(f"/schemas/ids/{found['id']}").json()["metadata"] == metadata


def test_subjects_with_slashes_travel_as_percent_2f(api: RegistryClient) -> None:
    register(api, "proto/shop/orders.proto", A1)
    register(api, "a+b c", A2)
    assert api.get("/subjects").json() == ["a+b c", "proto/shop/orders.proto"]
    got = api.get("/subjects/proto%2Fshop%2Forders.proto/versions/latest").json()
    assert got["subject"] == "proto/shop/orders.proto"
    assert api.get("/subjects/a%2Bb%20c/versions").json() == [1]


def test_lookup_finds_the_version_or_says_which_part_is_missing(api: RegistryClient) -> None:
    register(api, "s", A1)
    register(api, "s", A2)
    found = api.post("/subjects/s?normalize=False&deleted=False", {"schema": A1})
    assert found.status == 200
    assert {k: found.json()[k] for k in ("subject", "version", "id")} == {
        "subject": "s",
        "version": 1,
        "id": 1,
    }
    missing_subject = api.post("/subjects/nope", {"schema": A1})
    assert (missing_subject.status, missing_subject.error_code) == (404, 40401)
    missing_schema = api.post("/subjects/s", {"schema": A3})
    assert (missing_schema.status, missing_schema.error_code) == (404, 40403)
    invalid = api.post("/subjects/s", {"schema": "{not json"})
    assert (invalid.status, invalid.error_code) == (422, 42201)


def test_lookup_sees_soft_deleted_versions_only_when_asked(api: RegistryClient) -> None:
    register(api, "s", A1)
    register(api, "s", A2)
    assert api.delete("/subjects/s/versions/1").json() == 1
    assert api.post("/subjects/s?deleted=false", {"schema": A1}).error_code == 40403
    found = api.post("/subjects/s?deleted=True", {"schema": A1})
    assert found.status == 200
    assert found.json()["version"] == 1


def test_versions_and_latest(api: RegistryClient) -> None:
    for schema in (A1, A2, A3):
        register(api, "s", schema)
    assert api.get("/subjects/s/versions").json() == [1, 2, 3]
    assert api.get("/subjects/s/versions?offset=1&limit=1").json() == [2]
    assert api.get("/subjects/s/versions/latest").json()["version"] == 3
    assert api.get("/subjects/s/versions/-1").json()["version"] == 3
    assert api.get("/subjects/s/versions/2").json()["id"] == 2
    raw = api.get("/subjects/s/versions/2/schema")
    assert raw.status == 200
    assert json.loads(raw.body) == json.loads(A2)


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/subjects/nope/versions", 404, 40401),
        ("/subjects/nope/versions/1", 404, 40401),
        ("/subjects/s/versions/9", 404, 40402),
        ("/subjects/s/versions/0", 422, 42202),
        ("/subjects/s/versions/abc", 422, 42202),
        ("/subjects/s/versions/2147483648", 422, 42202),
        # One version, one name: Python's int() would read these as 1 (and 10).
        ("/subjects/s/versions/1_0", 422, 42202),
        ("/subjects/s/versions/%D9%A1", 422, 42202),  # ARABIC-INDIC DIGIT ONE
        ("/subjects/s/versions/%201", 422, 42202),
        ("/subjects/s/versions/" + "9" * 5000, 422, 42202),  # beyond int()'s digit limit
        ("/subjects/s/versions/9/schema", 404, 40402),
        ("/subjects/s/versions/9/referencedby", 404, 40402),
    ],
)
def test_version_errors(api: RegistryClient, path: str, status: int, code: int) -> None:
    register(api, "s", A1)
    reply = api.get(path)
    assert (reply.status, reply.error_code) == (status, code), reply.body
    assert set(reply.json()) == {"error_code", "message"}
    assert reply.json()["message"]


def test_next_version_counts_soft_deleted_ones(api: RegistryClient) -> None:
    register(api, "s", A1)
    register(api, "s", A2)
    api.delete("/subjects/s/versions/2")
    assert register(api, "s", A3)["version"] == 3
    assert api.get("/subjects/s/versions").json() == [1, 3]
    assert api.get("/subjects/s/versions?deleted=true").json() == [1, 2, 3]
    assert api.get("/subjects/s/versions?deleted_only=true").json() == [2]
    assert api.get("/subjects/s/versions?deletedAsNegative=true&deleted=true").json() == [1, -2, 3]


def test_reregistering_soft_deleted_content_adds_a_version_with_the_same_id(
    api: RegistryClient,
) -> None:
    first = register(api, "s", A1)
    register(api, "s", A2)
    api.delete("/subjects/s/versions/1")
    again = register(api, "s", A1)
    assert (again["id"], again["version"]) == (first["id"], 3)


def test_soft_then_hard_delete_of_a_version(api: RegistryClient) -> None:
    register(api, "s", A1)
    register(api, "s", A2)
    hard_first = api.delete("/subjects/s/versions/1?permanent=true")
    assert (hard_first.status, hard_first.error_code) == (404, 40407)
    assert api.delete("/subjects/s/versions/1").json() == 1
    again = api.delete("/subjects/s/versions/1")
    assert (again.status, again.error_code) == (404, 40406)
    deleted = api.get("/subjects/s/versions/1")
    assert deleted.error_code == 40402
    shown = api.get("/subjects/s/versions/1?deleted=true").json()
    assert shown["deleted"] is True
    assert api.get("/schemas/ids/1").status == 200, "a soft-deleted version's id still resolves"
    assert api.delete("/subjects/s/versions/1?permanent=true").json() == 1
    assert api.get("/subjects/s/versions/1?deleted=true").error_code == 40402
    assert api.get("/schemas/ids/1").error_code == 40403
    assert api.delete("/subjects/s/versions/7").error_code == 40402
    assert api.delete("/subjects/nope/versions/1").error_code == 40401
    assert api.delete("/subjects/s/versions/latest").json() == 2


def test_soft_then_hard_delete_of_a_subject(api: RegistryClient) -> None:
    register(api, "s", A1)
    register(api, "s", A2)
    api.put("/config/s", {"compatibility": "NONE"})
    hard_first = api.delete("/subjects/s?permanent=true")
    assert (hard_first.status, hard_first.error_code) == (404, 40405)
    assert api.delete("/subjects/s").json() == [1, 2]
    again = api.delete("/subjects/s")
    assert (again.status, again.error_code) == (404, 40404)
    assert api.get("/subjects").json() == []
    assert api.get("/subjects?deleted=true").json() == ["s"]
    assert api.get("/subjects?deleted_only=true").json() == ["s"]
    assert api.get("/subjects/s/versions").error_code == 40401
    assert api.get("/subjects/s/versions/latest").error_code == 40401
    assert api.get("/subjects/s/versions/latest?deleted=true").json()["version"] == 2
    assert api.delete("/subjects/s?permanent=true").json() == [1, 2]
    assert api.get("/subjects?deleted=true").json() == []
    assert api.get("/config/s").error_code == 40408, "a hard delete drops the subject config"
    assert api.delete("/subjects/s").error_code == 40401


def test_subject_listing_filters(api: RegistryClient) -> None:
    for name in ("orders-value", "orders-key", "payments-value"):
        register(api, name, A1)
    assert api.get("/subjects?subjectPrefix=orders").json() == ["orders-key", "orders-value"]
    # ckp sends the prefix as `subject`, Python booleans, and snake_case names.
    query = "?deleted=False&deleted_only=False&offset=0&limit=-1&subject=pay"
    assert api.get("/subjects" + query).json() == ["payments-value"]
    assert api.get("/subjects?offset=1&limit=1").json() == ["orders-value"]


def test_register_errors(api: RegistryClient) -> None:
    bad = api.post("/subjects/s/versions", {"schema": '{"type": "record", "name": "X"}'})
    assert (bad.status, bad.error_code) == (422, 42201)
    assert "fields" in bad.message
    empty = api.post("/subjects/s/versions", {"schema": ""})
    assert empty.error_code == 42201
    no_body = api.post("/subjects/s/versions", None)
    assert no_body.error_code == 42201
    not_json = api.request("POST", "/subjects/s/versions", raw_body=b"{oops")
    assert (not_json.status, not_json.error_code) == (400, 400)
    # Another type's text is that type's: "{}" is a JSON Schema (anything goes), not .proto.
    json_schema = api.post("/subjects/j/versions", {"schema": "{}", "schemaType": "JSON"})
    assert json_schema.status == 200
    proto = api.post("/subjects/p/versions", {"schema": "{}", "schemaType": "PROTOBUF"})
    assert (proto.status, proto.error_code) == (422, 42201)
    unknown = api.post("/subjects/s/versions", {"schema": A1, "schemaType": "XML"})
    assert unknown.error_code == 42201
    bad_subject = api.post("/subjects/a%01b/versions", {"schema": A1})
    assert (bad_subject.status, bad_subject.error_code) == (422, 42208)
    chosen_id = api.post("/subjects/s/versions", {"schema": A1, "id": 100})
    assert (chosen_id.status, chosen_id.error_code) == (422, 42205)


NAME = json.dumps(
    {
        "type": "record",
        "name": "Name",
        "namespace": "shop.common",
        "fields": [{"name": "first", "type": "string"}],
    }
)
PERSON = json.dumps(
    {
        "type": "record",
        "name": "Person",
        "namespace": "shop.test",
        "fields": [{"name": "name", "type": "shop.common.Name"}],
    }
)


def test_references_resolve_by_subject_and_version(api: RegistryClient) -> None:
    base = register(api, "shop.common.Name", NAME)
    refs = [{"name": "shop.common.Name", "subject": "shop.common.Name", "version": 1}]
    person = register(api, "people", PERSON, references=refs)
    assert person["references"] == refs
    got = api.get(f"/schemas/ids/{person['id']}").json()
    assert got["references"] == refs
    assert api.get("/subjects/shop.common.Name/versions/1/referencedby").json() == [person["id"]]
    assert api.get("/subjects/people/versions/1/referencedby").json() == []
    assert api.post("/subjects/people", {"schema": PERSON, "references": refs}).status == 200
    # 'latest' in a reference is pinned to the version it meant at registration.
    latest = [{"name": "shop.common.Name", "subject": "shop.common.Name", "version": -1}]
    assert register(api, "people2", PERSON, references=latest)["id"] == person["id"]
    assert base["id"] != person["id"]


def test_references_must_exist(api: RegistryClient) -> None:
    without = api.post("/subjects/people/versions", {"schema": PERSON})
    assert without.error_code == 42201
    assert "shop.common.Name" in without.message
    dangling = [{"name": "shop.common.Name", "subject": "nope", "version": 1}]
    reply = api.post("/subjects/people/versions", {"schema": PERSON, "references": dangling})
    assert (reply.status, reply.error_code) == (422, 42201)
    assert "nope" in reply.message


def test_a_referenced_version_cannot_be_deleted(api: RegistryClient) -> None:
    register(api, "shop.common.Name", NAME)
    refs = [{"name": "shop.common.Name", "subject": "shop.common.Name", "version": 1}]
    register(api, "people", PERSON, references=refs)
    for path in (
        "/subjects/shop.common.Name/versions/1",
        "/subjects/shop.common.Name",
    ):
        reply = api.delete(path)
        assert (reply.status, reply.error_code) == (422, 42206), reply.body
    # A soft-deleted referrer still needs its reference (its id keeps resolving) ...
    api.delete("/subjects/people")
    assert api.delete("/subjects/shop.common.Name").error_code == 42206
    # ... until it is gone for good.
    api.delete("/subjects/people?permanent=true")
    assert api.delete("/subjects/shop.common.Name").json() == [1]


def test_latest_with_metadata(api: RegistryClient) -> None:
    register(api, "s", A1, metadata={"properties": {"major": "1"}})
    register(api, "s", A2, metadata={"properties": {"major": "1", "minor": "1"}})
    register(api, "s", A3, metadata={"properties": {"major": "2"}})
    found = api.get("/subjects/s/metadata?deleted=false&key=major&value=1")
    assert found.json()["version"] == 2
    both = api.get("/subjects/s/metadata?key=major&key=minor&value=1&value=1")
    assert both.json()["version"] == 2
    assert api.get("/subjects/s/metadata?key=major&value=3").error_code == 40403
    assert api.get("/subjects/nope/metadata?key=major&value=3").error_code == 40401


def test_changes_are_logged_with_their_outcome_and_reads_are_not(
    api: RegistryClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="schema_registry.access")
    register(api, "orders-value", A1)
    api.get("/subjects/orders-value/versions")
    refused = api.post("/subjects/orders-value/versions", {"schema": "not json"})
    assert refused.status == 422
    audit = [r for r in caplog.records if r.name == "schema_registry.access"]
    lines = [(r.levelname, r.getMessage()) for r in audit]
    assert [(level, msg.rsplit(" ", 3)[0]) for level, msg in lines] == [
        ("INFO", "POST /subjects/orders-value/versions 200"),
        ("INFO", "POST /subjects/orders-value/versions 422"),
    ]
    # Who asked comes last: nobody can be named without --auth.
    assert all(msg.split(" ")[-3].endswith("ms") for _, msg in lines)
    assert all(msg.endswith(" by anonymous") for _, msg in lines)
    assert (audit[0].__dict__["http_method"], audit[0].__dict__["http_status"]) == ("POST", 200)


def test_an_empty_path_segment_names_no_subject(api: RegistryClient) -> None:
    """`POST /subjects//versions` used to look up a subject named "versions"."""
    register(api, "versions", A1)
    reply = api.post("/subjects//versions", {"schema": A1})
    assert (reply.status, reply.error_code) == (404, 404)
    assert api.get("/subjects/versions/versions/").status == 200, "a trailing slash is fine"


def test_a_subject_name_is_utf_8_so_two_bad_bytes_are_not_one_subject(api: RegistryClient) -> None:
    """With replacement decoding, %FF and %FE both named the subject U+FFFD."""
    for bad in ("%FF", "%FE"):
        reply = api.post(f"/subjects/{bad}/versions", {"schema": A1})
        assert (reply.status, reply.error_code) == (404, 404)
    assert api.get("/subjects").json() == []
    assert register(api, "été", A1)["version"] == 1  # sent as %C3%A9t%C3%A9
    assert api.get("/subjects").json() == ["été"]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (  # a lone surrogate in the schema's doc: an invalid schema
            b'{"schema": "{\\"type\\": \\"record\\", \\"name\\": \\"A\\",'
            b' \\"doc\\": \\"\\\\ud800\\", \\"fields\\": []}"}',
            422,
            42201,
        ),
        (b'{"schema": "\\"string\\"", "metadata": {"properties": {"k": "\\ud800"}}}', 400, 400),
        (  # in a reference name: the error handler itself failed
            b'{"schema": "\\"string\\"", "references": [{"name": "\\udc00", "subject": "s",'
            b' "version": 1}]}',
            400,
            400,
        ),
        (b"[" * 100_000 + b"]" * 100_000, 400, 400),  # nested too deep for the JSON parser
    ],
)
def test_bodies_no_utf_8_can_carry_are_refused_not_500(
    api: RegistryClient, body: bytes, status: int, code: int
) -> None:
    reply = api.request("POST", "/subjects/s/versions", raw_body=body)
    assert (reply.status, reply.error_code) == (status, code), reply.body
    assert api.get("/subjects").json() == []
