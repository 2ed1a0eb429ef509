"""The relay parks rows in an ``error`` column that older outbox tables lack: it adds the column
itself, so no service needs a second outbox migration."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from meshkit.db import Database
from meshkit.events import OUTBOX_MIGRATION, OutboxRelay

# OUTBOX_MIGRATION as services applied it before parked rows existed.
OUTBOX_MIGRATION_WITHOUT_ERROR = """
CREATE TABLE meshkit_outbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    topic        TEXT NOT NULL,
    key          TEXT NOT NULL,
    value        BLOB NOT NULL,
    headers      TEXT NOT NULL,
    created_at   REAL NOT NULL,
    published_at REAL
);
CREATE INDEX meshkit_outbox_pending ON meshkit_outbox (id) WHERE published_at IS NULL;
"""


def columns(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [row[1] for row in conn.execute("PRAGMA table_info(meshkit_outbox)")]


def test_a_relay_gives_an_older_outbox_table_its_error_column_once(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = Database(path, ["CREATE TABLE mine (k TEXT);", OUTBOX_MIGRATION_WITHOUT_ERROR])
    assert "error" not in columns(path)
    # No broker at port 9: only the database matters here.
    relays = [OutboxRelay(db, "127.0.0.1:9", create_topics=False) for _ in range(2)]
    try:
        assert columns(path).count("error") == 1
        assert relays[0].lag() == (0, None)
        assert relays[0].parked() == []
        with sqlite3.connect(path) as conn:  # the service's own schema version is untouched
            assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    finally:
        for relay in relays:
            relay.close()
        db.close()


def test_a_new_outbox_table_has_the_error_column_from_the_start(tmp_path: Path) -> None:
    db = Database(tmp_path / "new.db", [OUTBOX_MIGRATION])
    db.close()
    assert "error" in columns(tmp_path / "new.db")
