"""meshkit.control.config.LiveConfig, the kit's config client: what it serves while the control
service is out of reach (its last known good, else its default, saying which), and, against a
real control service in this process, the live push: snapshot, changes, NACK, the file, resume."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from support.events import wait_for
from support.mesh import free_port

from meshkit.control import ConfigRejected, LiveConfig, Snapshot
from meshkit.server import ServiceBinding
from meshkit.service import Service, ServiceContext
from meshkit.settings import ServiceSettings


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
            snapshot = live.start(wait_s=0.3)
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
