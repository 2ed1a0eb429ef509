"""Copies and catalogs written before times were kept in microseconds keep serving after the
upgrade: their migrations give exactly what a fresh projection writes, and page tokens of the old
cursor format are refused (start over) rather than read wrongly."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import pytest
from unit.order_views.shop_events import BASE, Projection, order_life

from meshkit.db import Database
from meshkit.errors import InvalidArgument
from meshkit.money import Money
from meshkit.timestamps import from_micros
from order_views.adapters.copies import CATALOG_MIGRATIONS, SqliteCopies
from order_views.adapters.sqlite import MIGRATIONS
from order_views.app.progress import Progress
from order_views.app.queries import OrderQueries

MS_SCHEMA = MIGRATIONS[:3]  # the read model as it was, times in integer milliseconds
SECONDS_CATALOG = CATALOG_MIGRATIONS[:1]  # the catalog as it was, times in float seconds


def as_milliseconds_copy(source: Database, path: Path) -> None:
    """Write ``source``'s rows into a copy of the millisecond schema at ``path``."""
    old = Database(path, MS_SCHEMA)
    with source.snapshot() as src, old.transaction() as dst:
        for row in src.execute("SELECT * FROM order_summary"):
            values = dict(row)
            for column in ("created_at", "updated_at"):
                micros = values.pop(f"{column}_us")
                assert micros % 1000 == 0, "the events' own precision is the millisecond"
                values[f"{column}_ms"] = micros // 1000
            dst.execute(
                f"INSERT INTO order_summary ({', '.join(values)})"
                f" VALUES ({', '.join('?' * len(values))})",
                list(values.values()),
            )
        for row in src.execute("SELECT * FROM order_timeline"):
            values = dict(row)
            values["occurred_at_ms"] = values.pop("occurred_at_us") // 1000
            dst.execute(
                f"INSERT INTO order_timeline ({', '.join(values)})"
                f" VALUES ({', '.join('?' * len(values))})",
                list(values.values()),
            )
        for row in src.execute(
            "SELECT rowid, order_id, customer_id, skus, address FROM order_search"
        ):
            dst.execute(
                "INSERT INTO order_search (rowid, order_id, customer_id, skus, address)"
                " VALUES (?, ?, ?, ?, ?)",
                tuple(row),
            )
    old.close()


def test_a_milliseconds_copy_migrates_to_what_a_fresh_projection_writes(
    projection: Callable[[str], Projection], tmp_path: Path
) -> None:
    lives = [
        order_life(f"o-{n}", customer="c-1", outcome=outcome, at=n, price=price)
        for n, (outcome, price) in enumerate(
            [
                ("confirmed", Money.of("JPY", 600)),
                ("declined", Money.of("KWD", 0, 625_000_000)),
                ("unshippable", Money.of("EUR", 12, 500_000_000)),
            ]
        )
    ]
    fresh = projection("fresh")
    for life in lives:
        for _, _, fact in life:
            fresh.apply(fact)
    as_milliseconds_copy(fresh.db, tmp_path / "old.db")

    migrated = projection("old")  # opens tmp_path/old.db: the new migration runs

    assert migrated.dump() == fresh.dump()
    with migrated.db.snapshot() as conn:
        indexed = {
            row["name"]
            for index in ("summary_by_customer", "summary_by_time", "summary_by_status")
            for row in conn.execute(f"PRAGMA index_info({index})")
        }
    assert "created_at_us" in indexed and "created_at_ms" not in indexed
    listed = migrated.model.list_orders("c-1", None, 10, None)
    assert [r.order_id for r, _ in listed] == ["o-2", "o-1", "o-0"]
    newest, cursor = listed[0]
    assert newest.created_at == from_micros(cursor[0]) == BASE + datetime.timedelta(seconds=3)
    view = migrated.model.view("o-0")
    assert view is not None and str(view.record.total) == "JPY 1200"
    # It goes on projecting after the upgrade.
    for _, _, fact in order_life("o-3", customer="c-1", at=3):
        migrated.apply(fact)
    assert [r.order_id for r, _ in migrated.model.list_orders("c-1", None, 1, None)] == ["o-3"]


def test_a_catalog_in_float_seconds_migrates_to_integer_microseconds(tmp_path: Path) -> None:
    path = tmp_path / "views.db"
    old = Database(path, SECONDS_CATALOG)
    with old.transaction() as conn:
        conn.execute("INSERT INTO catalog (id, catalog_id) VALUES (1, 'cafe0123')")
        conn.execute(
            "INSERT INTO generations VALUES (1, 'views.g1.db', 'order_views.cafe0123.g1',"
            " 'serving', 1735689600.123456, 1735689601.5)"
        )
    old.close()

    def no_runner(db: Database, group: str, *, replay: bool = False) -> object:
        raise AssertionError("not started in this test")

    copies = SqliteCopies(path, no_runner, Progress())  # type: ignore[arg-type]
    try:
        assert copies.active().generation == 1
        assert copies.active().group == "order_views.cafe0123.g1"
        fresh = copies.create()
        copies.discard(copies.swap(fresh))
    finally:
        copies.close()
    catalog = Database(path)
    with catalog.snapshot() as conn:
        rows = conn.execute(
            "SELECT generation, created_at_us, swapped_at_us, typeof(created_at_us)"
            " FROM generations ORDER BY generation"
        ).fetchall()
    catalog.close()
    [(generation, created, swapped, kind)] = [tuple(r) for r in rows]
    assert (generation, kind) == (2, "integer")
    assert isinstance(created, int) and isinstance(swapped, int) and swapped >= created


def test_the_migrated_catalog_keeps_the_old_times_exactly(tmp_path: Path) -> None:
    path = tmp_path / "views.db"
    old = Database(path, SECONDS_CATALOG)
    with old.transaction() as conn:
        conn.execute(
            "INSERT INTO generations VALUES (4, 'views.g4.db', 'g4', 'serving',"
            " 1735689600.123456, NULL)"
        )
    old.close()
    migrated = Database(path, CATALOG_MIGRATIONS)
    with migrated.snapshot() as conn:
        row = conn.execute("SELECT created_at_us, swapped_at_us FROM generations").fetchone()
    migrated.close()
    assert tuple(row) == (1_735_689_600_123_456, None)


def test_a_page_token_of_the_milliseconds_format_is_refused(
    projection: Callable[[str], Projection],
) -> None:
    copy = projection("a")
    queries = OrderQueries(lambda: nullcontext(copy.model), Progress())
    scope = ["list", "c-1", ""]
    raw = json.dumps(
        {
            "s": hashlib.sha256(json.dumps(scope).encode()).hexdigest()[:16],
            "c": [1_735_689_600_000, "o-1"],
        },
        separators=(",", ":"),
    )
    before_the_upgrade = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    with pytest.raises(InvalidArgument) as refused:
        queries.list_orders("c-1", None, 3, before_the_upgrade)
    assert refused.value.reason == "BAD_PAGE_TOKEN"
