"""The InventoryService servicer: translates wire messages to use-case calls and back, nothing else.

Errors are not caught here: domain errors propagate to meshkit's edge, which maps them to
gRPC statuses once.
"""

from __future__ import annotations

import grpc

from inventory.app.inventory import Inventory
from inventory.domain.model import Line, Reservation
from shop.inventory.v1 import inventory_pb2 as pb
from shop.inventory.v1 import inventory_pb2_grpc as pb_grpc

_STATUS = {
    "RESERVED": pb.RESERVATION_STATUS_RESERVED,
    "RELEASED": pb.RESERVATION_STATUS_RELEASED,
    "COMMITTED": pb.RESERVATION_STATUS_COMMITTED,
}


class InventoryServicer(pb_grpc.InventoryServiceServicer):
    """shop.inventory.v1.InventoryService over the Inventory use cases. Stateless."""

    def __init__(self, inventory: Inventory) -> None:
        self._inventory = inventory

    def SetStock(
        self, request: pb.SetStockRequest, context: grpc.ServicerContext
    ) -> pb.SetStockResponse:
        """See the contract in proto/shop/inventory/v1/inventory.proto."""
        item = self._inventory.set_stock(request.sku, request.quantity)
        return pb.SetStockResponse(sku=item.sku, available=item.available, reserved=item.reserved)

    def GetStock(
        self, request: pb.GetStockRequest, context: grpc.ServicerContext
    ) -> pb.GetStockResponse:
        """See the contract in proto/shop/inventory/v1/inventory.proto."""
        item = self._inventory.get_stock(request.sku)
        return pb.GetStockResponse(sku=item.sku, available=item.available, reserved=item.reserved)

    def ReserveStock(
        self, request: pb.ReserveStockRequest, context: grpc.ServicerContext
    ) -> pb.ReserveStockResponse:
        """See the contract in proto/shop/inventory/v1/inventory.proto."""
        lines = [Line(line.sku, line.quantity) for line in request.lines]
        reservation = self._inventory.reserve(request.reservation_id, lines)
        return pb.ReserveStockResponse(
            reservation_id=reservation.reservation_id,
            lines=[
                pb.ReservationLine(sku=line.sku, quantity=line.quantity)
                for line in reservation.lines
            ],
            status=_status(reservation),
        )

    def ReleaseReservation(
        self, request: pb.ReleaseReservationRequest, context: grpc.ServicerContext
    ) -> pb.ReleaseReservationResponse:
        """See the contract in proto/shop/inventory/v1/inventory.proto."""
        reservation = self._inventory.release(request.reservation_id)
        return pb.ReleaseReservationResponse(
            reservation_id=reservation.reservation_id, status=_status(reservation)
        )

    def CommitReservation(
        self, request: pb.CommitReservationRequest, context: grpc.ServicerContext
    ) -> pb.CommitReservationResponse:
        """See the contract in proto/shop/inventory/v1/inventory.proto."""
        reservation = self._inventory.commit(request.reservation_id)
        return pb.CommitReservationResponse(
            reservation_id=reservation.reservation_id, status=_status(reservation)
        )


def _status(reservation: Reservation) -> pb.ReservationStatus:
    return _STATUS[reservation.status.value]
