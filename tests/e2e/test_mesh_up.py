"""End to end: `mesh up -d`, the real grpcurl against inventory, crash recovery, `mesh down`.

Every call carries the least token its RPC needs, from the mesh's own identity: an admin's to
set stock, orders' own (acting for a customer) to reserve it, none for the public GetStock.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from support.mesh import DEFAULT_PORTS, Grpcurl, mesh_cli, mesh_ps, mesh_tokens, port_in_use

INVENTORY = "127.0.0.1:50052"
SERVICE = "shop.inventory.v1.InventoryService"


mesh, ps = mesh_cli, mesh_ps


def live(pid: int) -> bool:
    """True when ``pid`` is a process that is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def processes_in(root: Path) -> list[int]:
    """Pids of live processes whose working directory is ``root`` (what the mesh starts)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if Path(os.readlink(entry / "cwd")) == root and live(int(entry.name)):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_grpcurl_sees_inventory_and_its_answers(running_mesh: Path, grpcurl: Grpcurl) -> None:
    tokens = mesh_tokens(running_mesh)
    admin = tokens.metadata("admin")
    listed = grpcurl.run(INVENTORY, "list")
    assert listed.returncode == 0, listed.stderr
    services = set(listed.stdout.split())
    assert {"grpc.health.v1.Health", SERVICE} <= services
    assert any(s.startswith("grpc.reflection.") for s in services)

    health = grpcurl.call(INVENTORY, "grpc.health.v1.Health/Check", {})
    assert health == {"status": "SERVING"}
    health = grpcurl.call(INVENTORY, "grpc.health.v1.Health/Check", {"service": SERVICE})
    assert health == {"status": "SERVING"}

    set_stock = grpcurl.call(INVENTORY, f"{SERVICE}/SetStock", {"sku": "mug", "quantity": 7}, admin)
    assert set_stock == {"sku": "mug", "available": 7}
    got = grpcurl.call(INVENTORY, f"{SERVICE}/GetStock", {"sku": "mug"})  # public
    assert got == {"sku": "mug", "available": 7}

    reserve = {"reservation_id": "order-1", "lines": [{"sku": "mug", "quantity": 2}]}
    # Only orders reserves stock, acting for the order's customer; an admin may not.
    refused = grpcurl.run(INVENTORY, f"{SERVICE}/ReserveStock", data=reserve, metadata=admin)
    assert "Code: PermissionDenied" in refused.stderr, refused.stderr
    assert "inventory.reserve" in refused.stderr
    reserved = grpcurl.call(
        INVENTORY, f"{SERVICE}/ReserveStock", reserve, tokens.acting_for("cust-1")
    )
    assert reserved["status"] == "RESERVATION_STATUS_RESERVED"
    assert grpcurl.call(INVENTORY, f"{SERVICE}/GetStock", {"sku": "mug"}) == {
        "sku": "mug",
        "available": 5,
        "reserved": 2,
    }


def test_a_call_without_a_token_is_unauthenticated_and_says_what_to_send(
    running_mesh: Path, grpcurl: Grpcurl
) -> None:
    result = grpcurl.run(INVENTORY, f"{SERVICE}/SetStock", data={"sku": "mug", "quantity": 1})
    assert result.returncode != 0
    assert "Code: Unauthenticated" in result.stderr, result.stderr
    assert "authorization: Bearer" in result.stderr and "mesh token" in result.stderr
    customer = mesh_tokens(running_mesh).metadata("customer")
    refused = grpcurl.run(
        INVENTORY, f"{SERVICE}/SetStock", data={"sku": "mug", "quantity": 1}, metadata=customer
    )
    assert "Code: PermissionDenied" in refused.stderr, refused.stderr
    assert "permission inventory.stock.set denied" in refused.stderr


def test_invalid_request_names_the_fields(running_mesh: Path, grpcurl: Grpcurl) -> None:
    admin = mesh_tokens(running_mesh).metadata("admin")
    result = grpcurl.run(
        INVENTORY, f"{SERVICE}/SetStock", data={"sku": "", "quantity": -1}, metadata=admin
    )
    assert result.returncode != 0
    assert "Code: InvalidArgument" in result.stderr
    assert "sku: must not be empty" in result.stderr
    assert "quantity: must be zero or more" in result.stderr
    # The google.rpc.BadRequest detail resolves through reflection and names each field.
    assert '"field": "sku"' in result.stderr
    assert '"field": "quantity"' in result.stderr


def test_short_stock_and_unknown_sku(running_mesh: Path, grpcurl: Grpcurl) -> None:
    tokens = mesh_tokens(running_mesh)
    grpcurl.call(
        INVENTORY, f"{SERVICE}/SetStock", {"sku": "cap", "quantity": 1}, tokens.metadata("admin")
    )
    short = grpcurl.run(
        INVENTORY,
        f"{SERVICE}/ReserveStock",
        data={"reservation_id": "o-2", "lines": [{"sku": "cap", "quantity": 2}]},
        metadata=tokens.acting_for("cust-1"),
    )
    assert "Code: FailedPrecondition" in short.stderr
    unknown = grpcurl.run(INVENTORY, f"{SERVICE}/GetStock", data={"sku": "nope"})
    assert "Code: NotFound" in unknown.stderr


def test_killed_service_comes_back_with_its_data(running_mesh: Path, grpcurl: Grpcurl) -> None:
    admin = mesh_tokens(running_mesh).metadata("admin")
    grpcurl.call(INVENTORY, f"{SERVICE}/SetStock", {"sku": "lamp", "quantity": 3}, admin)
    before = ps(running_mesh)["inventory"]
    assert before["state"] == "running"
    os.kill(int(str(before["pid"])), signal.SIGKILL)
    # ps notices the crash (poll: the kernel reaps asynchronously).
    deadline = time.monotonic() + 10
    while ps(running_mesh)["inventory"]["state"] != "stopped":
        assert time.monotonic() < deadline, "mesh ps still reports the killed process"
        time.sleep(0.05)
    again = mesh(running_mesh, "up", "-d")
    assert again.returncode == 0, again.stderr
    assert "inventory: healthy" in again.stderr
    assert "schema-registry: already running" in again.stderr
    after = ps(running_mesh)["inventory"]
    assert after["state"] == "running" and after["pid"] != before["pid"]
    got = grpcurl.call(INVENTORY, f"{SERVICE}/GetStock", {"sku": "lamp"})
    assert got == {"sku": "lamp", "available": 3}


def test_down_leaves_no_process(tmp_mesh_root: Path, kafka_bootstrap: str) -> None:
    up = mesh(tmp_mesh_root, "up", "-d", "--kafka", kafka_bootstrap)
    assert up.returncode == 0, up.stderr
    pids = [int(str(r["pid"])) for r in ps(tmp_mesh_root).values() if r["pid"]]
    assert len(pids) >= 2
    assert processes_in(tmp_mesh_root)
    down = mesh(tmp_mesh_root, "down")
    assert down.returncode == 0, down.stderr
    assert processes_in(tmp_mesh_root) == []
    # Gone, or at most a zombie waiting for this sandbox's pid 1 to reap it: nothing runs.
    assert not [pid for pid in pids if live(pid)]
    assert all(row["state"] == "stopped" for row in ps(tmp_mesh_root).values())
    assert not any(port_in_use(p) for p in DEFAULT_PORTS)


def test_embedded_kafka_is_the_default(tmp_mesh_root: Path) -> None:
    up = mesh(tmp_mesh_root, "up", "-d")
    try:
        assert up.returncode == 0, up.stderr
        kafka = ps(tmp_mesh_root)["kafka"]
        assert (kafka["mode"], kafka["state"]) == ("embedded", "running")
        again = mesh(tmp_mesh_root, "up", "-d", "--kafka", "local")
        assert again.returncode == 1
        assert "mesh down" in again.stderr
    finally:
        down = mesh(tmp_mesh_root, "down")
    assert down.returncode == 0
    assert processes_in(tmp_mesh_root) == []


def test_every_component_logs_json_lines(running_mesh: Path) -> None:
    """`mesh logs` reads like one stream: every line each component wrote is a JSON object,
    the schema registry's included; the one plain line allowed is the registry's ready line,
    which scripts read its port from."""
    logs = sorted((running_mesh / ".mesh" / "logs").glob("*.log"))
    assert {p.stem for p in logs} >= {"schema-registry", "inventory", "orders", "identity"}
    for log in logs:
        for number, line in enumerate(log.read_text().splitlines(), start=1):
            if not line.strip() or (
                log.stem == "schema-registry" and line.startswith("schema-registry listening on ")
            ):
                continue
            try:
                record = json.loads(line)
            except ValueError:
                raise AssertionError(f"{log.name}:{number} is not JSON: {line[:200]}") from None
            assert isinstance(record, dict), f"{log.name}:{number}: {line[:200]}"
