"""Fixtures for tracing tests: a real Jaeger v2 (built by `make tools`) with the shipped
scripts/jaeger.yaml on free loopback ports, the addresses a process listens on, and checks
that a list of `mesh trace --json` spans is one connected trace.

`jaeger` needs .cache/bin/jaeger; without it the test FAILS (it does not skip), saying to run
`make tools`, since `make test` builds it first.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from support.mesh import REPO, free_port

JAEGER = REPO / ".cache" / "bin" / "jaeger"
T = TypeVar("T")

# The shipped loopback config (what a user runs: .cache/bin/jaeger --config scripts/jaeger.yaml),
# its ports moved through its environment variables to free ones per run: its defaults are
# fixed, 4317 among them, which `mesh up`'s receiver also wants.
CONFIG = REPO / "scripts" / "jaeger.yaml"
PORT_ENV = {
    "otlp": "JAEGER_OTLP_GRPC_PORT",
    "otlp_http": "JAEGER_OTLP_HTTP_PORT",
    "query_http": "JAEGER_QUERY_HTTP_PORT",
    "query_grpc": "JAEGER_QUERY_GRPC_PORT",
    "health": "JAEGER_HEALTH_PORT",
}


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``jaeger`` marker (strict markers are on)."""
    config.addinivalue_line(
        "markers", "jaeger: runs the real Jaeger binary .cache/bin/jaeger (`make tools` builds it)"
    )


@dataclass(frozen=True)
class Jaeger:
    """A running Jaeger: where to send OTLP, where its API v3 answers."""

    otlp_endpoint: str
    query_url: str
    pid: int
    ports: dict[str, int]


def poll(fetch: Callable[[], T | None], timeout: float, what: str) -> T:
    """Call ``fetch`` until it returns something truthy; AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        got = fetch()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s waiting for {what}"
        time.sleep(0.2)  # poll interval within the deadline loop


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="module")
def jaeger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Jaeger]:
    """Jaeger v2.13 (memory storage) on free 127.0.0.1 ports; killed at the end of the module."""
    if not JAEGER.exists():
        pytest.fail(f"{JAEGER} is missing: run `make tools` (it builds Jaeger)", pytrace=False)
    ports: dict[str, int] = {}
    for name in PORT_ENV:
        while (port := free_port()) in ports.values():
            pass  # two listeners on one port would fail; ask again
        ports[name] = port
    workdir = tmp_path_factory.mktemp("jaeger")
    log = (workdir / "jaeger.log").open("wb")
    process = subprocess.Popen(
        [str(JAEGER), "--config", str(CONFIG)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **{PORT_ENV[name]: str(port) for name, port in ports.items()}},
    )
    try:
        health = f"http://127.0.0.1:{ports['health']}/status"
        deadline = time.monotonic() + 60
        while not _healthy(health):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"jaeger did not come up:\n{(workdir / 'jaeger.log').read_text()[-3000:]}",
                    pytrace=False,
                )
            time.sleep(0.1)  # poll interval within the deadline loop
        yield Jaeger(
            otlp_endpoint=f"http://127.0.0.1:{ports['otlp']}",
            query_url=f"http://127.0.0.1:{ports['query_http']}",
            pid=process.pid,
            ports=ports,
        )
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def listening(pid: int) -> set[tuple[str, int]]:
    """The (address, port) pairs every TCP socket of ``pid`` listens on, from /proc/net/tcp and
    tcp6 (the socket inodes among the process's open files)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = set()
    for table, width in (("tcp", 8), ("tcp6", 32)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            address, port = local.split(":")
            raw = bytes.fromhex(address)
            if width == 8:  # little-endian IPv4
                text = ".".join(str(b) for b in reversed(raw))
            else:  # four little-endian 32-bit words
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                text = str(ipaddress.IPv6Address(words))
            found.add((text, int(port, 16)))
    return found


def mesh_trace_json(run: Callable[..., subprocess.CompletedProcess[str]], *args: str) -> Any:
    """Run `mesh trace ... --json` through ``run``; the parsed list, or None when not found."""
    result = run("trace", *args, "--json")
    if result.returncode == 1:
        return None
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def assert_connected(spans: Sequence[dict[str, Any]], *, kinds: set[str], services: int) -> None:
    """One trace, one root, every other span's parent present; ``kinds`` all present; at least
    ``services`` distinct services."""
    assert len({s["trace_id"] for s in spans}) == 1
    ids = {s["span_id"] for s in spans}
    roots = [s for s in spans if s["parent_span_id"] is None]
    orphans = [s for s in spans if s["parent_span_id"] and s["parent_span_id"] not in ids]
    orphan_names = [(o["service"], o["name"]) for o in orphans]
    assert len(roots) == 1 and not orphans, (
        f"roots {[r['name'] for r in roots]}, orphans {orphan_names}"
    )
    assert kinds <= {s["kind"] for s in spans}, {s["kind"] for s in spans}
    assert len({s["service"] for s in spans}) >= services, sorted({s["service"] for s in spans})


def spans_with(
    fetch: Callable[[], Sequence[dict[str, Any]] | None], predicate: Callable[[Any], bool]
) -> Callable[[], Sequence[dict[str, Any]] | None]:
    """``fetch`` wrapped to return its spans only once ``predicate(spans)`` holds."""

    def check() -> Sequence[dict[str, Any]] | None:
        spans = fetch()
        return spans if spans and predicate(spans) else None

    return check
