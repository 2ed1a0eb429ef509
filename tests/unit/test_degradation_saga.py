"""Orders' participants adapter behind the kit's circuit breaker: an open breaker is a
CircuitOpen outcome (the saga parks), not a transient failure (issue 15, item 5).

The adapter calls payments over a real meshkit channel (``meshkit.client.connect``, with a
breaker of its own that opens after two failures) at an address where payments is down, then
up: two failures, then the breaker refuses at once with its next trial time, then the trial
reaches the real server and the authorization succeeds.
"""

from __future__ import annotations

import threading
import time
from concurrent import futures

import grpc
from support.mesh import free_port
from support.registry import wait_until

from meshkit.client import connect
from meshkit.money import Money
from meshkit.resilience import Downstreams, Limits
from orders.adapters.participants import GrpcParticipants
from orders.domain.saga import AuthorizePayment, CircuitOpen, Outcome, Succeeded, Transient
from shop.payments.v1 import payments_pb2, payments_pb2_grpc

OPEN_S = 0.5
AUTHORIZE = AuthorizePayment("o-1:authorize", "o-1", Money.of("EUR", 30), "tok_visa")


class Payments(payments_pb2_grpc.PaymentsServiceServicer):
    def __init__(self) -> None:
        self.calls = 0

    def AuthorizePayment(self, request, context):  # type: ignore[no-untyped-def]
        self.calls += 1
        return payments_pb2.AuthorizePaymentResponse(
            payment=payments_pb2.Payment(
                payment_id="pay-1", status=payments_pb2.PAYMENT_STATUS_AUTHORIZED
            )
        )


def test_an_open_breaker_is_circuit_open_and_a_good_trial_succeeds() -> None:
    address = f"127.0.0.1:{free_port()}"  # payments, down for now
    downstreams = Downstreams(
        Limits(window=2, min_calls=2, failure_rate=0.5, open_s=OPEN_S, half_open_calls=1)
    )
    channel = connect(address, downstreams=downstreams)
    participants = GrpcParticipants(channel, channel, channel)
    server: grpc.Server | None = None
    try:
        first = [participants.execute(AUTHORIZE, timeout=2) for _ in range(2)]
        assert all(isinstance(o, Transient) and "UNAVAILABLE" in o.error for o in first), first
        began = time.monotonic()
        parked = participants.execute(AUTHORIZE, timeout=2)
        assert time.monotonic() - began < 0.1, "an open breaker answers at once"
        assert isinstance(parked, CircuitOpen), parked
        assert parked.participant == address
        assert 0 < parked.retry_after_s <= OPEN_S
        assert "circuit breaker" in parked.detail and "open" in parked.detail
        # payments comes back on its address; once the breaker lets a trial through, it works.
        payments = Payments()  # type: ignore[abstract]  # only the RPC it is asked
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        payments_pb2_grpc.add_PaymentsServiceServicer_to_server(payments, server)
        server.add_insecure_port(address)
        server.start()
        outcomes: list[Outcome] = []

        def authorized() -> bool:
            outcomes.append(participants.execute(AUTHORIZE, timeout=2))
            return isinstance(outcomes[-1], Succeeded)

        wait_until(authorized, timeout=10, what="the breaker's trial to reach payments")
        assert outcomes[-1] == Succeeded(payment_id="pay-1")
        assert all(isinstance(o, CircuitOpen | Succeeded) for o in outcomes), outcomes
        assert payments.calls == 1, "nothing but the trial reached payments"
    finally:
        channel.close()
        if server is not None:
            server.stop(0)


def test_a_full_bulkhead_parks_the_step_as_orders_own_back_pressure() -> None:
    """Orders already has its cap of calls waiting on payments: the next step is not sent and
    not counted as a failure of payments; it waits its turn (CircuitOpen, no retry_after)."""
    release = threading.Event()

    entered = threading.Event()

    class Slow(Payments):
        def AuthorizePayment(self, request, context):  # type: ignore[no-untyped-def]
            entered.set()
            release.wait(10)
            return super().AuthorizePayment(request, context)

    payments = Slow()  # type: ignore[abstract]  # only the RPC it is asked
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    payments_pb2_grpc.add_PaymentsServiceServicer_to_server(payments, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = connect(f"127.0.0.1:{port}", downstreams=Downstreams(Limits(max_concurrent=1)))
    participants = GrpcParticipants(channel, channel, channel)
    try:
        with futures.ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(participants.execute, AUTHORIZE, 5)
            assert entered.wait(5), "the first call never arrived"
            refused = participants.execute(AUTHORIZE, timeout=5)
            assert isinstance(refused, CircuitOpen), refused
            assert refused.retry_after_s == 0.0 and "bulkhead" in refused.detail
            release.set()
            assert waiting.result(timeout=10) == Succeeded(payment_id="pay-1")
        assert payments.calls == 1, "the refused step was never sent"
    finally:
        release.set()
        channel.close()
        server.stop(0)
