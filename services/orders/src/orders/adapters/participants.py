"""The saga's participants over gRPC: inventory, payments and shipping.

Translates each saga command into its RPC (with the command's idempotency key and a deadline)
and each answer into an outcome the state machine understands:

- OK -> Succeeded; a DECLINED authorization -> Rejected with the decline reason;
- FAILED_PRECONDITION, NOT_FOUND, INVALID_ARGUMENT, ALREADY_EXISTS, OUT_OF_RANGE,
  PERMISSION_DENIED, UNAUTHENTICATED -> Rejected (the participant refused and did nothing);
- RESOURCE_EXHAUSTED because the answer's status was larger than the client's metadata limit
  (16 KiB; a participant repeating a client's long value in full) -> Rejected too: only an
  error carries such a status, the same request would get the same answer however often it is
  retried, and a saga that took it for transient would retry it forever;
- UNAVAILABLE from orders' own circuit breaker (meshkit.resilience.BreakerOpen: the call was
  never sent, the participant has been failing) -> CircuitOpen with the breaker's
  ``retry_after_s``: the saga parks the step until the next trial instead of spending attempts
  and step time on calls that cannot be made;
- RESOURCE_EXHAUSTED from orders' own bulkhead (meshkit.resilience.BulkheadFull: as many calls
  as orders allows already wait on that participant) -> CircuitOpen too, due again after the
  policy's shortest park: it is orders' own back-pressure, not a failure of the participant;
- anything else (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, INTERNAL...) ->
  Transient (it may or may not have acted; the saga retries the same idempotency key).

Compensations whose target id is unknown (the forward call timed out) first replay the forward
call with its idempotency key to learn it: the participant returns the first outcome, or acts
now, which the compensation then undoes, so nothing is ever left behind.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc

from meshkit.resilience import BreakerOpen, BulkheadFull
from orders.domain.saga import (
    AuthorizePayment,
    CancelPayment,
    CancelShipment,
    CapturePayment,
    CircuitOpen,
    Command,
    CommitStock,
    CreateShipment,
    Outcome,
    Rejected,
    ReleaseStock,
    ReserveStock,
    Succeeded,
    Transient,
)
from shop.common.v1 import common_pb2
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.payments.v1 import payments_pb2, payments_pb2_grpc
from shop.shipping.v1 import shipping_pb2, shipping_pb2_grpc

BUSINESS_CODES = frozenset(
    {
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
    }
)
MIN_CALL_S = 0.05
MAX_DETAIL = 500
# What grpcio says (as RESOURCE_EXHAUSTED) when it refuses an answer's oversized metadata.
OVERSIZED_ANSWER = "received metadata size exceeds"

Remaining = Callable[[], float]


class GrpcParticipants:
    """Participants over three channels (meshkit.client.connect: UNAVAILABLE retried in gRPC).

    Thread safety: safe to share; stubs over shared channels. Never raises for an RPC failure:
    it returns the outcome. Every call gets a deadline, all calls of one command share one.
    """

    def __init__(
        self, inventory: grpc.Channel, payments: grpc.Channel, shipping: grpc.Channel
    ) -> None:
        self._inventory = inventory_pb2_grpc.InventoryServiceStub(inventory)
        self._payments = payments_pb2_grpc.PaymentsServiceStub(payments)
        self._shipping = shipping_pb2_grpc.ShippingServiceStub(shipping)

    def execute(self, command: Command, timeout: float) -> Outcome:
        """Run ``command`` within ``timeout`` seconds; see the module doc for the mapping."""
        deadline = time.monotonic() + timeout

        def remaining() -> float:
            return max(MIN_CALL_S, deadline - time.monotonic())

        try:
            return self._run(command, remaining)
        except grpc.RpcError as error:
            return classify(error)

    def _run(self, command: Command, remaining: Remaining) -> Outcome:
        match command:
            case ReserveStock():
                self._inventory.ReserveStock(
                    inventory_pb2.ReserveStockRequest(
                        reservation_id=command.reservation_id,
                        lines=[
                            inventory_pb2.ReservationLine(sku=sku, quantity=qty)
                            for sku, qty in command.lines
                        ],
                    ),
                    timeout=remaining(),
                )
                return Succeeded()
            case AuthorizePayment():
                return self._authorize(command, remaining)
            case CreateShipment():
                return self._create_shipment(command, remaining)
            case CapturePayment():
                self._payments.CapturePayment(
                    payments_pb2.CapturePaymentRequest(
                        idempotency_key=command.idempotency_key, payment_id=command.payment_id
                    ),
                    timeout=remaining(),
                )
                return Succeeded(payment_id=command.payment_id)
            case CommitStock():
                self._inventory.CommitReservation(
                    inventory_pb2.CommitReservationRequest(reservation_id=command.reservation_id),
                    timeout=remaining(),
                )
                return Succeeded()
            case CancelShipment():
                return self._cancel_shipment(command, remaining)
            case CancelPayment():
                return self._cancel_payment(command, remaining)
            case ReleaseStock():
                try:
                    self._inventory.ReleaseReservation(
                        inventory_pb2.ReleaseReservationRequest(
                            reservation_id=command.reservation_id
                        ),
                        timeout=remaining(),
                    )
                except grpc.RpcError as error:
                    if error.code() == grpc.StatusCode.NOT_FOUND:
                        return Succeeded()  # never reserved: nothing to release
                    raise
                return Succeeded()
        raise TypeError(f"unknown command {command!r}")

    def _authorize(self, command: AuthorizePayment, remaining: Remaining) -> Outcome:
        response = self._payments.AuthorizePayment(
            payments_pb2.AuthorizePaymentRequest(
                idempotency_key=command.idempotency_key,
                order_id=command.order_id,
                amount=command.amount.to_wire(common_pb2.Money),
                payment_token=command.payment_token,
            ),
            timeout=remaining(),
        )
        payment = response.payment
        if payment.status == payments_pb2.PAYMENT_STATUS_DECLINED:
            return Rejected(f"payment declined: {payment.decline_reason or 'no reason given'}")
        return Succeeded(payment_id=payment.payment_id)

    def _create_shipment(self, command: CreateShipment, remaining: Remaining) -> Outcome:
        response = self._shipping.CreateShipment(
            shipping_pb2.CreateShipmentRequest(
                idempotency_key=command.idempotency_key,
                order_id=command.order_id,
                address=command.address.to_wire(common_pb2.Address),
                items=[
                    shipping_pb2.ShipmentItem(sku=sku, quantity=qty) for sku, qty in command.items
                ],
            ),
            timeout=remaining(),
        )
        shipment = response.shipment
        return Succeeded(shipment_id=shipment.shipment_id, tracking_number=shipment.tracking_number)

    def _cancel_shipment(self, command: CancelShipment, remaining: Remaining) -> Outcome:
        shipment_id = command.shipment_id
        if not shipment_id:
            found = _lookup(lambda: self._create_shipment(command.lookup, remaining))
            if found is None:
                return Succeeded()  # the create was refused: nothing was booked
            shipment_id = found.shipment_id
        self._shipping.CancelShipment(
            shipping_pb2.CancelShipmentRequest(
                idempotency_key=command.idempotency_key, shipment_id=shipment_id
            ),
            timeout=remaining(),
        )
        return Succeeded(shipment_id=shipment_id)

    def _cancel_payment(self, command: CancelPayment, remaining: Remaining) -> Outcome:
        payment_id = command.payment_id
        if not payment_id:
            found = _lookup(lambda: self._authorize(command.lookup, remaining))
            if found is None:
                return Succeeded()  # declined or refused: no hold to cancel
            payment_id = found.payment_id
        status = self._payments.GetPayment(
            payments_pb2.GetPaymentRequest(payment_id=payment_id), timeout=remaining()
        ).payment.status
        if status == payments_pb2.PAYMENT_STATUS_AUTHORIZED:
            self._payments.VoidPayment(
                payments_pb2.VoidPaymentRequest(
                    idempotency_key=command.void_key, payment_id=payment_id
                ),
                timeout=remaining(),
            )
        elif status == payments_pb2.PAYMENT_STATUS_CAPTURED:
            self._payments.RefundPayment(
                payments_pb2.RefundPaymentRequest(
                    idempotency_key=command.refund_key, payment_id=payment_id
                ),
                timeout=remaining(),
            )
        # DECLINED, VOIDED, REFUNDED: nothing is held any more.
        return Succeeded(payment_id=payment_id)


def _lookup(replay: Callable[[], Outcome]) -> Succeeded | None:
    """Replay a forward call by its idempotency key: its success, or None when it was refused."""
    try:
        outcome = replay()
    except grpc.RpcError as error:
        if isinstance(classify(error), Rejected):
            return None
        raise
    return outcome if isinstance(outcome, Succeeded) else None


def classify(error: grpc.RpcError) -> Outcome:
    """A failed RPC as a saga outcome: Rejected for business codes and for an error too large to
    read, CircuitOpen when orders' breaker refused to send it, Transient otherwise (see the
    module doc)."""
    code = error.code()
    said = error.details() or "no details"
    # It becomes the saga's error or the order's cancellation reason (stored, sent on Kafka).
    detail = f"{code.name}: {said if len(said) <= MAX_DETAIL else said[:MAX_DETAIL] + '…'}"
    if isinstance(error, BreakerOpen):
        return CircuitOpen(error.downstream, error.retry_after_s, detail)
    if isinstance(error, BulkheadFull):
        # Orders' own back-pressure (this many calls already wait on a slow participant): the
        # call was not sent and the participant did not fail, so the step waits its turn.
        return CircuitOpen(error.downstream, 0.0, detail)
    if code in BUSINESS_CODES:
        return Rejected(detail)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and OVERSIZED_ANSWER in (error.details() or ""):
        return Rejected(f"the participant's error was too large to read ({detail})")
    return Transient(detail)
