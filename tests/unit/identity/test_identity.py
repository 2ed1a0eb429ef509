"""Identity's use cases on SQLite, through their public interface."""

from __future__ import annotations

import datetime
import json
import sqlite3
from pathlib import Path

import fastavro
import pytest

from identity.adapters.events import EVENTS
from identity.adapters.sqlite import MIGRATIONS, SqliteUnitOfWork
from identity.app.identity import IdentityUseCases
from identity.domain.events import UserCreated
from meshkit import Database, InvalidArgument, NotFound

REPO = Path(__file__).resolve().parents[3]
SCHEMA = REPO / "proto/shop/identity/v1/avro/user_created.avsc"
NOW = datetime.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=datetime.UTC)


class RecordingSink:
    """Writes each published event into the unit's own transaction, as the outbox does."""

    def publish(
        self, conn: sqlite3.Connection, event: object, *, event_id: str | None = None
    ) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS published (record TEXT NOT NULL)")
        record = EVENTS.to_record(event)  # type: ignore[arg-type]
        conn.execute("INSERT INTO published VALUES (?)", (json.dumps(record, default=str),))


@pytest.fixture
def db(tmp_path: Path) -> Database:
    return Database(tmp_path / "identity.db", MIGRATIONS)


def use_cases(db: Database) -> IdentityUseCases:
    return IdentityUseCases(lambda: SqliteUnitOfWork(db, RecordingSink()), clock=lambda: NOW)


def published(db: Database) -> list[dict[str, str]]:
    with db.snapshot() as conn:
        return [json.loads(row[0]) for row in conn.execute("SELECT record FROM published")]


def test_create_then_get_returns_the_same_user(db: Database) -> None:
    created = use_cases(db).create("  First  ")
    assert created.display_name == "First"
    assert use_cases(db).get(created.user_id) == created


def test_create_publishes_its_event_in_the_same_transaction(db: Database) -> None:
    created = use_cases(db).create("First")
    assert published(db) == [
        {"user_id": created.user_id, "display_name": "First", "occurred_at": str(NOW)}
    ]


def test_bad_input_names_the_field_and_stores_nothing(db: Database) -> None:
    with pytest.raises(InvalidArgument) as raised:
        use_cases(db).create(" " * 3)
    assert [v.field for v in raised.value.violations] == ["display_name"]
    with pytest.raises(InvalidArgument):
        use_cases(db).create("x" * 201)
    with db.snapshot() as conn:
        assert conn.execute("SELECT COUNT(*) FROM user").fetchone()[0] == 0


def test_an_unknown_id_is_not_found(db: Database) -> None:
    with pytest.raises(NotFound, match="unknown user"):
        use_cases(db).get("nope")


def test_the_event_matches_its_avro_contract() -> None:
    schema = fastavro.parse_schema(json.loads(SCHEMA.read_text()))
    event = UserCreated("id-1", "First", NOW)
    assert EVENTS.type_of(event) == "shop.identity.v1.UserCreated"
    assert EVENTS.key_of(event) == "id-1"
    assert fastavro.validate(EVENTS.to_record(event), schema, raise_errors=True)
