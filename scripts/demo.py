"""`make demo`: the mesh on embedded defaults, a scripted flow through real gRPC, then shutdown.

Starts the mesh with `mesh up -d` (embedded Kafka unless one is configured), sets and reads back
stock and walks a reservation through inventory with the generated stubs, prints what happened
and the grpcurl commands to try, and stops the mesh again (unless it was already running before
the demo, in which case it is left as it was found).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc

from meshkit import DEFAULT_TIMEOUT, connect
from schema_registry.client import RegistryClient
from shop.inventory.v1 import inventory_pb2 as pb
from shop.inventory.v1 import inventory_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parent.parent
MESH = str(Path(sys.executable).parent / "mesh")
INVENTORY = "127.0.0.1:50052"
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


def flow() -> None:
    with connect(INVENTORY) as channel:
        stub = pb_grpc.InventoryServiceStub(channel)
        sku = "mug-blue"
        heading("1. SetStock: 10 blue mugs arrive")
        print(stub.SetStock(pb.SetStockRequest(sku=sku, quantity=10), timeout=DEFAULT_TIMEOUT))
        heading("2. ReserveStock: an order holds 3 of them (idempotent by reservation_id)")
        reservation_id = f"demo-{uuid.uuid4().hex[:8]}"
        request = pb.ReserveStockRequest(
            reservation_id=reservation_id, lines=[pb.ReservationLine(sku=sku, quantity=3)]
        )
        first = stub.ReserveStock(request, timeout=DEFAULT_TIMEOUT)
        replay = stub.ReserveStock(request, timeout=DEFAULT_TIMEOUT)
        print(f"reservation {first.reservation_id}: {pb.ReservationStatus.Name(first.status)}")
        print(f"replayed:    {pb.ReservationStatus.Name(replay.status)} (held once, not twice)")
        heading("3. GetStock: read it back")
        stock = stub.GetStock(pb.GetStockRequest(sku=sku), timeout=DEFAULT_TIMEOUT)
        print(f"{sku}: available={stock.available} reserved={stock.reserved}")
        heading("4. CommitReservation: the mugs ship")
        stub.CommitReservation(
            pb.CommitReservationRequest(reservation_id=reservation_id), timeout=DEFAULT_TIMEOUT
        )
        stock = stub.GetStock(pb.GetStockRequest(sku=sku), timeout=DEFAULT_TIMEOUT)
        print(f"{sku}: available={stock.available} reserved={stock.reserved}")
        heading("5. The schema registry: event schemas registered by `mesh up`")
        registry = RegistryClient(REGISTRY, timeout=DEFAULT_TIMEOUT)
        for subject in registry.get("/subjects").json():
            level = registry.get(f"/config/{subject}?defaultToGlobal=true").json()
            print(f"  {subject}  ({level['compatibilityLevel']})")
        registry.close()
        heading("6. A bad request names every bad field")
        try:
            stub.SetStock(pb.SetStockRequest(sku="", quantity=-1), timeout=DEFAULT_TIMEOUT)
        except grpc.RpcError as error:
            print(f"{RED}{error.code().name}{RESET}: {error.details()}")


def main() -> int:
    already = running_before()
    heading("meshkit demo: starting the mesh (mesh up -d)")
    started = time.monotonic()
    if mesh("up", "-d").returncode != 0:
        print(f"{RED}mesh up failed; see `mesh logs`{RESET}", file=sys.stderr)
        return 1
    print(f"{GREEN}mesh healthy in {time.monotonic() - started:.1f}s{RESET}")
    mesh("ps")
    try:
        flow()
    finally:
        heading("Try it yourself")
        print(
            f"""{DIM}  .venv/bin/mesh up -d
  .cache/bin/grpcurl -plaintext {INVENTORY} list
  .cache/bin/grpcurl -plaintext {INVENTORY} grpc.health.v1.Health/Check
  .cache/bin/grpcurl -plaintext -d '{{"sku":"mug","quantity":5}}' \\
      {INVENTORY} shop.inventory.v1.InventoryService/SetStock
  .cache/bin/grpcurl -plaintext -d '{{"sku":"mug"}}' \\
      {INVENTORY} shop.inventory.v1.InventoryService/GetStock
  .cache/bin/grpcurl -plaintext \\
      -d '{{"reservation_id":"o-1","lines":[{{"sku":"mug","quantity":2}}]}}' \\
      {INVENTORY} shop.inventory.v1.InventoryService/ReserveStock
  .venv/bin/schema-registry subjects
  .venv/bin/mesh ps; .venv/bin/mesh logs inventory; .venv/bin/mesh down{RESET}"""
        )
        if already:
            heading("The mesh was running before the demo; it is left running.")
        else:
            heading("Stopping the mesh (mesh down)")
            mesh("down")
    print(f"\n{GREEN}demo complete{RESET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
