"""The kit on both sides of Kafka: inventory (a Service that publishes) and a reader declared with
``Service(consumes=...)`` whose ``ctx.consume(handlers)`` applies inventory's events, on real
Kafka and a real registry."""

from __future__ import annotations

import uuid
from pathlib import Path

import grpc
import pytest
from support.events import register_all, wait_for
from support.tokens import TEST_ISSUER, authorized

from inventory.bootstrap import SERVICE as INVENTORY
from meshkit import Service, ServiceContext, ServiceSettings
from meshkit.events import INBOX_MIGRATION, Event, SchemaRegistrationError
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
AVRO = REPO / "proto" / "shop" / "inventory" / "v1" / "avro"
AUDIT_AVRO = REPO / "proto" / "mesh" / "audit" / "v1" / "avro"  # inventory audits SetStock

pytestmark = pytest.mark.kafka


def reader(seen: list[Event]) -> Service[ServiceSettings]:
    def build(ctx: ServiceContext[ServiceSettings]) -> list[object]:
        ctx.consume({"shop.inventory.v1.StockSet": lambda event, conn: seen.append(event)})
        return []

    return Service(
        "stock_watch",
        build,  # type: ignore[arg-type]
        description="Watches stock.",
        migrations=(INBOX_MIGRATION,),
        consumes=("shop.inventory.v1",),
    )


def env(tmp_path: Path, name: str, registry: str, bootstrap: str) -> dict[str, str]:
    prefix = name.upper()
    return {
        f"{prefix}_PORT": "0",
        f"{prefix}_DB_PATH": str(tmp_path / f"{name}.db"),
        "SCHEMA_REGISTRY_URL": registry,
        "MESH_KAFKA_BOOTSTRAP": bootstrap,
    } | TEST_ISSUER.env


def test_a_reader_declared_with_consumes_applies_a_publishers_events(
    tmp_path: Path, kafka_bootstrap: str, registry_url: str
) -> None:
    register_all(registry_url, AVRO)
    register_all(registry_url, AUDIT_AVRO)
    seen: list[Event] = []
    watch = reader(seen)
    watcher = watch.create(
        watch.load_settings(env(tmp_path, "stock_watch", registry_url, kafka_bootstrap))
    )
    inventory = INVENTORY.create(
        INVENTORY.load_settings(env(tmp_path, "inventory", registry_url, kafka_bootstrap))
    )
    watcher.start()
    port = inventory.start()
    sku = f"kit-{uuid.uuid4().hex[:8]}"
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            # Setting stock is an admin's (inventory's policy.cedar).
            inventory_pb2_grpc.InventoryServiceStub(authorized(channel, "admin")).SetStock(
                inventory_pb2.SetStockRequest(sku=sku, quantity=7), timeout=10
            )
        wait_for(
            lambda: any(e.data["sku"] == sku for e in seen),
            timeout=60,
            what=f"StockSet of {sku} applied by the reader",
        )
    finally:
        inventory.stop(0)
        watcher.stop(0)
    ours = [e for e in seen if e.data["sku"] == sku]
    assert len(ours) == 1 and ours[0].data["on_hand"] == 7
    assert ours[0].type == "shop.inventory.v1.StockSet"


def test_a_reader_whose_contracts_the_registry_lacks_refuses_to_start(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    from support.registry import serve

    with serve("--storage", "memory", cwd=tmp_path) as empty:
        watch = reader([])
        settings = watch.load_settings(env(tmp_path, "stock_watch", empty.url, kafka_bootstrap))
        with pytest.raises(SchemaRegistrationError, match=r"inventory\.events\.v1"):
            watch.create(settings)
