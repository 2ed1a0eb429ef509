"""A background loop whose database was closed under it ends instead of retrying forever.

A relay left running after its owner closed the database used to log "Cannot operate on a closed
database" every few seconds for ever, and (being a non-daemon thread) kept the process alive.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from support.events import PRODUCER_MIGRATIONS

from meshkit.db import Database
from meshkit.events import OutboxRelay


def test_database_reports_closed(tmp_path: Path) -> None:
    db = Database(tmp_path / "a.db", PRODUCER_MIGRATIONS)
    assert db.closed is False
    db.close()
    assert db.closed is True
    with pytest.raises(RuntimeError, match="is closed"), db.snapshot():
        pass


def test_the_relay_loop_ends_when_its_database_is_closed(tmp_path: Path) -> None:
    db = Database(tmp_path / "producer.db", PRODUCER_MIGRATIONS)
    # No broker at port 9, and no topics to create: only the database matters here.
    relay = OutboxRelay(db, "127.0.0.1:9", create_topics=False)
    stop = threading.Event()  # never set: the owner "forgot"
    raised: list[BaseException] = []

    def run() -> None:
        try:
            relay.run_forever(stop, idle_s=0.01, max_backoff_s=0.05)
        except RuntimeError as exc:  # "database ... is closed", as the worker wrapper logs it
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        db.close()
        thread.join(timeout=10)
        assert not thread.is_alive(), "the relay kept looping on a closed database"
        assert raised, "run_forever returned quietly instead of raising"
        assert "is closed" in str(raised[0])
    finally:
        stop.set()
        relay.close()
