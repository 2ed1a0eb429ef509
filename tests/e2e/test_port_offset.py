"""End to end: `mesh --port-offset N` runs a second mesh beside the first, from the same checkout
(issue 19). Both healthy at once, an order confirmed through each, `ps` of each shows only its
own, and `down` of one leaves the other running. Each start is also prompt on the embedded broker:
order_views joins its consumer group within seconds of subscribing (it waited for its producers'
first events before: 13-20 s, the first order's trace as long), and no component logs
UNKNOWN_TOPIC_OR_PART.

A reduced mesh (what an order needs: registry, identity, inventory, payments, shipping, orders;
and order_views) on free ports keeps it lean; tests/unit/runner/test_port_offset.py proves every
component of the full mesh.toml moves.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

from support.mesh import (
    REPO,
    Grpcurl,
    MeshTokens,
    mesh_cli,
    place_order_request,
    port_in_use,
    write_moved_mesh_toml,
)

NAMES = [
    "schema-registry",
    "identity",
    "inventory",
    "payments",
    "shipping",
    "orders",
    "order_views",
]
JOINED = re.compile(
    r"consumer group \S+ joined: \d+ partitions assigned ([\d.]+) s after subscribing"
)
# The embedded mock cluster's classic group waits 3 s for more members before the first assignment.
JOIN_WITHIN_S = 6.0
ORDERS_SVC = "shop.orders.v1.OrdersService"
INVENTORY_SVC = "shop.inventory.v1.InventoryService"


def free_offset(ports: list[int]) -> int:
    """An offset that puts every one of ``ports`` on a free port."""
    offset = 100
    while any(port_in_use(p + offset) for p in ports):
        offset += 7
    return offset


def ps(root: Path, *global_args: str) -> dict[str, dict[str, Any]]:
    result = mesh_cli(root, *global_args, "ps", "--json")
    assert result.returncode == 0, result.stderr
    return {str(row["name"]): row for row in json.loads(result.stdout)}


def wait_joined(*state_dirs: Path) -> None:
    """Until order_views of each mesh logged its join (a healthy service may not have yet)."""
    deadline = time.monotonic() + 30
    for state_dir in state_dirs:
        log = state_dir / "logs" / "order_views.log"
        while not JOINED.search(log.read_text()):
            assert time.monotonic() < deadline, f"no join in {log}"
            time.sleep(0.1)  # poll interval within the deadline loop


def assert_prompt_start(state_dir: Path) -> None:
    """order_views joined its group soon after subscribing; no log says UNKNOWN_TOPIC_OR_PART."""
    logs = {path.name: path.read_text() for path in (state_dir / "logs").glob("*.log")}
    joined = JOINED.findall(logs["order_views.log"])
    assert joined, "order_views never logged joining its consumer group"
    assert float(joined[0]) <= JOIN_WITHIN_S, joined
    assert not [name for name, text in logs.items() if "UNKNOWN_TOPIC_OR_PART" in text]


def order_confirmed(grpcurl: Grpcurl, tokens: MeshTokens, ports: dict[str, int]) -> None:
    """Stock a SKU, place an order on it and see it CONFIRMED, all through this mesh's ports."""
    sku = f"mug-{uuid.uuid4().hex[:8]}"
    inventory, orders = f"127.0.0.1:{ports['inventory']}", f"127.0.0.1:{ports['orders']}"
    grpcurl.call(
        inventory,
        f"{INVENTORY_SVC}/SetStock",
        {"sku": sku, "quantity": 5},
        tokens.metadata("admin"),
    )
    customer = tokens.metadata("customer", "cust-1")
    request = place_order_request("cust-1", sku)
    placed = grpcurl.call(orders, f"{ORDERS_SVC}/PlaceOrder", request, customer)
    deadline = time.monotonic() + 30
    while True:
        got = grpcurl.call(
            orders, f"{ORDERS_SVC}/GetOrder", {"order_id": placed["order_id"]}, customer
        )
        order = got["order"]
        assert isinstance(order, dict)
        if order["status"] == "ORDER_STATUS_CONFIRMED":
            return
        assert time.monotonic() < deadline, f"order still {order['status']}"
        time.sleep(0.1)  # poll interval within the deadline loop


def test_a_second_mesh_runs_beside_the_first(tmp_path: Path, grpcurl: Grpcurl) -> None:
    first = write_moved_mesh_toml(tmp_path, NAMES)
    for name in ("proto", "scripts", ".cache"):
        (tmp_path / name).symlink_to(REPO / name)
    offset = free_offset(list(first.values()))
    moved = ("--port-offset", str(offset))
    second = {name: port + offset for name, port in first.items()}
    shadow = tmp_path / ".mesh" / f"offset-{offset}"
    try:
        up = mesh_cli(tmp_path, "up", "-d")
        assert up.returncode == 0, up.stderr
        up = mesh_cli(tmp_path, *moved, "up", "-d")
        assert up.returncode == 0, up.stderr

        mine, theirs = ps(tmp_path), ps(tmp_path, *moved)
        for name in NAMES:
            assert (mine[name]["state"], mine[name]["port"]) == ("running", first[name])
            assert (theirs[name]["state"], theirs[name]["port"]) == ("running", second[name])
        assert {r["pid"] for r in mine.values()}.isdisjoint(r["pid"] for r in theirs.values())
        assert mine["kafka"]["port"] != theirs["kafka"]["port"]

        wait_joined(tmp_path / ".mesh", shadow / ".mesh")
        assert_prompt_start(tmp_path / ".mesh")
        assert_prompt_start(shadow / ".mesh")

        order_confirmed(grpcurl, MeshTokens(tmp_path), first)
        order_confirmed(grpcurl, MeshTokens(shadow), second)

        down = mesh_cli(tmp_path, *moved, "down")
        assert down.returncode == 0, down.stderr
        assert all(r["state"] == "stopped" for r in ps(tmp_path, *moved).values())
        assert all(r["state"] == "running" for r in ps(tmp_path).values())
    finally:
        mesh_cli(tmp_path, *moved, "down")
        mesh_cli(tmp_path, "down")
