"""End to end: a Go program generated from proto/ places an order on a real mesh; its trace joins.

The issue's promise for "Generate a client": tests/interop/shop-go, built by its build.sh from
stubs that `buf generate --template proto/buf.gen.go.yaml` makes afresh, places an order with
PlaceOrder as a customer (a token from `mesh token --role customer --subject c-go`), sends a W3C
traceparent it made itself, and polls GetOrder until the order is CONFIRMED. Then `mesh trace
<trace_id> --json` holds orders' SERVER span of that call as the child of the Go program's span
(the parent span id it sent), and the saga's spans hang from it: one trace, joined.

The mesh runs in a scratch root on free ports (write_moved_mesh_toml), so it neither needs nor
disturbs the default ports a developer's mesh holds. Stock is set with an admin token through
the Python stubs: a customer may not call SetStock.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from support.mesh import REPO, mesh_cli, mesh_tokens, mesh_up, write_moved_mesh_toml
from support.tracing import mesh_trace_json, poll, spans_with

from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc

BUILD = REPO / "tests" / "interop" / "shop-go" / "build.sh"
CLIENT = REPO / ".cache" / "bin" / "shop-go-client"
CUSTOMER = "c-go"
SAGA_STEPS = {"reserve_stock", "authorize_payment", "create_shipment", "capture_payment"}


@dataclass(frozen=True)
class Mesh:
    """A running mesh: its root and each component's port."""

    root: Path
    ports: dict[str, int]


@pytest.fixture(scope="module")
def go_client() -> Path:
    """The Go client, rebuilt by its build script when it or the contracts changed."""
    built = subprocess.run([str(BUILD)], capture_output=True, text=True, timeout=600, check=False)
    assert built.returncode == 0, built.stderr
    return CLIENT


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> Iterator[Mesh]:
    """The whole mesh from mesh.toml, moved to free ports, in a scratch root."""
    root = tmp_path_factory.mktemp("go-client-mesh")
    ports = write_moved_mesh_toml(root)
    (root / ".cache").symlink_to(REPO / ".cache")
    env = {**os.environ, "SCHEMA_REGISTRY_URL": f"http://127.0.0.1:{ports['schema-registry']}"}
    # Where spans go and where Kafka is come from this mesh, not from the caller's shell.
    for key in ("MESH_KAFKA_BOOTSTRAP", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        env.pop(key, None)
    with mesh_up(root, kafka_bootstrap, env):
        yield Mesh(root, ports)


def stock(mesh: Mesh, sku: str, quantity: int) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{mesh.ports['inventory']}") as channel:
        inventory_pb2_grpc.InventoryServiceStub(channel).SetStock(
            inventory_pb2.SetStockRequest(sku=sku, quantity=quantity),
            timeout=10,
            metadata=mesh_tokens(mesh.root).metadata("admin"),
        )


def outside_parents(spans: Sequence[dict[str, Any]]) -> set[str | None]:
    """The parent ids of spans whose parent is not among ``spans`` (None for a root)."""
    ids = {s["span_id"] for s in spans}
    return {s["parent_span_id"] for s in spans if s["parent_span_id"] not in ids}


def joined(client_span: str) -> Any:
    """True once every saga step arrived and every span's parent did too, except the client's
    (a child's span is exported by its own process, maybe before its parent's)."""

    def check(spans: Sequence[dict[str, Any]]) -> bool:
        names = {s["name"] for s in spans}
        steps = {f"saga {step}" for step in SAGA_STEPS} <= names
        return steps and outside_parents(spans) == {client_span}

    return check


def test_go_client_places_an_order_and_its_trace_joins(go_client: Path, mesh: Mesh) -> None:
    sku = f"go-{uuid.uuid4().hex[:8]}"
    stock(mesh, sku, 5)
    minted = mesh_cli(mesh.root, "token", "--role", "customer", "--subject", CUSTOMER)
    assert minted.returncode == 0, minted.stderr
    ran = subprocess.run(
        [
            str(go_client),
            "-orders",
            f"127.0.0.1:{mesh.ports['orders']}",
            "-sku",
            sku,
            "-timeout",
            "60s",
        ],
        env={**os.environ, "MESH_TOKEN": minted.stdout.strip()},
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    result = json.loads(ran.stdout)
    assert result["status"] == "ORDER_STATUS_CONFIRMED", result
    assert result["order_id"]
    assert len(result["trace_id"]) == 32 and len(result["span_id"]) == 16
    assert 0 < result["ms"] < 60_000

    spans = poll(
        spans_with(
            lambda: mesh_trace_json(lambda *a: mesh_cli(mesh.root, *a), result["trace_id"]),
            joined(result["span_id"]),
        ),
        90,
        f"trace {result['trace_id']}: orders' span under the Go client's, and the saga's",
    )
    assert {s["trace_id"] for s in spans} == {result["trace_id"]}
    (server,) = [s for s in spans if s["parent_span_id"] == result["span_id"]]
    assert (server["service"], server["kind"]) == ("orders", "SERVER")
    assert server["name"].endswith("PlaceOrder"), server["name"]
    # Joined: the Go client's span is the only parent not in the store (it exports none), and
    # every other span hangs, directly or not, from orders' span of the PlaceOrder call.
    assert outside_parents(spans) == {result["span_id"]}
    assert {"orders", "inventory", "payments", "shipping"} <= {s["service"] for s in spans}
