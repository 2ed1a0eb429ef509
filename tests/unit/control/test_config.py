"""Control's config use cases over the real SQLite store: versions without gaps, schema checks
that name the field, optimistic concurrency, rollback, schemas, client reports, the watch
stream's snapshot/resume/reset rules, and the audit record of every change."""

from __future__ import annotations

import datetime
import json
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from control.adapters.contracts import bundled_schemas
from control.adapters.sqlite import MIGRATIONS, snapshots, transactions
from control.app.config import REPORT_RETENTION, BundledSchema, ConfigUseCases, WatchEvent
from control.app.feed import ChangeFeed, FeedPoller
from meshkit.audit import AuditEntry
from meshkit.db import Database
from meshkit.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound

T0 = datetime.datetime(2026, 5, 1, 12, 0, tzinfo=datetime.UTC)
LIMIT = json.dumps(
    {
        "type": "object",
        "properties": {"max_lines_per_order": {"type": "integer", "minimum": 1, "maximum": 100}},
        "additionalProperties": False,
    }
)


@dataclass
class Clock:
    now: datetime.datetime = T0

    def __call__(self) -> datetime.datetime:
        self.now += datetime.timedelta(seconds=1)
        return self.now


@dataclass
class World:
    db: Database
    config: ConfigUseCases
    feed: ChangeFeed
    clock: Clock
    audited: list[AuditEntry] = field(default_factory=list)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    db = Database(tmp_path / "control.db", MIGRATIONS)
    feed = ChangeFeed()
    clock = Clock()
    audited: list[AuditEntry] = []
    config = ConfigUseCases(
        transactions(db), snapshots(db), feed, audit=audited.append, clock=clock
    )
    yield World(db, config, feed, clock, audited)
    feed.close()
    db.close()


def doc(limit: int) -> str:
    return json.dumps({"max_lines_per_order": limit})


def test_versions_count_one_two_three_per_namespace_with_author_and_reason(world: World) -> None:
    first = world.config.set("orders", doc(10), author="alice", reason="launch")
    world.config.set("flags", "{}", author="bob")
    second = world.config.set("orders", doc(20), author="bob", reason="more")
    assert (first.version, second.version) == (1, 2)
    assert world.config.get("flags").version == 1
    current = world.config.get("orders")
    assert (current.version, current.document, current.author, current.reason) == (
        2,
        doc(20),
        "bob",
        "more",
    )
    assert world.config.get("orders", 1).document == doc(10)
    assert [v.version for v in world.config.history("orders")] == [2, 1]
    assert [v.version for v in world.config.history("orders", page_size=1, before_version=2)] == [1]


def test_the_document_is_kept_as_given(world: World) -> None:
    text = '{"price": 1.10, "big": 12345678901234567890}'
    world.config.set("shop", text, author="a")
    assert world.config.get("shop").document == text


def test_reads_of_what_is_not_there_are_not_found(world: World) -> None:
    with pytest.raises(NotFound) as caught:
        world.config.get("orders")
    assert caught.value.reason == "CONFIG_NOT_FOUND"
    world.config.set("orders", doc(5), author="a")
    with pytest.raises(NotFound) as caught:
        world.config.get("orders", 7)
    assert "its current version is 1" in caught.value.message
    assert world.config.history("nothing-here") == []


def test_a_document_failing_the_schema_is_refused_naming_the_field(world: World) -> None:
    world.config.set_schema("orders", LIMIT, author="admin")
    with pytest.raises(InvalidArgument) as caught:
        world.config.set("orders", doc(0), author="a")
    assert [(v.field, v.description) for v in caught.value.violations] == [
        ("max_lines_per_order", "must be at least 1 (is 0)")
    ]
    assert caught.value.reason == "DOCUMENT_FAILS_SCHEMA"
    with pytest.raises(InvalidArgument) as caught:
        world.config.set("orders", '{"max_lines_per_order": 5', author="a")
    assert caught.value.violations[0].field == "document"
    with pytest.raises(NotFound):
        world.config.get("orders")  # nothing stored by either


def test_expected_version_guards_a_read_modify_write(world: World) -> None:
    world.config.set("orders", doc(1), author="a", expected_version=0)
    with pytest.raises(Aborted) as caught:
        world.config.set("orders", doc(2), author="b", expected_version=0)
    assert caught.value.metadata["current_version"] == "1"
    assert world.config.set("orders", doc(3), author="c", expected_version=1).version == 2


def test_concurrent_read_modify_writes_lose_nothing_and_leave_no_gap(world: World) -> None:
    def bump(times: int) -> None:
        for _ in range(times):
            while True:
                current = world.config.get("counter")
                n = json.loads(current.document)["n"]
                try:
                    world.config.set(
                        "counter",
                        json.dumps({"n": n + 1}),
                        author="t",
                        expected_version=current.version,
                    )
                    break
                except Aborted:
                    continue

    world.config.set("counter", json.dumps({"n": 0}), author="t")
    threads = [threading.Thread(target=bump, args=(10,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    versions = [v.version for v in world.config.history("counter", page_size=100)]
    assert versions == list(range(41, 0, -1))
    assert json.loads(world.config.get("counter").document)["n"] == 40


def test_rollback_stores_the_old_document_as_a_new_version(world: World) -> None:
    world.config.set("orders", doc(10), author="a")
    world.config.set("orders", doc(1), author="b", reason="oops")
    back = world.config.rollback("orders", 1, author="c", reason="undo")
    assert (back.version, back.document, back.rollback_of, back.author) == (3, doc(10), 1, "c")
    assert [v.rollback_of for v in world.config.history("orders")] == [1, 0, 0]
    with pytest.raises(NotFound):
        world.config.rollback("orders", 9, author="c")
    with pytest.raises(InvalidArgument):
        world.config.rollback("orders", 0, author="c")


def test_rollback_to_a_document_the_current_schema_refuses_is_refused(world: World) -> None:
    world.config.set("orders", doc(500), author="a")
    world.config.set("orders", doc(5), author="a")
    world.config.set_schema("orders", LIMIT, author="admin")
    with pytest.raises(InvalidArgument) as caught:
        world.config.rollback("orders", 1, author="a")
    assert caught.value.violations[0].field == "max_lines_per_order"


def test_a_schema_the_current_document_fails_is_a_failed_precondition(world: World) -> None:
    world.config.set("orders", doc(500), author="a")
    with pytest.raises(FailedPrecondition) as caught:
        world.config.set_schema("orders", LIMIT, author="admin")
    assert [(v.type, v.subject) for v in caught.value.violations] == [
        ("SCHEMA", "max_lines_per_order")
    ]
    with pytest.raises(NotFound):
        world.config.get_schema("orders")


def test_setting_the_same_schema_again_changes_nothing(world: World) -> None:
    first = world.config.set_schema("orders", LIMIT, author="admin")
    again = world.config.set_schema("orders", json.dumps(json.loads(LIMIT), indent=4), author="x")
    assert again == first
    assert [e.action for e in world.audited] == ["config.schema.set"]
    with pytest.raises(InvalidArgument) as caught:
        world.config.set_schema("orders", '{"type": 5}', author="admin")
    assert caught.value.violations[0].field.startswith("schema")


def test_every_change_is_audited_with_its_namespace_and_version(world: World) -> None:
    world.config.set_schema("orders", LIMIT, author="admin")
    world.config.set("orders", doc(10), author="a", reason="launch")
    world.config.rollback("orders", 1, author="a")
    with pytest.raises(InvalidArgument):
        world.config.set("orders", doc(0), author="a")
    assert [(e.action, e.resource_type, e.resource_id) for e in world.audited] == [
        ("config.schema.set", "ConfigNamespace", "orders"),
        ("config.set", "ConfigNamespace", "orders"),
        ("config.rollback", "ConfigNamespace", "orders"),
    ]
    assert world.audited[1].details == {"version": "1", "reason": "launch"}
    assert world.audited[2].details["rollback_of"] == "1"


def test_a_failing_audit_trail_does_not_fail_a_stored_change(tmp_path: Path) -> None:
    db = Database(tmp_path / "c.db", MIGRATIONS)

    def broken(entry: AuditEntry) -> None:
        raise RuntimeError("no audit outbox")

    config = ConfigUseCases(transactions(db), snapshots(db), ChangeFeed(), audit=broken)
    assert config.set("orders", doc(1), author="a").version == 1
    db.close()


def test_shipped_schemas_are_registered_when_absent_or_different(world: World) -> None:
    shipped = bundled_schemas()
    assert "orders" in [s.namespace for s in shipped]
    assert world.config.register_bundled(shipped) == len(shipped)
    assert world.config.register_bundled(shipped) == 0
    assert world.config.get_schema("orders").author == "control"
    assert world.audited[0].actor is not None and world.audited[0].actor.service == "control"


def test_a_shipped_schema_the_document_fails_is_skipped_not_fatal(world: World) -> None:
    world.config.set("orders", doc(500), author="a")
    changed = world.config.register_bundled(
        [BundledSchema("orders", LIMIT, "shop/orders/v1/config/orders.schema.json")]
    )
    assert changed == 0
    with pytest.raises(NotFound):
        world.config.get_schema("orders")


def test_namespaces_list_those_with_a_schema_or_a_document(world: World) -> None:
    world.config.set_schema("orders", LIMIT, author="admin")
    world.config.set("flags", "{}", author="a")
    world.config.set("flags", "{}", author="a")
    summary = {s.namespace: (s.version, s.has_schema) for s in world.config.namespaces()}
    assert summary == {"flags": (2, False), "orders": (0, True)}


def test_client_reports_replace_each_other_and_old_ones_are_forgotten(world: World) -> None:
    world.config.report(
        "orders", "orders@h:1", 3, accepted=False, error="x" * 5000, running_version=2
    )
    world.config.report("orders", "orders@h:2", 3, accepted=True, running_version=3)
    world.config.report("orders", "orders@h:2", 4, accepted=True, running_version=4)
    reports = world.config.client_status("orders")
    assert [(r.client, r.version, r.accepted, r.running_version) for r in reports] == [
        ("orders@h:1", 3, False, 2),
        ("orders@h:2", 4, True, 4),
    ]
    assert len(reports[0].error) == 2000
    world.clock.now += REPORT_RETENTION
    world.config.report("orders", "orders@h:3", 4, accepted=True, running_version=4)
    assert [r.client for r in world.config.client_status("orders")] == ["orders@h:3"]
    with pytest.raises(InvalidArgument):
        world.config.report("orders", "", 1, accepted=True)


def test_the_store_refuses_a_gap_a_rewrite_and_a_deletion(world: World) -> None:
    world.config.set("orders", doc(1), author="a")
    with world.db.transaction() as conn:
        for statement in (
            "INSERT INTO config_version (namespace, version, document, author, reason,"
            " created_micros) VALUES ('orders', 3, '{}', 'x', '', 0)",
            "UPDATE config_version SET document = '{}'",
            "DELETE FROM config_version",
            "UPDATE config_namespace SET current_version = 7",
        ):
            with pytest.raises(sqlite3.IntegrityError):
                conn.execute(statement)


# ------------------------------------------------------------------------------------ watch


class Watcher:
    """A watch stream drained on a thread of its own, as a server worker would."""

    def __init__(self, world: World, namespace: str, since: int) -> None:
        self.stream = world.config.watch(namespace, since, client="test")
        self.events: list[WatchEvent] = []
        self._seen = threading.Condition()
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        for event in self.stream:
            with self._seen:
                self.events.append(event)
                self._seen.notify_all()

    def wait_for(self, count: int) -> list[tuple[int, bool]]:
        with self._seen:
            assert self._seen.wait_for(lambda: len(self.events) >= count, 5), self.events
        return [(e.config.version, e.snapshot) for e in self.events]

    def close(self) -> None:
        self.stream.cancel()
        self.thread.join(5)
        assert not self.thread.is_alive()


def test_a_new_watch_starts_with_an_empty_snapshot_then_every_change(world: World) -> None:
    watcher = Watcher(world, "orders", 0)
    assert watcher.wait_for(1) == [(0, True)]
    assert watcher.events[0].config.document == "{}"
    for limit in (1, 2, 3):
        world.config.set("orders", doc(limit), author="a")
    assert watcher.wait_for(4) == [(0, True), (1, False), (2, False), (3, False)]
    assert watcher.events[-1].config.document == doc(3)
    watcher.close()


def test_a_watch_resumes_after_its_version_missing_nothing(world: World) -> None:
    for limit in range(1, 41):  # more than one batch behind
        world.config.set("orders", doc(limit), author="a")
    watcher = Watcher(world, "orders", 3)
    got = watcher.wait_for(37)
    assert got == [(v, False) for v in range(4, 41)]
    world.config.set("orders", doc(99), author="a")
    assert watcher.wait_for(38)[-1] == (41, False)
    watcher.close()


def test_a_watch_from_the_current_version_waits_for_the_next(world: World) -> None:
    world.config.set("orders", doc(1), author="a")
    watcher = Watcher(world, "orders", 1)
    world.config.set("orders", doc(2), author="a")
    assert watcher.wait_for(1) == [(2, False)]
    watcher.close()


def test_a_watch_from_beyond_the_current_version_gets_a_snapshot(world: World) -> None:
    world.config.set("orders", doc(1), author="a")
    world.config.set("orders", doc(2), author="a")
    watcher = Watcher(world, "orders", 9)
    assert watcher.wait_for(1) == [(2, True)]
    world.config.set("orders", doc(3), author="a")
    assert watcher.wait_for(2) == [(2, True), (3, False)]
    watcher.close()


def test_every_watch_ends_when_the_feed_closes(world: World) -> None:
    watchers = [Watcher(world, "orders", 0), Watcher(world, "flags", 0)]
    for watcher in watchers:
        watcher.wait_for(1)
    world.feed.close()
    for watcher in watchers:
        watcher.thread.join(5)
        assert not watcher.thread.is_alive()


def test_a_bad_watch_is_refused_before_it_starts(world: World) -> None:
    with pytest.raises(InvalidArgument):
        world.config.watch("Orders", 0)
    with pytest.raises(InvalidArgument):
        world.config.watch("orders", -1)


def test_the_poller_tells_the_feed_of_another_processs_versions(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    mine, theirs = Database(path, MIGRATIONS), Database(path, MIGRATIONS)
    feed = ChangeFeed()
    poller = FeedPoller(snapshots(mine), feed)
    other = ConfigUseCases(transactions(theirs), snapshots(theirs), ChangeFeed())
    other.set("orders", doc(1), author="a")
    other.set("orders", doc(2), author="a")
    assert feed.latest("orders") == 0
    assert poller.run_once() == 1
    assert feed.latest("orders") == 2
    assert poller.run_once() == 0
    mine.close()
    theirs.close()
