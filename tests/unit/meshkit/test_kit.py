"""The service kit's pieces through their public names: money, addresses, time, peer addresses,
event mapping and the Service that ties them together."""

from __future__ import annotations

import dataclasses
import datetime
import enum
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest

from meshkit import (
    Address,
    AddressError,
    Money,
    Service,
    ServiceContext,
    ServiceSettings,
    SettingsError,
    UnitOfWork,
    Violations,
    address_of,
    binding,
    check_health,
    validate_address,
    validate_money,
)
from meshkit.errors import FieldViolation, InvalidArgument, listed, quoted
from meshkit.events import EventMap, as_record, from_record
from meshkit.timestamps import from_micros, from_timestamp, now, to_micros, to_timestamp
from shop.common.v1 import common_pb2
from shop.inventory.v1 import inventory_pb2_grpc

# ---------------------------------------------------------------------------------------- money


def wire_money(code: str, units: int, nanos: int = 0) -> common_pb2.Money:
    return common_pb2.Money(currency_code=code, units=units, nanos=nanos)


@pytest.mark.parametrize(
    ("code", "units", "nanos", "shown"),
    [
        ("USD", 12, 500_000_000, "USD 12.50"),
        ("JPY", 1200, 0, "JPY 1200"),
        ("KWD", 1, 250_000_000, "KWD 1.250"),
    ],
)
def test_money_honours_each_currencys_minor_units(
    code: str, units: int, nanos: int, shown: str
) -> None:
    violations = Violations()
    money = validate_money(violations, wire_money(code, units, nanos), "price")
    assert violations.items == []
    assert str(money) == shown


@pytest.mark.parametrize(
    ("code", "units", "nanos"),
    [("JPY", 1, 500_000_000), ("USD", 0, 5_000_000), ("KWD", 0, 500_000)],
)
def test_money_refuses_fractions_of_the_smallest_unit(code: str, units: int, nanos: int) -> None:
    violations = Violations()
    assert validate_money(violations, wire_money(code, units, nanos), "price") is None
    assert [v.field for v in violations.items] == ["price.nanos"]


def test_money_names_every_bad_subfield_and_never_echoes_a_long_value() -> None:
    violations = Violations()
    bad = wire_money("X" * 5000, 10**13, -5)
    assert validate_money(violations, bad, "total") is None
    fields = {v.field for v in violations.items}
    assert fields == {"total.currency_code", "total.nanos", "total.units"}
    assert all(len(v.description) < 200 for v in violations.items)


def test_money_refuses_codes_iso_does_not_list_and_non_positive_amounts() -> None:
    violations = Violations()
    assert validate_money(violations, wire_money("ABC", 1), "a") is None
    assert validate_money(violations, wire_money("USD", 0), "b") is None
    assert [v.field for v in violations.items] == ["a.currency_code", "b"]


def test_money_round_trips_the_wire_and_records_and_adds_exactly() -> None:
    money = Money.of("EUR", -3, -250_000_000)
    assert (money.units, money.nanos) == (-3, -250_000_000)
    assert Money.from_wire(money.to_wire(common_pb2.Money)) == money
    assert Money.from_record(money.to_record()) == money
    assert Money.of("EUR", 1, 100_000_000) * 3 + Money.of("EUR", 0, 700_000_000) == Money.of(
        "EUR", 4
    )
    with pytest.raises(ValueError, match="cannot add"):
        _ = Money.of("EUR", 1) + Money.of("USD", 1)


# -------------------------------------------------------------------------------------- address


def wire_address(country: str, postal: str, city: str = "Town") -> common_pb2.Address:
    return common_pb2.Address(
        name="Ada", line1="1 Main St", city=city, postal_code=postal, country_code=country
    )


@pytest.mark.parametrize("country", ["HK", "AE", "QA"])
def test_countries_without_postal_codes_need_none(country: str) -> None:
    violations = Violations()
    assert validate_address(violations, wire_address(country, ""), "addr") is not None
    assert violations.items == []


@pytest.mark.parametrize(
    ("country", "postal", "ok"),
    [
        ("US", "94105", True),
        ("US", "94105-1234", True),
        ("US", "9410", False),
        ("US", "", False),
        ("GB", "SW1A 1AA", True),
        ("DE", "10115", True),
        ("DE", "1011", False),
        ("IE", "", True),
    ],
)
def test_postal_codes_follow_their_countrys_rules(country: str, postal: str, ok: bool) -> None:
    violations = Violations()
    address = validate_address(violations, wire_address(country, postal), "addr")
    assert (address is not None) is ok
    assert all(v.field == "addr.postal_code" for v in violations.items)


def test_an_address_names_every_bad_field_with_capped_messages() -> None:
    violations = Violations()
    bad = common_pb2.Address(
        name="", line1="x" * 20_000, postal_code="9" * 20_000, country_code="ZZ"
    )
    assert validate_address(violations, bad, "shipping_address") is None
    fields = {v.field for v in violations.items}
    assert fields == {
        "shipping_address.name",
        "shipping_address.line1",
        "shipping_address.city",  # no known country exempts the address from one
        "shipping_address.postal_code",
        "shipping_address.country_code",
    }
    assert all(len(v.description) < 200 for v in violations.items)


def test_an_address_round_trips_the_wire_and_records() -> None:
    address = Address("Ada", "1 Main St", "Town", "94105", "US", line2="Apt 2")
    assert Address.from_wire(address.to_wire(common_pb2.Address)) == address
    assert Address.from_record(address.to_record()) == address


# ----------------------------------------------------------------------------------------- time


def test_time_round_trips_exactly_through_storage_and_the_wire() -> None:
    instant = now()
    assert instant.tzinfo is datetime.UTC
    assert from_micros(to_micros(instant)) == instant
    assert from_timestamp(to_timestamp(instant)) == instant


def test_a_timestamp_out_of_range_is_a_field_violation() -> None:
    violations = Violations()
    ts = to_timestamp(now())
    ts.seconds = 10**12
    assert from_timestamp(ts, violations, "as_of") is None
    ts.seconds, ts.nanos = 0, -1
    assert from_timestamp(ts, violations, "as_of") is None
    assert [v.field for v in violations.items] == ["as_of", "as_of"]


# --------------------------------------------------------------------------------- peer addresses


def write_mesh(tmp_path: Path, **ports: int) -> Path:
    path = tmp_path / "mesh.toml"
    path.write_text(
        "".join(
            f'[[component]]\nname = "{name}"\ncommand = ["x"]\nport = {port}\nhealth = "grpc"\n'
            for name, port in ports.items()
        )
    )
    return path


def test_a_peer_is_found_by_name_in_mesh_toml_or_the_environment(tmp_path: Path) -> None:
    config = write_mesh(tmp_path, inventory=61001, order_views=61002)
    env = {"MESH_CONFIG": str(config)}
    assert address_of("inventory", env) == "127.0.0.1:61001"
    assert address_of("order_views", {**env, "MESH_ADDRESS_ORDER_VIEWS": "views:9"}) == "views:9"
    with pytest.raises(AddressError, match="MESH_ADDRESS_LOYALTY"):
        address_of("loyalty", env)


# ------------------------------------------------------------------------------------ event map


class Colour(enum.Enum):
    RED = "RED"


@dataclasses.dataclass(frozen=True)
class Line:
    sku: str
    quantity: int


@dataclasses.dataclass(frozen=True)
class Painted:
    thing_id: str
    colour: Colour
    lines: tuple[Line, ...]
    price: Money
    to: Address | None
    occurred_at: datetime.datetime


def test_an_event_maps_to_its_record_and_back() -> None:
    events: EventMap[Painted] = EventMap("shop.paint.v1")
    events.add(Painted, key=lambda e: e.thing_id)
    event = Painted("t1", Colour.RED, (Line("a", 2),), Money.of("USD", 3), None, now())
    record = events.to_record(event)
    assert events.type_of(event) == "shop.paint.v1.Painted"
    assert events.key_of(event) == "t1"
    assert record["colour"] == "RED"
    assert record["lines"] == [{"sku": "a", "quantity": 2}]
    assert record["price"] == {"currency_code": "USD", "units": 3, "nanos": 0}
    assert events.event("shop.paint.v1.Painted", record) == event
    assert events.types == {"shop.paint.v1.Painted"}
    with pytest.raises(KeyError, match=r"not an event of shop\.paint\.v1"):
        events.type_of(Line("a", 1))  # type: ignore[arg-type]


def test_avro_millis_read_back_as_aware_datetimes() -> None:
    assert from_record(datetime.datetime, 1_000) == datetime.datetime(
        1970, 1, 1, 0, 0, 1, tzinfo=datetime.UTC
    )
    assert as_record((Colour.RED,)) == ["RED"]


# -------------------------------------------------------------------------------------- service


@dataclasses.dataclass(frozen=True)
class ToySettings(ServiceSettings):
    greeting: str = dataclasses.field(default="hi", metadata={"help": "what it says"})


class Recorder:
    def __init__(self) -> None:
        self.published: list[tuple[object, str | None]] = []

    def publish(self, conn: object, event: object, *, event_id: str | None = None) -> None:
        self.published.append((event, event_id))


def toy(build_log: list[ServiceContext[ToySettings]]) -> Service[ToySettings]:
    def build(ctx: ServiceContext[ToySettings]) -> list[object]:
        build_log.append(ctx)
        servicer = inventory_pb2_grpc.InventoryServiceServicer()
        return [binding(servicer, inventory_pb2_grpc.add_InventoryServiceServicer_to_server)]

    return Service(
        "toy",
        description="A toy service.",
        settings=ToySettings,
        build=build,  # type: ignore[arg-type]
        migrations=("CREATE TABLE things (id TEXT PRIMARY KEY);",),
    )


def test_a_service_takes_its_port_from_mesh_toml_and_its_own_prefixed_settings(
    tmp_path: Path,
) -> None:
    env = {"MESH_CONFIG": str(write_mesh(tmp_path, toy=61003)), "TOY_GREETING": "hello"}
    settings = toy([]).load_settings(env)
    assert (settings.port, settings.greeting) == (61003, "hello")
    assert settings.db_path == Path(".mesh/data/toy.db")
    with pytest.raises(SettingsError, match="TOY_GRETING"):
        toy([]).load_settings({**env, "TOY_GRETING": "typo"})
    (tmp_path / "other").mkdir()
    with pytest.raises(SettingsError, match="TOY_PORT is not set"):
        toy([]).load_settings({"MESH_CONFIG": str(write_mesh(tmp_path / "other", other=1))})


def test_a_service_serves_health_and_reflection_and_closes_its_database(tmp_path: Path) -> None:
    log: list[ServiceContext[ToySettings]] = []
    service = toy(log)
    settings = service.load_settings({"TOY_PORT": "0", "TOY_DB_PATH": str(tmp_path / "toy.db")})
    server = service.create(settings)
    port = server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert check_health(channel, "shop.inventory.v1.InventoryService")
        ctx = log[0]
        with ctx.db.transaction() as conn:
            conn.execute("INSERT INTO things VALUES ('x')")
    finally:
        server.stop(0)
    assert ctx.db.closed


def test_a_unit_of_work_publishes_through_its_sink_inside_the_transaction(tmp_path: Path) -> None:
    from meshkit import Database

    class Things(UnitOfWork):
        def bind(self, conn: object) -> None:
            pass

    sink = Recorder()
    db = Database(tmp_path / "t.db")
    with Things(db, sink) as uow:
        uow.publish("thing-happened", event_id="t:1")
    assert sink.published == [("thing-happened", "t:1")]
    with pytest.raises(RuntimeError, match="without an event sink"), Things(db) as bare:
        bare.publish("x")
    db.close()


def test_help_lists_the_settings_with_runtime_defaults(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {"MESH_CONFIG": str(write_mesh(tmp_path, toy=61004))}
    assert toy([]).main(["--help"], env) == 0
    out = capsys.readouterr().out
    assert "TOY_PORT" in out and "61004" in out and "TOY_GREETING" in out
    (tmp_path / "other").mkdir()
    assert toy([]).main([], {"MESH_CONFIG": str(write_mesh(tmp_path / "other", other=1))}) == 2
    assert "TOY_PORT is not set" in capsys.readouterr().err


def test_wire_shapes_are_duck_typed() -> None:
    raw = SimpleNamespace(currency_code="USD", units=1, nanos=0)
    assert Money.from_wire(raw) == Money.of("USD", 1)


def test_a_failing_build_undoes_what_it_got_as_far_as(tmp_path: Path) -> None:
    closed: list[str] = []
    contexts: list[ServiceContext[ServiceSettings]] = []

    def build(ctx: ServiceContext[ServiceSettings]) -> list[object]:
        contexts.append(ctx)
        ctx.on_stop(lambda: closed.append("closer"))
        ctx.connect("127.0.0.1:1")
        raise RuntimeError("a peer's schema is missing")

    service: Service[ServiceSettings] = Service("broken", build)  # type: ignore[arg-type]
    settings = service.load_settings({"BROKEN_PORT": "0", "BROKEN_DB_PATH": str(tmp_path / "b.db")})
    with pytest.raises(RuntimeError, match="schema is missing"):
        service.create(settings)
    assert closed == ["closer"]
    assert contexts[0].db.closed


# --------------------------------------------------------------------------------------- errors


def test_error_messages_quote_and_list_a_clients_values_only_in_part() -> None:
    assert quoted("x" * 20_000) == repr("x" * 32) + "…"
    assert listed(["A", "B"]) == "'A', 'B'"
    assert listed([f"S{i}" for i in range(12)]) == "'S0', 'S1', 'S2', 'S3', 'S4' and 7 more"
    many = InvalidArgument(violations=[FieldViolation(f"f{i}", "bad") for i in range(400)])
    assert (
        many.message == "invalid request: f0: bad; f1: bad; f2: bad; f3: bad; f4: bad; and 395 more"
    )
    assert len(many.violations) == 400  # the edge bounds what the caller gets (meshkit.server)


def test_declared_peers_are_in_help_and_must_resolve_before_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_mesh(tmp_path, toy=61005, inventory=61006)
    service: Service[ServiceSettings] = Service(
        "toy",
        lambda ctx: [],
        description="A toy.",
        peers=("inventory", "loyalty"),
    )
    env = {"MESH_CONFIG": str(config)}
    assert service.main(["--help"], env) == 0
    out = capsys.readouterr().out
    assert "MESH_ADDRESS_INVENTORY" in out and "127.0.0.1:61006" in out
    assert "MESH_ADDRESS_LOYALTY" in out and "required" in out
    assert service.main([], env) == 2
    assert "peer 'loyalty'" in capsys.readouterr().err
    settings = service.load_settings({**env, "MESH_ADDRESS_LOYALTY": "loyalty:7000"})
    assert settings.port == 61005


def test_help_leaves_out_the_settings_a_service_never_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A service without a database or events (an edge) is not offered a database path, Kafka
    or the registry in --help; one with them is."""
    env = {"MESH_CONFIG": str(write_mesh(tmp_path, toy=61005))}
    bare: Service[ToySettings] = Service(
        "toy", lambda ctx: [], settings=ToySettings, database=False, description="Bare."
    )
    assert bare.main(["--help"], env) == 0
    out = capsys.readouterr().out
    assert "TOY_PORT" in out and "TOY_GREETING" in out
    assert "TOY_DB_PATH" not in out and "MESH_KAFKA_BOOTSTRAP" not in out
    assert "SCHEMA_REGISTRY_URL" not in out
    assert toy([]).main(["--help"], env) == 0
    assert "TOY_DB_PATH" in capsys.readouterr().out
