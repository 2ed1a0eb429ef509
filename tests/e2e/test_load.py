"""End to end: the real `mesh load` against a mesh started by `mesh up -d` on real Kafka."""

from __future__ import annotations

import json
from pathlib import Path

from support.mesh import mesh_cli

RATE, DURATION = 20, 3


def test_mesh_load_places_orders_at_the_rate_and_accounts_for_every_one(
    running_mesh: Path,
) -> None:
    result = mesh_cli(
        running_mesh,
        "load",
        "--rate",
        str(RATE),
        "--duration",
        str(DURATION),
        "--json",
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["placed"] == (
        summary["confirmed"] + summary["cancelled"] + summary["not_finished"]
    ), summary
    assert abs(summary["placed"] - RATE * DURATION) <= 2, summary
    assert summary["skipped"] == summary["place_failed"] == 0, summary
    # Valid payment token and address, stock topped up: every order goes through.
    assert summary["confirmed"] == summary["placed"], summary
    latency = summary["latency_ms"]
    assert latency["count"] == summary["confirmed"] + summary["cancelled"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"], latency
    # Told on stderr: the stock top-up, and the progress (plain lines: stderr is no terminal).
    assert "stock: topped up mesh-load" in result.stderr, result.stderr
    assert "placed" in result.stderr and "in flight" in result.stderr, result.stderr

    # The second run finds what the first left: it set 60 + 10 spare and 60 were committed.
    again = mesh_cli(running_mesh, "load", "--rate", "5", "--duration", "1", timeout=120)
    assert again.returncode == 0, again.stderr
    assert "topped up mesh-load to 15 (was 10 available)" in again.stderr, again.stderr
    for words in ("placed", "confirmed", "cancelled", "not finished", "p50", "p95", "p99"):
        assert words in again.stdout, again.stdout
