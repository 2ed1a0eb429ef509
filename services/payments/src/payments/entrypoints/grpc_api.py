"""The PaymentsService servicer: translates wire messages to use-case calls and back, nothing else.

Errors are not caught here: domain errors propagate to meshkit's edge, which maps them to gRPC
statuses once.
"""

from __future__ import annotations

import grpc

from meshkit.timestamps import to_timestamp
from payments.app.payments import Payments
from payments.domain.model import Payment
from shop.common.v1 import common_pb2
from shop.payments.v1 import payments_pb2 as pb
from shop.payments.v1 import payments_pb2_grpc as pb_grpc

_STATUS = {
    "AUTHORIZED": pb.PAYMENT_STATUS_AUTHORIZED,
    "DECLINED": pb.PAYMENT_STATUS_DECLINED,
    "CAPTURED": pb.PAYMENT_STATUS_CAPTURED,
    "VOIDED": pb.PAYMENT_STATUS_VOIDED,
    "REFUNDED": pb.PAYMENT_STATUS_REFUNDED,
}


class PaymentsServicer(pb_grpc.PaymentsServiceServicer):
    """shop.payments.v1.PaymentsService over the Payments use cases. Stateless."""

    def __init__(self, payments: Payments) -> None:
        self._payments = payments

    def AuthorizePayment(
        self, request: pb.AuthorizePaymentRequest, context: grpc.ServicerContext
    ) -> pb.AuthorizePaymentResponse:
        """See the contract in proto/shop/payments/v1/payments.proto."""
        # An absent amount (not a zero one) is reported as "amount is required".
        amount = request.amount if request.HasField("amount") else None
        payment = self._payments.authorize(
            request.idempotency_key, request.order_id, amount, request.payment_token
        )
        return pb.AuthorizePaymentResponse(payment=_payment(payment))

    def CapturePayment(
        self, request: pb.CapturePaymentRequest, context: grpc.ServicerContext
    ) -> pb.CapturePaymentResponse:
        """See the contract in proto/shop/payments/v1/payments.proto."""
        payment = self._payments.capture(request.idempotency_key, request.payment_id)
        return pb.CapturePaymentResponse(payment=_payment(payment))

    def VoidPayment(
        self, request: pb.VoidPaymentRequest, context: grpc.ServicerContext
    ) -> pb.VoidPaymentResponse:
        """See the contract in proto/shop/payments/v1/payments.proto."""
        payment = self._payments.void(request.idempotency_key, request.payment_id)
        return pb.VoidPaymentResponse(payment=_payment(payment))

    def RefundPayment(
        self, request: pb.RefundPaymentRequest, context: grpc.ServicerContext
    ) -> pb.RefundPaymentResponse:
        """See the contract in proto/shop/payments/v1/payments.proto."""
        payment = self._payments.refund(request.idempotency_key, request.payment_id)
        return pb.RefundPaymentResponse(payment=_payment(payment))

    def GetPayment(
        self, request: pb.GetPaymentRequest, context: grpc.ServicerContext
    ) -> pb.GetPaymentResponse:
        """See the contract in proto/shop/payments/v1/payments.proto."""
        return pb.GetPaymentResponse(payment=_payment(self._payments.get(request.payment_id)))


def _payment(payment: Payment) -> pb.Payment:
    return pb.Payment(
        payment_id=payment.payment_id,
        order_id=payment.order_id,
        amount=payment.amount.to_wire(common_pb2.Money),
        status=_STATUS[payment.status.value],
        decline_reason=payment.decline_reason,
        created_at=to_timestamp(payment.created_at),
        updated_at=to_timestamp(payment.updated_at),
    )
