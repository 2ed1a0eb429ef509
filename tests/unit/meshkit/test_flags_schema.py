"""The ``flags`` namespace's JSON Schema (proto/mesh/control/v1/config/flags.schema.json), with
jsonschema as the control service validates: flagd's own sample flag sets pass, every flag of
flagd's testbed gets the verdict flagd's published schema gives it (one difference on purpose:
versions like ``v1.0.0`` and ``1.2`` in ``sem_ver``, which flagd's evaluators take and its
schema's pattern does not), broken sets fail at the field that is wrong, and the installed
contracts package carries the schema (``make gen``).

flagd's files (samples, testbed flags, its schema) are read from outside this repository, as in
test_flags_testbed.py (``<repo>/../shared/reference/flagd``, ``$MESH_FLAGD_REFERENCE`` or
``tests/fixtures/flagd``); without them those tests are skipped with that reason, never passed.
"""

from __future__ import annotations

import importlib.resources
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import referencing
from jsonschema.exceptions import best_match  # type: ignore[import-untyped]
from referencing.jsonschema import DRAFT7

from meshkit.control import parse_flag_set

ROOT = Path(__file__).resolve().parents[3]
SCHEMA_PATH = ROOT / "proto/mesh/control/v1/config/flags.schema.json"
SCHEMA = json.loads(SCHEMA_PATH.read_text())
OURS = jsonschema.Draft202012Validator(SCHEMA)


def _reference() -> Path | None:
    for candidate in (
        os.environ.get("MESH_FLAGD_REFERENCE", ""),
        str(ROOT / "tests" / "fixtures" / "flagd"),
        str(ROOT.parent / "shared" / "reference" / "flagd"),
    ):
        if candidate and (Path(candidate) / "flagd" / "schema").is_dir():
            return Path(candidate)
    return None


REFERENCE = _reference()
needs_flagd = pytest.mark.skipif(
    REFERENCE is None,
    reason="flagd's files are not here: see the module doc (looked in $MESH_FLAGD_REFERENCE,"
    " tests/fixtures/flagd and ../shared/reference/flagd)",
)
# sem_ver literals flagd's schema refuses and its evaluators take (testbed @semver-edge-cases).
LENIENT_SEMVER = {
    "semver-v-prefix-flag",
    "semver-partial-version-flag",
    "semver-numeric-context-flag",
}


def flagd_validator() -> Any:
    """flagd's published schema (flags.json + targeting.json, draft 7), references resolved
    between the two files locally."""
    assert REFERENCE is not None
    folder = REFERENCE / "flagd" / "schema" / "v0"
    flags, targeting = (
        json.loads((folder / n).read_text()) for n in ("flags.json", "targeting.json")
    )
    registry = referencing.Registry().with_resources(
        [(s["$id"], DRAFT7.create_resource(s)) for s in (flags, targeting)]
    )
    # Through a $ref: in draft 7 the root's own $ref hides its $id, the base of "./targeting.json".
    return jsonschema.Draft7Validator({"$ref": flags["$id"]}, registry=registry)


def every_testbed_flag() -> Iterator[tuple[str, dict[str, Any]]]:
    """Every flag of flagd's testbed flag sets, as a one-flag set (with its file's evaluators)."""
    assert REFERENCE is not None
    testbed = REFERENCE / "testbed"
    paths = [testbed / "evaluator/flags/testkit-flags.json"]
    paths += sorted((testbed / "provider/flags").glob("*.json"))
    for path in paths:
        flag_set = json.loads(path.read_text())
        for key, flag in flag_set["flags"].items():
            one: dict[str, Any] = {"flags": {key: flag}}
            if "$evaluators" in flag_set:
                one["$evaluators"] = flag_set["$evaluators"]
            yield f"{path.name}:{key}", one


def test_the_schema_is_a_valid_2020_12_schema_and_bundled() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    refs = [
        value
        for value in _walk(SCHEMA)
        if isinstance(value, dict) and isinstance(value.get("$ref"), str)
    ]
    assert refs and all(r["$ref"].startswith("#/$defs/") for r in refs)  # nothing remote
    assert "open-feature/flagd" in SCHEMA["$comment"]


def _walk(node: Any) -> Iterator[Any]:
    yield node
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    for child in children:
        yield from _walk(child)


@needs_flagd
def test_flagds_sample_flag_sets_validate_and_parse() -> None:
    assert REFERENCE is not None
    samples = sorted((REFERENCE / "flagd" / "samples").glob("*.json"))
    assert len(samples) >= 3
    for path in samples:
        flag_set = json.loads(path.read_text())
        assert not list(OURS.iter_errors(flag_set)), path.name
        assert parse_flag_set(flag_set)["flags"] == flag_set["flags"]


@needs_flagd
def test_every_testbed_flag_gets_flagds_verdict() -> None:
    flagd = flagd_validator()
    verdicts = {
        name: (flagd.is_valid(one), OURS.is_valid(one)) for name, one in every_testbed_flag()
    }
    assert len(verdicts) > 100
    differ = {name.split(":")[1] for name, (theirs, ours) in verdicts.items() if theirs != ours}
    assert differ == LENIENT_SEMVER
    refused = [name for name, (theirs, _) in verdicts.items() if not theirs]
    assert len(refused) >= 5  # the testbed's deliberately malformed flags: both refuse them


BASE: dict[str, Any] = {
    "flags": {
        "f": {
            "state": "ENABLED",
            "variants": {"on": True, "off": False},
            "defaultVariant": "off",
            "targeting": {"if": [{"in": [{"var": "country"}, ["DE"]]}, "on"]},
        }
    }
}


@pytest.mark.parametrize(
    ("path", "value", "where"),
    [
        (["flags", "f", "state"], "ON", "flags.f.state"),
        (["flags", "f", "variants"], {"on": True, "off": "no"}, "flags.f.variants"),
        (["flags", "f", "variants"], {}, "flags.f.variants"),
        (["flags", "f", "metadata"], {"owner": ["a"]}, "flags.f.metadata.owner"),
        (["flags", "f", "targeting"], {"startswith": ["a", "b"]}, "flags.f.targeting"),
        (
            ["flags", "f", "targeting"],
            {"fractional": [["on", -1], ["off", 1]]},
            "flags.f.targeting",
        ),
        (["flags", "f", "targeting"], {"sem_ver": ["1.0.0", "=>", "2.0.0"]}, "flags.f.targeting"),
        (["metadata"], {"version": 7}, "metadata.version"),
        (["flags"], [], "flags"),
    ],
)
def test_a_broken_flag_set_fails_at_its_field(path: list[str], value: Any, where: str) -> None:
    document = json.loads(json.dumps(BASE))
    node = document
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    error = best_match(OURS.iter_errors(document))
    assert error is not None
    assert ".".join(str(p) for p in error.absolute_path).startswith(where), error
    assert OURS.is_valid(BASE)


def test_make_gen_ships_the_schema_in_the_contracts_package() -> None:
    shipped = importlib.resources.files("mesh") / "control/v1/config/flags.schema.json"
    assert json.loads(shipped.read_text()) == SCHEMA
