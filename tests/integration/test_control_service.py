"""The control service as `mesh up` runs it (``control.bootstrap.SERVICE``, built by the kit:
its permission checks, the experiments half consuming experiments.events.v1 on the real broker,
its audit records through the kit's outbox and relay): ConfigService over gRPC.

Set, Get, History and Rollback; a document the namespace's schema refuses is INVALID_ARGUMENT
with a BadRequest naming the field; ABORTED on a stale expected_version; Watch gives a snapshot
then every change, resumes after since_version missing nothing and repeating nothing, resets
with a snapshot from beyond the current version, keeps a stalled watcher from holding up
writers, and ends when the server stops (which does not wait on it past the grace); every change
is an audit record on audit.events.v1."""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from support.events import register_all, wait_for
from support.tokens import TEST_ISSUER, authorized

from control.bootstrap import SERVICE
from control.config import Settings
from mesh.control.v1 import control_pb2 as pb
from mesh.control.v1 import control_pb2_grpc as pb_grpc
from meshkit.server import MeshServer

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
AUDIT_AVRO = REPO / "proto" / "mesh" / "audit" / "v1" / "avro"
EXPERIMENTS_AVRO = REPO / "proto" / "mesh" / "experiments" / "v1" / "avro"
GRACE_S = 0.5


@dataclass
class Control:
    """A running control service and stubs calling it as an admin and as a service."""

    server: MeshServer
    db_path: Path
    admin: pb_grpc.ConfigServiceStub
    service: pb_grpc.ConfigServiceStub


@contextlib.contextmanager
def running(tmp_path: Path, kafka_bootstrap: str, registry_url: str) -> Iterator[Control]:
    register_all(registry_url, AUDIT_AVRO)
    register_all(registry_url, EXPERIMENTS_AVRO)
    settings = Settings(
        port=0,
        db_path=tmp_path / "control.db",
        kafka_bootstrap=kafka_bootstrap,
        schema_registry_url=registry_url,
        consumer_group=f"control-{uuid.uuid4().hex[:8]}",  # not another mesh's control's
        grace_seconds=GRACE_S,
        auth_jwks_url=TEST_ISSUER.env["MESH_AUTH_JWKS_URL"],
        auth_issuer=TEST_ISSUER.env["MESH_AUTH_ISSUER"],
        auth_audience=TEST_ISSUER.env["MESH_AUTH_AUDIENCE"],
    )
    server = SERVICE.create(settings)
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield Control(
            server,
            settings.db_path,
            pb_grpc.ConfigServiceStub(authorized(channel, "admin")),
            pb_grpc.ConfigServiceStub(authorized(channel, service="orders")),
        )
    finally:
        channel.close()
        server.stop()


@pytest.fixture(scope="module")
def control(
    tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, registry_url: str
) -> Iterator[Control]:
    with running(tmp_path_factory.mktemp("control"), kafka_bootstrap, registry_url) as started:
        yield started


@pytest.fixture
def ns() -> str:
    """A namespace of this test's own (the server is shared by the module)."""
    return f"test-{uuid.uuid4().hex[:12]}"


def put(stub: pb_grpc.ConfigServiceStub, namespace: str, document: Any, **fields: Any) -> Any:
    request = pb.SetConfigRequest(namespace=namespace, document=json.dumps(document), **fields)
    return stub.SetConfig(request, timeout=5).config


def refused(call: Any, request: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=5)
    return caught.value


class Watcher:
    """A Watch call drained on a thread of its own, as meshkit's config client does."""

    def __init__(
        self, stub: pb_grpc.ConfigServiceStub, namespace: str, since: int = 0, *, read: bool = True
    ) -> None:
        self.call = stub.Watch(
            pb.WatchRequest(namespace=namespace, since_version=since, client="test@here:1")
        )
        self.messages: list[pb.WatchResponse] = []
        self.error: grpc.RpcError | None = None
        self.ended = threading.Event()
        self._seen = threading.Condition()
        self._reading = threading.Event()
        if read:
            self._reading.set()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self._reading.wait()
        try:
            for message in self.call:
                with self._seen:
                    self.messages.append(message)
                    self._seen.notify_all()
        except grpc.RpcError as error:
            self.error = error
        finally:
            self.ended.set()
            with self._seen:
                self._seen.notify_all()

    def read(self) -> None:
        """Start reading (a watcher made with ``read=False`` stalls until then)."""
        self._reading.set()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[tuple[int, bool]]:
        with self._seen:
            self._seen.wait_for(lambda: len(self.messages) >= count or self.ended.is_set(), timeout)
            got = [(m.config.version, m.snapshot) for m in self.messages]
        assert len(got) >= count, f"{got} ({self.error})"
        return got

    def cancel(self) -> None:
        self.call.cancel()
        assert self.ended.wait(5)


def test_set_get_history_and_rollback(control: Control, ns: str) -> None:
    first = put(control.admin, ns, {"limit": 10}, reason="launch")
    put(control.admin, ns, {"limit": 1}, reason="too many")
    back = control.admin.Rollback(
        pb.RollbackRequest(namespace=ns, to_version=1, reason="undo"), timeout=5
    ).config
    assert (first.version, first.author, back.version, back.rollback_of) == (1, "test-admin", 3, 1)
    current = control.service.GetConfig(pb.GetConfigRequest(namespace=ns), timeout=5).config
    assert (current.version, json.loads(current.document)) == (3, {"limit": 10})
    old = control.service.GetConfig(pb.GetConfigRequest(namespace=ns, version=2), timeout=5)
    assert json.loads(old.config.document) == {"limit": 1}
    history = control.admin.ListHistory(pb.ListHistoryRequest(namespace=ns), timeout=5).versions
    assert [(v.version, v.reason, v.rollback_of) for v in history] == [
        (3, "undo", 1),
        (2, "too many", 0),
        (1, "launch", 0),
    ]
    error = refused(control.admin.GetConfig, pb.GetConfigRequest(namespace=ns, version=9))
    assert error.code() is grpc.StatusCode.NOT_FOUND


def test_a_refused_document_names_the_field_in_a_bad_request(control: Control) -> None:
    # "orders": its schema shipped in the contracts, registered by control at start.
    schema = control.admin.GetSchema(pb.GetSchemaRequest(namespace="orders"), timeout=5).schema
    assert schema.author == "control"
    request = pb.SetConfigRequest(namespace="orders", document='{"max_lines_per_order": 0}')
    error = refused(control.admin.SetConfig, request)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(error)
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    assert any(detail.Unpack(bad_request) for detail in status.details)
    assert [(v.field, v.description) for v in bad_request.field_violations] == [
        ("max_lines_per_order", "must be at least 1 (is 0)")
    ]
    assert "max_lines_per_order" in str(error.details())


def test_a_stale_expected_version_is_aborted_and_a_service_may_not_write(
    control: Control, ns: str
) -> None:
    put(control.admin, ns, {"a": 1}, expected_version=0)
    error = refused(
        control.admin.SetConfig,
        pb.SetConfigRequest(namespace=ns, document='{"a": 2}', expected_version=0),
    )
    assert error.code() is grpc.StatusCode.ABORTED
    assert "at version 1, not 0" in str(error.details())
    error = refused(control.service.SetConfig, pb.SetConfigRequest(namespace=ns, document="{}"))
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED


def test_a_watch_starts_with_a_snapshot_then_every_change(control: Control, ns: str) -> None:
    watcher = Watcher(control.service, ns)
    assert watcher.wait_for(1) == [(0, True)]
    assert watcher.messages[0].config.document == "{}"
    for n in range(1, 4):
        put(control.admin, ns, {"n": n})
    assert watcher.wait_for(4) == [(0, True), (1, False), (2, False), (3, False)]
    assert [json.loads(m.config.document) for m in watcher.messages[1:]] == [
        {"n": 1},
        {"n": 2},
        {"n": 3},
    ]
    watcher.cancel()


def test_a_resumed_watch_misses_nothing_and_repeats_nothing(control: Control, ns: str) -> None:
    put(control.admin, ns, {"n": 1})
    first = Watcher(control.service, ns)
    put(control.admin, ns, {"n": 2})
    assert first.wait_for(2) == [(1, True), (2, False)]
    first.cancel()  # the watcher goes away at version 2 ...
    for n in range(3, 30):  # ... while 27 versions are stored
        put(control.admin, ns, {"n": n})
    resumed = Watcher(control.service, ns, since=2)
    assert resumed.wait_for(27) == [(v, False) for v in range(3, 30)]
    put(control.admin, ns, {"n": 30})
    got = resumed.wait_for(28)
    assert got == [(v, False) for v in range(3, 31)]
    assert [json.loads(m.config.document)["n"] for m in resumed.messages] == list(range(3, 31))
    resumed.cancel()


def test_a_watch_from_beyond_the_current_version_is_reset_by_a_snapshot(
    control: Control, ns: str
) -> None:
    put(control.admin, ns, {"n": 1})
    put(control.admin, ns, {"n": 2})
    watcher = Watcher(control.service, ns, since=40)
    assert watcher.wait_for(1) == [(2, True)]
    put(control.admin, ns, {"n": 3})
    assert watcher.wait_for(2) == [(2, True), (3, False)]
    watcher.cancel()


def test_a_stalled_watcher_does_not_hold_writers_up(control: Control, ns: str) -> None:
    stalled = Watcher(control.service, ns, read=False)  # reads nothing: flow control fills up
    payload = "x" * 200_000
    started = time.monotonic()
    for n in range(1, 21):  # 4 MB behind a watcher that takes none of it
        put(control.admin, ns, {"n": n, "payload": payload})
    writing = time.monotonic() - started
    assert writing < 5.0, f"20 writes took {writing:.1f}s behind a stalled watcher"
    stalled.read()
    got = stalled.wait_for(21)
    assert got == [(0, True), *((v, False) for v in range(1, 21))]
    stalled.cancel()


def test_every_change_is_an_audit_record_on_kafka(control: Control, ns: str) -> None:
    put(control.admin, ns, {"a": 1}, reason="launch")
    control.admin.Rollback(pb.RollbackRequest(namespace=ns, to_version=1), timeout=5)
    control.admin.SetSchema(
        pb.SetSchemaRequest(namespace=ns, schema='{"type": "object"}'), timeout=5
    )
    records: list[dict[str, Any]] = []

    def published() -> bool:
        records[:] = [r for r in audit_records(control.db_path) if r["resource_id"] == ns]
        return len(records) == 3 and all(r["published"] for r in records)

    wait_for(published, timeout=30, what="3 audit records published")
    assert [(r["action"], r["resource_type"], r["details"]) for r in records] == [
        ("config.set", "ConfigNamespace", {"version": "1", "reason": "launch"}),
        ("config.rollback", "ConfigNamespace", {"version": "2", "reason": "", "rollback_of": "1"}),
        ("config.schema.set", "ConfigNamespace", {"replaced": "false"}),
    ]
    assert {r["actor"]["subject"] for r in records} == {"test-admin"}


def audit_records(db_path: Path) -> list[dict[str, Any]]:
    """The audit records in the kit's audit outbox beside ``db_path``, decoded with the contract
    (its writer schema: it is registered from the same file), each with ``published``."""
    schema = fastavro.parse_schema(json.loads((AUDIT_AVRO / "audit_recorded.avsc").read_text()))
    outbox = db_path.with_name("control.audit-outbox.db")
    with contextlib.closing(sqlite3.connect(outbox)) as conn:
        rows = conn.execute("SELECT value, published_at FROM meshkit_outbox ORDER BY id").fetchall()
    records = []
    for value, published_at in rows:
        record = fastavro.schemaless_reader(io.BytesIO(bytes(value)[5:]), schema)
        assert isinstance(record, dict)
        records.append({**record, "published": published_at is not None})
    return records


def test_watches_end_when_the_server_stops_without_holding_the_stop(
    tmp_path: Path, kafka_bootstrap: str, registry_url: str
) -> None:
    with running(tmp_path, kafka_bootstrap, registry_url) as control:
        watchers = [Watcher(control.service, f"stop-{n}") for n in range(5)]
        for watcher in watchers:
            watcher.wait_for(1)
        started = time.monotonic()
        control.server.stop()
        stopping = time.monotonic() - started
        for watcher in watchers:
            assert watcher.ended.wait(30), "a watch outlived the server"
            assert watcher.error is not None
            assert watcher.error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
    # Bounded by the grace, not by the watches (which would never end on their own): a loose
    # bound, since a loaded machine stretches a stop that ends at the grace by seconds.
    assert stopping < GRACE_S + 20.0, f"the stop took {stopping:.1f}s with watches open"
