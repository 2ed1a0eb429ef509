"""`mesh load`: its schedule, percentiles and summary, and the run itself against an in-process
orders/inventory double whose PlaceOrder can be held (the real orders service cannot be made slow
on demand): open loop, the concurrency cap, the stock top-up, latency from the service's stamps,
and the clear failure when the mesh is not up.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2
from grpc_health.v1 import health, health_pb2_grpc
from support.mesh import free_port

from mesh_runner import cli, load
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.orders.v1 import orders_pb2, orders_pb2_grpc

# -- schedule, percentiles, summary ---------------------------------------------------------------


def test_the_schedule_is_evenly_spaced_and_inside_the_duration() -> None:
    offsets = load.start_offsets(20, 3)
    assert len(offsets) == load.planned_count(20, 3) == 60
    assert offsets[0] == 0
    assert all(b - a == pytest.approx(0.05) for a, b in itertools.pairwise(offsets))
    assert offsets[-1] < 3
    assert load.start_offsets(0.5, 3) == [0.0, 2.0]
    assert load.planned_count(3, 0.1) == 1  # the first is due at once
    assert load.planned_count(0.1, 30) == 3  # 0.1 * 30 is 3.0000000000000004 in floats


def test_percentiles_are_nearest_rank_values_that_were_measured() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # 1..100, unsorted
    assert load.percentile(values, 50) == 50
    assert load.percentile(values, 95) == 95
    assert load.percentile(values, 99) == 99
    assert load.percentile(values, 100) == 100
    assert load.percentile([7.0], 99) == 7.0
    assert load.percentile([], 50) is None
    stats = load.latency_stats([3.0, 1.0, 2.0, 40.0])
    assert stats == {"count": 4, "p50": 2.0, "p95": 40.0, "p99": 40.0, "max": 40.0}
    assert load.latency_stats([]) == {
        "count": 0,
        "p50": None,
        "p95": None,
        "p99": None,
        "max": None,
    }


def test_the_pacer_spaces_calls_after_a_burst_fifo() -> None:
    pacer = load.Pacer(per_s=10, burst_s=0.2)  # one per 0.1 s; 0.2 s worth at once after quiet
    assert [pacer.delay(now=5.0) for _ in range(5)] == pytest.approx([0, 0, 0, 0.1, 0.2])
    assert pacer.delay(now=5.25) == pytest.approx(0.05)  # still behind its queue
    assert pacer.delay(now=60.0) == 0  # quiet long enough: the burst is back


def test_the_summary_adds_up_and_says_what_was_skipped_or_failed() -> None:
    tally = load.Tally(scheduled=10, sent=8, placed=7, place_failed=1, skipped=2, max_in_flight=5)
    tally.place_errors["DEADLINE_EXCEEDED"] += 1
    tally.finished(True, created=100.0, updated=100.2, reason="")
    tally.finished(True, created=100.5, updated=100.6, reason="")
    tally.finished(False, created=101.0, updated=102.0, reason="payment declined")
    plan = load.Plan(rate=5, duration=2, concurrency=5)
    summary = load.summarize(plan, tally, send_s=2, drain_s=1, client_cpu_s=0.1, orders="o:1")
    assert summary["placed"] == 7
    assert (summary["confirmed"], summary["cancelled"], summary["not_finished"]) == (2, 1, 4)
    assert (
        summary["placed"] == summary["confirmed"] + summary["cancelled"] + summary["not_finished"]
    )
    assert summary["latency_ms"] == {
        "count": 3,
        "p50": 200.0,
        "p95": 1000.0,
        "p99": 1000.0,
        "max": 1000.0,
    }
    assert summary["achieved_rate"] == 4.0
    stopped = load.summarize(plan, tally, send_s=0.5, drain_s=0, client_cpu_s=0, interrupted=True)
    assert stopped["achieved_rate"] == 16.0  # 8 sent in the 0.5 s before Ctrl-C
    assert summary["confirmed_per_s"] == 1.0  # 2 confirmed from 100.0 (first placed) to 102.0
    assert summary["cancel_reasons"] == {"payment declined": 1}
    text = load.render_summary(summary)
    assert "SKIPPED      2" in text and "--concurrency" in text
    assert "FAILED       1 PlaceOrder calls (DEADLINE_EXCEEDED: 1)" in text
    assert "not finished 4 (waited 1s for stragglers" in text
    assert "p50 200 ms  p95 1000 ms  p99 1000 ms" in text


def test_the_progress_line_shows_rate_and_counts() -> None:
    tally = load.Tally(sent=30, placed=29)
    tally.finished(True, 0.0, 0.1, "")
    tally.finished(False, 0.0, 0.1, "out of stock")
    line = load.progress_line(tally, elapsed=1.5, duration=3, rate_now=19.6)
    assert line == "  1.5/3s  rate   19.6/s  placed 29  confirmed 1  cancelled 1  in flight 28"
    draining = load.progress_line(tally, elapsed=4.0, duration=3, rate_now=0, draining=True)
    assert draining.startswith("draining  1.0s") and "in flight 28" in draining


# -- the run, against a double of orders and inventory -------------------------------------------


@dataclass
class Shop:
    """Orders + inventory + health on one port. PlaceOrder is held until ``hold_until`` calls
    have arrived, or for ``hold_s``; every order is CONFIRMED with updated_at = created_at +
    (n + 1) ms for the n-th order placed."""

    hold_until: int = 1
    hold_s: float = 0.0
    arrived: int = 0
    orders: dict[str, tuple[float, int]] = field(default_factory=dict)
    set_stock: list[tuple[str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    all_in: threading.Event = field(default_factory=threading.Event)

    def place(self, request: orders_pb2.PlaceOrderRequest) -> orders_pb2.PlaceOrderResponse:
        assert request.lines[0].sku and request.payment_token == "tok_visa"
        with self.lock:
            n = self.arrived
            self.arrived += 1
            if self.arrived >= self.hold_until:
                self.all_in.set()
            self.orders[request.request_id] = (time.time(), n)
        self.all_in.wait(self.hold_s)
        return orders_pb2.PlaceOrderResponse(
            order_id=request.request_id, status=orders_pb2.ORDER_STATUS_PENDING
        )

    def get(self, request: orders_pb2.GetOrderRequest) -> orders_pb2.GetOrderResponse:
        created, n = self.orders[request.order_id]
        return orders_pb2.GetOrderResponse(
            order=orders_pb2.Order(
                order_id=request.order_id,
                status=orders_pb2.ORDER_STATUS_CONFIRMED,
                created_at=_ts(created),
                updated_at=_ts(created + (n + 1) / 1000),
            )
        )


def _ts(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(round(seconds * 1e6) * 1000)
    return stamp


class _Orders(orders_pb2_grpc.OrdersServiceServicer):
    def __init__(self, shop: Shop) -> None:
        self.shop = shop

    def PlaceOrder(self, request: Any, context: Any) -> Any:
        return self.shop.place(request)

    def GetOrder(self, request: Any, context: Any) -> Any:
        return self.shop.get(request)

    def ListOrderEvents(self, request: Any, context: Any) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in the double")


class _Inventory(inventory_pb2_grpc.InventoryServiceServicer):
    def __init__(self, shop: Shop) -> None:
        self.shop = shop

    def GetStock(self, request: Any, context: Any) -> Any:
        context.abort(grpc.StatusCode.NOT_FOUND, f"no sku {request.sku}")

    def SetStock(self, request: Any, context: Any) -> Any:
        self.shop.set_stock.append((request.sku, request.quantity))
        return inventory_pb2.SetStockResponse(sku=request.sku, available=request.quantity)


@pytest.fixture
def shop() -> Iterator[tuple[Shop, load.Targets]]:
    double = Shop()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64))
    orders_pb2_grpc.add_OrdersServiceServicer_to_server(_Orders(double), server)
    inventory_pb2_grpc.add_InventoryServiceServicer_to_server(_Inventory(double), server)
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    address = f"127.0.0.1:{port}"
    yield double, load.Targets(address, address, "test", "test")
    double.all_in.set()
    server.stop(grace=None)


def _drive(plan: load.Plan, targets: load.Targets) -> tuple[dict[str, Any], list[str]]:
    said: list[str] = []
    summary = asyncio.run(load.drive(plan, targets, report=lambda text, _: said.append(text)))
    return summary, said


def test_orders_start_on_time_while_earlier_ones_have_not_answered(
    shop: tuple[Shop, load.Targets],
) -> None:
    double, targets = shop
    # No PlaceOrder answers before all 20 have arrived: a closed loop would stall at the first.
    double.hold_until, double.hold_s = 20, 30.0
    summary, said = _drive(load.Plan(rate=40, duration=0.5, sku="load-sku"), targets)
    assert double.arrived == 20
    assert summary["scheduled"] == summary["placed"] == summary["confirmed"] == 20
    assert summary["not_finished"] == summary["skipped"] == summary["place_failed"] == 0
    assert summary["max_in_flight"] == 20
    # Latency is the service's created_at -> updated_at: 1..20 ms here, however late we looked.
    assert summary["latency_ms"] == {"count": 20, "p50": 10.0, "p95": 19.0, "p99": 20.0, "max": 20}
    assert double.set_stock == [("load-sku", 30)]  # 20 planned + at least 10 spare
    assert summary["stock"]["set_to"] == 30
    assert any("topped up load-sku to 30" in line for line in said)


def test_orders_due_beyond_the_concurrency_cap_are_skipped_and_reported(
    shop: tuple[Shop, load.Targets],
) -> None:
    double, targets = shop
    # The first five are held past the end of the schedule, so all later ones find five in flight.
    double.hold_until, double.hold_s = 1000, 1.5
    summary, said = _drive(load.Plan(rate=40, duration=0.5, concurrency=5), targets)
    assert summary["scheduled"] == 20
    assert summary["placed"] == summary["confirmed"] == 5
    assert summary["skipped"] == 15
    assert summary["max_in_flight"] == 5
    assert any("5 orders in flight (--concurrency)" in line for line in said)


def test_stragglers_past_the_drain_timeout_are_not_finished(
    shop: tuple[Shop, load.Targets],
) -> None:
    double, targets = shop
    double.hold_until, double.hold_s = 1000, 30.0  # PlaceOrder never answers in time
    summary, _ = _drive(load.Plan(rate=20, duration=0.2, drain_timeout=0.3), targets)
    assert summary["scheduled"] == 4
    assert summary["placed"] == 0
    assert summary["place_failed"] == 4
    assert summary["place_errors"] == {"NO_ANSWER_BY_DRAIN_TIMEOUT": 4}


def test_mesh_load_says_which_address_it_tried_when_the_mesh_is_not_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("MESH_CONFIG", "MESH_ADDRESS_ORDERS", "MESH_ADDRESS_INVENTORY"):
        monkeypatch.delenv(name, raising=False)
    orders, inventory = free_port(), free_port()
    (tmp_path / "mesh.toml").write_text(
        f'[[component]]\nname = "orders"\nport = {orders}\ncommand = ["x"]\n'
        f'[[component]]\nname = "inventory"\nport = {inventory}\ncommand = ["x"]\n'
    )
    argv = ["--root", str(tmp_path), "load", "--rate", "5", "--duration", "1", "--json"]
    assert cli.main(argv) == load.EXIT_NOT_UP
    out, err = capsys.readouterr()
    assert out == ""
    assert f"orders does not answer at 127.0.0.1:{orders}" in err
    assert str(tmp_path / "mesh.toml") in err and "mesh up -d" in err


def test_mesh_load_refuses_a_rate_or_duration_that_is_not_positive(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for argv in (["--rate", "0", "--duration", "1"], ["--rate", "5", "--duration", "-1"]):
        with pytest.raises(SystemExit) as exited:
            cli.main(["load", *argv])
        assert exited.value.code == 2
    assert "must be more than 0" in capsys.readouterr().err
