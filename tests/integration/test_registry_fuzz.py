"""A bounded property-based fuzz of a real `schema-registry serve` (port 0, a temp SQLite file)
from the registry's own GET /openapi.json, with schemathesis: every operation gets requests that
fit the document (positive) and requests that do not (negative: wrong types, missing fields, odd
strings in paths and queries). No answer may be a server error (5xx), and every answer must be
one the document promises: a status it lists, its media type, a body of its schema (so each
route's error codes are as documented).

Bounded for CI: a few examples per operation and mode, derandomized (the same requests every
run, so a failure reproduces), no deadline (a loaded machine must not fail it), no example
database, no shrinking (a failure is reported with its curl command instead). The registry is
seeded first, so reads find subjects, versions and ids to answer with. Not checked: that a
positive case is accepted and a negative one refused; Confluent's own leniency (booleans are
"true" or false, unknown body fields ignored) answers 200 where the schemas are stricter.

Why not ``@schema.parametrize()`` with ``schemathesis.pytest.from_fixture``: schemathesis 4.32.5's
lazy loader sets ``request.node._nodeid``, which pytest 9 no longer has (AttributeError), and
the document can only be loaded once the server runs; so the operations are driven here through
schemathesis's own strategies (``APIOperation.as_strategy``) and Hypothesis.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from support.registry import field, record, register, serve

from schema_registry.client import RegistryClient
from schema_registry.openapi import documented_routes

SUBJECT = "fuzz-value"
EXAMPLES = 6  # per operation and mode: ~350 requests, under 15 s on a loaded 2-core machine
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def registry_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("fuzz")
    with serve("--storage", f"sqlite:///{home / 'fuzz.db'}", cwd=home) as server:
        with RegistryClient(server.url) as client:
            register(client, SUBJECT, record("Fuzzed", field("a")))
            register(client, SUBJECT, record("Fuzzed", field("a"), field("b", default="")))
            register(client, "other", record("Other", field("x", "long")))
        yield server.url


def fuzz(
    operation: Any, mode: schemathesis.GenerationMode, base_url: str, session: requests.Session
) -> list[str]:
    """Run ``EXAMPLES`` generated requests of ``mode`` against one operation; its failures."""
    failures: list[str] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        try:
            case.call_and_validate(base_url=base_url, session=session, checks=CHECKS, timeout=30)
        except FailureGroup as group:
            failures.append(f"{case.operation.label} ({mode}): {group}")

    try:
        run()
    except Unsatisfiable:
        # Nothing to get wrong (no parameter, no body): no negative case exists.
        assert mode is schemathesis.GenerationMode.NEGATIVE, operation.label
    return failures


def test_no_generated_request_gets_a_server_error_or_an_undocumented_answer(
    registry_url: str,
) -> None:
    schema = schemathesis.openapi.from_url(f"{registry_url}/openapi.json")
    operations = [schema[path][method] for path in schema for method in schema[path]]
    # The fuzz reaches every route the document lists (test_openapi ties those to the router).
    assert {(op.method.upper(), op.path) for op in operations} == set(documented_routes())
    failures: list[str] = []
    with requests.Session() as session:
        for operation in operations:
            for mode in schemathesis.GenerationMode:
                failures += fuzz(operation, mode, registry_url, session)
    assert not failures, f"{len(failures)} failed:\n" + "\n".join(failures[:10])


# What the fuzz found (at more examples than the suite runs), pinned so it stays fixed.


@pytest.mark.parametrize(
    "path",
    [
        "/subjects/fuzz-value",
        "/subjects/fuzz-value/versions",
        "/compatibility/subjects/fuzz-value/versions",
    ],
)
def test_a_reference_version_past_64_bits_is_42202_not_a_server_error(
    registry_url: str, path: str
) -> None:
    body = {
        "schema": record("Referring", field("a")),
        "references": [{"name": "r", "subject": SUBJECT, "version": 2**70}],
    }
    with RegistryClient(registry_url) as client:
        reply = client.post(path, body)  # it reached SQLite: "int too large", 500
    assert (reply.status, reply.error_code) == (422, 42202)


@pytest.mark.parametrize("key", ["id", "version"])
def test_an_import_id_or_version_past_32_bits_is_42201(registry_url: str, key: str) -> None:
    body = {"schema": record("Imported", field("a")), "id": 7, key: 2**40}
    with RegistryClient(registry_url) as client:
        assert client.put("/mode/imported-value", {"mode": "IMPORT"}).status == 200
        # Confluent's ids and versions are Java ints: 2^40 was stored, 2^70 reached SQLite.
        reply = client.post("/subjects/imported-value/versions", body)
    assert (reply.status, reply.error_code) == (422, 42201)
    assert "within 32 bits" in reply.message
