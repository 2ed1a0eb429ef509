"""Hostile schema text (issue 17): integers longer than Python converts, reference chains deeper
than the stack, schemas over the size limit. Each answered 500 or was unbounded before.

Requests go through `Api.handle` (the server's own entry point) on real storage; the size limit
is also checked through a real `schema-registry serve --max-schema-size`.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from support.registry import field, record, serve

from schema_registry.api import Api
from schema_registry.avro._schema import MAX_EXPANDED_DEPTH
from schema_registry.client import RegistryClient
from schema_registry.registry import DEFAULT_MAX_SCHEMA_SIZE, MAX_REFERENCE_DEPTH, Registry
from schema_registry.storage import (
    MemoryStorage,
    Reference,
    SqliteStorage,
    Storage,
    StoredSchema,
    SubjectVersion,
)

HUGE = "1" + "0" * 5000  # past sys.get_int_max_str_digits() (4300 by default)


def call(api: Api, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """(status, JSON body) of one request through the API's HTTP entry point."""
    raw = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    answer = api.handle(method, path.encode(), b"application/json", raw)
    head, _, payload = answer.partition(b"\r\n\r\n")
    return int(head[9:12]), json.loads(payload) if payload else None


@pytest.fixture(params=["memory", "sqlite"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    store: Storage = MemoryStorage()
    if request.param == "sqlite":
        store = SqliteStorage(tmp_path / "r.db")
    request.addfinalizer(store.close)
    return store


# ------------------------------------------------------------------ integers
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/subjects/s/versions"),
        ("POST", "/subjects/s"),
        ("POST", "/compatibility/subjects/s/versions/latest"),
    ],
)
def test_an_integer_longer_than_python_converts_in_schema_text_is_invalid_schema(
    storage: Storage, method: str, path: str
) -> None:
    api = Api(Registry(storage))
    assert call(api, "POST", "/subjects/s/versions", {"schema": record("A", field("a"))})[0] == 200
    # json.loads of this text raised ValueError from int(): 500 on every route that parses.
    text = record("A", field("a"), field("n", "long")).replace(
        '"type": "long"}', f'"type": "long", "default": {HUGE}}}'
    )
    assert HUGE in text
    status, body = call(api, method, path, {"schema": text})
    assert (status, body["error_code"]) == (422, 42201)
    digits = sys.get_int_max_str_digits()
    assert body["message"] == f"Invalid schema: a number has more than {digits} digits"


def test_an_integer_longer_than_python_converts_in_the_body_is_400(storage: Storage) -> None:
    api = Api(Registry(storage))
    raw = f'{{"schema": {json.dumps(record("A", field("a")))}, "version": {HUGE}}}'.encode()
    status, body = call(api, "POST", "/subjects/s/versions", raw)
    assert (status, body["error_code"]) == (400, 400)
    assert "digits" in body["message"]
    assert "sys.set_int_max_str_digits" not in body["message"], "no Python advice to API users"


# ------------------------------------------------------------------ reference chains
def link(i: int) -> dict[str, Any]:
    """Chain element i: record ns.T<i> with a field of type ns.T<i-1>, which it references."""
    type_ = "string" if i == 0 else f"ns.T{i - 1}"
    body: dict[str, Any] = {"schema": record(f"T{i}", field("f", type_), namespace="ns")}
    if i:
        body["references"] = [{"name": f"ns.T{i - 1}", "subject": f"t{i - 1}", "version": 1}]
    return body


def test_a_chain_of_the_maximum_depth_registers_and_one_more_is_refused_cold_or_warm(
    storage: Storage,
) -> None:
    warm = Api(Registry(storage))
    for i in range(MAX_REFERENCE_DEPTH + 1):  # t0 references nothing: t64 is 64 deep
        status, body = call(warm, "POST", f"/subjects/t{i}/versions", link(i))
        assert status == 200, body
    over = link(MAX_REFERENCE_DEPTH + 1)
    answers = {}
    # A registry that parsed the chain while building it, and a fresh one on the same storage
    # (recursion used to reach only what the cache lacked, so the two answered differently).
    for name, api in (("warm", warm), ("cold", Api(Registry(storage)))):
        answers[name] = call(api, "POST", f"/subjects/t{MAX_REFERENCE_DEPTH + 1}/versions", over)
        path = f"/compatibility/subjects/t{MAX_REFERENCE_DEPTH + 1}/versions/latest"
        assert call(api, "POST", path, over) == answers[name], "compatibility says the same"
    assert answers["warm"] == answers["cold"]
    status, body = answers["cold"]
    assert (status, body["error_code"]) == (422, 42201)
    assert body["message"] == (
        f"Invalid schema: reference 'ns.T{MAX_REFERENCE_DEPTH}' (subject "
        f"'t{MAX_REFERENCE_DEPTH}' version 1) makes a chain of references "
        f"{MAX_REFERENCE_DEPTH + 1} deep, over the {MAX_REFERENCE_DEPTH} allowed: subject 't0' "
        f"version 1 is {MAX_REFERENCE_DEPTH + 1} references down"
    )
    # The top of the chain still evolves from a cold start: its compatibility check parses
    # the whole chain from storage.
    cold = Api(Registry(storage))
    top = link(MAX_REFERENCE_DEPTH)
    top["schema"] = record(
        f"T{MAX_REFERENCE_DEPTH}",
        field("f", f"ns.T{MAX_REFERENCE_DEPTH - 1}"),
        field("g", "int", default=0),
        namespace="ns",
    )
    status, body = call(cold, "POST", f"/subjects/t{MAX_REFERENCE_DEPTH}/versions", top)
    assert (status, body["version"]) == (200, 2), body


def test_a_chain_an_older_registry_stored_deeper_stays_readable_and_cannot_grow() -> None:
    """What a registry without the limit could store: 600 links (recursion stopped near 490)."""
    storage = MemoryStorage()
    depth = 600
    with storage.write() as tx:
        for i in range(depth):
            refs = (Reference(f"ns.L{i - 1}", f"l{i - 1}", 1),) if i else ()
            # Each link references the previous one without using its type, so only the
            # registry's own walk is deep, not the types.
            text = json.dumps(
                {"type": "record", "name": f"L{i}", "namespace": "ns", "fields": []},
                separators=(",", ":"),
            )
            tx.add_schema(
                StoredSchema(i + 1, hashlib.sha256(text.encode()).hexdigest(), "AVRO", text, refs)
            )
            tx.add_version(SubjectVersion(f"l{i}", 1, i + 1))
    api = Api(Registry(storage))
    last = depth - 1
    # A compatibility check parses the whole stored chain (cold): 500 before, now compatible.
    same = {
        "schema": record(f"L{last}", namespace="ns"),
        "references": [{"name": f"ns.L{last - 1}", "subject": f"l{last - 1}", "version": 1}],
    }
    # The same content references a chain already over the limit: refused like any new chain.
    status, body = call(api, "POST", f"/compatibility/subjects/l{last}/versions/latest", same)
    assert (status, body["error_code"]) == (422, 42201)
    assert f"more than {MAX_REFERENCE_DEPTH + 1} deep" in body["message"]
    plain = {"schema": record(f"L{last}", field("g", "int", default=0), namespace="ns")}
    status, body = call(api, "POST", f"/compatibility/subjects/l{last}/versions/latest", plain)
    assert (status, body) == (200, {"is_compatible": True})
    status, body = call(api, "GET", f"/subjects/l{last}/versions/1/referencedby")
    assert (status, body) == (200, [])
    status, body = call(api, "GET", "/subjects/l0/versions/1/referencedby")
    assert (status, body) == (200, [2])
    status, body = call(api, "DELETE", f"/subjects/l{last - 1}/versions/1")
    assert (status, body["error_code"]) == (422, 42206), "still referenced"


# ------------------------------------------------------------------ size
def sized(size: int, char: str = "x") -> str:
    """A valid schema whose text is exactly `size` UTF-8 bytes (padded in its doc)."""
    base = record("A", field("a"))
    pad = size - len(base.encode()) - len(b', "doc": ""')
    unit = len(char.encode())
    assert pad >= 0
    text: str = base[:-1] + f', "doc": "{char * (pad // unit)}{"x" * (pad % unit)}"}}'
    assert len(text.encode()) == size
    return text


def test_a_schema_over_the_maximum_size_is_refused_with_42209(storage: Storage) -> None:
    api = Api(Registry(storage, max_schema_size=1000))
    status, body = call(api, "POST", "/subjects/s/versions", {"schema": sized(1001)})
    assert (status, body["error_code"]) == (422, 42209)
    assert body["message"] == (
        "Register operation failed because schema is too large: the schema text is 1001 bytes, "
        "over the 1000 this registry accepts"
    )
    # Bytes, not characters: 2-byte characters count twice.
    status, body = call(api, "POST", "/subjects/s/versions", {"schema": sized(1002, "é")})
    assert (status, body["error_code"]) == (422, 42209)
    assert call(api, "GET", "/subjects")[1] == [], "nothing was stored"
    assert call(api, "POST", "/subjects/s/versions", {"schema": sized(1000, "é")})[0] == 200
    # As in Confluent, where the limit is its store's record size, reads are not limited.
    path = "/compatibility/subjects/s/versions/latest"
    assert call(api, "POST", path, {"schema": sized(5000)}) == (200, {"is_compatible": True})
    assert call(api, "POST", "/subjects/s", {"schema": sized(5000)})[1]["error_code"] == 40403


def test_the_default_maximum_size_is_confluents_one_mebibyte() -> None:
    assert DEFAULT_MAX_SCHEMA_SIZE == 1024 * 1024
    api = Api(Registry(MemoryStorage()))
    status, body = call(api, "POST", "/subjects/s/versions", {"schema": sized(2**20 + 1)})
    assert (status, body["error_code"]) == (422, 42209)
    with pytest.raises(ValueError, match="max_schema_size must be at least 1 byte"):
        Registry(MemoryStorage(), max_schema_size=0)


def test_serve_takes_the_maximum_size_from_its_option(tmp_path: Path) -> None:
    with (
        serve("--storage", "memory", "--max-schema-size", "1000", cwd=tmp_path) as server,
        RegistryClient(server.url) as client,
    ):
        reply = client.post("/subjects/s/versions", {"schema": sized(1001)})
        assert (reply.status, reply.error_code) == (422, 42209)
        assert client.post("/subjects/s/versions", {"schema": sized(1000)}).status == 200


# ------------------------------------------------------------------ nesting through references
def _nested_chain_schema(i: int, levels: int, wrap: str = "array") -> dict[str, Any]:
    """Link ``i`` of a chain: record ns.T{i} whose one field nests ``levels`` arrays (or
    records) around the previous link (a string for the first)."""
    inner: Any = "string" if i == 0 else f"ns.T{i - 1}"
    for level in range(levels):
        if wrap == "array":
            inner = {"type": "array", "items": inner}
        else:
            inner = {"type": "record", "name": f"R{i}_{level}", "fields": [field("x", inner)]}
    body: dict[str, Any] = {"schema": record(f"T{i}", field("f", inner), namespace="ns")}
    if i:
        body["references"] = [{"name": f"ns.T{i - 1}", "subject": f"t{i - 1}", "version": 1}]
    return body


def test_types_nested_deeper_than_the_bound_through_references_are_invalid_not_500(
    storage: Storage,
) -> None:
    # Each link nests 90 arrays (within one text's bound of 100); eleven links overflowed the
    # stack of canonical form with a 500. The bound is on the graph with references written out.
    api = Api(Registry(storage))
    answers = [
        call(api, "POST", f"/subjects/t{i}/versions", _nested_chain_schema(i, 90)) for i in range(2)
    ]
    assert answers[0][0] == 200
    status, body = answers[1]
    assert (status, body["error_code"]) == (422, 42201)
    assert "nested" in body["message"] and str(MAX_EXPANDED_DEPTH) in body["message"]


@pytest.mark.parametrize("wrap", ["array", "record"])
def test_a_graph_nested_to_the_bound_registers_checks_and_reads_back(
    storage: Storage, wrap: str
) -> None:
    # Just inside the bound, every recursive walk must still fit: canonical form, lookup, the
    # compatibility check against the previous version, and reads (with format=resolved).
    api = Api(Registry(storage))
    links = 0
    while True:
        body = _nested_chain_schema(links, 40, wrap)
        status, answer = call(api, "POST", f"/subjects/t{links}/versions", body)
        if status != 200:
            assert answer["error_code"] == 42201
            break
        links += 1
    assert links >= 3
    last = links - 1
    body = _nested_chain_schema(last, 40, wrap)
    assert call(api, "POST", f"/subjects/t{last}", body)[0] == 200
    evolved = json.loads(body["schema"])
    evolved["fields"].append(field("g", default=""))
    status, answer = call(
        api, "POST", f"/subjects/t{last}/versions", {**body, "schema": json.dumps(evolved)}
    )
    assert status == 200 and answer["version"] == 2
    status, answer = call(api, "GET", f"/schemas/ids/{answer['id']}?format=resolved")
    assert status == 200 and '"T0"' in answer["schema"]  # the first link, written out
