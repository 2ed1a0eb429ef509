"""One storage contract, run against every backend (memory, SQLite and Kafka)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from schema_registry.storage import (
    GLOBAL,
    KafkaStorage,
    MemoryStorage,
    OutboxRow,
    Reference,
    SqliteStorage,
    Storage,
    StoredSchema,
    SubjectVersion,
    open_storage,
    parse_storage_url,
)

#: Tests of an outbox that holds rows until a relay publishes them; the Kafka store has none
#: (rows go to their topic in the write's Kafka transaction: test_registry_kafka_storage.py).
_PENDING_OUTBOX = {
    "test_outbox_rows_commit_and_roll_back_with_their_transaction",
    "test_a_record_alone_leaves_cached_reads_valid",
}


@pytest.fixture(
    params=["memory", "sqlite", pytest.param("kafka", marks=pytest.mark.kafka)],
)
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    backend: Storage
    if request.param == "kafka":
        if request.node.originalname in _PENDING_OUTBOX:
            pytest.skip("the Kafka store has no pending outbox")
        from support.kafka import unique_topic

        bootstrap = request.getfixturevalue("kafka_bootstrap")
        backend = KafkaStorage(bootstrap, unique_topic("registry.contract"))
    elif request.param == "memory":
        backend = MemoryStorage()
    else:
        backend = SqliteStorage(tmp_path / "r.db")
    yield backend
    backend.close()


def schema(schema_id: int, *refs: Reference) -> StoredSchema:
    return StoredSchema(
        id=schema_id,
        fingerprint=f"fp-{schema_id}",
        schema_type="AVRO",
        text=f'{{"type":"fixed","name":"F{schema_id}","size":1}}',
        references=refs,
        metadata={"properties": {"owner": "team"}} if schema_id == 1 else None,
        rule_set={"domainRules": []} if schema_id == 1 else None,
    )


def test_schemas_are_found_by_id_and_fingerprint(storage: Storage) -> None:
    with storage.write() as tx:
        assert tx.max_schema_id() == 0
        tx.add_schema(schema(1))
        tx.add_schema(schema(7))
    with storage.read() as tx:
        assert tx.schema(1) == schema(1)
        assert tx.schema(7) == schema(7)
        assert tx.schema(2) is None
        assert tx.schema_id_by_fingerprint("fp-7") == 7
        assert tx.schema_id_by_fingerprint("nope") is None
        assert tx.max_schema_id() == 7


def test_versions_keep_soft_deleted_ones_apart(storage: Storage) -> None:
    with storage.write() as tx:
        tx.add_schema(schema(1))
        tx.add_schema(schema(2))
        for number, schema_id in ((1, 1), (2, 2), (3, 1)):
            tx.add_version(SubjectVersion("a", number, schema_id))
        tx.add_version(SubjectVersion("b", 1, 2))
        tx.set_deleted("a", 3)
    with storage.read() as tx:
        assert [v.version for v in tx.versions("a", include_deleted=False)] == [1, 2]
        assert tx.versions("a", include_deleted=True)[-1] == SubjectVersion("a", 3, 1, True)
        assert tx.max_version("a") == 3
        assert tx.max_version("zzz") == 0
        assert tx.version("a", 3) == SubjectVersion("a", 3, 1, True)
        assert tx.version("a", 4) is None
        assert tx.usages(1) == [SubjectVersion("a", 1, 1), SubjectVersion("a", 3, 1, True)]
        assert [(v.subject, v.version) for v in tx.all_versions()] == [
            ("a", 1),
            ("a", 2),
            ("a", 3),
            ("b", 1),
        ]


def test_subjects_with_only_soft_deleted_versions_are_hidden(storage: Storage) -> None:
    with storage.write() as tx:
        tx.add_schema(schema(1))
        tx.add_version(SubjectVersion("live", 1, 1))
        tx.add_version(SubjectVersion("gone", 1, 1))
        tx.set_deleted("gone", 1)
    with storage.read() as tx:
        assert tx.subjects(include_deleted=False) == ["live"]
        assert tx.subjects(include_deleted=True) == ["gone", "live"]


def test_hard_delete_removes_the_version_but_not_the_schema(storage: Storage) -> None:
    with storage.write() as tx:
        tx.add_schema(schema(1))
        tx.add_version(SubjectVersion("a", 1, 1))
    with storage.write() as tx:
        tx.remove_version("a", 1)
    with storage.read() as tx:
        assert tx.versions("a", include_deleted=True) == []
        assert tx.subjects(include_deleted=True) == []
        assert tx.usages(1) == []
        assert tx.schema(1) is not None, "ids are never given to other content"
        assert tx.max_schema_id() == 1


def test_referrers_are_the_versions_of_referencing_schemas(storage: Storage) -> None:
    with storage.write() as tx:
        tx.add_schema(schema(1))
        tx.add_version(SubjectVersion("base", 1, 1))
        tx.add_schema(schema(2, Reference("F1", "base", 1)))
        tx.add_version(SubjectVersion("user", 1, 2))
        tx.add_version(SubjectVersion("user2", 4, 2))
        tx.set_deleted("user2", 4)
    with storage.read() as tx:
        assert tx.schema(2) is not None
        assert tx.schema(2).references == (Reference("F1", "base", 1),)  # type: ignore[union-attr]
        assert tx.referrers("base", 1) == [
            SubjectVersion("user", 1, 2),
            SubjectVersion("user2", 4, 2, True),
        ]
        assert tx.referrers("base", 2) == []
        assert tx.referrers("user", 1) == []


def test_config_and_mode_are_stored_per_subject_and_globally(storage: Storage) -> None:
    with storage.write() as tx:
        tx.set_config(GLOBAL, {"compatibilityLevel": "FULL"})
        tx.set_config("a", {"compatibilityLevel": "NONE", "normalize": True})
        tx.set_mode(GLOBAL, "READONLY")
        tx.set_mode("a", "IMPORT")
        tx.set_mode("b", "READWRITE")
    with storage.read() as tx:
        assert tx.config(GLOBAL) == {"compatibilityLevel": "FULL"}
        assert tx.config("a") == {"compatibilityLevel": "NONE", "normalize": True}
        assert tx.config("b") is None
        assert tx.mode(GLOBAL) == "READONLY"
        assert tx.mode("a") == "IMPORT"
        assert tx.mode_subjects() == ["a", "b"]
    with storage.write() as tx:
        tx.delete_config("a")
        tx.delete_config("never-set")
        tx.delete_mode("a")
    with storage.read() as tx:
        assert tx.config("a") is None
        assert tx.mode("a") is None
        assert tx.mode_subjects() == ["b"]


def test_a_failed_write_transaction_leaves_no_trace(storage: Storage) -> None:
    with storage.write() as tx:
        tx.add_schema(schema(1))
        tx.add_version(SubjectVersion("a", 1, 1))
        tx.set_config("a", {"compatibilityLevel": "FULL"})
    counter = storage.change_counter()
    with pytest.raises(RuntimeError, match="boom"), storage.write() as tx:
        tx.add_schema(schema(2))
        tx.add_version(SubjectVersion("a", 2, 2))
        tx.set_deleted("a", 1)
        tx.set_config("a", {"compatibilityLevel": "NONE"})
        tx.set_mode("a", "IMPORT")
        tx.remove_version("a", 1)
        raise RuntimeError("boom")
    with storage.read() as tx:
        assert tx.schema(2) is None
        assert tx.schema_id_by_fingerprint("fp-2") is None
        assert tx.max_schema_id() == 1
        assert tx.versions("a", include_deleted=True) == [SubjectVersion("a", 1, 1)]
        assert tx.config("a") == {"compatibilityLevel": "FULL"}
        assert tx.mode("a") is None
    assert storage.change_counter() == counter


def test_read_transactions_refuse_writes(storage: Storage) -> None:
    with storage.read() as tx, pytest.raises(RuntimeError):
        tx.add_schema(schema(1))
    with storage.read() as tx, pytest.raises(RuntimeError):
        tx.set_mode("a", "IMPORT")


def test_the_change_counter_moves_on_every_committed_write_only(storage: Storage) -> None:
    start = storage.change_counter()
    with storage.read() as tx:
        tx.versions("a", include_deleted=True)
    with storage.write() as tx:
        tx.config("a")  # a write transaction that changes nothing
    assert storage.change_counter() == start
    with storage.write() as tx:
        tx.set_mode("a", "READONLY")
    after_one = storage.change_counter()
    assert after_one != start
    with storage.write() as tx:
        tx.delete_mode("a")
    assert storage.change_counter() not in (start, after_one)


def test_sqlite_is_shared_between_handles_and_survives_reopening(tmp_path: Path) -> None:
    first = SqliteStorage(tmp_path / "data" / "r.db")
    second = SqliteStorage(tmp_path / "data" / "r.db")
    try:
        seen = second.change_counter()
        with first.write() as tx:
            tx.add_schema(schema(1))
            tx.add_version(SubjectVersion("a", 1, 1))
        assert second.change_counter() != seen, "another handle sees the counter move at once"
        with second.read() as tx:
            assert tx.versions("a", include_deleted=False) == [SubjectVersion("a", 1, 1)]
    finally:
        first.close()
        second.close()
    reopened = SqliteStorage(tmp_path / "data" / "r.db")
    try:
        with reopened.read() as tx:
            assert tx.schema(1) == schema(1)
    finally:
        reopened.close()


def row(n: int) -> OutboxRow:
    return OutboxRow("audit.events.v1", f"k{n}", bytes([0, 0, 0, 0, n]), (("ce_id", f"k{n}"),))


def test_outbox_rows_commit_and_roll_back_with_their_transaction(storage: Storage) -> None:
    with storage.write() as tx:
        tx.add_schema(schema(1))
        tx.add_outbox(row(1))
    with pytest.raises(RuntimeError), storage.write() as tx:
        tx.add_schema(schema(2))
        tx.add_outbox(row(2))
        raise RuntimeError("the change fails: its record must go with it")
    with storage.write() as tx:
        tx.add_outbox(row(3))
    assert storage.pending_outbox() == [row(1), row(3)]
    with storage.read() as tx:
        assert tx.schema(2) is None


def test_a_record_alone_leaves_cached_reads_valid(storage: Storage) -> None:
    before = storage.change_counter()
    storage.append_outbox(row(1))
    storage.append_outbox(row(2))
    assert storage.change_counter() == before, "a refused write changed nothing a reader sees"
    assert storage.pending_outbox() == [row(1), row(2)]


def test_read_transactions_cannot_write_the_outbox(storage: Storage) -> None:
    with pytest.raises(RuntimeError), storage.read() as tx:
        tx.add_outbox(row(1))


def test_the_sqlite_outbox_is_meshkits_table(tmp_path: Path) -> None:
    """meshkit's OutboxRelay publishes it: same table, same columns, as a service's."""
    import sqlite3

    from meshkit.db import Database
    from meshkit.events import OUTBOX_MIGRATION, OutboxRelay

    theirs = Database(tmp_path / "service.db", [OUTBOX_MIGRATION])
    OutboxRelay(theirs, "127.0.0.1:1").close()  # adds the error column, as in a service
    theirs.close()
    SqliteStorage(tmp_path / "registry.db").close()

    def columns(path: Path) -> list[tuple[str, str, int]]:
        with sqlite3.connect(path) as conn:
            found = conn.execute("PRAGMA table_info(meshkit_outbox)").fetchall()
        return [(c[1], c[2], c[3]) for c in found]

    assert columns(tmp_path / "registry.db") == columns(tmp_path / "service.db")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///.mesh/data/schema-registry.db", Path(".mesh/data/schema-registry.db")),
        ("sqlite:////data/schema-registry.db", Path("/data/schema-registry.db")),
        ("memory", None),
        ("sqlite://", None),
    ],
)
def test_storage_urls_read_as_sqlalchemy_reads_them(url: str, expected: Path | None) -> None:
    assert parse_storage_url(url) == expected


def test_unknown_storage_urls_are_refused_with_the_accepted_forms() -> None:
    with pytest.raises(ValueError, match=r"sqlite:///relative\.db"):
        open_storage("postgres://x")
