"""The ShippingService servicer: translates wire messages to use-case calls and back, nothing else.

Errors are not caught here: domain errors propagate to meshkit's edge, which maps them to gRPC
statuses once.
"""

from __future__ import annotations

import grpc

from meshkit import authz
from meshkit.address import Address
from meshkit.timestamps import to_timestamp
from shipping.app.shipping import Shipping
from shipping.domain.commands import CancelShipment, CreateShipment
from shipping.domain.model import Item, ServiceLevel, Shipment
from shop.common.v1 import common_pb2
from shop.shipping.v1 import shipping_pb2 as pb
from shop.shipping.v1 import shipping_pb2_grpc as pb_grpc

_STATUS = {
    "BOOKED": pb.SHIPMENT_STATUS_BOOKED,
    "CANCELLED": pb.SHIPMENT_STATUS_CANCELLED,
}
_LEVEL = {
    ServiceLevel.STANDARD: pb.SERVICE_LEVEL_STANDARD,
    ServiceLevel.EXPRESS: pb.SERVICE_LEVEL_EXPRESS,
}


class ShippingServiceServicer(pb_grpc.ShippingServiceServicer):
    """shop.shipping.v1.ShippingService over the Shipping use cases. Stateless."""

    def __init__(self, shipping: Shipping) -> None:
        self._shipping = shipping

    def CreateShipment(
        self, request: pb.CreateShipmentRequest, context: grpc.ServicerContext
    ) -> pb.CreateShipmentResponse:
        """See the contract in proto/shop/shipping/v1/shipping.proto."""
        address = Address.from_wire(request.address) if request.HasField("address") else None
        command = CreateShipment(
            idempotency_key=request.idempotency_key,
            order_id=request.order_id,
            address=address,
            items=tuple(Item(item.sku, item.quantity) for item in request.items),
        )
        shipment = self._shipping.create(command, customer_id=_customer())
        return pb.CreateShipmentResponse(shipment=_shipment(shipment))

    def CancelShipment(
        self, request: pb.CancelShipmentRequest, context: grpc.ServicerContext
    ) -> pb.CancelShipmentResponse:
        """See the contract in proto/shop/shipping/v1/shipping.proto."""
        command = CancelShipment(request.idempotency_key, request.shipment_id)
        return pb.CancelShipmentResponse(shipment=_shipment(self._shipping.cancel(command)))

    def GetShipment(
        self, request: pb.GetShipmentRequest, context: grpc.ServicerContext
    ) -> pb.GetShipmentResponse:
        """See the contract in proto/shop/shipping/v1/shipping.proto."""
        return pb.GetShipmentResponse(shipment=_shipment(self._shipping.get(request.shipment_id)))


def _customer() -> str:
    """The customer the caller books for: whom a service (orders' saga) acts on behalf of, or
    the calling user; "" when neither is known."""
    principal = authz.current_principal()
    if principal is None:
        return ""
    return principal.on_behalf_of or ("" if principal.service else principal.subject)


def _shipment(shipment: Shipment) -> pb.Shipment:
    return pb.Shipment(
        shipment_id=shipment.shipment_id,
        order_id=shipment.order_id,
        address=shipment.address.to_wire(common_pb2.Address),
        items=[pb.ShipmentItem(sku=item.sku, quantity=item.quantity) for item in shipment.items],
        status=_STATUS[shipment.status.value],
        tracking_number=shipment.tracking_number,
        created_at=to_timestamp(shipment.created_at),
        updated_at=to_timestamp(shipment.updated_at),
        service_level=_LEVEL[shipment.service_level],
    )
