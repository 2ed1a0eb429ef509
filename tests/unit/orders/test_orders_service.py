"""Orders on the service kit: its settings, its event records against their contracts, and the
upgrade of a database written with float-second times to exact integer microseconds."""

from __future__ import annotations

import io
import json
from pathlib import Path

import fastavro
import pytest

from meshkit.address import Address
from meshkit.db import Database
from meshkit.events import EventCatalog
from meshkit.money import Money
from meshkit.settings import SettingsError
from meshkit.timestamps import from_micros, to_millis
from orders.adapters.events import EVENTS
from orders.adapters.sqlite import MIGRATIONS, SqliteUnitOfWork
from orders.bootstrap import SERVICE
from orders.domain.events import (
    OrderCancelled,
    OrderConfirmed,
    OrderEvent,
    OrderPaymentAuthorized,
    OrderPaymentCaptured,
    OrderPlaced,
    OrderShipmentCreated,
    OrderStockReserved,
)
from orders.domain.model import OrderStatus
from orders.domain.saga import SagaStatus, Step
from orders.domain.values import OrderLine

T = from_micros(1_700_000_000_123_456)


# ---------------------------------------------------------------------------------------- settings


def test_settings_are_orders_own_with_a_24_hour_request_window() -> None:
    settings = SERVICE.load_settings({"ORDERS_PORT": "0"})
    assert (settings.request_retention_s, settings.step_timeout_s) == (86_400.0, 15.0)
    assert settings.db_path == Path(".mesh/data/orders.db")
    hour = SERVICE.load_settings({"ORDERS_PORT": "0", "ORDERS_REQUEST_RETENTION_S": "3600"})
    assert hour.request_retention_s == 3600.0
    with pytest.raises(SettingsError, match=r"ORDERS_REQUEST_RETENTION_S.*at least 60"):
        SERVICE.load_settings({"ORDERS_PORT": "0", "ORDERS_REQUEST_RETENTION_S": "59"})
    # Peers are found by name (meshkit.addresses), never configured as orders' own targets.
    with pytest.raises(SettingsError, match="unknown setting ORDERS_INVENTORY_TARGET"):
        SERVICE.load_settings({"ORDERS_PORT": "0", "ORDERS_INVENTORY_TARGET": "x:1"})


# ------------------------------------------------------------------------------- event contracts

ADDRESS = Address("Ada", "1 Main St", "Berlin", "10115", "DE", line2="Apt 2")
EVERY_EVENT: list[OrderEvent] = [
    OrderPlaced(
        "o-1",
        T,
        "r-1",
        "c-1",
        (OrderLine("mug", 2, Money.of("EUR", 12, 500_000_000)),),
        ADDRESS,
        Money.of("EUR", 25),
    ),
    OrderStockReserved("o-1", T),
    OrderPaymentAuthorized("o-1", T, "pay-1"),
    OrderShipmentCreated("o-1", T, "shp-1", "TRK-1"),
    OrderPaymentCaptured("o-1", T, "pay-1"),
    OrderConfirmed("o-1", T),
    OrderCancelled("o-1", T, "authorize payment: declined"),
]


@pytest.mark.parametrize("event", EVERY_EVENT, ids=lambda e: type(e).__name__)
def test_every_event_round_trips_its_avro_contract(event: OrderEvent) -> None:
    catalog = EventCatalog.from_package("shop.orders.v1")
    name = EVENTS.type_of(event)
    assert name == f"shop.orders.v1.{type(event).__name__}" and EVENTS.key_of(event) == "o-1"
    assert catalog.get(name).topic == "orders.events.v1"
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, catalog.get(name).parsed, EVENTS.to_record(event))
    buffer.seek(0)
    read = fastavro.schemaless_reader(buffer, catalog.get(name).parsed, None)
    back = EVENTS.event(name, read)
    # Avro keeps timestamp-millis: the same event, its time cut to the millisecond.
    assert to_millis(back.occurred_at) == to_millis(T)
    assert back == type(event)(**{**vars(event), "occurred_at": back.occurred_at})


# --------------------------------------------------------------------------------------- upgrade

PLACED_RECORD = {
    "order_id": "o-1",
    "request_id": "r-1",
    "customer_id": "c-1",
    "lines": [
        {
            "sku": "mug",
            "quantity": 2,
            "unit_price": {"currency_code": "EUR", "units": 12, "nanos": 500000000},
        }
    ],
    "total": {"currency_code": "EUR", "units": 25, "nanos": 0},
    "shipping_address": {
        "name": "Ada",
        "line1": "1 Main St",
        "line2": "",
        "city": "Berlin",
        "postal_code": "10115",
        "country_code": "DE",
    },
    "occurred_at": 1700000000123,
}


def test_upgrading_turns_float_seconds_into_exact_integer_micros(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    before = Database(path, MIGRATIONS[:4])  # the previous release: REAL unix seconds
    placed_at, reserved_at = 1700000000.123456, 1700000001.5
    snapshot = {
        "order_id": "o-1",
        "customer_id": "c-1",
        "request_id": "r-1",
        "lines": PLACED_RECORD["lines"],
        "shipping_address": PLACED_RECORD["shipping_address"],
        "total": PLACED_RECORD["total"],
        "status": "PENDING",
        "cancellation_reason": "",
        "created_at": placed_at,
        "updated_at": reserved_at,
        "version": 2,
        "stock_reserved": True,
        "payment_id": "",
        "payment_captured": False,
        "shipment_id": "",
        "tracking_number": "",
    }
    with before.transaction() as conn:
        conn.execute(
            "INSERT INTO order_events VALUES ('o-1', 1, 'shop.orders.v1.OrderPlaced', ?, ?)",
            (json.dumps(PLACED_RECORD), placed_at),
        )
        conn.execute(
            "INSERT INTO order_events VALUES ('o-1', 2, 'shop.orders.v1.OrderStockReserved', ?, ?)",
            (json.dumps({"order_id": "o-1", "occurred_at": 1700000001500}), reserved_at),
        )
        conn.execute(
            "INSERT INTO order_snapshots VALUES ('o-1', 2, ?, ?)",
            (json.dumps(snapshot), reserved_at),
        )
        conn.execute("INSERT INTO order_requests VALUES ('r-1', 'o-1', 'digest', ?)", (placed_at,))
        conn.execute(
            "INSERT INTO sagas (order_id, status, step, attempt, compensations, reason,"
            " last_error, payment_token, started_at, step_started_at, next_attempt_at,"
            " updated_at, traceparent) VALUES ('o-1', 'RUNNING', 'AUTHORIZE_PAYMENT', 1, '[]',"
            " '', 'UNAVAILABLE', 'tok_visa', ?, ?, ?, ?, 'tp')",
            (placed_at, reserved_at, reserved_at + 0.25, reserved_at),
        )
    before.close()

    db = Database(path, MIGRATIONS)
    try:
        with db.snapshot() as conn:
            for table, column in (
                ("order_events", "occurred_at"),
                ("order_snapshots", "occurred_at"),
                ("order_requests", "created_at"),
                ("sagas", "next_attempt_at"),
            ):
                kinds = {r[0] for r in conn.execute(f"SELECT typeof({column}) FROM {table}")}
                assert kinds == {"integer"}, table
            micros = [r[0] for r in conn.execute("SELECT occurred_at FROM order_events")]
        assert micros == [1700000000123456, 1700000001500000]
        placed, reserved = from_micros(micros[0]), from_micros(micros[1])
        with SqliteUnitOfWork(db) as uow:
            order = uow.orders.get("o-1")  # from the converted snapshot
            history = uow.orders.history("o-1")
            then = uow.orders.get("o-1", as_of=placed)
            saga = uow.sagas.get("o-1")
            seen = uow.requests.get("r-1")
        assert order is not None and then is not None and saga is not None and seen is not None
        assert (order.version, order.status, order.stock_reserved) == (2, OrderStatus.PENDING, True)
        assert (order.created_at, order.updated_at) == (placed, reserved)
        assert order.total == Money.of("EUR", 25) and order.shipping_address is not None
        assert [e.occurred_at for _, e in history] == [placed, reserved]
        assert then.version == 1, "an event is visible at its own, exact, time"
        assert (saga.status, saga.step, saga.attempt) == (
            SagaStatus.RUNNING,
            Step.AUTHORIZE_PAYMENT,
            1,
        )
        assert saga.next_attempt_at == from_micros(1700000001750000)
        assert (seen.order_id, seen.created_at) == ("o-1", placed)
    finally:
        db.close()
