"""One Avro schema, one id: registration and lookup by canonical form, ?normalize, formats, the
fingerprint migration of databases written before, and confluent-kafka's own serializer.

Issue 17: a schema registered from an .avsc ("name": "User", "namespace": "com.example") was not
found when a client sent it as "name": "com.example.User" with {"type": "long"} (what
confluent-kafka-go's serializer writes): 40403 with auto-register off, a duplicate version under
a new id with it on. Confluent canonicalises first (KafkaSchemaRegistry.register,
AbstractSchemaRegistry.lookUpSchemaUnderSubject).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from support.registry import in_process, register
from unit.schema_registry.test_avro_canonical import USER_CANONICAL, USER_FILE, USER_GO

from schema_registry.client import RegistryClient
from schema_registry.registry import Registry
from schema_registry.server import running_server
from schema_registry.storage import MemoryStorage, SqliteStorage, Storage, StoredSchema

# RestApiTest's normalize schema: a field's properties in two orders, plus aliases.
SORTED = (
    '{"type":"record","name":"myrecord","aliases":["a","b"],'
    '"fields":[{"type":"string","name":"field1","aprop":"a","zprop":"z"}]}'
)
UNSORTED = (
    '{"type":"record","name":"myrecord","aliases":["b","a"],'
    '"fields":[{"type":"string","name":"field1","zprop":"z","aprop":"a"}]}'
)


@pytest.fixture(params=["memory", "sqlite"])
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RegistryClient]:
    with in_process(request.param, tmp_path) as client:
        yield client


def lookup(api: RegistryClient, subject: str, schema: str, query: str = "", **extra: Any) -> Any:
    return api.post(f"/subjects/{subject}{query}", {"schema": schema, **extra})


def test_both_spellings_are_one_id_and_one_version(api: RegistryClient) -> None:
    first = register(api, "users-value", USER_FILE)
    again = register(api, "users-value", USER_GO)
    assert (again["id"], again["version"]) == (first["id"], 1)
    assert api.get("/subjects/users-value/versions").json() == [1]
    assert register(api, "other-value", USER_GO)["id"] == first["id"]
    assert api.get(f"/schemas/ids/{first['id']}").json() == {"schema": USER_CANONICAL}


def test_lookup_finds_a_schema_in_its_other_spelling(api: RegistryClient) -> None:
    registered = register(api, "users-value", USER_FILE)
    found = lookup(api, "users-value", USER_GO, "?normalize=False&deleted=False")
    assert found.status == 200, found.body
    assert (found.json()["id"], found.json()["version"]) == (registered["id"], 1)
    assert found.json()["schema"] == USER_CANONICAL
    assert lookup(api, "users-value", USER_FILE).json()["id"] == registered["id"]


def test_normalize_makes_property_and_alias_order_one_id(api: RegistryClient) -> None:
    plain = register(api, "s1", SORTED)
    reply = api.post("/subjects/s2/versions?normalize=True", {"schema": UNSORTED})
    assert reply.json()["id"] == plain["id"]
    assert lookup(api, "s1", UNSORTED, "?normalize=true").json()["id"] == plain["id"]
    # Without normalize the order of properties is part of the schema, as in Confluent.
    assert register(api, "s3", UNSORTED)["id"] != plain["id"]


def test_config_normalize_applies_without_the_query_flag(api: RegistryClient) -> None:
    plain = register(api, "s1", SORTED)
    put = api.put("/config/s2", {"normalize": True})
    assert put.json() == {"normalize": True}
    assert api.get("/config/s2").json()["normalize"] is True
    assert register(api, "s2", UNSORTED)["id"] == plain["id"]
    api.put("/config", {"normalize": True})
    assert register(api, "s3", UNSORTED)["id"] == plain["id"], "the global config's normalize"
    api.put("/config/s4", {"normalize": False})
    assert register(api, "s4", UNSORTED)["id"] != plain["id"], "the subject's config wins"


def test_normalize_sorts_references(api: RegistryClient) -> None:
    for n in (1, 2):
        schema = {
            "type": "record",
            "name": f"Subrecord{n}",
            "namespace": "otherns",
            "fields": [{"name": f"field{n}", "type": "string"}],
        }
        register(api, f"ref{n}", json.dumps(schema))
    main = (
        '{"type":"record","name":"myrecord","fields":['
        '{"name":"field1","type":"otherns.Subrecord1"},'
        '{"name":"field2","type":"otherns.Subrecord2"}],"extraMetadata":{"a":1,"b":2}}'
    )
    ref1 = {"name": "otherns.Subrecord1", "subject": "ref1", "version": 1}
    ref2 = {"name": "otherns.Subrecord2", "subject": "ref2", "version": 1}
    reply = api.post(
        "/subjects/s/versions?normalize=true", {"schema": main, "references": [ref2, ref1]}
    )
    assert reply.status == 200, reply.body
    assert reply.json()["references"] == [ref1, ref2]
    swapped = main.replace('{"a":1,"b":2}', '{"b":2,"a":1}')
    found = lookup(api, "s", swapped, "?normalize=true", references=[ref1, ref2, ref1])
    assert found.json()["id"] == reply.json()["id"]


def test_a_schema_with_its_references_written_out_finds_its_version(api: RegistryClient) -> None:
    # RestApiTest.testSchemaNormalization: a client that resolved the references itself.
    register(api, "money", '{"type":"enum","name":"shop.Currency","symbols":["EUR"]}')
    order = '{"type":"record","name":"shop.Order","fields":[{"name":"c","type":"shop.Currency"}]}'
    ref = {"name": "shop.Currency", "subject": "money", "version": 1}
    registered = register(api, "orders", order, references=[ref])
    resolved = api.get(f"/schemas/ids/{registered['id']}?format=resolved").json()["schema"]
    assert resolved == (
        '{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"c","type":'
        '{"type":"enum","name":"Currency","symbols":["EUR"]}}]}'
    )
    assert api.get(f"/schemas/ids/{registered['id']}").json()["schema"] == (
        '{"type":"record","name":"Order","namespace":"shop","fields":'
        '[{"name":"c","type":"Currency"}]}'
    )
    found = lookup(api, "orders", resolved)
    assert found.status == 200, found.body
    assert (found.json()["id"], found.json()["version"]) == (registered["id"], 1)
    # Every read Confluent gives `format` to takes it: the version and both /schema forms.
    assert api.get("/subjects/orders/versions/1?format=resolved").json()["schema"] == resolved
    for path in (
        "/subjects/orders/versions/latest/schema",
        f"/schemas/ids/{registered['id']}/schema",
    ):
        assert api.get(f"{path}?format=resolved").body.decode() == resolved
        assert "Currency" in api.get(path).body.decode()
        assert "EUR" not in api.get(path).body.decode()
    again = register(api, "orders", resolved)
    assert (again["id"], again["version"]) == (registered["id"], 1)


def test_compatibility_accepts_normalize(api: RegistryClient) -> None:
    register(api, "s", SORTED)
    for query in ("?normalize=true&verbose=true", "?normalize=False&verbose=False"):
        for path in (
            "/compatibility/subjects/s/versions/latest",
            "/compatibility/subjects/s/versions",
        ):
            reply = api.post(path + query, {"schema": UNSORTED})
            assert reply.status == 200, reply.body
            assert reply.json()["is_compatible"] is True


def test_import_mode_stores_the_schema_unnormalized(api: RegistryClient) -> None:
    # RestApiTest.testExplicitNormalizeIgnoredInImportMode
    assert api.put("/mode/s?force=true", {"mode": "IMPORT"}).status == 200
    reply = api.post("/subjects/s/versions?normalize=true", {"schema": UNSORTED, "id": 7})
    assert reply.status == 200, reply.body
    stored = api.get("/subjects/s/versions/1").json()["schema"]
    assert stored == (
        '{"type":"record","name":"myrecord","fields":[{"name":"field1","type":"string",'
        '"zprop":"z","aprop":"a"}],"aliases":["b","a"]}'
    )


# --- databases written before canonical fingerprints ------------------------------------------

_OLD_TABLES = """
CREATE TABLE schemas (
    id INTEGER PRIMARY KEY, fingerprint TEXT NOT NULL UNIQUE, schema_type TEXT NOT NULL,
    schema TEXT NOT NULL, refs TEXT NOT NULL, metadata TEXT, rule_set TEXT);
CREATE TABLE schema_refs (schema_id INTEGER NOT NULL, subject TEXT NOT NULL,
    version INTEGER NOT NULL);
CREATE TABLE versions (subject TEXT NOT NULL, version INTEGER NOT NULL,
    schema_id INTEGER NOT NULL, deleted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (subject, version)) WITHOUT ROWID;
"""


def _old_row(schema_id: int, text: str) -> tuple[Any, ...]:
    """A schemas row as the registry wrote it before: its compact JSON, fingerprinted by the
    JSON with sorted keys."""
    data = json.loads(text)
    identity = ["AVRO", data, [], None, None]
    dump = json.dumps(identity, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    fingerprint = hashlib.sha256(dump.encode()).hexdigest()
    compact = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return (schema_id, fingerprint, "AVRO", compact, "[]", None, None)


def _old_database(path: Path, rows: list[tuple[int, str, str]]) -> None:
    with sqlite3.connect(path) as conn:
        conn.executescript(_OLD_TABLES)
        for schema_id, subject, text in rows:
            conn.execute(
                "INSERT INTO schemas VALUES (?, ?, ?, ?, ?, ?, ?)", _old_row(schema_id, text)
            )
            conn.execute("INSERT INTO versions VALUES (?, 1, ?, 0)", (subject, schema_id))
    conn.close()


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_storage_renames_fingerprints_and_keeps_meta(backend: str, tmp_path: Path) -> None:
    storage: Storage = MemoryStorage() if backend == "memory" else SqliteStorage(tmp_path / "s.db")
    try:
        with storage.write() as tx:
            tx.add_schema(StoredSchema(1, "one", "AVRO", '"int"'))
            tx.add_schema(StoredSchema(2, "two", "AVRO", '"long"'))
        with pytest.raises(LookupError), storage.write() as tx:
            tx.set_fingerprint(1, "uno")
            tx.set_meta("fingerprint_format", "x")
            raise LookupError("rolled back")
        with storage.read() as tx:
            assert (tx.schema_id_by_fingerprint("one"), tx.meta("fingerprint_format")) == (1, None)
        with storage.write() as tx:
            tx.set_fingerprint(1, "uno")
            tx.set_meta("fingerprint_format", "x")
        with storage.read() as tx:
            assert tx.schema_id_by_fingerprint("uno") == 1
            assert tx.schema_id_by_fingerprint("one") is None
            assert tx.meta("fingerprint_format") == "x"
            assert [(s.id, s.fingerprint) for s in tx.all_schemas()] == [(1, "uno"), (2, "two")]
    finally:
        storage.close()


@pytest.fixture
def old_db(tmp_path: Path) -> Path:
    path = tmp_path / "old.db"
    _old_database(path, [(1, "users-value", USER_FILE)])
    return path


def test_an_old_database_finds_its_schemas_in_either_spelling(old_db: Path) -> None:
    storage = SqliteStorage(old_db)
    try:
        with running_server(storage) as url, RegistryClient(url) as api:
            assert lookup(api, "users-value", USER_FILE).json()["id"] == 1
            assert lookup(api, "users-value", USER_GO).json()["id"] == 1
            again = register(api, "users-value", USER_GO)
            assert (again["id"], again["version"]) == (1, 1)
            assert register(api, "other-value", USER_GO)["id"] == 1, "no new id for old content"
            assert api.get("/subjects/users-value/versions").json() == [1]
            # The stored text stays as it was written.
            assert json.loads(api.get("/schemas/ids/1").json()["schema"]) == json.loads(USER_FILE)
    finally:
        storage.close()
    reopened = SqliteStorage(old_db)
    try:
        assert Registry(reopened).migrate_fingerprints() == 0, "migrated once, at first open"
    finally:
        reopened.close()


def test_an_old_database_holding_both_spellings_keeps_both_ids(tmp_path: Path) -> None:
    # What the bug left behind: one schema under two ids, one per spelling.
    path = tmp_path / "old.db"
    _old_database(path, [(1, "a-value", USER_FILE), (2, "b-value", USER_GO)])
    storage = SqliteStorage(path)
    try:
        with running_server(storage) as url, RegistryClient(url) as api:
            for subject, schema_id in (("a-value", 1), ("b-value", 2)):
                for text in (USER_FILE, USER_GO):
                    again = register(api, subject, text)
                    assert (again["id"], again["version"]) == (schema_id, 1)
                    assert lookup(api, subject, text).json()["id"] == schema_id
            assert register(api, "c-value", USER_GO)["id"] == 1, "the older id is the schema's"
            assert api.get("/schemas/ids/2").status == 200
    finally:
        storage.close()


# --- confluent-kafka's Python serializer --------------------------------------------------------


def test_confluent_kafka_serializer_uses_the_registered_id_for_either_spelling(
    api: RegistryClient,
) -> None:
    registered = register(api, "users-value", USER_FILE)
    context = SerializationContext("users", MessageField.VALUE)
    for auto_register in (False, True):
        client = SchemaRegistryClient({"url": api.url})
        serializer = AvroSerializer(client, USER_GO, conf={"auto.register.schemas": auto_register})
        payload = serializer({"id": 7, "name": "Ada"}, context)
        assert payload is not None
        assert payload[0] == 0, "Confluent wire format: magic byte 0"
        assert int.from_bytes(payload[1:5], "big") == registered["id"], auto_register
    assert api.get("/subjects/users-value/versions").json() == [1], "no new version"
