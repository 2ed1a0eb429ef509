"""GET /v1/orders/{order_id}/details over real gRPC servers in this process: what it answers when
every part answers, when some fail or are late, and when the order does not exist."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from google.protobuf import struct_pb2
from support.mesh import free_port

from gateway.aggregate import OrderDetails
from gateway.problems import Problem
from shop.order_views.v1 import order_views_pb2, order_views_pb2_grpc
from shop.orders.v1 import orders_pb2, orders_pb2_grpc
from shop.payments.v1 import payments_pb2, payments_pb2_grpc
from shop.shipping.v1 import shipping_pb2, shipping_pb2_grpc


class Orders(orders_pb2_grpc.OrdersServiceServicer):
    def GetOrder(self, request, context):  # type: ignore[no-untyped-def]
        if request.order_id != "o-1":
            context.abort(grpc.StatusCode.NOT_FOUND, f"no order {request.order_id!r}")
        return orders_pb2.GetOrderResponse(
            order=orders_pb2.Order(order_id="o-1", status=orders_pb2.ORDER_STATUS_CONFIRMED)
        )

    def ListOrderEvents(self, request, context):  # type: ignore[no-untyped-def]
        paid, shipped = struct_pb2.Struct(), struct_pb2.Struct()
        paid.update({"order_id": "o-1", "payment_id": "pay-1"})
        shipped.update({"order_id": "o-1", "shipment_id": "shp-1"})
        return orders_pb2.ListOrderEventsResponse(
            events=[
                orders_pb2.OrderEvent(version=3, type="x.OrderPaymentAuthorized", data=paid),
                orders_pb2.OrderEvent(version=4, type="x.OrderShipmentCreated", data=shipped),
            ]
        )


class Views(order_views_pb2_grpc.OrderViewsServiceServicer):
    def GetOrderView(self, request, context):  # type: ignore[no-untyped-def]
        return order_views_pb2.GetOrderViewResponse(
            view=order_views_pb2.OrderView(payment_state="CAPTURED")
        )


class Payments(payments_pb2_grpc.PaymentsServiceServicer):
    def GetPayment(self, request, context):  # type: ignore[no-untyped-def]
        return payments_pb2.GetPaymentResponse(
            payment=payments_pb2.Payment(payment_id=request.payment_id)
        )


class SlowShipping(shipping_pb2_grpc.ShippingServiceServicer):
    def __init__(self) -> None:
        self.release = threading.Event()

    def GetShipment(self, request, context):  # type: ignore[no-untyped-def]
        self.release.wait(5)  # past any deadline the test sets, until the test ends
        return shipping_pb2.GetShipmentResponse(
            shipment=shipping_pb2.Shipment(shipment_id=request.shipment_id)
        )


@pytest.fixture
def servers() -> Iterator[dict[str, str]]:
    """orders, order views and a slow shipping on real servers; payments on a dead port."""
    shipping = SlowShipping()
    started = []
    addresses = {"payments": f"127.0.0.1:{free_port()}"}
    for name, add, servicer in (
        ("orders", orders_pb2_grpc.add_OrdersServiceServicer_to_server, Orders()),
        ("order_views", order_views_pb2_grpc.add_OrderViewsServiceServicer_to_server, Views()),
        ("shipping", shipping_pb2_grpc.add_ShippingServiceServicer_to_server, shipping),
    ):
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        add(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        started.append(server)
        addresses[name] = f"127.0.0.1:{port}"
    yield addresses
    shipping.release.set()
    for server in started:
        server.stop(0)


def details(addresses: dict[str, str], deadline_s: float = 0.5) -> OrderDetails:
    channels: dict[str, grpc.Channel] = {}

    def channel(name: str) -> grpc.Channel:
        return channels.setdefault(name, grpc.insecure_channel(addresses[name]))

    return OrderDetails(channel, deadline_s)


def test_what_answers_is_shown_and_what_does_not_is_named(servers: dict[str, str]) -> None:
    began = time.monotonic()
    answer = details(servers)("o-1", ())
    took = time.monotonic() - began
    assert answer["order"]["status"] == "ORDER_STATUS_CONFIRMED"
    assert answer["view"]["paymentState"] == "CAPTURED"
    assert [e["version"] for e in answer["events"]] == ["3", "4"]
    assert "payment" not in answer and "shipment" not in answer
    missing = {m["part"]: m["code"] for m in answer["missing"]}
    assert missing == {"payment": "UNAVAILABLE", "shipment": "DEADLINE_EXCEEDED"}
    assert took < 2.0  # one deadline of 0.5 s for the whole answer, not one per part


def test_an_order_orders_does_not_know_is_404(servers: dict[str, str]) -> None:
    with pytest.raises(Problem) as refused:
        details(servers)("o-404", ())
    assert refused.value.status == 404
    assert refused.value.code == "NOT_FOUND"
