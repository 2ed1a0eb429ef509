"""The PaymentsService servicer (every RPC answers UNIMPLEMENTED until its issue lands)."""

from __future__ import annotations

from shop.payments.v1 import payments_pb2_grpc as pb_grpc


class PaymentsServiceServicer(pb_grpc.PaymentsServiceServicer):
    """shop.payments.v1.PaymentsService; the generated base class answers UNIMPLEMENTED."""
