"""`make demo`: the mesh on embedded defaults, four orders through the saga, then shutdown.

Starts the mesh with `mesh up -d` (embedded Kafka unless one is configured), stocks two SKUs,
places four orders (one confirmed, one declined, one out of stock, one unshippable), waits for
each saga to end and prints the outcomes with their reasons, the stock before and after, a
replayed request, the confirmed order's trace tree, and the grpcurl commands to try. Then it
stops the mesh (unless the mesh was running before the demo, in which case it is left as it was
found). Exits 1 when an order did
not end as its scenario says, so CI catches a broken flow.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc

from meshkit import DEFAULT_TIMEOUT, address_of, connect
from schema_registry.client import RegistryClient
from shop.common.v1 import common_pb2 as common_pb
from shop.inventory.v1 import inventory_pb2 as inv_pb
from shop.inventory.v1 import inventory_pb2_grpc as inv_grpc
from shop.orders.v1 import orders_pb2 as orders_pb
from shop.orders.v1 import orders_pb2_grpc as orders_grpc

ROOT = Path(__file__).resolve().parent.parent
MESH = str(Path(sys.executable).parent / "mesh")
# Addresses from the mesh's one source of ports (mesh.toml), by service name.
_MESH_ENV = {"MESH_CONFIG": str(ROOT / "mesh.toml")}
ORDERS = address_of("orders", _MESH_ENV)
INVENTORY = address_of("inventory", _MESH_ENV)
REGISTRY = "http://127.0.0.1:8081"
BOLD, DIM, GREEN, RED, RESET = "\033[1m", "\033[2m", "\033[32m", "\033[31m", "\033[0m"
if not sys.stdout.isatty():
    BOLD = DIM = GREEN = RED = RESET = ""


def heading(text: str) -> None:
    print(f"\n{BOLD}{text}{RESET}")


def mesh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MESH, "--root", str(ROOT), *args], text=True, check=False)


def running_before() -> bool:
    result = subprocess.run(
        [MESH, "--root", str(ROOT), "ps", "--json"], capture_output=True, text=True, check=False
    )
    rows = json.loads(result.stdout or "[]")
    return any(row["state"] == "running" and row["name"] != "kafka" for row in rows)


SCENARIOS = (
    # (what happens, payment token, SKU, quantity, country)
    ("confirmed", "tok_visa", "mug-blue", 2, "DE"),
    ("declined", "tok_chargeDeclined", "mug-blue", 1, "DE"),
    ("out of stock", "tok_visa", "lamp-brass", 5, "DE"),
    ("unshippable", "tok_visa", "mug-blue", 1, "AQ"),
)
EXPECTED = {
    "confirmed": orders_pb.ORDER_STATUS_CONFIRMED,
    "declined": orders_pb.ORDER_STATUS_CANCELLED,
    "out of stock": orders_pb.ORDER_STATUS_CANCELLED,
    "unshippable": orders_pb.ORDER_STATUS_CANCELLED,
}


def place(
    stub: orders_grpc.OrdersServiceStub,
    request_id: str,
    scenario: tuple[str, str, str, int, str],
    traceparent: str | None = None,
) -> str:
    _, token, sku, quantity, country = scenario
    request = orders_pb.PlaceOrderRequest(
        request_id=request_id,
        customer_id="cust-ada",
        lines=[
            orders_pb.OrderLine(
                sku=sku,
                quantity=quantity,
                unit_price=common_pb.Money(currency_code="EUR", units=12, nanos=500_000_000),
            )
        ],
        payment_token=token,
        shipping_address=common_pb.Address(
            name="Ada Lovelace",
            line1="1 Analytical Way",
            city="Berlin" if country == "DE" else "McMurdo",
            postal_code="10115" if country == "DE" else "9999",
            country_code=country,
        ),
    )
    metadata = (("traceparent", traceparent),) if traceparent else ()
    return str(stub.PlaceOrder(request, timeout=DEFAULT_TIMEOUT, metadata=metadata).order_id)


def settle(
    stub: orders_grpc.OrdersServiceStub, order_id: str, timeout: float = 60
) -> orders_pb.Order:
    """Poll GetOrder until the saga has ended (CONFIRMED or CANCELLED)."""
    deadline = time.monotonic() + timeout
    while True:
        order = stub.GetOrder(
            orders_pb.GetOrderRequest(order_id=order_id), timeout=DEFAULT_TIMEOUT
        ).order
        if order.status != orders_pb.ORDER_STATUS_PENDING or time.monotonic() > deadline:
            return order
        time.sleep(0.05)  # poll interval within the deadline loop


def stock_line(inventory: inv_grpc.InventoryServiceStub, sku: str) -> str:
    stock = inventory.GetStock(inv_pb.GetStockRequest(sku=sku), timeout=DEFAULT_TIMEOUT)
    return f"{sku:<11} available={stock.available:<3} reserved={stock.reserved}"


def flow(trace_id: str) -> bool:
    """Play the four orders (the confirmed one in trace ``trace_id``); True when each ended
    as expected."""
    ok = True
    with connect(INVENTORY) as inv_channel, connect(ORDERS) as orders_channel:
        inventory = inv_grpc.InventoryServiceStub(inv_channel)
        orders = orders_grpc.OrdersServiceStub(orders_channel)
        heading("1. Stock arrives (InventoryService/SetStock)")
        inventory.SetStock(
            inv_pb.SetStockRequest(sku="mug-blue", quantity=10), timeout=DEFAULT_TIMEOUT
        )
        inventory.SetStock(
            inv_pb.SetStockRequest(sku="lamp-brass", quantity=1), timeout=DEFAULT_TIMEOUT
        )
        for sku in ("mug-blue", "lamp-brass"):
            print("  " + stock_line(inventory, sku))

        heading("2. Four orders are placed (OrdersService/PlaceOrder answers PENDING at once)")
        run = uuid.uuid4().hex[:6]
        placed = []
        for scenario in SCENARIOS:
            request_id = f"demo-{run}-{scenario[0].replace(' ', '-')}"
            # The confirmed order carries a caller's W3C traceparent: its whole trace is shown last.
            traceparent = f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01" if not placed else None
            order_id = place(orders, request_id, scenario, traceparent)
            placed.append((scenario, request_id, order_id))
            what, token, sku, quantity, country = scenario
            print(f"  {what:<13} {order_id}  ({token}, {quantity} x {sku}, to {country})")

        heading("3. The saga runs: reserve stock -> authorize payment -> book shipment -> confirm")
        for scenario, _, order_id in placed:
            order = settle(orders, order_id)
            status = orders_pb.OrderStatus.Name(order.status).removeprefix("ORDER_STATUS_")
            good = order.status == EXPECTED[scenario[0]]
            ok &= good
            colour = GREEN if good else RED
            reason = f"  reason: {order.cancellation_reason}" if order.cancellation_reason else ""
            print(f"  {scenario[0]:<13} {colour}{status:<10}{RESET}{reason}")

        heading("4. Stock after: only the confirmed order took units; nothing stays reserved")
        for sku in ("mug-blue", "lamp-brass"):
            print("  " + stock_line(inventory, sku))

        heading("5. Replaying a request_id returns the same order and starts nothing new")
        scenario, request_id, order_id = placed[0]
        again = place(orders, request_id, scenario)
        print(f"  {request_id} -> {again} ({'same order' if again == order_id else 'DIFFERENT'})")
        ok &= again == order_id

        heading("6. The event schemas registered by `mesh up`")
        registry = RegistryClient(REGISTRY, timeout=DEFAULT_TIMEOUT)
        for subject in registry.get("/subjects").json():
            print(f"  {subject}")
        registry.close()

        heading("7. A bad request names every bad field")
        try:
            orders.PlaceOrder(orders_pb.PlaceOrderRequest(request_id="x"), timeout=DEFAULT_TIMEOUT)
        except grpc.RpcError as error:
            print(f"  {RED}{error.code().name}{RESET}: {error.details()}")
    return ok


def show_trace(trace_id: str, timeout: float = 30.0) -> None:
    """Print the confirmed order's trace once its spans, the consumers' included, have arrived."""
    heading(f"8. The confirmed order's trace: one trace across the mesh (mesh trace {trace_id})")
    deadline, seen, stable_since = time.monotonic() + timeout, -1, time.monotonic()
    while time.monotonic() < deadline:
        result = subprocess.run(
            [MESH, "--root", str(ROOT), "trace", trace_id, "--json"],
            capture_output=True,
            text=True,
            check=False,
        )
        spans = json.loads(result.stdout) if result.returncode == 0 and result.stdout else []
        if len(spans) != seen:
            seen, stable_since = len(spans), time.monotonic()
        consumed = any(span["kind"] == "CONSUMER" for span in spans)
        # Spans are exported in batches every 0.5 s; the consumers' come after a group join.
        if consumed and time.monotonic() - stable_since > 1.5:
            break
        time.sleep(0.25)  # poll interval within the deadline loop
    mesh("trace", trace_id)
    print(
        f"{DIM}  In Jaeger (docker compose up, or OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317"
        f" with .cache/bin/jaeger running):\n  http://127.0.0.1:16686/trace/{trace_id}"
        f"   or  .venv/bin/mesh trace {trace_id} --jaeger http://127.0.0.1:16686{RESET}"
    )


def main() -> int:
    already = running_before()
    heading("meshkit demo: starting the mesh (mesh up -d)")
    started = time.monotonic()
    if mesh("up", "-d").returncode != 0:
        print(f"{RED}mesh up failed; see `mesh logs`{RESET}", file=sys.stderr)
        return 1
    print(f"{GREEN}mesh healthy in {time.monotonic() - started:.1f}s{RESET}")
    mesh("ps")
    trace_id = uuid.uuid4().hex
    try:
        ok = flow(trace_id)
        show_trace(trace_id)
    finally:
        heading("Try it yourself")
        print(
            f"""{DIM}  .venv/bin/mesh up -d
  G=".cache/bin/grpcurl -plaintext"
  $G {ORDERS} list
  $G -d '{{"request_id":"r-1","customer_id":"c-1","payment_token":"tok_visa",
          "lines":[{{"sku":"mug-blue","quantity":1,
                    "unit_price":{{"currency_code":"EUR","units":12}}}}],
          "shipping_address":{{"name":"Ada","line1":"1 Main St","city":"Berlin",
                               "postal_code":"10115","country_code":"DE"}}}}' \\
      {ORDERS} shop.orders.v1.OrdersService/PlaceOrder
  $G -d '{{"order_id":"<order_id>"}}' {ORDERS} shop.orders.v1.OrdersService/GetOrder
  $G -d '{{"order_id":"<order_id>"}}' {ORDERS} shop.orders.v1.OrdersService/ListOrderEvents
  $G -d '{{"sku":"mug-blue"}}' {INVENTORY} shop.inventory.v1.InventoryService/GetStock
  .venv/bin/schema-registry subjects
  .venv/bin/mesh ps; .venv/bin/mesh sagas; .venv/bin/mesh logs orders; .venv/bin/mesh down{RESET}"""
        )
        if already:
            heading("The mesh was running before the demo; it is left running.")
        else:
            heading("Stopping the mesh (mesh down)")
            mesh("down")
    if not ok:
        print(f"\n{RED}demo: an order did not end as its scenario says{RESET}", file=sys.stderr)
        return 1
    print(f"\n{GREEN}demo complete{RESET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
