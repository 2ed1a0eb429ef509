"""Compatibility over HTTP: register-time checks (409) and the two compatibility endpoints."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.registry import field, in_process, record, register

from schema_registry.client import RegistryClient

V1 = record("E", field("a"))
V2_ADDS_WITH_DEFAULT = record("E", field("a"), field("b", "int", default=0))
V2_ADDS_WITHOUT_DEFAULT = record("E", field("a"), field("b", "int"))


@pytest.fixture(params=["memory", "sqlite"])
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RegistryClient]:
    with in_process(request.param, tmp_path) as client:
        yield client


def test_an_incompatible_register_is_409_and_names_the_field(api: RegistryClient) -> None:
    register(api, "s", V1)
    reply = api.post("/subjects/s/versions", {"schema": V2_ADDS_WITHOUT_DEFAULT})
    assert (reply.status, reply.error_code) == (409, 409)
    assert "READER_FIELD_MISSING_DEFAULT_VALUE" in reply.message
    assert "'b'" in reply.message
    assert "Schema being registered is incompatible with an earlier schema" in reply.message
    assert "compatibility: 'BACKWARD'" in reply.message
    assert api.get("/subjects/s/versions").json() == [1]


def test_a_compatible_change_registers(api: RegistryClient) -> None:
    register(api, "s", V1)
    assert register(api, "s", V2_ADDS_WITH_DEFAULT)["version"] == 2


def test_compatibility_endpoints_plain_and_verbose(api: RegistryClient) -> None:
    register(api, "s", V1)
    good = {"schema": V2_ADDS_WITH_DEFAULT}
    bad = {"schema": V2_ADDS_WITHOUT_DEFAULT}
    for path in (
        "/compatibility/subjects/s/versions",
        "/compatibility/subjects/s/versions/latest",
        "/compatibility/subjects/s/versions/1",
    ):
        assert api.post(f"{path}?normalize=False&verbose=False", good).json() == {
            "is_compatible": True
        }
        assert api.post(path, bad).json() == {"is_compatible": False}
        verbose = api.post(f"{path}?verbose=True", bad).json()
        assert verbose["is_compatible"] is False
        assert any("READER_FIELD_MISSING_DEFAULT_VALUE" in m for m in verbose["messages"])
        [item] = verbose["incompatibilities"]
        assert item["rule"] == "READER_FIELD_MISSING_DEFAULT_VALUE"
        assert item["path"] == "/fields/1"
        assert '"b"' in item["reader"]
        assert api.post(f"{path}?verbose=true", good).json()["messages"] == []


def test_nothing_to_compare_with_is_compatible(api: RegistryClient) -> None:
    body = {"schema": V1}
    assert api.post("/compatibility/subjects/new/versions", body).json() == {"is_compatible": True}
    latest = api.post("/compatibility/subjects/new/versions/latest", body)
    assert latest.json() == {"is_compatible": True}
    register(api, "s", V1)
    missing = api.post("/compatibility/subjects/s/versions/7", body)
    assert (missing.status, missing.error_code) == (404, 40402)
    invalid = api.post("/compatibility/subjects/s/versions/bad", body)
    assert (invalid.status, invalid.error_code) == (422, 42202)


def test_a_numbered_version_must_exist_even_in_an_unknown_or_deleted_subject(
    api: RegistryClient,
) -> None:
    """Confluent: only `latest` may be missing; version 3 of nothing is 404 / 40402."""
    body = {"schema": V1}
    unknown = api.post("/compatibility/subjects/nobody/versions/3", body)
    assert (unknown.status, unknown.error_code) == (404, 40402)
    register(api, "gone", V1)
    assert api.delete("/subjects/gone").status == 200  # soft: every version deleted
    deleted = api.post("/compatibility/subjects/gone/versions/1", body)
    assert (deleted.status, deleted.error_code) == (404, 40402)
    latest = api.post("/compatibility/subjects/gone/versions/latest", body)
    assert latest.json() == {"is_compatible": True}


def test_an_invalid_schema_is_42201_or_a_message_when_verbose(api: RegistryClient) -> None:
    register(api, "s", V1)
    body = {"schema": '{"type": "enum", "name": "E"}'}
    plain = api.post("/compatibility/subjects/s/versions", body)
    assert (plain.status, plain.error_code) == (422, 42201)
    verbose = api.post("/compatibility/subjects/s/versions?verbose=true", body)
    assert verbose.status == 200
    assert verbose.json()["is_compatible"] is False
    assert "symbols" in verbose.json()["messages"][0]


def test_transitive_levels_check_every_live_version(api: RegistryClient) -> None:
    api.put("/config/s", {"compatibility": "NONE"})
    register(api, "s", record("T", field("a", "int")))
    register(api, "s", record("T"))
    # `a` comes back as a string: readable against v2 (no `a`, the default fills it), but not
    # against v1, whose `a` is an int (int -> string is no Avro promotion).
    v3 = {"schema": record("T", field("a", "string", default=""))}
    api.put("/config/s", {"compatibility": "BACKWARD"})
    assert api.post("/compatibility/subjects/s/versions", v3).json() == {"is_compatible": True}
    api.put("/config/s", {"compatibility": "BACKWARD_TRANSITIVE"})
    result = api.post("/compatibility/subjects/s/versions?verbose=true", v3).json()
    assert result["is_compatible"] is False
    assert [i["rule"] for i in result["incompatibilities"]] == ["TYPE_MISMATCH"]
    # The single-version endpoint compares with that version only.
    assert api.post("/compatibility/subjects/s/versions/2", v3).json()["is_compatible"] is True
    assert api.post("/compatibility/subjects/s/versions/1", v3).json()["is_compatible"] is False
    assert api.post("/subjects/s/versions", v3).status == 409


def test_soft_deleted_versions_are_not_compared(api: RegistryClient) -> None:
    api.put("/config/s", {"compatibility": "BACKWARD_TRANSITIVE"})
    register(api, "s", record("T", field("a", "int")))
    register(api, "s", record("T"))
    v3 = record("T", field("a", "string", default=""))
    assert api.post("/subjects/s/versions", {"schema": v3}).status == 409
    api.delete("/subjects/s/versions/1")
    assert register(api, "s", v3)["version"] == 3


def test_level_none_accepts_anything(api: RegistryClient) -> None:
    register(api, "s", V1)
    api.put("/config/s", {"compatibility": "NONE"})
    assert register(api, "s", record("Other", field("x", "int")))["version"] == 2
