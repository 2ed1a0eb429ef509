"""Fault injection (meshkit.faults) on a real kit server: abort, delay within the caller's
deadline, drop; percentages; the faults file read while serving; invalid files refused; health
and reflection never faulted."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from support.events import wait_for

from meshkit import MeshServer, ServerSettings, ServiceBinding, create_server
from meshkit.faults import FaultError, faults_path, parse_faults

SERVICE = "test.v1.Target"


class Target:
    """Counts the calls its handlers actually ran."""

    def __init__(self) -> None:
        self.ran = 0
        self._lock = threading.Lock()

    def echo(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        with self._lock:
            self.ran += 1
        return request

    def stream(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        yield request
        yield request

    def add_to(self, servicer: object, server: grpc.Server) -> None:
        handlers = {
            "Echo": grpc.unary_unary_rpc_method_handler(self.echo),
            "Other": grpc.unary_unary_rpc_method_handler(self.echo),
            "Stream": grpc.unary_stream_rpc_method_handler(self.stream),
        }
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])


@pytest.fixture
def faults_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The servers' faults file, empty of faults until a test writes it."""
    path = tmp_path / "target.json"
    monkeypatch.delenv("MESH_FAULTS", raising=False)
    monkeypatch.setenv("MESH_FAULTS_FILE", str(path))
    return path


def write(path: Path, *faults: Mapping[str, object]) -> None:
    # Written aside and renamed in, as docs/fault-injection.md advises: never read half-written.
    aside = path.with_suffix(".tmp")
    aside.write_text(json.dumps({"faults": list(faults)}))
    aside.replace(path)


def serve(max_workers: int = 4) -> tuple[Target, MeshServer, grpc.Channel]:
    service = Target()
    server = create_server(
        "target",
        ServerSettings(port=0, max_workers=max_workers),
        [ServiceBinding(service, service.add_to, SERVICE)],
    )
    port = server.start()
    return service, server, grpc.insecure_channel(f"127.0.0.1:{port}")


@pytest.fixture
def target(faults_file: Path) -> Iterator[tuple[Target, MeshServer, grpc.Channel]]:
    service, server, channel = serve()
    yield service, server, channel
    channel.close()
    server.stop(0)


def echo(channel: grpc.Channel, method: str = "Echo", timeout: float = 5) -> bytes:
    answer: bytes = channel.unary_unary(f"/{SERVICE}/{method}")(b"hi", timeout=timeout)
    return answer


def code_of(channel: grpc.Channel, method: str = "Echo", timeout: float = 5) -> grpc.StatusCode:
    try:
        echo(channel, method, timeout)
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        return code
    return grpc.StatusCode.OK


ABORT_ALL = {"method": f"{SERVICE}/*", "abort": {"code": "UNAVAILABLE", "percent": 100}}


# --- the document ---------------------------------------------------------------------------


def test_the_documented_example_parses() -> None:
    faults = parse_faults(
        json.dumps(
            {
                "faults": [
                    {
                        "method": "shop.payments.v1.PaymentsService/*",
                        "abort": {"code": "UNAVAILABLE", "percent": 20},
                    },
                    {
                        "method": "shop.shipping.v1.ShippingService/CreateShipment",
                        "delay": {"ms": 500, "percent": 100},
                    },
                    {"method": "*", "drop": {"percent": 5}},
                ]
            }
        )
    )
    assert [f.describe() for f in faults] == [
        "abort UNAVAILABLE 20% on shop.payments.v1.PaymentsService/*",
        "delay 500ms 100% on shop.shipping.v1.ShippingService/CreateShipment",
        "drop 5% on *",
    ]
    payments, shipping, everything = faults
    assert payments.matches("/shop.payments.v1.PaymentsService/Pay")
    assert not payments.matches("/shop.payments.v1.PaymentsServiceX/Pay")
    assert shipping.matches("/shop.shipping.v1.ShippingService/CreateShipment")
    assert not shipping.matches("/shop.shipping.v1.ShippingService/GetShipment")
    assert everything.matches("/anything.v1.At/All")


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ("{", "not JSON"),
        ("[]", "the document"),
        ('{"faults": {}}', "faults:"),
        ('{"fault": []}', "unknown key 'fault'"),
        ('{"faults": [{"method": "*"}]}', "faults[0]: says no fault"),
        ('{"faults": [{"method": "Pay", "drop": {"percent": 1}}]}', "faults[0].method"),
        ('{"faults": [{"method": "a.B/C*", "drop": {"percent": 1}}]}', "faults[0].method"),
        ('{"faults": [{"method": "*", "drop": {"percent": 101}}]}', "faults[0].drop.percent"),
        ('{"faults": [{"method": "*", "drop": {"percent": true}}]}', "faults[0].drop.percent"),
        ('{"faults": [{"method": "*", "drop": {"precent": 5}}]}', "faults[0].drop: unknown"),
        ('{"faults": [{"method": "*", "delay": {"ms": -1, "percent": 5}}]}', "faults[0].delay.ms"),
        (
            '{"faults": [{"method": "*", "drop": {"percent": 1}},'
            ' {"method": "*", "abort": {"code": "UNAVAILABL", "percent": 5}}]}',
            "faults[1].abort.code",
        ),
        ('{"faults": [{"method": "*", "abort": {"code": "OK", "percent": 5}}]}', "abort.code"),
    ],
)
def test_an_invalid_document_is_refused_naming_the_field(document: str, field: str) -> None:
    with pytest.raises(FaultError, match=field.replace("[", r"\[").replace("]", r"\]")):
        parse_faults(document)


def test_the_faults_file_is_found_by_variable_else_under_the_mesh_root(tmp_path: Path) -> None:
    assert faults_path("payments", {"MESH_FAULTS_FILE": "/x/f.json"}) == Path("/x/f.json")
    assert faults_path("payments", {"MESH_ROOT": str(tmp_path)}) == (
        tmp_path / ".mesh" / "faults" / "payments.json"
    )
    config = tmp_path / "elsewhere" / "mesh.toml"
    assert faults_path("payments", {"MESH_CONFIG": str(config)}) == (
        tmp_path / "elsewhere" / ".mesh" / "faults" / "payments.json"
    )


# --- on a real server -----------------------------------------------------------------------


def test_no_faults_by_default(target: tuple[Target, MeshServer, grpc.Channel]) -> None:
    service, server, channel = target
    assert server.faults.faults == ()
    assert echo(channel) == b"hi"
    assert service.ran == 1


def test_an_abort_answers_its_code_without_running_the_handler(
    faults_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="meshkit.faults")
    write(faults_file, ABORT_ALL)
    service, server, channel = serve()
    try:
        with pytest.raises(grpc.RpcError) as caught:
            echo(channel)
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
        assert str(caught.value.details()).startswith("fault injected: abort UNAVAILABLE")
        with pytest.raises(grpc.RpcError) as streamed:
            list(channel.unary_stream(f"/{SERVICE}/Stream")(b"hi", timeout=5))
        assert streamed.value.code() is grpc.StatusCode.UNAVAILABLE
        assert service.ran == 0
        # Loud: on at start, then a count of what was injected.
        assert "fault injection ON in target" in caplog.text
        assert f"abort UNAVAILABLE 100% on {SERVICE}/*" in caplog.text
        server.faults.report()
        assert "2 faults injected in the last" in caplog.text
        assert f"abort UNAVAILABLE on /{SERVICE}/Echo x1" in caplog.text
    finally:
        channel.close()
        server.stop(0)


def test_health_and_reflection_are_never_faulted(faults_file: Path) -> None:
    write(
        faults_file,
        {"method": "*", "abort": {"code": "INTERNAL", "percent": 100}},
        {"method": "*", "delay": {"ms": 5000, "percent": 100}},
    )
    _, server, channel = serve()
    try:
        assert code_of(channel, timeout=0.2) is grpc.StatusCode.DEADLINE_EXCEEDED
        health = health_pb2_grpc.HealthStub(channel)
        check = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
        assert check.status == health_pb2.HealthCheckResponse.SERVING
        assert len(health.List(health_pb2.HealthListRequest(), timeout=1).statuses) == 2
        watch = health.Watch(health_pb2.HealthCheckRequest(), timeout=1)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=1
        )
        names = {s.name for s in next(iter(answers)).list_services_response.service}
        assert SERVICE in names
    finally:
        channel.close()
        server.stop(0)


def test_half_the_calls_fail_at_50_percent(faults_file: Path) -> None:
    write(faults_file, {"method": f"{SERVICE}/Echo", "abort": {"code": "ABORTED", "percent": 50}})
    service, server, channel = serve()
    try:
        codes = [code_of(channel) for _ in range(200)]
        aborted = codes.count(grpc.StatusCode.ABORTED)
        # Binomial(200, 0.5): mean 100, sd 7.1; outside 65..135 (5 sd) about once in 2 million.
        assert 65 <= aborted <= 135, aborted
        assert aborted + codes.count(grpc.StatusCode.OK) == 200
        assert service.ran == 200 - aborted
        assert code_of(channel, "Other") is grpc.StatusCode.OK  # another method: untouched
    finally:
        channel.close()
        server.stop(0)


def test_a_delay_is_added_before_the_handler(faults_file: Path) -> None:
    write(faults_file, {"method": f"{SERVICE}/Echo", "delay": {"ms": 200, "percent": 100}})
    _, server, channel = serve()
    try:
        start = time.monotonic()
        assert echo(channel) == b"hi"
        assert time.monotonic() - start >= 0.2
        start = time.monotonic()
        assert echo(channel, "Other") == b"hi"
        assert time.monotonic() - start < 0.2
    finally:
        channel.close()
        server.stop(0)


def test_a_delay_never_holds_the_worker_past_the_callers_deadline(faults_file: Path) -> None:
    write(faults_file, {"method": f"{SERVICE}/Echo", "delay": {"ms": 3000, "percent": 100}})
    service, server, channel = serve(max_workers=1)
    try:
        start = time.monotonic()
        assert code_of(channel, timeout=0.3) is grpc.StatusCode.DEADLINE_EXCEEDED
        # The only worker is free again soon after the deadline, not 3 s later.
        assert echo(channel, "Other", timeout=1.5) == b"hi"
        assert time.monotonic() - start < 1.5
        assert service.ran == 1  # the delayed handler never ran
    finally:
        channel.close()
        server.stop(0)


def test_a_drop_resets_the_stream_and_the_caller_sees_cancelled(faults_file: Path) -> None:
    write(faults_file, {"method": f"{SERVICE}/Echo", "drop": {"percent": 100}})
    service, server, channel = serve()
    try:
        with pytest.raises(grpc.RpcError) as caught:
            echo(channel)
        assert caught.value.code() is grpc.StatusCode.CANCELLED
        assert "fault injected" not in str(caught.value.details())  # no answer at all
        assert service.ran == 0
        # Only that stream was reset: the connection carries the next call.
        assert echo(channel, "Other") == b"hi"
    finally:
        channel.close()
        server.stop(0)


def test_a_file_written_while_serving_takes_effect_and_removing_it_ends_the_faults(
    target: tuple[Target, MeshServer, grpc.Channel], faults_file: Path
) -> None:
    _, _, channel = target
    assert code_of(channel) is grpc.StatusCode.OK
    write(faults_file, ABORT_ALL)
    wait_for(lambda: code_of(channel) is grpc.StatusCode.UNAVAILABLE, timeout=3, what="faults on")
    write(faults_file, {"method": f"{SERVICE}/*", "abort": {"code": "INTERNAL", "percent": 100}})
    wait_for(lambda: code_of(channel) is grpc.StatusCode.INTERNAL, timeout=3, what="the change")
    faults_file.unlink()
    wait_for(lambda: code_of(channel) is grpc.StatusCode.OK, timeout=3, what="faults off")


def test_an_invalid_file_is_refused_and_the_faults_in_force_stay(
    target: tuple[Target, MeshServer, grpc.Channel],
    faults_file: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, server, channel = target
    write(faults_file, ABORT_ALL)
    wait_for(lambda: code_of(channel) is grpc.StatusCode.UNAVAILABLE, timeout=3, what="faults on")
    caplog.set_level(logging.ERROR, logger="meshkit.faults")
    write(faults_file, {"method": f"{SERVICE}/*", "abort": {"code": "UNAVAILABLE", "percent": 200}})
    wait_for(lambda: "refused" in caplog.text, timeout=3, what="the refusal")
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "faults[0].abort.percent" in errors[0].getMessage()
    assert code_of(channel) is grpc.StatusCode.UNAVAILABLE
    assert [f.describe() for f in server.faults.faults] == [
        f"abort UNAVAILABLE 100% on {SERVICE}/*"
    ]


def test_faults_inline_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESH_FAULTS", json.dumps({"faults": [ABORT_ALL]}))
    _, server, channel = serve()
    try:
        assert code_of(channel) is grpc.StatusCode.UNAVAILABLE
        assert server.faults.source == "MESH_FAULTS"
    finally:
        channel.close()
        server.stop(0)


def test_the_default_file_is_the_services_own_under_the_mesh_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MESH_FAULTS", raising=False)
    monkeypatch.delenv("MESH_FAULTS_FILE", raising=False)
    monkeypatch.delenv("MESH_CONFIG", raising=False)
    monkeypatch.setenv("MESH_ROOT", str(tmp_path))
    (tmp_path / ".mesh" / "faults").mkdir(parents=True)
    write(tmp_path / ".mesh" / "faults" / "target.json", ABORT_ALL)
    _, server, channel = serve()
    try:
        assert code_of(channel) is grpc.StatusCode.UNAVAILABLE
    finally:
        channel.close()
        server.stop(0)
