"""An in-memory event log standing in for Kafka in order_views' unit tests: topics of one
partition each, consumer groups with committed offsets, and consumers that write the database
exactly as meshkit's EventConsumer does (a batch in one transaction; per record a savepoint,
the inbox check, the projection and the inbox mark)."""

from __future__ import annotations

import threading

from unit.order_views.shop_events import Published

from meshkit.db import Database
from order_views.adapters.sqlite import SqliteViewStore
from order_views.app.ports import Positions
from order_views.app.projector import apply_fact


class Log:
    """Topics as lists of events (one partition each); thread-safe appends."""

    def __init__(self) -> None:
        self.topics: dict[str, list[Published]] = {}
        self.committed: dict[tuple[str, str], int] = {}  # (group, topic) -> next offset
        self.first: dict[str, int] = {}  # topic -> first offset still stored
        self.paused: set[str] = set()  # consumer groups (by suffix, e.g. ".g2") that wait
        self.lock = threading.Condition()

    def append(self, events: list[Published]) -> None:
        with self.lock:
            for event in events:
                self.topics.setdefault(event[0], []).append(event)
            self.lock.notify_all()

    def ends(self) -> dict[tuple[str, int], int]:
        with self.lock:
            return {(topic, 0): len(events) for topic, events in self.topics.items()}

    def starts(self) -> Positions:
        """Where each log starts (``first`` offsets, as retention would move them; else 0)."""
        with self.lock:
            return {(topic, 0): self.first.get(topic, 0) for topic in self.topics}


class FakeConsumer:
    """What meshkit's EventConsumer does to the database, minus Kafka: per batch one
    transaction; per event in it a savepoint, the inbox check, the projection, the inbox mark.

    As Kafka with order_views' settings: a group without a committed offset starts at the log's
    start; a ``replay`` consumer starts every topic at offset 0 and, where the log no longer
    starts there, reads nothing (auto.offset.reset=error) instead of skipping ahead.
    """

    def __init__(self, log: Log, db: Database, group: str, *, replay: bool = False) -> None:
        self.log, self.db, self.group, self.replay = log, db, group, replay
        self.committed = log.committed
        if replay:
            with log.lock:
                for topic in log.topics:
                    self.committed[(group, topic)] = 0

    def run_once(self, timeout: float = 1.0) -> int:
        settled = 0
        with self.log.lock:
            pending = self._pending()
            if not pending:  # as Kafka's poll: wait for a record up to the timeout
                self.log.lock.wait(min(timeout, 0.05))
                pending = self._pending()
        # One transaction per batch, a savepoint per record (meshkit's EventConsumer); the
        # offsets are committed only once the transaction has.
        with self.db.transaction() as conn:
            for topic, offset, (_, _, fact) in pending:
                conn.execute("SAVEPOINT record")
                seen = conn.execute(
                    "SELECT 1 FROM meshkit_inbox WHERE consumer_group = ? AND event_id = ?",
                    (self.group, fact.id),
                ).fetchone()
                if not seen:
                    apply_fact(SqliteViewStore(conn), fact)
                    conn.execute(
                        "INSERT INTO meshkit_inbox VALUES (?, ?, ?, ?, 0, ?, 'handled', 0)",
                        (self.group, fact.id, fact.type, topic, offset),
                    )
                conn.execute("RELEASE record")
                settled += 1
        for topic, offset, _ in pending:
            self.committed[(self.group, topic)] = offset + 1
        return settled

    def _pending(self) -> list[tuple[str, int, Published]]:
        if any(self.group.endswith(suffix) for suffix in self.log.paused):
            return []
        pending = []
        for topic, events in self.log.topics.items():
            first = self.log.first.get(topic, 0)
            start = self.committed.get((self.group, topic), first)
            if start < first:
                if self.replay:
                    continue  # out of range: an error, never a silent jump
                start = first
            pending += [(topic, offset, events[offset]) for offset in range(start, len(events))]
        return pending[:100]

    def close(self) -> None:
        pass
