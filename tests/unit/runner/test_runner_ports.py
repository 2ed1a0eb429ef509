"""`mesh up` refuses a port another process holds instead of mistaking it for its component."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

MESH = str(Path(sys.executable).parent / "mesh")


def test_up_names_a_port_held_by_a_stranger(tmp_path: Path) -> None:
    with socket.socket() as stranger:
        stranger.bind(("127.0.0.1", 0))
        stranger.listen()
        port = stranger.getsockname()[1]
        (tmp_path / "mesh.toml").write_text(
            f"""[[component]]
name = "svc"
command = ["python", "-c", "import time; time.sleep(60)"]
port = {port}
health = "http"
"""
        )
        result = subprocess.run(
            [MESH, "--root", str(tmp_path), "up", "-d", "--kafka", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    assert f"port {port} is already in use by another process" in result.stderr
    assert not (tmp_path / ".mesh" / "run" / "svc.json").exists(), "nothing was started"
