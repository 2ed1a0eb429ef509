"""Config and mode over HTTP, including IMPORT mode with client-chosen ids and versions."""

from __future__ import annotations

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


def test_global_config_defaults_to_backward_and_round_trips(api: RegistryClient) -> None:
    assert api.get("/config").json() == {"compatibilityLevel": "BACKWARD"}
    put = api.put("/config", {"compatibility": "full_transitive"})
    assert put.json() == {"compatibility": "FULL_TRANSITIVE"}
    assert api.get("/config").json() == {"compatibilityLevel": "FULL_TRANSITIVE"}
    assert api.delete("/config").json() == {"compatibilityLevel": "FULL_TRANSITIVE"}
    assert api.get("/config").json() == {"compatibilityLevel": "BACKWARD"}


def test_subject_config_is_40408_unless_default_to_global(api: RegistryClient) -> None:
    missing = api.get("/config/s")
    assert (missing.status, missing.error_code) == (404, 40408)
    assert api.get("/config/s?defaultToGlobal=true").json() == {"compatibilityLevel": "BACKWARD"}
    assert api.get("/config/s?default_to_global=TRUE").json() == {"compatibilityLevel": "BACKWARD"}
    api.put("/config/s", {"compatibility": "NONE"})
    assert api.get("/config/s").json() == {"compatibilityLevel": "NONE"}
    assert api.delete("/config/s").json() == {"compatibilityLevel": "NONE"}
    assert api.get("/config/s").error_code == 40408
    assert api.delete("/config/s").error_code == 40401
    register(api, "s", A1)
    # Nothing to delete is 40401 (Confluent), also for a subject with versions; GET says 40408.
    assert (api.delete("/config/s").status, api.delete("/config/s").error_code) == (404, 40401)
    assert api.get("/config/s").error_code == 40408


def test_config_accepts_cks_set_config_shape_and_keeps_extra_keys(api: RegistryClient) -> None:
    # ckp's set_config sends ServerConfig.to_dict(): `compatibilityLevel`, not `compatibility`.
    reply = api.put(
        "/config/s",
        {"compatibilityLevel": "FORWARD", "normalize": True, "compatibilityGroup": "major"},
    )
    assert reply.status == 200
    assert api.get("/config/s").json() == {
        "compatibilityLevel": "FORWARD",
        "normalize": True,
        "compatibilityGroup": "major",
    }
    api.put("/config/s", {"compatibility": "FULL"})
    assert api.get("/config/s").json()["normalize"] is True, "PUT merges into the stored config"


@pytest.mark.parametrize(
    "body",
    [
        {"normalize": -68995037},
        {"normalize": "true"},
        {"validateFields": 1},
        {"compatibilityGroup": True},
        {"defaultMetadata": []},
    ],
)
def test_config_fields_of_the_wrong_type_are_400_and_not_stored(
    api: RegistryClient, body: dict[str, object]
) -> None:
    # The fuzz stored "normalize": -68995037 and echoed it back; Confluent's typed request
    # object refuses it, and a stored non-boolean would have switched normalization on.
    reply = api.put("/config/s", body)
    assert (reply.status, reply.error_code) == (400, 400)
    assert next(iter(body)) in reply.json()["message"]
    assert api.get("/config/s").status == 404


@pytest.mark.parametrize("body", [{"compatibility": "SIDEWAYS"}, {"compatibility": 3}, [1]])
def test_invalid_levels_are_42203(api: RegistryClient, body: object) -> None:
    reply = api.put("/config", body)
    assert (reply.status, reply.error_code) == (422, 42203)


def test_the_subject_level_decides_register_checks(api: RegistryClient) -> None:
    api.put("/config", {"compatibility": "NONE"})
    register(api, "s", A1)
    api.put("/config/s", {"compatibility": "BACKWARD"})
    assert api.post("/subjects/s/versions", {"schema": B1}).status == 409
    api.delete("/config/s")
    assert register(api, "s", B1)["version"] == 2


def test_modes(api: RegistryClient) -> None:
    assert api.get("/mode").json() == {"mode": "READWRITE"}
    missing = api.get("/mode/s")
    assert (missing.status, missing.error_code) == (404, 40409)
    assert api.get("/mode/s?defaultToGlobal=true").json() == {"mode": "READWRITE"}
    assert api.put("/mode/s?force=False", {"mode": "readonly"}).json() == {"mode": "READONLY"}
    assert api.get("/mode/s").json() == {"mode": "READONLY"}
    refused = api.post("/subjects/s/versions", {"schema": A1})
    assert (refused.status, refused.error_code) == (422, 42205)
    assert register(api, "t", A1)["version"] == 1, "other subjects stay writable"
    assert api.delete("/mode/s").json() == {"mode": "READONLY"}
    assert api.delete("/mode/s").error_code == 40401, "nothing to delete: 40401, as Confluent"
    assert api.get("/mode/s").error_code == 40409
    assert register(api, "s", A1)["version"] == 1
    bad = api.put("/mode", {"mode": "SOMETIMES"})
    assert (bad.status, bad.error_code) == (422, 42204)


def test_global_readonly_blocks_writes_and_deletes(api: RegistryClient) -> None:
    register(api, "s", A1)
    api.put("/mode", {"mode": "READONLY"})
    assert api.post("/subjects/s/versions", {"schema": B1}).error_code == 42205
    assert api.delete("/subjects/s").error_code == 42205
    assert api.get("/subjects/s/versions/1").status == 200
    assert api.delete("/mode").json() == {"mode": "READONLY"}
    assert api.get("/mode").json() == {"mode": "READWRITE"}


def test_import_mode_needs_an_empty_registry_or_force(api: RegistryClient) -> None:
    register(api, "s", A1)
    refused = api.put("/mode", {"mode": "IMPORT"})
    assert (refused.status, refused.error_code) == (422, 42205)
    assert api.put("/mode?force=true", {"mode": "IMPORT"}).json() == {"mode": "IMPORT"}


def test_import_mode_honours_client_chosen_ids_and_versions(api: RegistryClient) -> None:
    assert api.put("/mode", {"mode": "IMPORT"}).status == 200
    imported = register(api, "s", A1, id=42, version=5)
    assert (imported["id"], imported["version"]) == (42, 5)
    assert api.get("/schemas/ids/42").status == 200
    # No compatibility check in IMPORT mode: history is copied as it was.
    assert register(api, "s", B1, id=7, version=6)["id"] == 7
    taken = api.post("/subjects/t/versions", {"schema": record("C", field("c")), "id": 42})
    assert (taken.status, taken.error_code) == (422, 42207)
    moved = api.post("/subjects/t/versions", {"schema": A1, "id": 43})
    assert moved.error_code == 42207, "content already has id 42"
    same_version = api.post(
        "/subjects/s/versions", {"schema": record("D", field("d")), "version": 5}
    )
    assert same_version.error_code == 42205
    api.put("/mode", {"mode": "READWRITE"})
    assert register(api, "u", record("E", field("e")))["id"] == 43, "new ids continue after max"


def test_import_mode_refuses_a_registration_without_an_id(api: RegistryClient) -> None:
    """Confluent: 422 / 42205, "not in read-write mode"; an import keeps the source's ids."""
    assert api.put("/mode", {"mode": "IMPORT"}).status == 200
    refused = api.post("/subjects/x/versions", {"schema": A1})
    assert (refused.status, refused.error_code) == (422, 42205)
    assert "read-write mode" in refused.json()["message"]
    assert api.get("/subjects/x/versions").error_code == 40401, "nothing was registered"
    assert register(api, "x", A1, id=9)["id"] == 9


def test_contexts_and_metadata_endpoints(api: RegistryClient) -> None:
    assert api.get("/contexts?offset=0&limit=-1").json() == ["."]
    assert api.get("/v1/metadata/version").json()["version"]
    assert "scope" in api.get("/v1/metadata/id").json()
