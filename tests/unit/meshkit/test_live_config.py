"""meshkit.control.config.LiveConfig, the kit's config client: what it serves while the control
service is out of reach (its last known good, else its default, saying which), and, against a
real control service in this process (the kit-built ConfigService of
tests/unit/control/servers.py), the live push: snapshot, changes, NACK, the file, resume."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc
import pytest
from support.events import wait_for
from support.mesh import free_port
from support.tokens import TEST_ISSUER, authorized
from unit.control.servers import CONFIG_ONLY, settings

from mesh.control.v1 import control_pb2 as pb
from mesh.control.v1 import control_pb2_grpc as pb_grpc
from meshkit.control import ConfigRejected, LiveConfig, Snapshot
from meshkit.credentials import StaticCredentials
from meshkit.server import ServiceBinding
from meshkit.service import Service, ServiceContext
from meshkit.settings import ServiceSettings
from schema_registry.server import running_server
from schema_registry.storage import MemoryStorage

# A namespace without a schema at the server: it stores what the client's own parse refuses.
NS = "live-test"


def max_lines(document: Mapping[str, Any]) -> int:
    """The orders namespace's parse: ``max_lines_per_order``, a whole number of at least 1."""
    value = document.get("max_lines_per_order", 50)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigRejected(f"max_lines_per_order: must be a whole number >= 1, not {value!r}")
    return value


def messages(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def write_cache(folder: Path, version: int, document: Mapping[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "orders.json"
    path.write_text(json.dumps({"namespace": "orders", "version": version, "document": document}))
    return path


def nowhere(tmp_path: Path, **kwargs: Any) -> LiveConfig[int]:
    """A watcher of "orders" whose control service is not running (a free port)."""
    return LiveConfig(
        "orders",
        parse=max_lines,
        default={"max_lines_per_order": 50},
        target=f"127.0.0.1:{free_port()}",
        cache_dir=tmp_path / "cache",
        client="test@host:1",
        **kwargs,
    )


def test_a_watcher_started_while_control_is_down_serves_its_last_known_good(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_cache(tmp_path / "cache", 7, {"max_lines_per_order": 3})
    live = nowhere(tmp_path)
    try:
        with caplog.at_level(logging.DEBUG, logger="meshkit.control"):
            began = time.monotonic()
            snapshot = live.start(wait_s=120)
            # A refused connection settles it: start does not sit out its whole wait.
            assert time.monotonic() - began < 60
            assert snapshot.source == "last-known-good"
            wait_for(lambda: len(messages(caplog, "still no watch")) >= 2, what="two retries")
    finally:
        live.close()
    assert snapshot == Snapshot("orders", 7, {"max_lines_per_order": 3}, 3, "last-known-good")
    assert live.current is snapshot and live.value == 3
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("last known good, version 7" in m and str(path) in m for m in said), said
    # One warning for the outage (with the retry plan), one for what is served; the retries
    # after it are DEBUG, not a warning each.
    assert len(said) == 2, said
    assert any("no watch on" in m and "retrying every 0.1..2 s" in m for m in said), said


def test_a_corrupt_or_foreign_cache_is_ignored_and_the_default_served(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / "orders.json").write_text('{"namespace": "orders", "version": 3, "docu')
    live = nowhere(tmp_path)
    with caplog.at_level(logging.WARNING, logger="meshkit.control"):
        assert live.start(wait_s=0.1).source == "default"
    live.close()
    assert live.value == 50
    assert any("ignoring the last known good" in r.getMessage() for r in caplog.records)
    # A file its parse now refuses (the service got stricter) is not served either.
    write_cache(folder, 4, {"max_lines_per_order": 0})
    again = nowhere(tmp_path)
    assert again.start(wait_s=0.1) == Snapshot(
        "orders", 0, {"max_lines_per_order": 50}, 50, "default"
    )
    again.close()
    said = [r.getMessage() for r in caplog.records]
    assert any("must be a whole number" in m for m in said)
    assert any("serving the built-in default" in m for m in said)


def test_a_bad_namespace_or_a_default_that_does_not_parse_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lower-case"):
        LiveConfig("Orders!", parse=max_lines, cache_dir=tmp_path, client="t")
    with pytest.raises(ValueError, match="default of 'orders' does not parse"):
        LiveConfig(
            "orders", parse=max_lines, default={"max_lines_per_order": 0}, cache_dir=tmp_path,
            client="t",
        )  # fmt: skip


def test_a_service_without_a_control_plane_serves_its_default_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    mesh = tmp_path / "mesh.toml"
    mesh.write_text('[[component]]\nname = "toy"\ncommand = ["x"]\nport = 1\nhealth = "grpc"\n')
    monkeypatch.setenv("MESH_CONFIG", str(mesh))
    monkeypatch.delenv("MESH_ADDRESS_CONTROL", raising=False)
    got: list[LiveConfig[int]] = []

    def build(ctx: ServiceContext[ServiceSettings]) -> list[ServiceBinding]:
        got.append(ctx.config("orders", parse=max_lines, default={"max_lines_per_order": 9}))
        return []

    service: Service[ServiceSettings] = Service("toy", build, description="A toy.", database=False)
    settings = service.load_settings({"TOY_PORT": "0", "TOY_DB_PATH": str(tmp_path / "toy.db")})
    with caplog.at_level(logging.WARNING, logger="meshkit.control"):
        server = service.create(settings)
    server.stop(0)
    (live,) = got
    assert (live.current.version, live.value, live.current.source) == (0, 9, "default")
    assert live.cache_path == tmp_path / "toy.config" / "orders.json"
    assert live.client.startswith("toy@")
    (said,) = [r.getMessage() for r in caplog.records if r.name == "meshkit.control"]
    assert "no control service to watch" in said and "'control'" in said
    assert "serving the built-in default" in said


# ------------------------------------------------------------- against a real control server


@pytest.fixture(scope="module")
def registry() -> Iterator[str]:
    storage = MemoryStorage()
    with running_server(storage) as url:
        yield url
    storage.close()


@contextlib.contextmanager
def control(db: Path, registry: str, port: int = 0) -> Iterator[int]:
    """The kit-built ConfigService on ``port`` (0: a free one) over ``db``; yields its port."""
    server = CONFIG_ONLY.create(dataclasses.replace(settings(db, registry), port=port))
    try:
        yield server.start()
    finally:
        server.stop()


class Admin:
    """Writes and reads the control service as an admin."""

    def __init__(self, port: int) -> None:
        self._channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = pb_grpc.ConfigServiceStub(authorized(self._channel, "admin"))

    def set(self, document: Mapping[str, Any], namespace: str = NS) -> int:
        request = pb.SetConfigRequest(namespace=namespace, document=json.dumps(document))
        return int(self.stub.SetConfig(request, timeout=5).config.version)

    def status(self, client: str, namespace: str = NS) -> Any:
        request = pb.ListClientStatusRequest(namespace=namespace)
        found = [c for c in self.stub.ListClientStatus(request, timeout=5).clients]
        return next((c for c in found if c.client == client), None)

    def close(self) -> None:
        self._channel.close()


def watcher(port: int, cache: Path, client: str = "orders@test:1") -> LiveConfig[int]:
    return LiveConfig(
        NS,
        parse=max_lines,
        default={"max_lines_per_order": 50},
        target=f"127.0.0.1:{port}",
        credentials=StaticCredentials(TEST_ISSUER.token(service="orders")),
        cache_dir=cache,
        client=client,
    )


def test_a_watcher_starts_on_the_snapshot_then_applies_every_change_and_keeps_it(
    tmp_path: Path, registry: str
) -> None:
    with control(tmp_path / "control.db", registry) as port:
        admin = Admin(port)
        admin.set({"max_lines_per_order": 5})
        live = watcher(port, tmp_path / "cache")
        seen: list[Snapshot[int]] = []
        live.subscribe(seen.append)
        try:
            first = live.start()
            assert (first.version, first.value, first.source) == (1, 5, "live")
            assert [admin.set({"max_lines_per_order": n}) for n in (6, 7)] == [2, 3]
            assert live.wait_for_version(3, timeout=5)
            assert [(s.version, s.value) for s in seen] == [(1, 5), (2, 6), (3, 7)]
            assert live.current is seen[-1] and live.value == 7
            # The last known good is the version now running, whole.
            kept = json.loads(live.cache_path.read_text())
            assert kept == {"namespace": NS, "version": 3, "document": {"max_lines_per_order": 7}}
            wait_for(lambda: getattr(admin.status(live.client), "version", 0) == 3, what="ACK")
            status = admin.status(live.client)
            assert (status.accepted, status.running_version, status.error) == (True, 3, "")
        finally:
            live.close()
            admin.close()


def test_a_version_the_parse_refuses_is_nacked_reported_and_the_previous_stays(
    tmp_path: Path, registry: str, caplog: pytest.LogCaptureFixture
) -> None:
    with control(tmp_path / "control.db", registry) as port:
        admin = Admin(port)
        admin.set({"max_lines_per_order": 5})
        live = watcher(port, tmp_path / "cache")
        seen: list[int] = []
        live.subscribe(lambda s: seen.append(s.version))
        try:
            assert live.start().version == 1
            with caplog.at_level(logging.WARNING, logger="meshkit.control"):
                assert admin.set({"max_lines_per_order": 0}) == 2
                wait_for(lambda: getattr(admin.status(live.client), "version", 0) == 2, what="NACK")
            status = admin.status(live.client)
            assert not status.accepted and status.running_version == 1
            assert "max_lines_per_order: must be a whole number >= 1" in status.error
            assert (live.current.version, live.value) == (1, 5)
            assert json.loads(live.cache_path.read_text())["version"] == 1
            (said,) = [r.getMessage() for r in caplog.records if r.name == "meshkit.control"]
            assert NS in said and "version 2 rejected" in said and "max_lines_per_order" in said
            # The next good version applies: the rejected one is behind the watch, not in its way.
            assert admin.set({"max_lines_per_order": 8}) == 3
            assert live.wait_for_version(3, timeout=5) and live.value == 8
            assert seen == [1, 3]
        finally:
            live.close()
            admin.close()


def test_a_watcher_resumes_after_an_outage_from_its_version_missing_nothing(
    tmp_path: Path, registry: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The watched server stops; meanwhile another server on the same database stores two
    versions; the watched one comes back on its port and the watcher gets exactly those."""
    db = tmp_path / "control.db"
    port = free_port()
    with control(db, registry) as other_port:
        writer = Admin(other_port)
        writer.set({"max_lines_per_order": 1})
        live = watcher(port, tmp_path / "cache")
        seen: list[int] = []
        live.subscribe(lambda s: seen.append(s.version))
        try:
            with caplog.at_level(logging.INFO, logger="meshkit.control"):
                with control(db, registry, port):
                    assert live.start().version == 1
                    writer.set({"max_lines_per_order": 2})
                    assert live.wait_for_version(2, timeout=5)
                wait_for(lambda: bool(messages(caplog, "no watch on")), what="the outage seen")
                writer.set({"max_lines_per_order": 3})
                writer.set({"max_lines_per_order": 4})
                assert live.current.version == 2  # served meanwhile
                with control(db, registry, port):
                    assert live.wait_for_version(4, timeout=10)
                    wait_for(lambda: bool(messages(caplog, "again after")), what="the return")
                    # One WARNING when the watch was lost, one INFO when it was back: not one
                    # per retry.
                    (lost,) = messages(caplog, "no watch on")
                    (back,) = messages(caplog, "again after")
            assert seen == [1, 2, 3, 4]
            assert live.value == 4
            assert "serving version 2 (live)" in lost and "retrying every 0.1..2 s" in lost
            assert "from version 2" in back
        finally:
            live.close()
            writer.close()


def test_a_snapshot_from_a_replaced_store_resets_the_watcher_even_to_a_lower_version(
    tmp_path: Path, registry: str
) -> None:
    """control comes back on its port with another database whose namespace is at version 1:
    the watcher's resume from version 3 is answered with a snapshot, which it takes."""
    port = free_port()
    live = watcher(port, tmp_path / "cache")
    seen: list[int] = []
    live.subscribe(lambda s: seen.append(s.version))
    try:
        with control(tmp_path / "old.db", registry, port):
            admin = Admin(port)
            for n in (1, 2, 3):
                admin.set({"max_lines_per_order": n})
            admin.close()
            assert live.start().version == 3
        with control(tmp_path / "new.db", registry) as elsewhere:
            admin = Admin(elsewhere)
            admin.set({"max_lines_per_order": 42})
            admin.close()
        with control(tmp_path / "new.db", registry, port):
            wait_for(lambda: live.value == 42, timeout=10, what="the reset")
    finally:
        live.close()
    assert live.current == Snapshot(NS, 1, {"max_lines_per_order": 42}, 42, "live")
    assert seen == [3, 1]
    assert json.loads(live.cache_path.read_text())["version"] == 1
