"""order_views on the service kit: its settings, and the Kafka handlers' translation of an event
into the projector's Fact (times as aware UTC datetimes)."""

from __future__ import annotations

import datetime
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from meshkit.events import Event, reader_catalog
from meshkit.settings import SettingsError
from meshkit.timestamps import EPOCH, UTC
from order_views.adapters.kafka import CONTRACT_PACKAGES
from order_views.bootstrap import SERVICE
from order_views.domain.model import OrderRecord, TimelineEntry
from order_views.entrypoints.events import handlers, to_fact

PLACED = datetime.datetime(2025, 1, 1, 12, 0, 0, 123_000, tzinfo=UTC)


def event(data: dict[str, Any], time: datetime.datetime | None = None) -> Event:
    return Event(
        id="o-1:1",
        type="shop.orders.v1.OrderPlaced",
        source="/meshkit/orders",
        subject="o-1",
        time=time,
        data=data,
        topic="orders.events.v1",
        partition=0,
        offset=0,
        key="o-1",
        headers={},
    )


def test_settings_are_the_kits_plus_the_rebuild_timeout() -> None:
    settings = SERVICE.load_settings(
        {"ORDER_VIEWS_PORT": "0", "ORDER_VIEWS_REBUILD_TIMEOUT_S": "30"}
    )
    assert settings.rebuild_timeout_s == 30.0
    assert settings.db_path == Path(".mesh/data/order_views.db")
    assert (SERVICE.database, SERVICE.events) == (False, None)
    with pytest.raises(SettingsError, match="ORDER_VIEWS_REBUILD_TIMEOUT_S"):
        SERVICE.load_settings({"ORDER_VIEWS_PORT": "0", "ORDER_VIEWS_REBUILD_TIMEOUT_S": "0.5"})


@pytest.mark.parametrize(
    ("data", "time", "occurred"),
    [
        ({"occurred_at": PLACED}, None, PLACED),  # the record's own time first
        (
            {"occurred_at": PLACED.astimezone(datetime.timezone(datetime.timedelta(hours=9)))},
            None,
            PLACED,
        ),
        ({}, PLACED, PLACED),  # else the CloudEvents time
        ({"occurred_at": PLACED.replace(tzinfo=None)}, None, PLACED),  # naive means UTC
        ({}, None, EPOCH),
    ],
    ids=["record", "other-zone", "cloudevents", "naive", "none"],
)
def test_an_event_becomes_a_fact_in_utc(
    data: dict[str, Any], time: datetime.datetime | None, occurred: datetime.datetime
) -> None:
    fact = to_fact(event(data, time))
    assert fact.occurred_at == occurred and fact.occurred_at.tzinfo is UTC
    assert (fact.id, fact.type) == ("o-1:1", "shop.orders.v1.OrderPlaced")


class RecordingStore:
    """A ViewStore that keeps what the handler wrote."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.saved: list[OrderRecord] = []
        self.entries: list[TimelineEntry] = []

    def get(self, order_id: str) -> OrderRecord | None:
        return None

    def save(self, record: OrderRecord, *, reindex: bool) -> None:
        self.saved.append(record)

    def add_timeline(self, entry: TimelineEntry) -> None:
        self.entries.append(entry)


def test_the_handlers_project_through_the_store_they_are_given() -> None:
    stores: list[RecordingStore] = []

    def store_over(conn: sqlite3.Connection) -> RecordingStore:
        stores.append(RecordingStore(conn))
        return stores[-1]

    conn = sqlite3.connect(":memory:")
    placed = event({"order_id": "o-1", "customer_id": "c-1", "occurred_at": PLACED})
    table = handlers(store_over)

    table["shop.orders.v1.OrderPlaced"](placed, conn)

    [store] = stores
    assert store.conn is conn
    assert [(r.order_id, r.customer_id, r.created_at) for r in store.saved] == [
        ("o-1", "c-1", PLACED)
    ]
    assert [e.occurred_at for e in store.entries] == [PLACED]
    assert "shop.inventory.v1.StockSet" not in table
    conn.close()


def test_the_topics_the_read_model_is_rebuilt_from_keep_their_whole_history() -> None:
    # A rebuild replays these topics from offset 0 (and refuses once a log lost its start):
    # their topic.json must keep every record, not the broker's default retention.
    configs = reader_catalog(CONTRACT_PACKAGES).topic_configs
    assert sorted(configs) == [
        "inventory.events.v1",
        "orders.events.v1",
        "payments.events.v1",
        "shipping.events.v1",
    ]
    for topic, config in configs.items():
        assert config.get("retention.ms") == "-1", topic
        assert config.get("retention.bytes") == "-1", topic
        assert config.get("cleanup.policy") == "delete", topic  # compaction drops history
