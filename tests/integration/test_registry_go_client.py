"""The official Go serializer (confluent-kafka-go's avrov2.Serializer) against a live
`schema-registry serve`: a schema registered from an ordinary .avsc and the spelling the Go side
sends are one schema with one id, with auto-register off (a lookup) and on (a registration that
must not add a version). Issue 17's first "Done when".

The Go side is tests/interop/registry-go (built by `make tools`, or here by its build.sh, which
skips the build while its sources are unchanged). hamba/avro, under the Go serializer, re-spells
every schema it parses: full name in "name", no "namespace", `{"type": "long"}` as "long". So
whatever text the Go program is given, the registry sees that spelling; each case also asserts it,
so a hamba/avro change that made this test compare equal texts would show.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.registry import ServeProcess, register, serve

from schema_registry.client import RegistryClient, subject_path

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "tests" / "interop" / "registry-go" / "build.sh"
CLIENT = REPO / ".cache" / "bin" / "registry-go-client"

# The schema as a person writes it in a .avsc file.
AVSC = json.dumps(
    {
        "type": "record",
        "name": "User",
        "namespace": "com.example",
        "fields": [{"name": "id", "type": "long"}, {"name": "name", "type": "string"}],
    }
)
# The same schema in the other spellings the Go side is given; hamba/avro sends its own form
# of each (see the module docstring).
FULL_NAME = json.dumps(
    {
        "type": "record",
        "name": "com.example.User",
        "fields": [{"name": "id", "type": {"type": "long"}}, {"name": "name", "type": "string"}],
    }
)
SPELLINGS = {"avsc": AVSC, "full-name-and-type-object": FULL_NAME}


@dataclass(frozen=True)
class GoResult:
    """One run of the Go client: the id from the payload's header, or the registry's error."""

    id: int | None
    error_code: int | None
    error: str
    sent_schema: str


@pytest.fixture(scope="module")
def go_client() -> Path:
    if shutil.which("go") is None:
        pytest.skip("Go is not installed: confluent-kafka-go's serializer cannot be built")
    built = subprocess.run([str(BUILD)], capture_output=True, text=True, timeout=600, check=False)
    assert built.returncode == 0, f"building the Go client failed:\n{built.stderr}"
    return CLIENT


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    with serve("--storage", "memory", cwd=tmp_path_factory.mktemp("registry")) as proc:
        yield proc


@pytest.fixture
def registry(server: ServeProcess) -> Iterator[RegistryClient]:
    with RegistryClient(server.url) as client:
        yield client


def run_go(client: Path, url: str, topic: str, auto_register: bool, schema: str) -> GoResult:
    """Serialize one record with the Go serializer; subject is `<topic>-value`."""
    done = subprocess.run(
        [str(client), url, topic, "true" if auto_register else "false", schema],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode in (0, 1), f"Go client: exit {done.returncode}\n{done.stderr}"
    out: dict[str, Any] = json.loads(done.stdout)
    assert out["subject"] == f"{topic}-value"
    return GoResult(out.get("id"), out.get("error_code"), out.get("error", ""), out["sent_schema"])


def assert_go_spelling(sent: str) -> None:
    """The Go side sent a different text from the .avsc (else these tests would prove nothing)."""
    assert sent != AVSC
    parsed = json.loads(sent)
    assert parsed["name"] == "com.example.User" and "namespace" not in parsed


def versions(registry: RegistryClient, subject: str) -> Any:
    reply = registry.get(f"/subjects/{subject_path(subject)}/versions")
    assert reply.status == 200, reply.body
    return reply.json()


@pytest.mark.parametrize("auto_register", [False, True], ids=["lookup", "auto-register"])
@pytest.mark.parametrize("spelling", SPELLINGS.values(), ids=SPELLINGS.keys())
def test_go_serializer_finds_the_id_of_a_schema_registered_from_a_file(
    go_client: Path,
    server: ServeProcess,
    registry: RegistryClient,
    spelling: str,
    auto_register: bool,
) -> None:
    topic = f"users-{uuid.uuid4().hex[:8]}"
    subject = f"{topic}-value"
    registered = register(registry, subject, AVSC)

    got = run_go(go_client, server.url, topic, auto_register, spelling)

    assert_go_spelling(got.sent_schema)
    assert (got.error_code, got.error) == (None, ""), (
        f"the Go serializer's spelling was not recognised as the registered schema: {got.error}"
    )
    assert got.id == registered["id"]
    assert versions(registry, subject) == [1]


def test_a_schema_the_go_serializer_registered_is_found_from_the_file(
    go_client: Path, server: ServeProcess, registry: RegistryClient
) -> None:
    topic = f"users-{uuid.uuid4().hex[:8]}"
    subject = f"{topic}-value"

    got = run_go(go_client, server.url, topic, True, AVSC)

    assert got.id is not None, got.error
    found = registry.post(f"/subjects/{subject_path(subject)}", {"schema": AVSC})
    assert found.status == 200, found.body
    assert (found.json()["id"], found.json()["version"]) == (got.id, 1)
    again = register(registry, subject, AVSC)
    assert (again["id"], versions(registry, subject)) == (got.id, [1])


def test_go_serializer_without_auto_register_reports_an_unknown_subject(
    go_client: Path, server: ServeProcess
) -> None:
    got = run_go(go_client, server.url, f"nobody-{uuid.uuid4().hex[:8]}", False, AVSC)

    assert got.id is None
    assert got.error_code == 40401, got.error
