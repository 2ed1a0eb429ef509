"""Config push through outages, with the control service as `mesh up` runs it (``python -m control``
in a process of its own: the real registry, the real broker, token verification) and
meshkit.control.LiveConfig watchers in this process (issue 16, Done when):

- control is killed (-9) in the middle of a stream of changes and restarted on its port and
  database: every watcher ends on the last version, having applied every version in order, none
  skipped, none twice;
- a watcher started while control is down serves its last known good (from an earlier run's
  file), says so, and goes live once control is back.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc
import pytest
from support.events import register_all, wait_for
from support.mesh import free_port
from support.tokens import TEST_ISSUER

from mesh.control.v1 import control_pb2 as pb
from mesh.control.v1 import control_pb2_grpc as pb_grpc
from meshkit.client import wait_healthy
from meshkit.control import ConfigRejected, LiveConfig, Snapshot
from meshkit.credentials import StaticCredentials

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
AVRO = [REPO / "proto" / "mesh" / p / "v1" / "avro" for p in ("audit", "experiments")]
NS = "push-test"
WATCHERS = 5
CHANGES = 60
KILL_AT = 20  # the version after which control is killed
START_S = 30.0  # control's start: a fresh interpreter, its imports, the registry checks


class ControlProcess:
    """``python -m control`` on a fixed port and database; killed with -9, started again."""

    def __init__(self, port: int, db: Path, env: Mapping[str, str], log: Path) -> None:
        self.port, self.db, self.log = port, db, log
        self.env = {
            **os.environ,
            **env,
            "CONTROL_PORT": str(port),
            "CONTROL_DB_PATH": str(db),
            "CONTROL_GRACE_SECONDS": "0.2",
            "CONTROL_CONSUMER_GROUP": f"control-{port}",  # not another mesh's control's
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "control"],
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_healthy(f"127.0.0.1:{self.port}", timeout=START_S)
        except TimeoutError:
            self.kill()
            raise AssertionError(
                f"control did not start:\n{self.log.read_text()[-3000:]}"
            ) from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture
def control(tmp_path: Path, registry_url: str, kafka_bootstrap: str) -> Iterator[ControlProcess]:
    for avro in AVRO:
        register_all(registry_url, avro)
    env = {
        **TEST_ISSUER.env,
        "SCHEMA_REGISTRY_URL": registry_url,
        "MESH_KAFKA_BOOTSTRAP": kafka_bootstrap,
    }
    process = ControlProcess(free_port(), tmp_path / "control.db", env, tmp_path / "control.log")
    try:
        yield process
    finally:
        process.kill()


class Writer:
    """Stores version n = ``{"n": n}`` as an admin, exactly once per n, through outages: each
    write says the version it expects to replace, so a retry after a lost answer is refused
    (ABORTED) instead of storing it twice, and is then recognised by reading what is stored."""

    def __init__(self, port: int) -> None:
        self.channel = grpc.insecure_channel(
            f"127.0.0.1:{port}",
            options=[
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 500),
            ],
        )
        self.stub = pb_grpc.ConfigServiceStub(self.channel)
        self.metadata = tuple(TEST_ISSUER.metadata("admin"))
        self.written = 0
        self.retries = 0

    def write(self, n: int, timeout: float = 60.0) -> None:
        request = pb.SetConfigRequest(
            namespace=NS, document=json.dumps({"n": n}), expected_version=n - 1
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.stub.SetConfig(request, metadata=self.metadata, timeout=2, wait_for_ready=True)
                break
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.ABORTED and self._stored(n):
                    break  # the answer was lost, the write was not
                if error.code() not in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    grpc.StatusCode.CANCELLED,
                ):
                    raise
                assert time.monotonic() < deadline, f"version {n} not stored: {error}"
                self.retries += 1
        self.written = n

    def _stored(self, n: int) -> bool:
        request = pb.GetConfigRequest(namespace=NS)
        got = self.stub.GetConfig(request, metadata=self.metadata, timeout=5, wait_for_ready=True)
        return got.config.version == n and json.loads(got.config.document) == {"n": n}


def number(document: Mapping[str, Any]) -> int:
    """The test namespace's parse."""
    value = document.get("n", 0)
    if not isinstance(value, int):
        raise ConfigRejected(f"n: must be a whole number, not {value!r}")
    return value


def watcher(port: int, cache: Path, name: str) -> LiveConfig[int]:
    return LiveConfig(
        NS,
        parse=number,
        target=f"127.0.0.1:{port}",
        credentials=StaticCredentials(TEST_ISSUER.token(service="orders")),
        cache_dir=cache,
        client=f"{name}@test:{os.getpid()}",
    )


def test_killing_control_during_a_stream_of_changes_skips_no_change_for_any_watcher(
    control: ControlProcess, tmp_path: Path
) -> None:
    control.start()
    watchers = [watcher(control.port, tmp_path / f"w{i}", f"w{i}") for i in range(WATCHERS)]
    seen: list[list[int]] = [[] for _ in watchers]
    reached_kill_point = threading.Event()

    def recorder(versions: list[int]) -> Callable[[Snapshot[int]], None]:
        def record(snapshot: Snapshot[int]) -> None:
            versions.append(snapshot.version)
            if snapshot.version >= KILL_AT:
                reached_kill_point.set()

        return record

    for live, versions in zip(watchers, seen, strict=True):
        live.subscribe(recorder(versions))
    writer = Writer(control.port)
    failure: list[BaseException] = []

    def write_all() -> None:
        try:
            for n in range(1, CHANGES + 1):
                writer.write(n)
        except BaseException as exc:  # noqa: BLE001 - reported by the test's thread
            failure.append(exc)

    writing = threading.Thread(target=write_all, name="writer")
    try:
        for live in watchers:
            assert live.start().version == 0  # nothing stored yet: the default
        writing.start()
        assert reached_kill_point.wait(30), "no watcher reached the kill point"
        control.kill()
        # What was stored by then: at least what a watcher applied (the writer may not have
        # had the answer yet).
        stored_at_kill = max(writer.written, *(live.current.version for live in watchers))
        control.start()
        writing.join(timeout=90)
        assert not writing.is_alive() and not failure, failure
        for live in watchers:
            assert live.wait_for_version(CHANGES, timeout=30), live.current
    finally:
        for live in watchers:
            live.close()
        writer.channel.close()
    assert KILL_AT <= stored_at_kill < CHANGES, "the kill was not in the middle of the stream"
    for live, versions in zip(watchers, seen, strict=True):
        assert versions == list(range(1, CHANGES + 1)), f"{live.client}: {versions}"
        assert (live.current.version, live.value, live.current.source) == (CHANGES, CHANGES, "live")
    print(
        f"\n{WATCHERS} watchers, {CHANGES} changes, control killed after version {stored_at_kill}"
        f" was stored; the writer retried {writer.retries} times"
    )


def test_a_watcher_started_while_control_is_down_serves_its_last_known_good_then_goes_live(
    control: ControlProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    # An earlier run: control up, version 3 applied (and so kept) by the service's watcher.
    control.start()
    writer = Writer(control.port)
    try:
        earlier = watcher(control.port, cache, "orders")
        earlier.start()
        for n in (1, 2, 3):
            writer.write(n)
        assert earlier.wait_for_version(3, timeout=10)
        earlier.close()
        control.kill()
        # This run: control is down when the service starts.
        live = watcher(control.port, cache, "orders")
        try:
            with caplog.at_level(logging.INFO, logger="meshkit.control"):
                started = live.start(wait_s=0.5)
                assert started == Snapshot(NS, 3, {"n": 3}, 3, "last-known-good")
                said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
                assert any(
                    "last known good, version 3" in m and str(cache / f"{NS}.json") in m
                    for m in said
                ), said
                control.start()
                wait_for(lambda: live.current.source == "live", timeout=15, what="live again")
                assert (live.current.version, live.value) == (3, 3)
                writer.write(4)
                assert live.wait_for_version(4, timeout=10) and live.value == 4
        finally:
            live.close()
    finally:
        writer.channel.close()
