"""Shipping's use cases against an in-memory fake and against SQLite: one suite, both stores.

The SQLite store writes its events through a real ``meshkit.events.Outbox`` (over confluent-kafka's
mock schema registry, so no network), and the tests read them back from the outbox table: what a
use case promised about events is checked on the bytes the relay would publish.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import io
import itertools
import json
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import fastavro
import grpc
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from meshkit import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, SettingsError
from meshkit.address import Address
from meshkit.db import Database
from meshkit.events import EventCatalog, EventPublisher, Outbox
from meshkit.ports import IdempotentResult
from meshkit.server import create_server
from meshkit.service import binding
from shipping.adapters.events import EVENTS
from shipping.adapters.sqlite import MIGRATIONS, SqliteUnitOfWork
from shipping.app.shipping import Shipping
from shipping.bootstrap import SERVICE
from shipping.config import Settings
from shipping.domain.commands import CancelShipment, CreateShipment
from shipping.domain.events import ShippingEvent
from shipping.domain.model import (
    Item,
    Shipment,
    ShipmentStatus,
    luhn_check_digit,
    tracking_number_for,
)
from shipping.entrypoints.grpc_api import ShippingServiceServicer
from shop.common.v1 import common_pb2
from shop.shipping.v1 import shipping_pb2 as pb
from shop.shipping.v1 import shipping_pb2_grpc as pb_grpc

REPO = Path(__file__).resolve().parents[3]
AVRO = REPO / "proto" / "shop" / "shipping" / "v1" / "avro"
T0 = datetime.datetime(2025, 5, 1, 12, 0, 0, 123000, tzinfo=datetime.UTC)

BERLIN = Address(
    name="Ada Lovelace",
    line1="Unter den Linden 1",
    city="Berlin",
    postal_code="10117",
    country_code="DE",
)


def create(key: str = "k1", *, address: Address | None = BERLIN, **changes: Any) -> CreateShipment:
    command = CreateShipment(key, "order-1", address, (Item("mug", 2), Item("cap", 1)))
    return dataclasses.replace(command, **changes)


# --- the in-memory fake ---------------------------------------------------------------------


class FakeStore:
    """Committed state of the fake: what a database would hold."""

    def __init__(self) -> None:
        self.shipments: dict[str, Shipment] = {}
        self.keys: dict[str, IdempotentResult[Shipment]] = {}
        self.events: list[ShippingEvent] = []


class FakeShipments:
    def __init__(self, items: dict[str, Shipment]) -> None:
        self.items = items

    def get(self, shipment_id: str) -> Shipment | None:
        return self.items.get(shipment_id)

    def add(self, shipment: Shipment) -> None:
        assert shipment.shipment_id not in self.items
        self.items[shipment.shipment_id] = shipment

    def save(self, shipment: Shipment) -> None:
        assert shipment.shipment_id in self.items
        self.items[shipment.shipment_id] = shipment

    def tracking_number_taken(self, tracking_number: str) -> bool:
        return any(s.tracking_number == tracking_number for s in self.items.values())


class FakeIdempotency:
    def __init__(self, items: dict[str, IdempotentResult[Shipment]]) -> None:
        self.items = items

    def get(self, key: str) -> IdempotentResult[Shipment] | None:
        return self.items.get(key)

    def add(self, record: IdempotentResult[Shipment]) -> None:
        assert record.key not in self.items
        self.items[record.key] = record


class FakeUnitOfWork:
    """Works on copies and publishes them to the store only on a clean exit, like a transaction."""

    def __init__(self, store: FakeStore) -> None:
        self._store = store

    def __enter__(self) -> Self:
        self.shipments = FakeShipments(copy.copy(self._store.shipments))
        self.idempotency = FakeIdempotency(copy.copy(self._store.keys))
        self.events: list[ShippingEvent] = []
        return self

    def publish(self, event: ShippingEvent, *, event_id: str | None = None) -> None:
        EVENTS.to_record(event)  # every event must map to its Avro record
        self.events.append(event)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self._store.shipments = self.shipments.items
            self._store.keys = self.idempotency.items
            self._store.events += self.events


# --- SQLite with the real outbox over a mock registry ---------------------------------------


def mock_registry(name: str = "shipping-unit-tests") -> SchemaRegistryClient:
    """A registry holding shipping's schemas as `mesh up`'s register-all would register them."""
    client = empty_registry(name)
    for event_type in EventCatalog.load(AVRO):
        # The mock matches schema text verbatim (a real registry compares parsed schemas) and the
        # serializer strips the text it looks up, so register it stripped too.
        text = event_type.schema_text.strip()
        client.register_schema(event_type.subject, Schema(text, "AVRO"))
    return client


def empty_registry(name: str) -> SchemaRegistryClient:
    """confluent-kafka's in-process mock registry (its public route: a ``mock://`` URL)."""
    return SchemaRegistryClient.new_client({"url": f"mock://{name}"})


def outbox_events(db: Database) -> list[tuple[str, str, dict[str, Any], dict[str, str]]]:
    """``(ce_type, key, decoded record, headers)`` of every outbox row, in id order."""
    schemas = {t.full_name: fastavro.parse_schema(json.loads(t.schema_text)) for t in catalog()}
    found = []
    with db.snapshot() as conn:
        for row in conn.execute("SELECT key, value, headers FROM meshkit_outbox ORDER BY id"):
            headers = dict(json.loads(row["headers"]))
            value = bytes(row["value"])
            assert value[0] == 0 and struct.unpack(">I", value[1:5])[0] > 0  # Confluent framing
            record = fastavro.schemaless_reader(io.BytesIO(value[5:]), schemas[headers["ce_type"]])
            assert isinstance(record, dict)
            found.append((headers["ce_type"], row["key"], record, headers))
    return found


def catalog() -> EventCatalog:
    return EventCatalog.load(AVRO)


def outbox_publisher(
    registry: SchemaRegistryClient, source: str = "/meshkit/shipping"
) -> EventPublisher[ShippingEvent]:
    """The kit's publisher over a real Outbox, as ``Service.create`` builds it."""
    return EventPublisher(Outbox(catalog(), registry, source=source), EVENTS)


@dataclasses.dataclass
class Harness:
    """A Shipping over one store, and a way to read back the events it committed."""

    shipping: Shipping
    event_names: Callable[[], list[str]]
    make: Callable[..., Shipping]


@pytest.fixture(params=["fake", "sqlite"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    ids = (f"shp-{n}" for n in itertools.count(1))
    clock = iter(T0 + datetime.timedelta(seconds=n) for n in itertools.count())

    def options(**overrides: Any) -> dict[str, Any]:
        return {"clock": lambda: next(clock), "new_id": lambda: next(ids), **overrides}

    if request.param == "fake":
        store = FakeStore()

        def make_fake(**overrides: Any) -> Shipping:
            return Shipping(lambda: FakeUnitOfWork(store), **options(**overrides))

        yield Harness(
            make_fake(),
            lambda: [type(e).__name__ for e in store.events],
            make_fake,
        )
        return
    db = Database(tmp_path / "shipping.db", MIGRATIONS)
    publisher = outbox_publisher(mock_registry())

    def make_sqlite(**overrides: Any) -> Shipping:
        return Shipping(lambda: SqliteUnitOfWork(db, publisher), **options(**overrides))

    yield Harness(
        make_sqlite(),
        lambda: [ce_type.rsplit(".", 1)[1] for ce_type, *_ in outbox_events(db)],
        make_sqlite,
    )
    db.close()


# --- create ---------------------------------------------------------------------------------


def test_create_books_a_shipment_with_a_tracking_number(harness: Harness) -> None:
    shipment = harness.shipping.create(create())
    assert shipment.status is ShipmentStatus.BOOKED
    assert shipment.order_id == "order-1"
    assert shipment.address == BERLIN
    assert shipment.items == (Item("mug", 2), Item("cap", 1))
    assert shipment.tracking_number == tracking_number_for(shipment.shipment_id)
    assert shipment.created_at == shipment.updated_at == T0
    assert harness.shipping.get(shipment.shipment_id) == shipment
    assert harness.event_names() == ["ShipmentCreated"]


def test_replay_with_the_same_key_and_request_returns_the_first_result_and_acts_once(
    harness: Harness,
) -> None:
    first = harness.shipping.create(create("k1"))
    again = harness.shipping.create(create("k1"))
    assert again == first
    assert harness.event_names() == ["ShipmentCreated"]
    # A new key is a new shipment, even for the same order.
    other = harness.shipping.create(create("k2"))
    assert other.shipment_id != first.shipment_id
    assert harness.event_names() == ["ShipmentCreated", "ShipmentCreated"]


@pytest.mark.parametrize(
    "change",
    [
        {"order_id": "order-2"},
        {"items": (Item("mug", 3), Item("cap", 1))},
        {"address": dataclasses.replace(BERLIN, line2="3rd floor")},
    ],
    ids=["order", "items", "address"],
)
def test_same_key_with_a_different_request_is_already_exists(
    harness: Harness, change: dict[str, Any]
) -> None:
    first = harness.shipping.create(create("k1"))
    with pytest.raises(AlreadyExists) as caught:
        harness.shipping.create(create("k1", **change))
    assert caught.value.reason == "IDEMPOTENCY_KEY_REUSED"
    assert "'k1'" in caught.value.message
    assert harness.shipping.get(first.shipment_id) == first
    assert harness.event_names() == ["ShipmentCreated"]


def test_a_create_key_reused_for_a_cancel_is_already_exists(harness: Harness) -> None:
    shipment = harness.shipping.create(create("k1"))
    with pytest.raises(AlreadyExists, match="CreateShipment"):
        harness.shipping.cancel(CancelShipment("k1", shipment.shipment_id))
    assert harness.shipping.get(shipment.shipment_id).status is ShipmentStatus.BOOKED


def test_replay_after_a_cancel_still_returns_the_first_result(harness: Harness) -> None:
    booked = harness.shipping.create(create("k1"))
    harness.shipping.cancel(CancelShipment("c1", booked.shipment_id))
    assert harness.shipping.create(create("k1")) == booked
    assert harness.event_names() == ["ShipmentCreated", "ShipmentCancelled"]


def test_antarctica_is_refused_with_a_reason_and_nothing_is_stored(harness: Harness) -> None:
    south_pole = Address("Amundsen", "South Pole Station", "South Pole", "9999", "AQ")
    with pytest.raises(FailedPrecondition) as caught:
        harness.shipping.create(create("k1", address=south_pole))
    error = caught.value
    assert error.reason == "DESTINATION_NOT_SERVED"
    assert error.message == "we do not ship to Antarctica (AQ)"
    assert error.metadata == {"country_code": "AQ"}
    assert [(v.type, v.subject) for v in error.violations] == [("DESTINATION", "AQ")]
    assert harness.event_names() == []
    # Nothing was stored under the key: the same key may be used for a corrected request.
    assert harness.shipping.create(create("k1")).status is ShipmentStatus.BOOKED


def test_unserved_countries_are_a_setting(harness: Harness) -> None:
    shipping = harness.make(unserved_countries={"AQ", "KP"})
    north = Address("Kim", "Main street 1", "Pyongyang", "1000", "KP")
    # The country's name is Google's address data's (meshkit.address.country_name).
    with pytest.raises(FailedPrecondition, match=r"^we do not ship to North Korea \(KP\)$"):
        shipping.create(create("k1", address=north))
    antarctica = Address("Amundsen", "South Pole Station", "South Pole", "9999", "AQ")
    served = harness.make(unserved_countries=())
    assert served.create(create("k2", address=antarctica)).status is ShipmentStatus.BOOKED


def test_a_tracking_number_clash_picks_another_id(harness: Harness) -> None:
    first = harness.shipping.create(create("k1"))
    # An id generator that first repeats the existing id (whose number is taken), then a new one.
    repeat = iter([first.shipment_id, "fresh-id"])
    shipping = harness.make(new_id=lambda: next(repeat))
    second = shipping.create(create("k2"))
    assert second.shipment_id == "fresh-id"
    assert second.tracking_number != first.tracking_number


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "fields"),
    [
        (
            CreateShipment("", "", None, ()),
            ["idempotency_key", "order_id", "address", "items"],
        ),
        (
            create(address=Address("", "", "", "", "")),
            [
                "address.name",
                "address.line1",
                "address.country_code",
                "address.city",
                "address.postal_code",
            ],
        ),
        (
            create(address=Address(" ", "x", "\t", "10117", "DE")),
            ["address.name", "address.city"],
        ),
        (create(address=dataclasses.replace(BERLIN, country_code="de")), ["address.country_code"]),
        (create(address=dataclasses.replace(BERLIN, country_code="DEU")), ["address.country_code"]),
        (create(address=dataclasses.replace(BERLIN, country_code="XX")), ["address.country_code"]),
        (create(address=dataclasses.replace(BERLIN, postal_code="1011")), ["address.postal_code"]),
        (
            create(address=dataclasses.replace(BERLIN, postal_code="10117!")),
            ["address.postal_code"],
        ),
        (
            create(address=dataclasses.replace(BERLIN, postal_code="12345678901")),
            ["address.postal_code"],
        ),
        (create(address=dataclasses.replace(BERLIN, line2="x" * 201)), ["address.line2"]),
        (
            create(items=(Item("mug", 1), Item("", 0), Item("cap", -1))),
            ["items[1].sku", "items[1].quantity", "items[2].quantity"],
        ),
        (create(idempotency_key=" k", order_id="o" * 129), ["idempotency_key", "order_id"]),
        (create(items=tuple(Item(f"s{i}", 1) for i in range(101))), ["items"]),
    ],
    ids=[
        "everything-missing",
        "empty-address",
        "blank-address-fields",
        "lower-case-country",
        "alpha-3-country",
        "unassigned-country",
        "short-german-postal-code",
        "postal-code-charset",
        "postal-code-too-long",
        "line2-too-long",
        "items",
        "ids",
        "101-items",
    ],
)
def test_create_validation_names_every_field(
    harness: Harness, command: CreateShipment, fields: list[str]
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        harness.shipping.create(command)
    assert [v.field for v in caught.value.violations] == fields
    assert harness.event_names() == []


@pytest.mark.parametrize(
    ("country", "postal_code"),
    [
        ("US", "94103"),
        ("US", "94103-1234"),
        ("GB", "SW1A 1AA"),
        ("GB", "m1 1ae"),
        ("NL", "1012AB"),
        ("CA", "K1A 0B1"),
        ("JP", "100-0001"),
        ("IE", "D02 X285"),  # no specific rule: the generic one applies
        ("AQ", "9999"),  # valid, just not served (that is a precondition, not an argument)
    ],
)
def test_plausible_postal_codes_pass_validation(country: str, postal_code: str) -> None:
    address = Address("N", "L", "C", postal_code, country)
    create(address=address).validate()


def test_the_validation_messages_say_what_is_wrong() -> None:
    with pytest.raises(InvalidArgument) as caught:
        create(address=dataclasses.replace(BERLIN, country_code="XX", postal_code="")).validate()
    described = {v.field: v.description for v in caught.value.violations}
    assert described == {
        "address.country_code": "'XX' is not an ISO 3166-1 country",
        "address.postal_code": "is required unless the country has none",
    }
    with pytest.raises(InvalidArgument, match=r"'1011' is not a postal code of DE \(e.g. 26133\)"):
        create(address=dataclasses.replace(BERLIN, postal_code="1011")).validate()


@pytest.mark.parametrize(("country", "city"), [("HK", "Central"), ("AE", "Dubai"), ("QA", "Doha")])
def test_an_address_without_a_postal_code_is_accepted_where_the_country_has_none(
    harness: Harness, country: str, city: str
) -> None:
    address = Address("Ada", "1 Queen's Road", city, "", country)
    shipment = harness.shipping.create(create("k1", address=address))
    assert shipment.status is ShipmentStatus.BOOKED
    assert harness.shipping.get(shipment.shipment_id).address == address
    assert harness.event_names() == ["ShipmentCreated"]


def test_a_us_address_without_a_postal_code_is_refused(harness: Harness) -> None:
    address = Address("Ada", "1 Market St", "San Francisco", "", "US")
    with pytest.raises(InvalidArgument) as caught:
        harness.shipping.create(create("k1", address=address))
    described = [(v.field, v.description) for v in caught.value.violations]
    assert described == [("address.postal_code", "is required in US")]
    assert harness.event_names() == []


LONG = "9" * 20_000

LONG_VALUES: dict[str, dict[str, Any]] = {
    "address.postal_code": {"address": dataclasses.replace(BERLIN, postal_code=LONG)},
    "address.country_code": {"address": dataclasses.replace(BERLIN, country_code=LONG)},
    "address.name": {"address": dataclasses.replace(BERLIN, name=LONG)},
    "address.line1": {"address": dataclasses.replace(BERLIN, line1=LONG)},
    "address.line2": {"address": dataclasses.replace(BERLIN, line2=LONG)},
    "address.city": {"address": dataclasses.replace(BERLIN, city=LONG)},
    "order_id": {"order_id": LONG},
    "idempotency_key": {"idempotency_key": LONG},
    "items[0].sku": {"items": (Item(LONG, 1),)},
}


@pytest.mark.parametrize("field", LONG_VALUES)
def test_error_messages_never_repeat_a_long_value(field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        create(**LONG_VALUES[field]).validate()
    assert [v.field for v in caught.value.violations] == [field]
    assert len(caught.value.message) < 200, caught.value.message[:300]


@pytest.fixture
def shipping_stub() -> Iterator[pb_grpc.ShippingServiceStub]:
    """The real servicer behind meshkit's gRPC edge (error mapping included), over the fake."""
    store = FakeStore()
    shipping = Shipping(lambda: FakeUnitOfWork(store))
    servicer = ShippingServiceServicer(shipping)
    server = create_server(
        "shipping",
        Settings(port=0),
        [binding(servicer, pb_grpc.add_ShippingServiceServicer_to_server)],
    )
    port = server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield pb_grpc.ShippingServiceStub(channel)
    finally:
        server.stop(0)


def test_a_20_kb_postal_code_is_a_short_invalid_argument_naming_the_field(
    shipping_stub: pb_grpc.ShippingServiceStub,
) -> None:
    address = dataclasses.replace(BERLIN, postal_code=LONG).to_wire(common_pb2.Address)
    request = pb.CreateShipmentRequest(
        idempotency_key="k1",
        order_id="order-1",
        address=address,
        items=[pb.ShipmentItem(sku="mug", quantity=1)],
    )
    with pytest.raises(grpc.RpcError) as caught:
        shipping_stub.CreateShipment(request, timeout=10)
    error = caught.value
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    details = str(error.details())
    assert "address.postal_code" in details and len(details) < 200, details[:300]
    status = rpc_status.from_call(error)
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    violations = [(v.field, v.description) for v in bad_request.field_violations]
    assert [field for field, _ in violations] == ["address.postal_code"]
    assert all("9999" not in description for _, description in violations)


def test_addresses_cross_the_wire_whole_and_without_a_postal_code(
    shipping_stub: pb_grpc.ShippingServiceStub,
) -> None:
    hong_kong = Address("Ada", "1 Queen's Road", "Central", "", "HK", line2="Flat 3")
    request = pb.CreateShipmentRequest(
        idempotency_key="k1",
        order_id="order-1",
        address=hong_kong.to_wire(common_pb2.Address),
        items=[pb.ShipmentItem(sku="mug", quantity=1)],
    )
    shipment = shipping_stub.CreateShipment(request, timeout=10).shipment
    assert Address.from_wire(shipment.address) == hong_kong
    assert shipment.status == pb.SHIPMENT_STATUS_BOOKED


# --- cancel and get -------------------------------------------------------------------------


def test_cancel_moves_booked_to_cancelled_and_is_idempotent(harness: Harness) -> None:
    booked = harness.shipping.create(create("k1"))
    cancelled = harness.shipping.cancel(CancelShipment("c1", booked.shipment_id))
    assert cancelled.status is ShipmentStatus.CANCELLED
    assert cancelled.updated_at > booked.updated_at
    assert cancelled.tracking_number == booked.tracking_number
    # Same key: the first result. Another key: the shipment as it is, no second event.
    assert harness.shipping.cancel(CancelShipment("c1", booked.shipment_id)) == cancelled
    assert harness.shipping.cancel(CancelShipment("c2", booked.shipment_id)) == cancelled
    assert harness.shipping.get(booked.shipment_id) == cancelled
    assert harness.event_names() == ["ShipmentCreated", "ShipmentCancelled"]


def test_cancel_key_reused_for_another_shipment_is_already_exists(harness: Harness) -> None:
    one = harness.shipping.create(create("k1"))
    two = harness.shipping.create(create("k2"))
    harness.shipping.cancel(CancelShipment("c1", one.shipment_id))
    with pytest.raises(AlreadyExists):
        harness.shipping.cancel(CancelShipment("c1", two.shipment_id))
    assert harness.shipping.get(two.shipment_id).status is ShipmentStatus.BOOKED


def test_cancel_or_get_of_an_unknown_shipment_is_not_found(harness: Harness) -> None:
    with pytest.raises(NotFound) as caught:
        harness.shipping.cancel(CancelShipment("c1", "nope"))
    assert caught.value.reason == "SHIPMENT_NOT_FOUND"
    with pytest.raises(NotFound, match="'nope'"):
        harness.shipping.get("nope")
    # The failed cancel stored nothing under its key.
    booked = harness.shipping.create(create("k1"))
    assert harness.shipping.cancel(CancelShipment("c1", booked.shipment_id)).status is (
        ShipmentStatus.CANCELLED
    )


def test_cancel_and_get_validation_names_every_field(harness: Harness) -> None:
    with pytest.raises(InvalidArgument) as caught:
        harness.shipping.cancel(CancelShipment("", ""))
    assert [v.field for v in caught.value.violations] == ["idempotency_key", "shipment_id"]
    with pytest.raises(InvalidArgument) as caught:
        harness.shipping.get("")
    assert [v.field for v in caught.value.violations] == ["shipment_id"]


# --- tracking numbers and the events' bytes -------------------------------------------------


def test_tracking_numbers_are_derived_from_the_id_with_a_check_digit() -> None:
    number = tracking_number_for("shp-1")
    assert number == tracking_number_for("shp-1") != tracking_number_for("shp-2")
    assert number.startswith("MK") and len(number) == 12 and number[2:].isdigit()
    assert luhn_check_digit(number[2:-1]) == int(number[-1])
    assert luhn_check_digit("7992739871") == 3  # the textbook Luhn example


def test_sqlite_outbox_holds_the_avro_events_keyed_by_shipment(tmp_path: Path) -> None:
    db = Database(tmp_path / "shipping.db", MIGRATIONS)
    publisher = outbox_publisher(mock_registry())
    shipping = Shipping(lambda: SqliteUnitOfWork(db, publisher), clock=lambda: T0)
    booked = shipping.create(create("k1"))
    shipping.cancel(CancelShipment("c1", booked.shipment_id))
    events = outbox_events(db)
    db.close()
    assert [(t, k) for t, k, _, _ in events] == [
        ("shop.shipping.v1.ShipmentCreated", booked.shipment_id),
        ("shop.shipping.v1.ShipmentCancelled", booked.shipment_id),
    ]
    headers = events[0][3]
    assert headers["ce_subject"] == booked.shipment_id
    assert headers["ce_source"] == "/meshkit/shipping"
    assert headers["ce_time"] == "2025-05-01T12:00:00.123000Z"  # the event's own occurred_at
    created = events[0][2]
    assert created == {
        "shipment_id": booked.shipment_id,
        "order_id": "order-1",
        "address": {
            "name": "Ada Lovelace",
            "line1": "Unter den Linden 1",
            "line2": "",
            "city": "Berlin",
            "postal_code": "10117",
            "country_code": "DE",
        },
        "items": [{"sku": "mug", "quantity": 2}, {"sku": "cap", "quantity": 1}],
        "tracking_number": booked.tracking_number,
        "occurred_at": T0,
    }


def test_an_unregistered_event_schema_rolls_the_command_back(tmp_path: Path) -> None:
    db = Database(tmp_path / "shipping.db", MIGRATIONS)
    publisher = outbox_publisher(empty_registry("shipping-empty"), source="/t")
    shipping = Shipping(lambda: SqliteUnitOfWork(db, publisher))
    with pytest.raises(Exception, match="not registered"):
        shipping.create(create("k1"))
    with db.snapshot() as conn:
        counts = [
            conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("shipments", "idempotency_keys", "meshkit_outbox")
        ]
    db.close()
    assert counts == [0, 0, 0]


# --- settings -------------------------------------------------------------------------------


def test_settings_read_the_unserved_countries_and_the_mesh_wide_variables() -> None:
    settings = SERVICE.load_settings(
        {
            "SHIPPING_UNSERVED_COUNTRIES": "AQ, KP,",
            "SCHEMA_REGISTRY_URL": "http://registry:8081",
            "MESH_KAFKA_BOOTSTRAP": "kafka:9092",
        }
    )
    assert settings.unserved_country_codes == {"AQ", "KP"}
    assert (settings.schema_registry_url, settings.kafka_bootstrap) == (
        "http://registry:8081",
        "kafka:9092",
    )
    assert SERVICE.load_settings({}).unserved_country_codes == {"AQ"}
    assert (
        SERVICE.load_settings({"SHIPPING_UNSERVED_COUNTRIES": ""}).unserved_country_codes == set()
    )


def test_a_malformed_unserved_country_is_a_settings_error_naming_the_key() -> None:
    with pytest.raises(SettingsError, match=r"SHIPPING_UNSERVED_COUNTRIES.*'aq'"):
        SERVICE.load_settings({"SHIPPING_UNSERVED_COUNTRIES": "aq"})
