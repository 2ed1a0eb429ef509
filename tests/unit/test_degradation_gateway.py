"""The gateway's details endpoint answers partially when parts of it are down (issue 15, item 5).

Real gRPC servers in this process stand in for orders, order views, payments and shipping; the
gateway's aggregation calls them over meshkit channels (``meshkit.client.connect``), so the real
deadline, bulkhead and circuit breaker of the kit are in the way, with a breaker that opens
after two failures. A part that is down, hanging or behind an open breaker is left out and named
(200); once a hanging part's breaker is open the answer no longer waits for it at all.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from support.mesh import free_port

from gateway.aggregate import OrderDetails
from gateway.problems import Problem
from meshkit.client import connect
from meshkit.resilience import Downstreams, Limits
from shop.orders.v1 import orders_pb2, orders_pb2_grpc
from shop.payments.v1 import payments_pb2, payments_pb2_grpc
from shop.shipping.v1 import shipping_pb2, shipping_pb2_grpc

DEADLINE_S = 0.5
OPEN_S = 30.0  # longer than the test: an open breaker stays open


class Orders(orders_pb2_grpc.OrdersServiceServicer):
    def GetOrder(self, request, context):  # type: ignore[no-untyped-def]
        return orders_pb2.GetOrderResponse(
            order=orders_pb2.Order(
                order_id=request.order_id, status=orders_pb2.ORDER_STATUS_PENDING
            )
        )

    def ListOrderEvents(self, request, context):  # type: ignore[no-untyped-def]
        paid, shipped = struct_pb2.Struct(), struct_pb2.Struct()
        paid.update({"payment_id": "pay-1"})
        shipped.update({"shipment_id": "shp-1"})
        return orders_pb2.ListOrderEventsResponse(
            events=[
                orders_pb2.OrderEvent(version=3, type="x.OrderPaymentAuthorized", data=paid),
                orders_pb2.OrderEvent(version=4, type="x.OrderShipmentCreated", data=shipped),
            ]
        )


class Payments(payments_pb2_grpc.PaymentsServiceServicer):
    def GetPayment(self, request, context):  # type: ignore[no-untyped-def]
        return payments_pb2.GetPaymentResponse(
            payment=payments_pb2.Payment(payment_id=request.payment_id)
        )


class HangingShipping(shipping_pb2_grpc.ShippingServiceServicer):
    """Takes every call and never answers in time (until the test ends); counts the calls."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def GetShipment(self, request, context):  # type: ignore[no-untyped-def]
        self.calls += 1
        self.release.wait(10)
        return shipping_pb2.GetShipmentResponse()


class Parts:
    """The four services' addresses (order views on a port nothing listens on) and the
    aggregation over meshkit channels with their own breakers."""

    def __init__(self, addresses: dict[str, str], shipping: HangingShipping) -> None:
        self.addresses = addresses
        self.shipping = shipping
        self.downstreams = Downstreams(
            Limits(window=2, min_calls=2, failure_rate=0.5, open_s=OPEN_S, half_open_calls=1)
        )
        self.channels: dict[str, grpc.Channel] = {}

    def channel(self, name: str) -> grpc.Channel:
        if name not in self.channels:
            self.channels[name] = connect(self.addresses[name], downstreams=self.downstreams)
        return self.channels[name]

    def details(self, order_id: str = "o-1") -> tuple[dict[str, object], float]:
        began = time.monotonic()
        answer = OrderDetails(self.channel, DEADLINE_S)(order_id, ())
        return answer, time.monotonic() - began


@pytest.fixture
def parts() -> Iterator[Parts]:
    # The servicers implement only the RPCs the aggregation asks (the stubs call them abstract).
    shipping = HangingShipping()  # type: ignore[abstract]
    orders, payments = Orders(), Payments()  # type: ignore[abstract]
    started = []
    addresses = {"order_views": f"127.0.0.1:{free_port()}"}  # down
    adders: tuple[tuple[str, Callable[[Any, grpc.Server], None], object], ...] = (
        ("orders", orders_pb2_grpc.add_OrdersServiceServicer_to_server, orders),
        ("payments", payments_pb2_grpc.add_PaymentsServiceServicer_to_server, payments),
        ("shipping", shipping_pb2_grpc.add_ShippingServiceServicer_to_server, shipping),
    )
    for name, add, servicer in adders:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        add(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        started.append(server)
        addresses[name] = f"127.0.0.1:{port}"
    built = Parts(addresses, shipping)
    yield built
    shipping.release.set()
    for channel in built.channels.values():
        channel.close()
    for server in started:
        server.stop(0)


def missing_of(answer: dict[str, object]) -> dict[str, dict[str, str]]:
    rows = answer["missing"]
    assert isinstance(rows, list)
    return {row["part"]: row for row in rows}


def test_down_and_hanging_parts_are_named_and_an_open_breaker_costs_no_time(
    parts: Parts,
) -> None:
    # Before the breakers open: order views refuses connections, shipping runs out the deadline.
    for _ in range(2):
        answer, took = parts.details()
        assert answer["order"] == {"orderId": "o-1", "status": "ORDER_STATUS_PENDING"}
        assert answer["payment"] == {"paymentId": "pay-1"}
        missing = missing_of(answer)
        assert {p: m["code"] for p, m in missing.items()} == {
            "view": "UNAVAILABLE",
            "shipment": "DEADLINE_EXCEEDED",
        }
        assert took < DEADLINE_S + 0.5, "one deadline for the whole answer"
    calls = parts.shipping.calls
    assert calls == 2
    # Both breakers are open now: the parts are named at once, nothing is sent to them.
    for _ in range(5):
        answer, took = parts.details()
        missing = missing_of(answer)
        assert {p: m["code"] for p, m in missing.items()} == {
            "view": "UNAVAILABLE",
            "shipment": "UNAVAILABLE",
        }
        for part in ("view", "shipment"):
            assert "circuit breaker for it is open" in missing[part]["detail"], missing[part]
        assert answer["payment"] == {"paymentId": "pay-1"}  # what answers is still shown
        assert took < DEADLINE_S / 2, f"{took:.3f}s: an open breaker should cost no wait"
    assert parts.shipping.calls == calls, "a call went through an open breaker"


def test_no_order_and_no_view_is_503_with_the_breakers_retry_after(parts: Parts) -> None:
    parts.addresses["orders"] = parts.addresses["order_views"]  # orders is down too
    for _ in range(2):  # two failures each open both breakers
        with pytest.raises(Problem) as first:
            parts.details()
        assert first.value.status == 503
    with pytest.raises(Problem) as refused:
        parts.details()
    assert refused.value.status == 503
    retry_after = dict(refused.value.headers)["Retry-After"]
    assert 1 < int(retry_after) <= OPEN_S, "the breaker's next trial, not a blind 1 s"
