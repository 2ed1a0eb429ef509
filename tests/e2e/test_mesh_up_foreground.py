"""End to end: a foreground `mesh up` stops its mesh on SIGTERM and SIGHUP, as on Ctrl-C.

A real `mesh up` (no -d) of two components (the trace receiver and the schema registry, on
free ports, with the embedded Kafka on a port of its own), so nothing here needs or disturbs
the default ports. After the signal, `mesh up` exits 0, `mesh ps` shows nothing running and
every pid it had shown is gone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support.mesh import MESH, REPO, mesh_ps, write_moved_mesh_toml

COMPONENTS = ("trace-receiver", "schema-registry")
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0


def _live(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _wait_for(what: str, done: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:.0f}s: {what}")
        time.sleep(0.2)  # poll interval within the deadline loop


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=str)
def test_a_signal_to_a_foreground_mesh_up_stops_every_component(
    tmp_path: Path, sig: signal.Signals
) -> None:
    write_moved_mesh_toml(tmp_path, COMPONENTS)
    for name in ("proto", "scripts"):
        (tmp_path / name).symlink_to(REPO / name)
    out, err = tmp_path / "up.out", tmp_path / "up.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        up = subprocess.Popen(
            [MESH, "--root", str(tmp_path), "up"],
            stdout=stdout,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            env={k: v for k, v in os.environ.items() if k != "SCHEMA_REGISTRY_URL"},
        )
    try:
        _wait_for(
            "mesh is up",
            lambda: "mesh is up" in err.read_text() or up.poll() is not None,
            START_TIMEOUT_S,
        )
        assert up.poll() is None, err.read_text()
        before = mesh_ps(tmp_path)
        pids = [int(str(row["pid"])) for row in before.values() if row["pid"] is not None]
        assert {name for name, row in before.items() if row["state"] == "running"} >= {
            *COMPONENTS,
            "kafka",
        }, before
        assert len(pids) == 3, before

        up.send_signal(sig)
        assert up.wait(STOP_TIMEOUT_S) == 0, err.read_text()
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
            down = [MESH, "--root", str(tmp_path), "down"]
            subprocess.run(down, capture_output=True, check=False, timeout=120)
    said = err.read_text()
    assert "Traceback" not in said, said
    assert "mesh is down" in said, said
    after = mesh_ps(tmp_path)
    assert all(row["state"] == "stopped" for row in after.values()), after
    _wait_for(f"the pids {pids} gone", lambda: not any(_live(pid) for pid in pids), 10)
