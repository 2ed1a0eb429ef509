"""`mesh chaos`: the account of a phase (lost, doubled, effects, the stock invariant) computed
from real figures, the readers of the services' databases against their real schemas, the
report, the scenarios' refusals, kill -9 of a real process, and the command's exits."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2
from grpc_health.v1 import health, health_pb2_grpc
from support.mesh import free_port

from inventory.adapters.sqlite import MIGRATIONS as INVENTORY_MIGRATIONS
from mesh_runner import chaos, cli, load
from mesh_runner.config import Mesh, load_mesh
from mesh_runner.kafka import KafkaChoice
from mesh_runner.processes import is_alive, spawn
from meshkit.db import Database
from orders.adapters.sqlite import MIGRATIONS as ORDERS_MIGRATIONS
from payments.adapters.sqlite import MIGRATIONS as PAYMENTS_MIGRATIONS
from shipping.adapters.sqlite import MIGRATIONS as SHIPPING_MIGRATIONS
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.orders.v1 import orders_pb2, orders_pb2_grpc

# -- the account -------------------------------------------------------------------------------


def clean_evidence() -> chaos.Evidence:
    """Three confirmed orders and one cancelled, every effect where it belongs; 100 on hand."""
    return chaos.Evidence(
        statuses={"o1": "CONFIRMED", "o2": "CONFIRMED", "o3": "CONFIRMED", "o4": "CANCELLED"},
        payments={"o1": ["CAPTURED"], "o2": ["CAPTURED"], "o3": ["CAPTURED"], "o4": ["VOIDED"]},
        shipments={"o1": ["BOOKED"], "o2": ["BOOKED"], "o3": ["BOOKED"], "o4": ["CANCELLED"]},
        reservations={
            "o1": ("COMMITTED", 1),
            "o2": ("COMMITTED", 1),
            "o3": ("COMMITTED", 1),
            "o4": ("RELEASED", 1),
        },
        stock_start=chaos.Stock(on_hand=100, reserved=0),
        stock_end=chaos.Stock(on_hand=97, reserved=0),
    )


def test_a_clean_phase_holds_and_adds_up() -> None:
    account = chaos.assess(clean_evidence())
    assert account["held"] is True and account["violations"] == []
    assert (account["placed"], account["confirmed"], account["cancelled"]) == (4, 3, 1)
    assert (account["still_running"], account["unknown"], account["lost"]) == (0, 0, 0)
    assert account["doubled"]["total"] == 0
    assert account["stock"] == {
        "start": {"on_hand": 100, "reserved": 0},
        "end": {"on_hand": 97, "reserved": 0},
        "confirmed_units": 3,
        "held": True,
        "faults": [],
    }


def test_lost_orders_are_the_unknown_and_the_never_terminal() -> None:
    evidence = clean_evidence()
    # o5 is still running and holds its unit; o6 was acknowledged but orders does not know it.
    evidence.statuses.update({"o5": "", "o6": ""})
    evidence.unknown = {"o6"}
    evidence.payments["o5"] = ["AUTHORIZED"]
    evidence.reservations["o5"] = ("RESERVED", 1)
    evidence.stock_end = chaos.Stock(on_hand=97, reserved=1)
    account = chaos.assess(evidence)
    assert account["placed"] == 6
    assert account["placed"] == (
        account["confirmed"] + account["cancelled"] + account["still_running"] + account["unknown"]
    )
    assert (account["still_running"], account["unknown"], account["lost"]) == (1, 1, 2)
    assert account["lost_orders"] == ["o6", "o5"]
    # The unit o5 holds is accounted for: only the lost orders break the run.
    assert account["stock"]["held"] is True
    assert account["violations"] == [
        "2 orders lost (1 unknown to orders, 1 not terminal after the drain)"
    ]
    assert account["held"] is False


def test_doubled_effects_are_counted_per_participant() -> None:
    evidence = clean_evidence()
    evidence.payments["o1"] = ["CAPTURED", "CAPTURED"]
    evidence.shipments["o2"] = ["BOOKED", "BOOKED"]
    evidence.reservations["o3"] = ("COMMITTED", 2)
    evidence.stock_end = chaos.Stock(on_hand=96, reserved=0)  # o3's second unit went too
    account = chaos.assess(evidence)
    assert account["doubled"] == {
        "payments": 1,
        "shipments": 1,
        "stock": 1,
        "total": 3,
        "orders": ["o1", "o2", "o3"],
    }
    assert "3 effects doubled (1 payments, 1 shipments, 1 reservations)" in account["violations"]
    # Two captures is also not what a confirmed order should have.
    assert any(
        e.startswith("o1: confirmed with payments") for e in account["mismatched"]["examples"]
    )
    assert account["stock"]["faults"] == [
        "on hand 100 at the start != 96 now + 3 units of confirmed orders"
    ]
    assert account["held"] is False


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda e: e.payments.pop("o1"), "o1: confirmed with payments none"),
        (lambda e: e.shipments.update(o2=["CANCELLED"]), "o2: confirmed with shipments"),
        (lambda e: e.reservations.update(o3=("RESERVED", 1)), "o3: confirmed with stock RESERVED"),
        (lambda e: e.payments.update(o4=["AUTHORIZED"]), "o4: cancelled with a payment still"),
        (lambda e: e.shipments.update(o4=["BOOKED"]), "o4: cancelled with a shipment still"),
        (lambda e: e.reservations.update(o4=("RESERVED", 1)), "o4: cancelled with its stock"),
        (lambda e: e.reservations.update(o9=("RESERVED", 1)), "o9: stock reserved (RESERVED)"),
    ],
)
def test_effects_that_do_not_match_the_outcome_are_named(change: Any, words: str) -> None:
    evidence = clean_evidence()
    change(evidence)
    account = chaos.assess(evidence)
    assert account["mismatched"]["count"] == 1
    assert account["mismatched"]["examples"][0].startswith(words)
    assert "1 orders' effects do not match their outcome" in account["violations"]
    assert account["held"] is False


def test_a_unit_left_reserved_breaks_the_stock_invariant() -> None:
    evidence = clean_evidence()
    evidence.stock_end = chaos.Stock(on_hand=97, reserved=1)
    account = chaos.assess(evidence)
    assert account["stock"]["held"] is False
    assert account["violations"] == [
        "stock invariant: 1 units left reserved, 0 of them by orders still running"
    ]


# -- the services' databases, with their own schemas --------------------------------------------


def _db(path: Path, migrations: Any, *rows: tuple[str, tuple[Any, ...]]) -> None:
    db = Database(path, migrations)
    try:
        with db.transaction() as conn:
            for sql, values in rows:
                conn.execute(sql, values)
    finally:
        db.close()


PAYMENT = (
    "INSERT INTO payments (payment_id, order_id, amount_nanos, currency_code, status,"
    " decline_reason, created_us, updated_us) VALUES (?, ?, 1000000000, 'EUR', ?, ?, ?, ?)"
)
SHIPMENT = (
    "INSERT INTO shipments (shipment_id, order_id, name, line1, line2, city, postal_code,"
    " country_code, tracking_number, status, created_at_ms, updated_at_ms)"
    " VALUES (?, ?, 'A', 'B', '', 'Berlin', '10117', 'DE', ?, ?, ?, ?)"
)


def test_the_readers_find_each_orders_effects_in_the_real_schemas(tmp_path: Path) -> None:
    _db(
        tmp_path / "payments.db",
        PAYMENTS_MIGRATIONS,
        (PAYMENT, ("p1", "o1", "CAPTURED", "", 1, 1)),
        (PAYMENT, ("p2", "o2", "DECLINED", "card declined", 2, 2)),
        (PAYMENT, ("p3", "o2", "AUTHORIZED", "", 3, 3)),
        (PAYMENT, ("p4", "other", "CAPTURED", "", 4, 4)),
    )
    _db(
        tmp_path / "shipping.db",
        SHIPPING_MIGRATIONS,
        (SHIPMENT, ("s1", "o1", "T1", "BOOKED", 1, 1)),
        (SHIPMENT, ("s2", "o3", "T2", "CANCELLED", 2, 2)),
    )
    insert_reservation = "INSERT INTO reservations VALUES (?, ?, 0, 0)"
    insert_line = "INSERT INTO reservation_lines VALUES (?, ?, ?)"
    _db(
        tmp_path / "inventory.db",
        INVENTORY_MIGRATIONS,
        (insert_reservation, ("o1", "COMMITTED")),
        (insert_line, ("o1", "chaos-sku", 1)),
        (insert_line, ("o1", "other-sku", 4)),
        (insert_reservation, ("o3", "RELEASED")),
        (insert_line, ("o3", "chaos-sku", 1)),
    )
    insert_request = "INSERT INTO order_requests VALUES (?, ?, 'fp', 0)"
    _db(
        tmp_path / "orders.db",
        ORDERS_MIGRATIONS,
        (insert_request, ("load-run1-0", "o1")),
        (insert_request, ("load-run1-1", "o2")),
        (insert_request, ("load-run2-0", "x")),
        (insert_request, ("load-run10-0", "y")),
    )
    orders = ["o1", "o2", "o3", *(f"n{i}" for i in range(1200))]  # more than one IN (...)
    assert chaos.read_statuses_by_order(tmp_path / "payments.db", "payments", orders) == {
        "o1": ["CAPTURED"],
        "o2": ["DECLINED", "AUTHORIZED"],
    }
    assert chaos.read_statuses_by_order(tmp_path / "shipping.db", "shipments", orders) == {
        "o1": ["BOOKED"],
        "o3": ["CANCELLED"],
    }
    assert chaos.read_reservations(tmp_path / "inventory.db", "chaos-sku") == {
        "o1": ("COMMITTED", 1),
        "o3": ("RELEASED", 1),
    }
    assert chaos.read_accepted(tmp_path / "orders.db", "run1") == {
        "load-run1-0": "o1",
        "load-run1-1": "o2",
    }
    with pytest.raises(chaos.NotUp, match="does not exist"):
        chaos.read_accepted(tmp_path / "missing.db", "run1")


def test_a_database_is_where_the_service_keeps_it(tmp_path: Path) -> None:
    (tmp_path / "mesh.toml").write_text(
        '[[component]]\nname = "payments"\nport = 1\ncommand = ["x"]\nhealth = "grpc"\n'
        '[[component]]\nname = "order_views"\nport = 2\ncommand = ["x"]\nhealth = "grpc"\n'
        'env = { ORDER_VIEWS_DB_PATH = "/srv/views.db" }\n'
    )
    mesh = load_mesh(tmp_path)
    assert chaos.database_of(mesh, "payments", {}) == tmp_path / ".mesh/data/payments.db"
    assert chaos.database_of(mesh, "payments", {"PAYMENTS_DB_PATH": "x/p.db"}) == (
        tmp_path / "x/p.db"
    )
    assert chaos.database_of(mesh, "order_views", {}) == Path("/srv/views.db")


# -- scenarios -----------------------------------------------------------------------------------


def test_an_outage_gets_load_before_and_after_it() -> None:
    assert chaos.lead_s(30) == 5 and chaos.lead_s(10) == 2
    assert chaos.load_duration("registry-outage", 30, 30) == 40
    assert chaos.load_duration("broker-restart", 30, 10) == 30
    assert chaos.load_duration("registry-outage", 10, 5) == 10
    assert chaos.load_duration("kill", 10, 30) == 10
    assert chaos.Options("broker-restart").outage_s == 10
    assert chaos.Options("registry-outage").outage_s == 30
    assert chaos.Options("registry-outage", outage=4).describe() == (
        "stop the schema registry for 4s, then start it"
    )


def _mesh(root: Path, *names: str) -> Mesh:
    lines = []
    for name in names:
        lines.append(
            f'[[component]]\nname = "{name}"\nport = {free_port()}\ncommand = ["x"]\n'
            'health = "grpc"\n'
        )
    (root / "mesh.toml").write_text("".join(lines))
    return load_mesh(root)


def test_broker_restart_refuses_a_broker_the_runner_does_not_control(tmp_path: Path) -> None:
    mesh = _mesh(tmp_path, "orders")
    with pytest.raises(chaos.NotUp, match="records no Kafka"):
        chaos.controlled_broker(mesh)
    KafkaChoice("embedded", "127.0.0.1:40000", managed=True).save(mesh.run_dir)
    with pytest.raises(chaos.Refused, match="embedded mock cluster"):
        chaos.controlled_broker(mesh)
    KafkaChoice("external", "10.0.0.5:9092", managed=False).save(mesh.run_dir)
    with pytest.raises(chaos.Refused, match=r"10\.0\.0\.5:9092 is not one this runner started"):
        chaos.controlled_broker(mesh)
    # The local address, but no broker of this mesh's (nor of its scripts/kafka) runs.
    KafkaChoice("local", "127.0.0.1:9092", managed=True).save(mesh.run_dir)
    with pytest.raises(chaos.Refused, match="neither this mesh nor its scripts/kafka"):
        chaos.controlled_broker(mesh)


def test_kill_refuses_targets_the_mesh_does_not_have(tmp_path: Path) -> None:
    mesh = _mesh(tmp_path, "orders", "payments")
    options = chaos.Options("kill", targets=("payments", "nosuch"))
    with pytest.raises(chaos.Refused, match="not components of the mesh: nosuch"):
        chaos.make_fault(options, mesh, print)


def test_a_fault_file_scenario_puts_the_file_back_as_it_was(tmp_path: Path) -> None:
    mesh = _mesh(tmp_path, "payments", "shipping")
    fault = chaos.make_fault(chaos.Options("payments-unavailable"), mesh, lambda _: None)
    path = tmp_path / ".mesh" / "faults" / "payments.json"

    async def cycle() -> list[dict[str, Any]]:
        await fault.start()
        during: list[dict[str, Any]] = json.loads(path.read_text())["faults"]
        await fault.stop()
        await fault.stop()  # idempotent
        return during

    scenario = {
        "method": "shop.payments.v1.PaymentsService/*",
        "abort": {"code": "UNAVAILABLE", "percent": 20},
    }
    assert asyncio.run(cycle()) == [scenario]
    assert not path.exists()
    # A fault the user had set stays beside the scenario's, and is all that is left after.
    own = '{"faults": [{"method": "*", "delay": {"ms": 5, "percent": 1}}]}'
    path.write_text(own)
    assert asyncio.run(cycle()) == [{"method": "*", "delay": {"ms": 5, "percent": 1}}, scenario]
    assert path.read_text() == own
    assert len(fault.events) == 4 and "payments: fault removed" in fault.events[-1]


def test_an_outage_stops_then_starts_and_an_interrupt_cuts_it_short() -> None:
    calls: list[str] = []

    def step(name: str) -> Callable[[], str]:
        def run() -> str:
            calls.append(name)
            return ""

        return run

    def outage(lead: float, outage: float) -> chaos.Outage:
        return chaos.Outage(
            "part",
            step("down"),
            step("up"),
            lead=lead,
            outage=outage,
            say=lambda _: None,
        )

    async def whole() -> list[str]:
        part = outage(0.01, 0.05)
        await part.start()
        await part.stop()
        return part.events

    events = asyncio.run(whole())
    assert calls == ["down", "up"]
    assert "part stopped" in events[0] and "part started again" in events[1]

    async def interrupted_in_the_outage() -> None:
        part = outage(0.0, 60.0)
        await part.start()
        while "down" not in calls:
            await asyncio.sleep(0.01)  # poll until the part is down
        started = time.monotonic()
        part.interrupt()
        await part.stop()
        assert time.monotonic() - started < 5  # not the 60 s outage

    calls.clear()
    asyncio.run(interrupted_in_the_outage())
    assert calls == ["down", "up"]

    async def interrupted_before() -> None:
        part = outage(60.0, 60.0)
        await part.start()
        part.interrupt()
        await part.stop()

    calls.clear()
    asyncio.run(interrupted_before())
    assert calls == []


def test_kill_9_ends_a_real_process_and_its_replicas_are_found(tmp_path: Path) -> None:
    mesh = _mesh(tmp_path, "orders", "payments")
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    records = {}
    for name in ("orders", "orders#2", "payments"):
        record = spawn(name, sleeper, port=0, env={}, cwd=tmp_path, log_path=tmp_path / "x.log")
        record.save(mesh.run_dir)
        records[name] = record
    try:
        assert [r.name for r in chaos.processes_of(mesh, ["orders"])] == ["orders", "orders#2"]
        assert chaos.kill_9(records["orders#2"]) is True
        assert not is_alive(records["orders#2"])
        assert [r.name for r in chaos.processes_of(mesh, ["orders"])] == ["orders"]
        assert is_alive(records["payments"])
    finally:
        for record in records.values():
            subprocess.run(["kill", "-9", str(record.pid)], check=False, capture_output=True)


# -- the report and the command ------------------------------------------------------------------


def _phase(evidence: chaos.Evidence, latencies: list[float]) -> chaos.Phase:
    plan = load.Plan(rate=10, duration=2, sku="chaos-x-baseline")
    tally = load.Tally(scheduled=4, sent=4, placed=4)
    for ms in latencies:
        tally.finished(True, 100.0, 100.0 + ms / 1000, "")
    summary = load.summarize(plan, tally, send_s=2, drain_s=0.5, client_cpu_s=0)
    phase = chaos.Phase(plan, load.RunResult(summary, tally, "run", None))
    phase.stock_start = evidence.stock_start
    phase.evidence = evidence
    return phase


def test_the_report_puts_the_fault_beside_the_baseline() -> None:
    baseline = chaos.phase_report(_phase(clean_evidence(), [40, 50, 60, 70]))
    broken = clean_evidence()
    broken.unknown = {"o3"}
    broken.statuses["o3"] = ""
    faulted = chaos.phase_report(_phase(broken, [400, 500, 600, 700]))
    faulted["events"] = ["   5.0s  kill -9 payments (pid 1)"]
    report = {
        "scenario": "kill",
        "description": "kill -9 one of payments every 5s",
        "rate": 10.0,
        "baseline": baseline,
        "faulted": faulted,
        "held": False,
        "interrupted": False,
    }
    text = chaos.render(report)
    assert "mesh chaos kill: kill -9 one of payments every 5s" in text
    lines = {line[2:26].strip(): line[26:] for line in text.splitlines() if line.startswith("  ")}
    assert lines["latency p50"].split()[:4] == ["50", "ms", "500", "ms"]
    assert lines["lost"].split()[:2] == ["0", "1"]
    # o3's unit left the shelf, but o3 is not confirmed (orders does not know it).
    assert lines["stock invariant"].split()[:2] == ["held", "BROKEN"]
    assert "5.0s  kill -9 payments (pid 1)" in text
    assert "verdict: BROKEN" in text
    assert "kill: 1 orders lost (1 unknown to orders, 0 not terminal after the drain)" in text
    assert "kill: lost order o3" in text
    assert "kill: stock invariant: on hand 100 at the start != 97 now + 2 units" in text


def test_chaos_help_lists_every_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["chaos", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for name in chaos.SCENARIOS:
        assert f"  {name}" in out
    with pytest.raises(SystemExit) as exited:
        cli.main(["chaos", "flood"])
    assert exited.value.code == 2


def test_chaos_refuses_a_scenario_the_mesh_cannot_run_before_any_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MESH_CONFIG", raising=False)
    mesh = _mesh(tmp_path, "orders", "inventory")
    KafkaChoice("embedded", "127.0.0.1:40000", managed=True).save(mesh.run_dir)
    assert cli.main(["--root", str(tmp_path), "chaos", "broker-restart"]) == 2
    assert "embedded mock cluster" in capsys.readouterr().err


def test_chaos_says_which_address_it_tried_when_the_mesh_is_not_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("MESH_CONFIG", "MESH_ADDRESS_ORDERS", "MESH_ADDRESS_INVENTORY", "MESH_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    mesh = _mesh(tmp_path, "orders", "inventory")
    argv = ["--root", str(tmp_path), "chaos", "kill", "--targets", "orders", "--duration", "1"]
    assert cli.main(argv) == 3
    err = capsys.readouterr().err
    port = mesh.component("orders").port
    assert f"orders does not answer at 127.0.0.1:{port}" in err


# -- the load engine as chaos drives it -----------------------------------------------------------

FAILS = 4


class _FlakyShop(
    orders_pb2_grpc.OrdersServiceServicer, inventory_pb2_grpc.InventoryServiceServicer
):
    """Orders and inventory on one port: each PlaceOrder request id fails UNAVAILABLE FAILS
    times before it is accepted (once per request id, as orders is); every order CONFIRMED."""

    def __init__(self) -> None:
        self.attempts: Counter[str] = Counter()
        self.lock = threading.Lock()

    def PlaceOrder(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self.lock:
            self.attempts[request.request_id] += 1
            attempt = self.attempts[request.request_id]
        if attempt <= FAILS:
            context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
        return orders_pb2.PlaceOrderResponse(order_id=f"order-{request.request_id}")

    def GetOrder(self, request: Any, context: grpc.ServicerContext) -> Any:
        now = timestamp_pb2.Timestamp()
        now.GetCurrentTime()
        return orders_pb2.GetOrderResponse(
            order=orders_pb2.Order(
                order_id=request.order_id,
                status=orders_pb2.ORDER_STATUS_CONFIRMED,
                created_at=now,
                updated_at=now,
            )
        )

    def GetStock(self, request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.NOT_FOUND, "no such sku")

    def SetStock(self, request: Any, context: grpc.ServicerContext) -> Any:
        return inventory_pb2.SetStockResponse(sku=request.sku, available=request.quantity)


def test_the_load_sends_a_failed_place_again_with_its_request_id_and_calls_the_hooks() -> None:
    shop = _FlakyShop()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    orders_pb2_grpc.add_OrdersServiceServicer_to_server(shop, server)
    inventory_pb2_grpc.add_InventoryServiceServicer_to_server(shop, server)
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    server.start()
    seen: list[tuple[str, int]] = []

    async def on_start(tally: load.Tally) -> None:
        seen.append(("start", tally.sent))

    async def on_send_end(tally: load.Tally) -> None:
        seen.append(("send end", tally.sent))

    plan = load.Plan(rate=20, duration=0.25, place_retry_s=10)
    try:
        result = asyncio.run(
            load.drive_run(
                plan,
                load.Targets(address, address, "test", "test"),
                report=lambda *_: None,
                hooks=load.Hooks(on_start, on_send_end),
            )
        )
    finally:
        server.stop(grace=None)
    assert seen == [("start", 0), ("send end", 5)]
    assert result.summary["placed"] == result.summary["confirmed"] == 5
    assert result.summary["place_failed"] == 0
    # More failures than gRPC's own retry takes (4 attempts a call): each request id was sent
    # again by the load, until its 5th attempt made one order.
    assert result.tally.place_retries >= 5
    assert set(shop.attempts.values()) == {FAILS + 1}
    assert all(rid.startswith(f"load-{result.run_id}-") for rid in shop.attempts)
    assert result.tally.outcomes == {f"order-{rid}": "CONFIRMED" for rid in shop.attempts}
    assert result.drain_end is not None
