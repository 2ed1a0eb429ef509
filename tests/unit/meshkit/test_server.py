"""The meshkit server edge: error mapping with details, health, reflection, graceful stop."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from meshkit import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    MeshServer,
    NotFound,
    PreconditionViolation,
    ServerSettings,
    ServiceBinding,
    create_server,
)
from meshkit import server as server_module

SERVICE = "test.v1.Probe"


class Probe:
    """A raw-bytes service whose behaviour is chosen by the request payload."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()

    def echo(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        if request == b"invalid":
            raise InvalidArgument(
                violations=[
                    FieldViolation("sku", "must not be empty"),
                    FieldViolation("quantity", "must be zero or more"),
                ]
            )
        if request == b"missing":
            raise NotFound("no such thing", reason="THING_NOT_FOUND", metadata={"id": "7"})
        if request == b"short":
            raise FailedPrecondition(
                "not enough", violations=[PreconditionViolation("STOCK", "A", "wanted 3")]
            )
        if request == b"huge-invalid":
            # What a request with thousands of bad lines would raise.
            raise InvalidArgument(
                violations=[
                    FieldViolation(f"lines[{i}].sku", "must be at most 128 characters")
                    for i in range(1000)
                ]
            )
        if request == b"huge-texts":
            raise InvalidArgument(
                violations=[
                    FieldViolation(f"lines[{i}].sku" + "é" * 300, "must not be " + "é" * 500)
                    for i in range(1000)
                ],
                reason="BAD_" + "E" * 20_000,
            )
        if request == b"huge-missing":
            raise NotFound(
                "no such things: " + "x" * 20_000,
                reason="THING_NOT_FOUND",
                metadata={f"key{i}" + "k" * 200: "é" * 20_000 for i in range(50)},
            )
        if request == b"huge-short":
            raise FailedPrecondition(
                "not enough " + "\U0001f4a5" * 5_000,
                violations=[PreconditionViolation("STOCK", "é" * 500, "x" * 500)] * 1000,
            )
        if request == b"bug":
            raise ZeroDivisionError("secret internals")
        if request == b"abort":
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "handler aborted")
        return request

    def slow(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self.entered.set()
        self.release.wait(10)
        return b"done"

    def stream(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        yield b"one"
        raise NotFound("gone mid-stream")

    def typed(
        self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext
    ) -> health_pb2.HealthCheckRequest:
        return request

    def unimplemented(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        # What a generated servicer base class does for a method the service does not override.
        context.set_code(grpc.StatusCode.UNIMPLEMENTED)
        context.set_details("Method not implemented!")
        raise NotImplementedError("Method not implemented!")

    def chat(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        first = next(requests)
        self.entered.set()
        for second in requests:  # the client goes away while this waits
            yield first + second
            return
        # The stream ended under it: a cancelled client's stream may end rather than raise.
        context.abort(grpc.StatusCode.CANCELLED, "the client went away")

    def add_to(self, servicer: object, server: grpc.Server) -> None:
        handlers = {
            "Echo": grpc.unary_unary_rpc_method_handler(self.echo),
            "Slow": grpc.unary_unary_rpc_method_handler(self.slow),
            "Stream": grpc.unary_stream_rpc_method_handler(self.stream),
            "Unimplemented": grpc.unary_unary_rpc_method_handler(self.unimplemented),
            "Chat": grpc.stream_stream_rpc_method_handler(self.chat),
            # A method with a protobuf request, as every generated servicer has.
            "Typed": grpc.unary_unary_rpc_method_handler(
                self.typed,
                request_deserializer=health_pb2.HealthCheckRequest.FromString,
                response_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            ),
        }
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])


@pytest.fixture
def probe() -> Iterator[tuple[Probe, MeshServer, grpc.Channel]]:
    service = Probe()
    server = create_server(
        "probe",
        ServerSettings(port=0, grace_seconds=5),
        [ServiceBinding(service, service.add_to, SERVICE)],
    )
    port = server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield service, server, channel
    service.release.set()
    channel.close()
    server.stop(0)


def call(channel: grpc.Channel, method: str, payload: bytes) -> bytes:
    result: bytes = channel.unary_unary(f"/{SERVICE}/{method}")(payload, timeout=5)
    return result


def error_of(channel: grpc.Channel, payload: bytes) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(channel, "Echo", payload)
    return caught.value


def test_success_passes_through(probe: tuple[Probe, MeshServer, grpc.Channel]) -> None:
    assert call(probe[2], "Echo", b"hello") == b"hello"


def test_invalid_argument_carries_every_field_violation(
    probe: tuple[Probe, MeshServer, grpc.Channel],
) -> None:
    error = error_of(probe[2], b"invalid")
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "sku: must not be empty" in str(error.details())
    status = rpc_status.from_call(error)
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    assert [(v.field, v.description) for v in bad_request.field_violations] == [
        ("sku", "must not be empty"),
        ("quantity", "must be zero or more"),
    ]


def test_reason_becomes_error_info(probe: tuple[Probe, MeshServer, grpc.Channel]) -> None:
    error = error_of(probe[2], b"missing")
    assert error.code() is grpc.StatusCode.NOT_FOUND
    status = rpc_status.from_call(error)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert (info.reason, dict(info.metadata)) == ("THING_NOT_FOUND", {"id": "7"})


def test_precondition_failure_detail(probe: tuple[Probe, MeshServer, grpc.Channel]) -> None:
    error = error_of(probe[2], b"short")
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    status = rpc_status.from_call(error)
    assert status is not None
    failure = error_details_pb2.PreconditionFailure()
    assert status.details[0].Unpack(failure)
    assert failure.violations[0].subject == "A"


@pytest.mark.parametrize(
    "payload", [b"huge-invalid", b"huge-texts", b"huge-missing", b"huge-short"]
)
def test_a_huge_error_reaches_the_caller_with_its_own_code(
    probe: tuple[Probe, MeshServer, grpc.Channel], payload: bytes
) -> None:
    """A status travels in the trailers, which a grpcio client refuses above 16 KiB (and may
    above 8 KiB): however much an error says, the caller gets its code and details, not
    RESOURCE_EXHAUSTED."""
    expected = {
        b"huge-invalid": grpc.StatusCode.INVALID_ARGUMENT,
        b"huge-texts": grpc.StatusCode.INVALID_ARGUMENT,
        b"huge-missing": grpc.StatusCode.NOT_FOUND,
        b"huge-short": grpc.StatusCode.FAILED_PRECONDITION,
    }[payload]
    for _ in range(5):  # the 8 KiB soft limit refuses at random: try a few times
        error = error_of(probe[2], payload)
        assert error.code() is expected, f"{error.code()}: {str(error.details())[:200]}"
        status = rpc_status.from_call(error)
        assert status is not None and status.details
        assert len(status.SerializeToString()) < 6 * 1024
    if payload.startswith(b"huge-invalid"):
        bad_request = error_details_pb2.BadRequest()
        assert status.details[0].Unpack(bad_request)
        assert [v.field for v in bad_request.field_violations] == [
            f"lines[{i}].sku" for i in range(10)
        ]
        assert str(error.details()).endswith("; and 995 more")


def test_unexpected_exception_is_internal_without_leaking(
    probe: tuple[Probe, MeshServer, grpc.Channel],
) -> None:
    error = error_of(probe[2], b"bug")
    assert error.code() is grpc.StatusCode.INTERNAL
    assert "secret" not in str(error.details())


def test_handler_abort_keeps_its_status(probe: tuple[Probe, MeshServer, grpc.Channel]) -> None:
    error = error_of(probe[2], b"abort")
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED


def test_errors_in_streams_are_mapped(probe: tuple[Probe, MeshServer, grpc.Channel]) -> None:
    responses = probe[2].unary_stream(f"/{SERVICE}/Stream")(b"", timeout=5)
    assert next(responses) == b"one"
    with pytest.raises(grpc.RpcError) as caught:
        next(responses)
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"\x0a\x02\xff\xfe", id="bad-utf8"),
        pytest.param(b"\x0a\x05ab", id="truncated"),
        pytest.param(b"\x0a", id="no-length"),
        pytest.param(b"\x0f\x01", id="wrong-wire-type"),
    ],
)
def test_undecodable_body_is_invalid_argument_with_one_log_line(
    probe: tuple[Probe, MeshServer, grpc.Channel], body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """A body that does not parse as the request type is the caller's error, not the server's:
    INVALID_ARGUMENT saying so, and one access line in the log, no traceback."""
    typed = f"/{SERVICE}/Typed"
    # The raw channel sends the bytes as they are: no client-side serializer to refuse them.
    assert probe[2].unary_unary(typed)(b"\x0a\x01x", timeout=5) == b"\x0a\x01x"
    caplog.clear()
    caplog.set_level(logging.INFO)
    with pytest.raises(grpc.RpcError) as caught:
        probe[2].unary_unary(typed)(body, timeout=5)
    error = caught.value
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, f"{error.code()}: {error.details()}"
    assert str(error.details()).startswith(
        "the request body could not be decoded as grpc.health.v1.HealthCheckRequest: "
    )
    lines = [r for r in caplog.records if r.name.startswith(("grpc", "meshkit"))]
    assert [(r.name, r.getMessage().split()[1]) for r in lines] == [
        ("meshkit.access", "INVALID_ARGUMENT")
    ], [r.getMessage() for r in lines]
    assert all(r.exc_info is None for r in caplog.records)


def test_an_unimplemented_method_answers_unimplemented_without_a_traceback(
    probe: tuple[Probe, MeshServer, grpc.Channel], caplog: pytest.LogCaptureFixture
) -> None:
    """Generated servicer bases set UNIMPLEMENTED, then raise NotImplementedError: that status
    is the answer (grpc.health.v1.Health/List is one such method), not a crash to log."""
    caplog.set_level(logging.INFO)
    with pytest.raises(grpc.RpcError) as caught:
        call(probe[2], "Unimplemented", b"")
    assert (caught.value.code(), caught.value.details()) == (
        grpc.StatusCode.UNIMPLEMENTED,
        "Method not implemented!",
    )
    assert [r.exc_info for r in caplog.records if r.exc_info] == []
    assert [r.getMessage().split()[1] for r in caplog.records if r.name == "meshkit.access"] == [
        "UNIMPLEMENTED"
    ]


def test_a_client_leaving_a_request_stream_is_not_an_error(
    probe: tuple[Probe, MeshServer, grpc.Channel], caplog: pytest.LogCaptureFixture
) -> None:
    """A client that cancels a bidirectional stream (a reflection client closing its channel)
    makes the request iterator raise inside the handler: an access line CANCELLED, no traceback."""
    caplog.set_level(logging.INFO)
    service, _, channel = probe
    done = threading.Event()

    def requests() -> Iterator[bytes]:
        yield b"hello"
        done.wait(5)

    responses = channel.stream_stream(f"/{SERVICE}/Chat")(requests(), timeout=5)
    assert service.entered.wait(5)
    responses.cancel()
    try:
        deadline = time.monotonic() + 5
        while not [r for r in caplog.records if r.name == "meshkit.access"]:
            assert time.monotonic() < deadline, "no access line for the cancelled stream"
            time.sleep(0.01)
    finally:
        # Only now may the client's request stream end: ending it right after the cancel let
        # a half-close reach the server first, now and then, and the handler then saw its
        # request stream end (a client that finished sending), not the cancellation.
        done.set()
    assert [
        r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR
    ] == []
    access = [r.getMessage().split()[:2] for r in caplog.records if r.name == "meshkit.access"]
    assert access == [[f"/{SERVICE}/Chat", "CANCELLED"]]


def test_health_reports_each_service(probe: tuple[Probe, MeshServer, grpc.Channel]) -> None:
    _, server, channel = probe
    health = health_pb2_grpc.HealthStub(channel)
    serving = health_pb2.HealthCheckResponse.SERVING
    for name in ("", SERVICE):
        request = health_pb2.HealthCheckRequest(service=name)
        assert health.Check(request, timeout=5).status == serving
    server.set_serving(SERVICE, False)
    request = health_pb2.HealthCheckRequest(service=SERVICE)
    assert health.Check(request, timeout=5).status == health_pb2.HealthCheckResponse.NOT_SERVING
    with pytest.raises(grpc.RpcError) as caught:
        health.Check(health_pb2.HealthCheckRequest(service="nope.v1.X"), timeout=5)
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND


def test_reflection_lists_services(probe: tuple[Probe, MeshServer, grpc.Channel]) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(probe[2])
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    response = next(iter(stub.ServerReflectionInfo(iter([request]), timeout=5)))
    names = {s.name for s in response.list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names


def test_graceful_stop_drains_in_flight_and_refuses_new(
    probe: tuple[Probe, MeshServer, grpc.Channel],
) -> None:
    service, server, channel = probe
    closed = threading.Event()
    server.on_stop(closed.set)
    result: dict[str, object] = {}
    in_flight = threading.Thread(target=lambda: result.update(r=call(channel, "Slow", b"")))
    in_flight.start()
    assert service.entered.wait(5)
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    # While draining: health says NOT_SERVING and new calls are refused.
    deadline = time.monotonic() + 5
    while True:
        try:
            call(channel, "Echo", b"x")
        except grpc.RpcError as exc:
            # Refused: UNAVAILABLE once the listener is gone; a call that raced the shutdown
            # on an open stream is CANCELLED by it. Either way the caller is turned away.
            assert exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
            break
        assert time.monotonic() < deadline, "server kept accepting new calls while stopping"
        time.sleep(0.01)
    assert not closed.is_set(), "closers ran before in-flight calls drained"
    service.release.set()
    in_flight.join(5)
    stopper.join(5)
    assert result["r"] == b"done"
    assert closed.is_set()


def test_busy_port_fails_loudly(probe: tuple[Probe, MeshServer, grpc.Channel]) -> None:
    _, server, _ = probe
    other = create_server("other", ServerSettings(port=server.port), [])
    with pytest.raises(OSError, match="cannot listen"):
        other.start()


def test_routine_calls_are_summarised_at_info_and_logged_one_by_one_at_debug(
    probe: tuple[Probe, MeshServer, grpc.Channel], caplog: pytest.LogCaptureFixture
) -> None:
    """An OK and quick RPC is one DEBUG line; INFO gets a per-method summary at stop (count,
    mean, max), while errors keep their own INFO line."""
    caplog.set_level(logging.INFO, logger="meshkit.access")
    for _ in range(3):
        call(probe[2], "Echo", b"hi")
    error_of(probe[2], b"invalid")
    access = [r for r in caplog.records if r.name == "meshkit.access"]
    assert [r.getMessage().split()[1] for r in access] == ["INVALID_ARGUMENT"]
    caplog.clear()
    probe[1].stop(0)
    summary = [r for r in caplog.records if r.name == "meshkit.access"]
    assert [r.getMessage().split()[:3] for r in summary] == [[f"/{SERVICE}/Echo", "OK", "x3"]]
    assert summary[0].__dict__["count"] == 3
    caplog.clear()
    caplog.set_level(logging.DEBUG, logger="meshkit.access")
    server = create_server(
        "probe",
        ServerSettings(port=0, grace_seconds=5),
        [ServiceBinding(probe[0], probe[0].add_to, SERVICE)],
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{server.start()}")
    try:
        call(channel, "Echo", b"hi")
    finally:
        channel.close()
        server.stop(0)
    debug = [r for r in caplog.records if r.name == "meshkit.access" and r.levelno == logging.DEBUG]
    assert [r.getMessage().split()[:2] for r in debug] == [[f"/{SERVICE}/Echo", "OK"]]


def test_a_slow_ok_call_has_its_own_info_line(
    probe: tuple[Probe, MeshServer, grpc.Channel],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A call at or over MESH_ACCESS_SLOW_MS is logged at INFO one by one (here the threshold
    is 0: every call is slow)."""
    monkeypatch.setattr(server_module, "ACCESS_SLOW_S", 0.0)
    caplog.set_level(logging.INFO, logger="meshkit.access")
    call(probe[2], "Echo", b"hi")
    access = [r for r in caplog.records if r.name == "meshkit.access"]
    assert [(r.levelno, r.getMessage().split()[:2]) for r in access] == [
        (logging.INFO, [f"/{SERVICE}/Echo", "OK"])
    ]
