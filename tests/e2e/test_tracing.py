"""End to end: one connected trace across the mesh, read with `mesh trace` and from a real Jaeger.

The test process plays a client service ("e2e-client"): inside its root span it calls inventory
(SetStock: an event through the outbox), payments and shipping (NOT_FOUND: error statuses), and
orders (PlaceOrder: an event too) through ``meshkit.connect()``, and consumes the inventory event
with meshkit's EventConsumer. The trace must come back as ONE tree: SERVER, CLIENT, PRODUCER and
CONSUMER spans, five services, a single root, no span whose parent is missing. Each call carries
the least token that may make it, from the mesh's identity (an admin's for SetStock, support's
for the reads, the customer's own for PlaceOrder).

1. `mesh up` (its trace receiver on 4317, real Kafka), then `mesh trace ID --json` / `mesh traces`.
2. A real Jaeger v2 on free ports (the shipped scripts/jaeger.yaml, which binds loopback only);
   `mesh up` with OTEL_EXPORTER_OTLP_ENDPOINT pointing at it (the local receiver then stays off);
   the trace through Jaeger's API v3 (`mesh trace --jaeger`).
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from support.mesh import (
    DEFAULT_PORTS,
    MeshTokens,
    mesh_cli,
    mesh_tokens,
    place_order_request,
    port_in_use,
)
from support.tracing import (
    Jaeger,
    assert_connected,
    listening,
    mesh_trace_json,
    poll,
    spans_with,
)

from meshkit import connect, telemetry
from meshkit.db import Database
from meshkit.events import INBOX_MIGRATION, Event, EventConsumer
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.orders.v1 import orders_pb2, orders_pb2_grpc
from shop.payments.v1 import payments_pb2, payments_pb2_grpc
from shop.shipping.v1 import shipping_pb2, shipping_pb2_grpc

pytestmark = pytest.mark.kafka

REGISTRY = "http://127.0.0.1:8081"
KINDS = {"SERVER", "CLIENT", "PRODUCER", "CONSUMER"}
STOCK_SET = "shop.inventory.v1.StockSet"
CUSTOMER = "cust-trace"


def order_request(sku: str) -> orders_pb2.PlaceOrderRequest:
    return json_format.ParseDict(
        place_order_request(CUSTOMER, sku, units=3), orders_pb2.PlaceOrderRequest()
    )


def call_chain(kafka_bootstrap: str, workdir: Path, tokens: MeshTokens) -> str:
    """The client's part: calls across four services and one consumed event, all in one root
    span. Returns the trace id (the caller's traceparent every service received)."""
    admin, support = tokens.metadata("admin"), tokens.metadata("support")
    customer = tokens.metadata("customer", CUSTOMER)
    sku = f"trace-{uuid.uuid4().hex[:8]}"
    handled: list[str] = []

    def on_stock_set(event: Event, conn: sqlite3.Connection) -> None:
        handled.append(str(event.data.get("sku")))

    db = Database(workdir / "consumer.db", [INBOX_MIGRATION])
    consumer = EventConsumer(
        db,
        bootstrap=kafka_bootstrap,
        group=f"e2e-trace-{uuid.uuid4().hex[:8]}",
        topics=["inventory.events.v1"],
        registry=REGISTRY,
        handlers={STOCK_SET: on_stock_set},
    )
    channels = {
        name: connect(f"127.0.0.1:{port}")
        for name, port in (("orders", 50051), ("inventory", 50052), ("payments", 50053))
    }
    channels["shipping"] = connect("127.0.0.1:50054")
    try:
        with telemetry.span("checkout") as root:
            trace_id = format(root.get_span_context().trace_id, "032x")
            inventory_pb2_grpc.InventoryServiceStub(channels["inventory"]).SetStock(
                inventory_pb2.SetStockRequest(sku=sku, quantity=5), timeout=10, metadata=admin
            )
            with pytest.raises(grpc.RpcError) as missing:
                payments_pb2_grpc.PaymentsServiceStub(channels["payments"]).GetPayment(
                    payments_pb2.GetPaymentRequest(payment_id="pay-none"),
                    timeout=10,
                    metadata=support,
                )
            assert missing.value.code() is grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.RpcError) as missing:
                shipping_pb2_grpc.ShippingServiceStub(channels["shipping"]).GetShipment(
                    shipping_pb2.GetShipmentRequest(shipment_id="shp-none"),
                    timeout=10,
                    metadata=support,
                )
            assert missing.value.code() is grpc.StatusCode.NOT_FOUND
            orders_pb2_grpc.OrdersServiceStub(channels["orders"]).PlaceOrder(
                order_request(sku), timeout=10, metadata=customer
            )
        # The event SetStock wrote reaches this consumer through the outbox relay and Kafka.
        poll(lambda: consumer.run_once(0.5) >= 0 and sku in handled, 60, f"StockSet of {sku}")
    finally:
        consumer.close()
        db.close()
        for channel in channels.values():
            channel.close()
        telemetry.force_flush()
    return trace_id


def parents_arrived(spans: Any) -> bool:
    """Every span's parent is there too. Each service exports in batches of its own, so a
    consumer's span can reach the store before the producer's it hangs from; a trace judged
    complete before that would show a false orphan."""
    ids = {s["span_id"] for s in spans}
    return all(s["parent_span_id"] in ids for s in spans if s["parent_span_id"])


def complete(spans: Any) -> bool:
    """The spans of every hop have arrived (the services export in batches)."""
    kinds = [s["kind"] for s in spans]
    return (
        parents_arrived(spans)
        and kinds.count("PRODUCER") >= 2
        and "CONSUMER" in kinds
        and kinds.count("SERVER") >= 4
        and kinds.count("CLIENT") >= 4
    )


@pytest.fixture
def client_tracing(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process traced as service e2e-client (to whatever endpoint the test set)."""
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "200")
    yield
    telemetry.shutdown()


def mesh_up(root: Path, kafka_bootstrap: str) -> None:
    busy = [p for p in (*DEFAULT_PORTS, 4317) if port_in_use(p)]
    assert not busy, f"ports {busy} are in use: stop your own mesh (`mesh down`) first"
    up = mesh_cli(root, "up", "-d", "--kafka", kafka_bootstrap)
    assert up.returncode == 0, up.stderr


def test_call_chain_is_one_trace_in_the_local_store(
    tmp_mesh_root: Path,
    kafka_bootstrap: str,
    monkeypatch: pytest.MonkeyPatch,
    client_tracing: None,
    tmp_path: Path,
) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    mesh_up(tmp_mesh_root, kafka_bootstrap)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    assert telemetry.configure("e2e-client")
    trace_id = call_chain(kafka_bootstrap, tmp_path, mesh_tokens(tmp_mesh_root))

    spans = poll(
        spans_with(lambda: mesh_trace_json(run(tmp_mesh_root), trace_id), complete),
        60,
        f"trace {trace_id} complete in the local store",
    )
    assert_connected(spans, kinds=KINDS, services=5)
    by_name = {(s["service"], s["name"]): s for s in spans}
    root = by_name[("e2e-client", "checkout")]
    assert root["parent_span_id"] is None
    server = by_name[("inventory", "shop.inventory.v1.InventoryService/SetStock")]
    assert server["kind"] == "SERVER" and server["attributes"]["rpc.status_code"] == "OK"
    assert server["attributes"]["rpc.system.name"] == "grpc"
    missing = by_name[("e2e-client", "shop.payments.v1.PaymentsService/GetPayment")]
    assert missing["status"]["code"] == "ERROR"
    assert missing["attributes"]["error.type"] == "NOT_FOUND"
    # SetStock's event; the saga's inventory steps publish into this trace too.
    sends = [
        s
        for s in spans
        if s["name"] == "send inventory.events.v1" and s["parent_span_id"] == server["span_id"]
    ]
    send = sends[0] if sends else None
    assert send is not None, "no send span under SetStock's SERVER span"
    process = by_name[("e2e-client", "process inventory.events.v1")]
    assert send["kind"] == "PRODUCER"
    assert process["parent_span_id"] == send["span_id"]
    assert [link["span_id"] for link in process["links"]] == [send["span_id"]]

    tree = run(tmp_mesh_root)("trace", trace_id)
    assert tree.returncode == 0, tree.stderr
    assert "e2e-client: checkout [INTERNAL]" in tree.stdout
    assert "! " in tree.stdout  # the NOT_FOUND calls are marked
    # Generous: consumers replaying the shared broker's history add spans to older traces too.
    listed = run(tmp_mesh_root)("traces", "--limit", "100000", "--json")
    assert listed.returncode == 0, listed.stderr
    assert trace_id in {row["trace_id"] for row in json.loads(listed.stdout)}


def poll_trace(fetch: Any, predicate: Any, what: str, timeout: float = 60) -> Any:
    """``poll(spans_with(fetch, predicate))``; on timeout the message says what had arrived
    (each span's service, kind and name, and the parents missing)."""
    seen: list[Any] = []

    def remembering() -> Any:
        spans = fetch()
        seen[:] = [spans]
        return spans

    try:
        return poll(spans_with(remembering, predicate), timeout, what)
    except AssertionError as exc:
        spans = seen[0] if seen else None
        if not spans:
            raise AssertionError(f"{exc}: no span arrived") from None
        ids = {s["span_id"] for s in spans}
        missing = {s["parent_span_id"] for s in spans} - ids - {None}
        arrived = sorted(f"{s['service']} {s['kind']} {s['name']}" for s in spans)
        raise AssertionError(
            f"{exc}: {len(spans)} spans arrived ({'; '.join(arrived)}), parents missing: "
            f"{sorted(missing)}"
        ) from None


def run(root: Path) -> Any:
    return lambda *args: mesh_cli(root, *args)


@pytest.mark.jaeger
def test_the_same_trace_through_jaegers_api_v3(
    jaeger: Jaeger,
    tmp_mesh_root: Path,
    kafka_bootstrap: str,
    monkeypatch: pytest.MonkeyPatch,
    client_tracing: None,
    tmp_path: Path,
) -> None:
    # Set before `mesh up`: the components export to Jaeger and the local receiver stays off.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", jaeger.otlp_endpoint)
    mesh_up(tmp_mesh_root, kafka_bootstrap)
    assert not port_in_use(4317), "the local receiver should not run when exporting to Jaeger"
    assert telemetry.configure("e2e-client")
    trace_id = call_chain(kafka_bootstrap, tmp_path, mesh_tokens(tmp_mesh_root))

    spans = poll_trace(
        lambda: mesh_trace_json(run(tmp_mesh_root), trace_id, "--jaeger", jaeger.query_url),
        complete,
        f"trace {trace_id} complete in Jaeger",
    )
    assert_connected(spans, kinds=KINDS, services=5)
    listed = mesh_cli(
        tmp_mesh_root, "traces", "--jaeger", jaeger.query_url, "--service", "inventory", "--json"
    )
    assert listed.returncode == 0, listed.stderr
    assert trace_id in {row["trace_id"] for row in json.loads(listed.stdout)}


@pytest.mark.jaeger
def test_the_shipped_jaeger_config_listens_on_loopback_only(jaeger: Jaeger) -> None:
    """scripts/jaeger.yaml (what the fixture runs, as a user would): every socket Jaeger listens
    on is 127.0.0.1 (its built-in config binds all interfaces), the OTLP ones and the API's."""
    sockets = listening(jaeger.pid)
    assert {port for _, port in sockets} >= set(jaeger.ports.values()), sockets
    assert {address for address, _ in sockets} == {"127.0.0.1"}, sockets


MESH_SERVICES = {"orders", "inventory", "payments", "shipping", "order_views"}
SAGA_STEPS = {"reserve_stock", "authorize_payment", "create_shipment", "capture_payment"}


def whole_order(spans: Any) -> bool:
    """Every saga step ran, each participant's own server span arrived (a child's span is
    exported by its own process, maybe after its parent's), and the read side consumed events
    of the order."""
    names = {s["name"] for s in spans}
    consumers = {s["service"] for s in spans if s["kind"] == "CONSUMER"}
    servers = {s["service"] for s in spans if s["kind"] == "SERVER"}
    return (
        {f"saga {step}" for step in SAGA_STEPS} <= names
        and "order_views" in consumers
        and {"orders", "inventory", "payments", "shipping"} <= servers
        and parents_arrived(spans)
    )


def test_a_place_order_is_one_trace_across_five_services(
    tmp_mesh_root: Path,
    kafka_bootstrap: str,
    monkeypatch: pytest.MonkeyPatch,
    client_tracing: None,
) -> None:
    """The issue's promise: a PlaceOrder sent with a caller's traceparent comes back from
    `mesh trace ID --json` as one connected trace over five services of the mesh, with SERVER,
    CLIENT, PRODUCER and CONSUMER spans and no span whose parent is missing."""
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    mesh_up(tmp_mesh_root, kafka_bootstrap)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    assert telemetry.configure("e2e-client")
    sku = f"trace-{uuid.uuid4().hex[:8]}"
    tokens = mesh_tokens(tmp_mesh_root)
    with connect("127.0.0.1:50052") as inventory:
        inventory_pb2_grpc.InventoryServiceStub(inventory).SetStock(
            inventory_pb2.SetStockRequest(sku=sku, quantity=5),
            timeout=10,
            metadata=tokens.metadata("admin"),
        )
    with connect("127.0.0.1:50051") as channel, telemetry.span("place order") as caller:
        trace_id = format(caller.get_span_context().trace_id, "032x")
        orders_pb2_grpc.OrdersServiceStub(channel).PlaceOrder(
            order_request(sku), timeout=10, metadata=tokens.metadata("customer", CUSTOMER)
        )
    telemetry.force_flush()

    spans = poll(
        spans_with(lambda: mesh_trace_json(run(tmp_mesh_root), trace_id), whole_order),
        90,
        f"trace {trace_id}: every saga step and the order_views consumers",
    )
    assert_connected(spans, kinds=KINDS, services=5)
    assert {s["service"] for s in spans} >= MESH_SERVICES
    by_kind: dict[str, set[str]] = {}
    for span in spans:
        by_kind.setdefault(span["kind"], set()).add(span["service"])
    assert {"inventory", "payments", "shipping", "orders"} <= by_kind["SERVER"]
    assert "order_views" in by_kind["CONSUMER"]
