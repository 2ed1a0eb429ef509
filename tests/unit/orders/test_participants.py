"""Orders' gRPC participants adapter against a real gRPC server on port 0: how it reads answers.

The participant here is not built on meshkit (an older release, another team's service): its
refusal repeats a client's value in full, so its status is larger than the 16 KiB of metadata a
grpcio client accepts. The caller then sees RESOURCE_EXHAUSTED and none of the real answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from meshkit.address import Address
from orders.adapters.participants import GrpcParticipants
from orders.domain.saga import CancelShipment, CreateShipment, Rejected, Succeeded, Transient
from shop.shipping.v1 import shipping_pb2, shipping_pb2_grpc

ADDRESS = Address("Ada", "1 Main St", "Berlin", "10115", "DE")
CREATE = CreateShipment("o-1:create-shipment", "o-1", ADDRESS, (("mug", 1),))


class Shipping(shipping_pb2_grpc.ShippingServiceServicer):
    """Refuses every shipment with a message of ``size`` characters, under ``code``."""

    def __init__(self) -> None:
        self.code = grpc.StatusCode.INVALID_ARGUMENT
        self.size = 20_000
        self.calls: list[str] = []

    def CreateShipment(
        self, request: shipping_pb2.CreateShipmentRequest, context: grpc.ServicerContext
    ) -> shipping_pb2.CreateShipmentResponse:
        self.calls.append("CreateShipment")
        context.abort(self.code, "address.postal_code: " + "9" * self.size + " is not valid")

    def CancelShipment(
        self, request: shipping_pb2.CancelShipmentRequest, context: grpc.ServicerContext
    ) -> shipping_pb2.CancelShipmentResponse:
        self.calls.append("CancelShipment")
        return shipping_pb2.CancelShipmentResponse()


@pytest.fixture
def shipping() -> Iterator[tuple[Shipping, GrpcParticipants]]:
    service = Shipping()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    shipping_pb2_grpc.add_ShippingServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    # Only shipping is called in these tests; the other two channels are never used.
    yield service, GrpcParticipants(channel, channel, channel)
    channel.close()
    server.stop(0)


def test_a_refusal_too_large_to_read_is_a_refusal_not_a_transient_failure(
    shipping: tuple[Shipping, GrpcParticipants],
) -> None:
    """Retrying cannot help: the same request gets the same oversized refusal every time, so a
    saga that took it for transient would retry until its step timed out, then compensate with
    the same call, forever."""
    _, participants = shipping
    outcome = participants.execute(CREATE, timeout=5)
    assert isinstance(outcome, Rejected), outcome
    assert "too large to read" in outcome.reason
    assert len(outcome.reason) < 500


def test_compensating_a_create_refused_too_large_to_read_is_done(
    shipping: tuple[Shipping, GrpcParticipants],
) -> None:
    """CANCEL_SHIPMENT without a shipment id replays the create to learn it: a create refused
    (however large its answer) booked nothing, so there is nothing to cancel."""
    service, participants = shipping
    outcome = participants.execute(CancelShipment("o-1:cancel-shipment", "", CREATE), timeout=5)
    assert outcome == Succeeded()
    assert service.calls == ["CreateShipment"]


def test_a_real_resource_exhausted_stays_transient(
    shipping: tuple[Shipping, GrpcParticipants],
) -> None:
    """A quota that ran out (RESOURCE_EXHAUSTED in a status the caller could read) passes."""
    service, participants = shipping
    service.code, service.size = grpc.StatusCode.RESOURCE_EXHAUSTED, 10
    outcome = participants.execute(CREATE, timeout=5)
    assert isinstance(outcome, Transient), outcome
    assert "RESOURCE_EXHAUSTED" in outcome.error
