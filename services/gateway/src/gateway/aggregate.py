"""``GET /v1/orders/{order_id}/details``: one answer from four services, under one deadline.

Orders (the order and its events) and order views (the read model's view) are asked at once,
with the caller's own token: they decide whether the caller may read the order. The payment and
the shipment are asked as soon as the events name their ids (their services find them by those
ids only), all within the same deadline, by the gateway as itself on behalf of the caller
(payments and shipping let no customer read them directly): only once orders has answered the
order, so a caller never learns more than orders let them read. A part that fails or runs out
of time is left out and named in ``missing`` with its gRPC code, and the answer is still 200: a
page can show what it has. Only the order itself decides: an order orders does not know is 404,
one the caller may not read 403.

A part whose service the gateway's client has given up on for now (its circuit breaker is open,
or its bulkhead full: meshkit.resilience) costs nothing: the client refuses the call at once
and the part is named as missing with why and, for a breaker, when it is tried again. So a dead
service costs the answer neither its time nor its 200. When neither orders nor order views can
answer, the 503's Retry-After is the soonest breaker trial (1 s when no breaker is open).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import message

from gateway.openapi import GatewayOperation
from gateway.problems import Problem, from_rpc_error
from gateway.transcoding import to_json
from meshkit.authz import ON_BEHALF_OF
from meshkit.credentials import TokenSource
from meshkit.errors import MeshError
from meshkit.resilience import BreakerOpen, BulkheadFull
from shop.order_views.v1 import order_views_pb2 as views_pb
from shop.orders.v1 import orders_pb2 as orders_pb
from shop.payments.v1 import payments_pb2 as payments_pb
from shop.shipping.v1 import shipping_pb2 as shipping_pb

PATH = "/v1/orders/{order_id}/details"
NAME = f"GET {PATH}"


@dataclass(frozen=True)
class _Part:
    name: str  # how the answer calls it
    component: str  # the mesh component serving it
    rpc: str  # /package.Service/Method
    reply: type[message.Message]


_ORDER = _Part(
    "order", "orders", "/shop.orders.v1.OrdersService/GetOrder", orders_pb.GetOrderResponse
)
_EVENTS = _Part(
    "events",
    "orders",
    "/shop.orders.v1.OrdersService/ListOrderEvents",
    orders_pb.ListOrderEventsResponse,
)
_VIEW = _Part(
    "view",
    "order_views",
    "/shop.order_views.v1.OrderViewsService/GetOrderView",
    views_pb.GetOrderViewResponse,
)
_PAYMENT = _Part(
    "payment",
    "payments",
    "/shop.payments.v1.PaymentsService/GetPayment",
    payments_pb.GetPaymentResponse,
)
_SHIPMENT = _Part(
    "shipment",
    "shipping",
    "/shop.shipping.v1.ShippingService/GetShipment",
    shipping_pb.GetShipmentResponse,
)


# What orders answers about the order itself decides the whole answer: unknown (404), or not
# the caller's to read (403, 401), whatever the other parts would say.
_DECISIVE = (
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
)


class OrderDetails:
    """The aggregation. Thread safety: safe to share (gRPC futures, no threads of its own)."""

    def __init__(
        self,
        channel: Callable[[str], grpc.Channel],
        deadline_s: float,
        own: TokenSource | None = None,
    ) -> None:
        self._channel = channel
        self._deadline_s = deadline_s
        self._own = own  # the gateway's own token, for the parts asked on the caller's behalf

    def _start(
        self,
        part: _Part,
        request: message.Message,
        metadata: tuple[tuple[str, str], ...],
        deadline: float,
    ) -> grpc.Future[Any]:
        call: grpc.UnaryUnaryMultiCallable[Any, Any] = self._channel(part.component).unary_unary(
            part.rpc,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=part.reply.FromString,
        )
        remaining = max(0.001, deadline - time.monotonic())
        future: grpc.Future[Any] = call.future(request, timeout=remaining, metadata=metadata)
        return future

    def __call__(
        self, order_id: str, metadata: tuple[tuple[str, str], ...], on_behalf_of: str = ""
    ) -> dict[str, Any]:
        """The details of ``order_id``; Problem 404 (or the order's own failure) when orders
        cannot say what the order is and nothing else can either."""
        deadline = time.monotonic() + self._deadline_s
        answer: dict[str, Any] = {"orderId": order_id}
        missing: list[dict[str, str]] = []
        first = {
            _ORDER: self._start(
                _ORDER, orders_pb.GetOrderRequest(order_id=order_id), metadata, deadline
            ),
            _EVENTS: self._start(
                _EVENTS, orders_pb.ListOrderEventsRequest(order_id=order_id), metadata, deadline
            ),
            _VIEW: self._start(
                _VIEW, views_pb.GetOrderViewRequest(order_id=order_id), metadata, deadline
            ),
        }
        replies: dict[str, message.Message] = {}
        retry_after: list[float] = []
        for part, future in first.items():
            try:
                replies[part.name] = future.result()
            except grpc.RpcError as error:
                if part is _ORDER and error.code() in _DECISIVE:
                    for other in first.values():
                        other.cancel()
                    raise from_rpc_error(error, "OrdersService") from None
                missing.append(_missing(part, error))
                if isinstance(error, BreakerOpen):
                    retry_after.append(error.retry_after_s)
        events = replies.get("events")
        ids = _ids(events) if isinstance(events, orders_pb.ListOrderEventsResponse) else {}
        second = self._second(
            ids if "order" in replies else {}, metadata, on_behalf_of, deadline, missing
        )
        for part, future in second.items():
            try:
                replies[part.name] = future.result()
            except grpc.RpcError as error:
                missing.append(_missing(part, error))
        if "order" not in replies and "view" not in replies:
            raise Problem(
                503,
                "neither orders nor order views could say what the order is",
                code="UNAVAILABLE",
                details=[{"missing": missing}],
                headers=[("Retry-After", str(max(1, math.ceil(min(retry_after, default=1)))))],
            )
        for name, reply in replies.items():
            shaped = to_json(reply)
            # Each reply wraps its one resource (GetOrderResponse.order ...): unwrap it.
            answer[name] = shaped[next(iter(shaped))] if len(shaped) == 1 else shaped
        answer["missing"] = missing
        return answer

    def _second(
        self,
        ids: dict[str, str],
        metadata: tuple[tuple[str, str], ...],
        on_behalf_of: str,
        deadline: float,
        missing: list[dict[str, str]],
    ) -> dict[_Part, grpc.Future[Any]]:
        """Start the payment and shipment parts the order's events name, as the gateway on
        behalf of the caller; ``ids`` is empty when orders did not answer the order."""
        second: dict[_Part, grpc.Future[Any]] = {}
        if ids:
            try:
                metadata = self._as_gateway(metadata, on_behalf_of)
            except MeshError as exc:
                missing.extend(
                    {
                        "part": p.name,
                        "service": p.component,
                        "code": exc.status,
                        "detail": f"the gateway could not act for the caller: {exc.message}",
                    }
                    for p in (_PAYMENT, _SHIPMENT)
                    if ids.get(f"{p.name}_id")
                )
                ids = {}
        if ids.get("payment_id"):
            second[_PAYMENT] = self._start(
                _PAYMENT,
                payments_pb.GetPaymentRequest(payment_id=ids["payment_id"]),
                metadata,
                deadline,
            )
        if ids.get("shipment_id"):
            second[_SHIPMENT] = self._start(
                _SHIPMENT,
                shipping_pb.GetShipmentRequest(shipment_id=ids["shipment_id"]),
                metadata,
                deadline,
            )
        return second

    def _as_gateway(
        self, metadata: tuple[tuple[str, str], ...], on_behalf_of: str
    ) -> tuple[tuple[str, str], ...]:
        """``metadata`` with the gateway's own token acting for ``on_behalf_of`` (unchanged
        when the gateway has no credentials of its own)."""
        if self._own is None or not on_behalf_of:
            return metadata
        kept = tuple((k, v) for k, v in metadata if k != "authorization")
        return (
            *kept,
            ("authorization", f"Bearer {self._own.token()}"),
            (ON_BEHALF_OF, on_behalf_of),
        )


def _missing(part: _Part, error: grpc.RpcError) -> dict[str, str]:
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    reason = {
        grpc.StatusCode.DEADLINE_EXCEEDED: "did not answer within the deadline",
        grpc.StatusCode.UNAVAILABLE: "is unavailable",
    }.get(code, "failed")
    # The gateway's own client refused the call: say so (these words are the gateway's, unlike
    # a service's error details, which stay out of the answer).
    if isinstance(error, BreakerOpen):
        reason = (
            f"is unavailable: the gateway's circuit breaker for it is open (next trial in"
            f" {error.retry_after_s:.1f}s)"
        )
    elif isinstance(error, BulkheadFull):
        reason = "is overloaded: the gateway already has its cap of calls to it in flight"
    return {
        "part": part.name,
        "service": part.component,
        "code": code.name,
        "detail": f"{part.component} {reason}",
    }


def _ids(events: orders_pb.ListOrderEventsResponse) -> dict[str, str]:
    """payment_id and shipment_id, from the order's events (their data, in protojson names or
    proto names: the event store keeps Avro records)."""
    found: dict[str, str] = {}
    for event in events.events:
        data = to_json(event).get("data", {})
        if not isinstance(data, dict):
            continue
        for key in ("payment_id", "shipment_id"):
            value = data.get(key) or data.get(_camel(key))
            if isinstance(value, str) and value:
                found[key] = value
    return found


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.capitalize() for p in rest)


def operation() -> GatewayOperation:
    """The route as /openapi.json documents it."""
    reply: dict[str, Any] = {
        "orderId": {"type": "string"},
        "order": orders_pb.Order.DESCRIPTOR,
        "events": orders_pb.ListOrderEventsResponse.DESCRIPTOR.fields_by_name["events"],
        "view": views_pb.OrderView.DESCRIPTOR,
        "payment": payments_pb.Payment.DESCRIPTOR,
        "shipment": shipping_pb.Shipment.DESCRIPTOR,
        "missing": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    k: {"type": "string"} for k in ("part", "service", "code", "detail")
                },
            },
        },
    }
    return GatewayOperation(
        "GET",
        PATH,
        "GetOrderDetails",
        "OrdersService",
        "The order, its events, its view, its payment and its shipment, from four services under"
        " one deadline. A part that failed or ran out of time is left out and named in"
        " `missing` (part, service, gRPC code); the answer is still 200. 404 when orders does"
        " not know the order.",
        reply,
    )
