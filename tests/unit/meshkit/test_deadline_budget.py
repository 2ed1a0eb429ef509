"""The server edge makes what is left of the caller's deadline the handler's budget
(meshkit.deadlines), for unary calls and for every step of a streaming one."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc
import pytest

from meshkit import MeshServer, ServerSettings, ServiceBinding, create_server, deadlines

SERVICE = "test.v1.Budget"


class Budget:
    """Answers with the budget its handler sees, as text ("None" when there is none)."""

    def __init__(self) -> None:
        self.step = threading.Event()

    def unary(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        return repr(deadlines.remaining()).encode()

    def stream(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        yield repr(deadlines.remaining()).encode()
        self.step.wait(0.1)  # let some of the budget go by between the two steps
        yield repr(deadlines.remaining()).encode()

    def add_to(self, servicer: object, server: grpc.Server) -> None:
        handlers = {
            "Unary": grpc.unary_unary_rpc_method_handler(self.unary),
            "Stream": grpc.unary_stream_rpc_method_handler(self.stream),
        }
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])


@pytest.fixture
def channel() -> Iterator[grpc.Channel]:
    service = Budget()
    server: MeshServer = create_server(
        "budget", ServerSettings(port=0), [ServiceBinding(service, service.add_to, SERVICE)]
    )
    port = server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield channel
    channel.close()
    server.stop(0)


def at_most(timeout: float) -> float:
    """The most budget a handler may see for a caller's ``timeout``: the timeout itself, plus
    gRPC's rounding: grpc-timeout goes on the wire rounded up to a few significant digits
    (measured with grpcio 1.85: 2 s arrives as up to 2.0099 s, 0.3 s as up to 0.3009 s)."""
    return timeout * 1.01 + 0.002


def seen(answer: bytes) -> float | None:
    text = answer.decode()
    return None if text == "None" else float(text)


def test_a_unary_handler_has_what_is_left_of_the_callers_deadline(channel: grpc.Channel) -> None:
    left = seen(channel.unary_unary(f"/{SERVICE}/Unary")(b"", timeout=0.3))
    assert left is not None and 0 < left <= at_most(0.3)


def test_without_a_deadline_a_handler_has_no_budget(channel: grpc.Channel) -> None:
    assert seen(channel.unary_unary(f"/{SERVICE}/Unary")(b"")) is None


def test_every_step_of_a_stream_has_the_budget_left_at_that_step(channel: grpc.Channel) -> None:
    first, second = (seen(a) for a in channel.unary_stream(f"/{SERVICE}/Stream")(b"", timeout=2))
    assert first is not None and second is not None
    assert 0 < second < first <= at_most(2)
    assert first - second >= 0.05  # the pause between the steps was spent


def test_a_stream_without_a_deadline_has_no_budget(channel: grpc.Channel) -> None:
    assert [seen(a) for a in channel.unary_stream(f"/{SERVICE}/Stream")(b"")] == [None, None]
