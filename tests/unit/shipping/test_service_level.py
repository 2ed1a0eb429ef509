"""Shipping's service level: decided once at booking (by the ServiceLevels port, a feature flag
in the mesh), stored with the shipment, answered by GetShipment and by a replay unchanged."""

from __future__ import annotations

import datetime
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from meshkit.address import Address
from meshkit.db import Database
from meshkit.server import create_server
from meshkit.service import binding
from shipping.adapters.sqlite import MIGRATIONS, SqliteUnitOfWork
from shipping.app.shipping import Shipping
from shipping.config import Settings
from shipping.domain.commands import CreateShipment
from shipping.domain.model import Item, ServiceLevel
from shipping.entrypoints.grpc_api import ShippingServiceServicer
from shop.common.v1 import common_pb2
from shop.shipping.v1 import shipping_pb2 as pb
from shop.shipping.v1 import shipping_pb2_grpc as pb_grpc

BERLIN = Address("Ada Lovelace", "Unter den Linden 1", "Berlin", "10117", "DE")


class Sink:
    """Where the unit of work appends its events (the outbox's place): kept in a list."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def publish(self, conn: sqlite3.Connection, event: Any, *, event_id: str | None = None) -> str:
        self.events.append(event)
        return event_id or str(len(self.events))


class ExpressFor:
    """ServiceLevels answering EXPRESS for the customers in ``express``; records what it was
    asked."""

    def __init__(self, *express: str) -> None:
        self.express = set(express)
        self.asked: list[tuple[str, str, str]] = []

    def level_for(self, *, order_id: str, customer_id: str, address: Address) -> ServiceLevel:
        self.asked.append((order_id, customer_id, address.country_code))
        return ServiceLevel.EXPRESS if customer_id in self.express else ServiceLevel.STANDARD


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "shipping.db", MIGRATIONS)
    yield database
    database.close()


def command(key: str, order_id: str = "order-1") -> CreateShipment:
    return CreateShipment(key, order_id, BERLIN, (Item("mug", 1),))


def test_the_level_is_asked_once_at_booking_and_kept_by_the_store_and_a_replay(
    db: Database,
) -> None:
    levels = ExpressFor("cust-ada")
    sink = Sink()
    shipping = Shipping(lambda: SqliteUnitOfWork(db, sink), service_levels=levels)

    express = shipping.create(command("k1"), customer_id="cust-ada")
    standard = shipping.create(command("k2", "order-2"), customer_id="cust-bob")
    assert express.service_level is ServiceLevel.EXPRESS
    assert standard.service_level is ServiceLevel.STANDARD
    assert levels.asked == [("order-1", "cust-ada", "DE"), ("order-2", "cust-bob", "DE")]
    assert shipping.get(express.shipment_id).service_level is ServiceLevel.EXPRESS
    assert shipping.get(standard.shipment_id).service_level is ServiceLevel.STANDARD

    # The flag turned off for Ada: a replay still answers the shipment as booked, unasked.
    levels.express.clear()
    assert shipping.create(command("k1"), customer_id="cust-ada") == express
    assert len(levels.asked) == 2
    assert [type(e).__name__ for e in sink.events] == ["ShipmentCreated", "ShipmentCreated"]


def test_shipments_booked_before_service_levels_read_as_standard(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = Database(path, MIGRATIONS[:2])  # the schema before the service level's migration
    with old.transaction() as conn:
        conn.execute(
            "INSERT INTO shipments VALUES ('shp-old', 'order-0', 'Ada', 'Unter den Linden 1', '',"
            " 'Berlin', '10117', 'DE', 'MK0000000000', 'BOOKED', 0, 0)"
        )
        conn.execute(
            "INSERT INTO idempotency_keys VALUES ('k0', 'CreateShipment', 'f', ?, 0)",
            (
                '{"shipment_id":"shp-old","order_id":"order-0","address":{"name":"Ada",'
                '"line1":"Unter den Linden 1","line2":"","city":"Berlin","postal_code":"10117",'
                '"country_code":"DE"},"items":[["mug",1]],"tracking_number":"MK0000000000",'
                '"status":"BOOKED","created_at_ms":0,"updated_at_ms":0}',
            ),
        )
    old.close()
    db = Database(path, MIGRATIONS)
    try:
        with SqliteUnitOfWork(db, Sink()) as uow:
            stored = uow.shipments.get("shp-old")
            replayed = uow.idempotency.get("k0")
        assert stored is not None and stored.service_level is ServiceLevel.STANDARD
        assert replayed is not None and replayed.result.service_level is ServiceLevel.STANDARD
        assert stored.created_at == datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    finally:
        db.close()


def request(key: str, order_id: str) -> pb.CreateShipmentRequest:
    return pb.CreateShipmentRequest(
        idempotency_key=key,
        order_id=order_id,
        address=BERLIN.to_wire(common_pb2.Address),
        items=[pb.ShipmentItem(sku="mug", quantity=1)],
    )


def test_get_shipment_answers_the_service_level_on_the_wire(db: Database) -> None:
    # No caller acts for a customer here (no token): the order id is the level's only clue.
    levels = ExpressFor()
    shipping = Shipping(lambda: SqliteUnitOfWork(db, Sink()), service_levels=levels)
    server = create_server(
        "shipping",
        Settings(port=0),
        [binding(ShippingServiceServicer(shipping), pb_grpc.add_ShippingServiceServicer_to_server)],
    )
    port = server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.ShippingServiceStub(channel)
            booked = stub.CreateShipment(request("k1", "order-9"), timeout=10).shipment
            assert booked.service_level == pb.SERVICE_LEVEL_STANDARD
            levels.express.add("")  # the next booking goes express
            express = stub.CreateShipment(request("k2", "order-10"), timeout=10).shipment
            read = stub.GetShipment(
                pb.GetShipmentRequest(shipment_id=express.shipment_id), timeout=10
            ).shipment
        assert read.service_level == pb.SERVICE_LEVEL_EXPRESS
        assert levels.asked == [("order-9", "", "DE"), ("order-10", "", "DE")]
    finally:
        server.stop(0)
