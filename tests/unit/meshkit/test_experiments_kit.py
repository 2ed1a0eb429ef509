"""``ctx.experiments`` in a service built by the kit, with a real registry and no broker: the
exposures (and conversions) land in the service's own outbox, or, for a service without a
database (the gateway's kind), in an outbox of the kit's beside its db_path, as records of the
experiments' contracts. The definitions come from the last known good, control being absent."""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import fastavro
import pytest
from support.events import register_all

from inventory.adapters.events import EVENTS as INVENTORY_EVENTS
from meshkit import Service, ServiceContext, ServiceSettings
from meshkit.control.experiments import Experiments
from meshkit.events import OUTBOX_MIGRATION
from meshkit.server import ServiceBinding

REPO = Path(__file__).resolve().parents[3]
PROTO = REPO / "proto"
EXPERIMENTS_AVRO = PROTO / "mesh" / "experiments" / "v1" / "avro"
DOCUMENT = {
    "experiments": {
        "checkout-cta": {
            "variants": [{"key": "control", "weight": 0.5}, {"key": "buy-now", "weight": 0.5}],
            "metric": "order_confirmed",
        }
    }
}
VERSION = 4


@pytest.fixture
def registry(registry_url: str) -> str:
    for path in ("mesh/experiments/v1/avro", "mesh/audit/v1/avro", "shop/inventory/v1/avro"):
        register_all(registry_url, PROTO / path)
    return registry_url


@pytest.fixture
def no_control(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A mesh.toml without control (nor identity): ctx.config serves the last known good."""
    mesh = tmp_path / "mesh.toml"
    mesh.write_text('[[component]]\nname = "toy"\ncommand = ["x"]\nport = 1\nhealth = "grpc"\n')
    monkeypatch.setenv("MESH_CONFIG", str(mesh))
    monkeypatch.delenv("MESH_ADDRESS_CONTROL", raising=False)


def last_known_good(db_dir: Path, service: str) -> None:
    cache = db_dir / f"{service}.config" / "experiments.json"
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(
        json.dumps({"namespace": "experiments", "version": VERSION, "document": DOCUMENT})
    )


def outbox_records(path: Path, contract: str) -> list[dict[str, Any]]:
    schema = fastavro.parse_schema(json.loads((EXPERIMENTS_AVRO / f"{contract}.avsc").read_text()))
    full_name = "mesh.experiments.v1." + "".join(p.title() for p in contract.split("_"))
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute(
            "SELECT topic, value, headers FROM meshkit_outbox ORDER BY id"
        ).fetchall()
    records = []
    for topic, value, headers in rows:
        if ["ce_type", full_name] not in json.loads(headers):
            continue
        assert topic == "experiments.events.v1"
        record = fastavro.schemaless_reader(io.BytesIO(bytes(value)[5:]), schema)
        assert isinstance(record, dict)
        records.append(record)
    return records


def settings(service: Service[ServiceSettings], db: Path, registry: str) -> ServiceSettings:
    prefix = service.prefix
    return service.load_settings(
        {
            f"{prefix}_PORT": "0",
            f"{prefix}_DB_PATH": str(db),
            "SCHEMA_REGISTRY_URL": registry,
            "MESH_KAFKA_BOOTSTRAP": "127.0.0.1:9",  # nothing listens: the rows stay put
        }
    )


@pytest.mark.usefixtures("no_control")
def test_a_service_without_a_database_writes_to_the_kits_outbox(
    tmp_path: Path, registry: str
) -> None:
    got: list[Experiments] = []

    def build(ctx: ServiceContext[ServiceSettings]) -> list[ServiceBinding]:
        got.append(ctx.experiments)
        assert ctx.experiments is got[0]  # one client per service
        return []

    shopfront: Service[ServiceSettings] = Service(
        "shopfront", build, description="A shop front.", database=False
    )
    last_known_good(tmp_path, "shopfront")
    server = shopfront.create(settings(shopfront, tmp_path / "shopfront.db", registry))
    try:
        (experiments,) = got
        assigned = {unit: experiments.assign("checkout-cta", unit).variant for unit in "abc"}
        for unit in "abc":
            experiments.assign("checkout-cta", unit)
        experiments.convert("order_confirmed", "a", 9.5)
    finally:
        server.stop(0)
    outbox = tmp_path / "shopfront.kit-outbox.db"
    exposed = outbox_records(outbox, "experiment_exposed")
    assert {(r["unit_id"], r["variant"]) for r in exposed} == set(assigned.items())
    assert len(exposed) == 3
    assert {(r["experiment"], r["service"], r["revision"]) for r in exposed} == {
        ("checkout-cta", "shopfront", VERSION)
    }
    (converted,) = outbox_records(outbox, "conversion_recorded")
    assert (converted["metric"], converted["unit_id"], converted["value"]) == (
        "order_confirmed",
        "a",
        9.5,
    )


@pytest.mark.usefixtures("no_control")
def test_a_publishing_service_writes_exposures_and_conversions_through_its_own_outbox(
    tmp_path: Path, registry: str
) -> None:
    got: list[Any] = []

    def build(ctx: ServiceContext[ServiceSettings]) -> list[ServiceBinding]:
        got.append(ctx)
        return []

    stock: Service[ServiceSettings] = Service(
        "stock",
        build,
        description="Stock.",
        migrations=(OUTBOX_MIGRATION,),
        events=INVENTORY_EVENTS,
    )
    last_known_good(tmp_path, "stock")
    server = stock.create(settings(stock, tmp_path / "stock.db", registry))
    try:
        (ctx,) = got
        assert ctx.experiments.assign("checkout-cta", "u1").in_experiment
        # A conversion in the unit of work that did it: the service's own publisher takes it.
        conversion = ctx.experiments.conversion("order_confirmed", "u1")
        with ctx.db.transaction() as conn:
            ctx.events.publish(conn, conversion, event_id=conversion.event_id)
    finally:
        server.stop(0)
    assert not (tmp_path / "stock.kit-outbox.db").exists()
    assert [r["unit_id"] for r in outbox_records(tmp_path / "stock.db", "experiment_exposed")] == [
        "u1"
    ]
    (converted,) = outbox_records(tmp_path / "stock.db", "conversion_recorded")
    assert converted["event_id"] == conversion.event_id
