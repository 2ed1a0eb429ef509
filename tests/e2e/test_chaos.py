"""End to end: every `mesh chaos` scenario, each under a short load, on one real mesh (`mesh up -d`
on the real Kafka, every component on a free port), and each must end with 0 orders lost, 0
effects doubled, every effect matching its order's outcome, and the stock invariant held.

broker-restart stops and starts the broker the mesh runs on: the test suite's (`scripts/kafka
--test`, 127.0.0.1:19092), which other test runs on this machine share: it runs only with
MESH_CHAOS_BROKER_RESTART=1.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.kafka import TEST_KAFKA
from support.mesh import REPO, mesh_cli, mesh_ps, mesh_tokens, mesh_up, write_moved_mesh_toml

RATE = "10"
DRAIN = "30"  # a bound: a healthy mesh drains in a second or two


@pytest.fixture(scope="module")
def chaos_mesh(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> Iterator[Path]:
    """One mesh for the module (scratch root, moved ports; `mesh down` at the end)."""
    root = tmp_path_factory.mktemp("chaos")
    write_moved_mesh_toml(root)
    (root / ".cache").symlink_to(REPO / ".cache")
    env = dict(os.environ)
    env["AUDIT_CONSUMER_GROUP"] = f"audit-{zlib.crc32(str(root).encode()):08x}"
    with mesh_up(root, kafka_bootstrap, env):
        yield root


def chaos(root: Path, scenario: str, *args: str) -> tuple[dict[str, Any], str]:
    """`mesh chaos SCENARIO ... --json` with an admin token of the mesh; (report, stderr)."""
    token = mesh_tokens(root).token("admin")
    result = mesh_cli(
        root,
        "chaos",
        scenario,
        "--rate",
        RATE,
        "--drain",
        DRAIN,
        "--json",
        "--token",
        token,
        *args,
        timeout=240,
    )
    assert result.stdout, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    assert result.returncode == (0 if report["held"] else 1), result.stderr
    return report, result.stderr


def assert_held(report: dict[str, Any], stderr: str) -> None:
    """0 lost, 0 doubled, effects match, stock invariant held, in both phases."""
    for name in ("baseline", "faulted"):
        phase = report[name]
        why = f"{name}: {json.dumps(phase, indent=1)}\n{stderr[-3000:]}"
        assert phase["lost"] == 0, why
        assert phase["doubled"]["total"] == 0, why
        assert phase["mismatched"]["count"] == 0, why
        assert phase["stock"]["held"], why
        assert phase["placed"] == phase["confirmed"] + phase["cancelled"], why
        # Orders got in (retried with their request ids while a part was down).
        assert phase["placed"] >= 0.9 * phase["scheduled"], why
        start, end = phase["stock"]["start"], phase["stock"]["end"]
        assert start["on_hand"] - end["on_hand"] == phase["confirmed"], why
    assert report["held"] is True


def test_kill_9_of_random_services_loses_and_doubles_nothing(chaos_mesh: Path) -> None:
    report, stderr = chaos(
        chaos_mesh, "kill", "--duration", "10", "--baseline", "3", "--every", "3", "--seed", "5"
    )
    assert_held(report, stderr)
    kills = [e for e in report["faulted"]["events"] if "kill -9" in e]
    # Seed 5 picks shipping, then orders twice: PlaceOrder and GetOrder meet a dead orders.
    assert len(kills) >= 2, report["faulted"]["events"]
    assert any("kill -9 orders " in e for e in kills), kills
    assert all(row["state"] == "running" for row in mesh_ps(chaos_mesh).values()), mesh_ps(
        chaos_mesh
    )


def test_payments_unavailable_is_absorbed(chaos_mesh: Path) -> None:
    report, stderr = chaos(chaos_mesh, "payments-unavailable", "--duration", "8", "--baseline", "3")
    assert_held(report, stderr)
    log = chaos_mesh / ".mesh" / "logs" / "payments.log"
    assert "fault injection ON in payments" in log.read_text()
    # payments looks at its fault file every 0.5 s: the run may end before it saw it go.
    deadline = time.monotonic() + 10
    while "fault injection OFF in payments" not in log.read_text():
        assert time.monotonic() < deadline, "payments never said its faults were off"
        time.sleep(0.1)  # poll interval within the deadline loop
    assert not (chaos_mesh / ".mesh" / "faults" / "payments.json").exists()


def test_shipping_slow_shows_in_latency_and_nothing_else(chaos_mesh: Path) -> None:
    report, stderr = chaos(chaos_mesh, "shipping-slow", "--duration", "6", "--baseline", "3")
    assert_held(report, stderr)
    # Every order books a shipment once: 500 ms more, end to end.
    assert report["faulted"]["latency_ms"]["p50"] >= 500, report["faulted"]["latency_ms"]
    assert report["baseline"]["latency_ms"]["p50"] < 500, report["baseline"]["latency_ms"]


def test_registry_outage_is_survived_and_the_registry_comes_back(chaos_mesh: Path) -> None:
    report, stderr = chaos(
        chaos_mesh, "registry-outage", "--duration", "8", "--baseline", "3", "--outage", "4"
    )
    assert_held(report, stderr)
    events = report["faulted"]["events"]
    assert any("schema-registry stopped" in e for e in events), events
    assert any("schema-registry started again" in e for e in events), events
    assert mesh_ps(chaos_mesh)["schema-registry"]["state"] == "running"


@pytest.mark.skipif(
    os.environ.get("MESH_CHAOS_BROKER_RESTART") != "1",
    reason="restarts the broker other test runs share: set MESH_CHAOS_BROKER_RESTART=1",
)
def test_broker_restart_is_survived(chaos_mesh: Path) -> None:
    report, stderr = chaos(
        chaos_mesh, "broker-restart", "--duration", "10", "--baseline", "3", "--outage", "3"
    )
    assert_held(report, stderr)
    events = report["faulted"]["events"]
    assert any("kafka stopped" in e for e in events), events
    assert any("kafka started again" in e for e in events), events
    status = subprocess.run([*TEST_KAFKA, "status"], capture_output=True, check=False)
    assert status.returncode == 0
