"""Fixtures for tracing tests: a real Jaeger v2 (built by `make tools`) on free loopback ports,
and checks that a list of `mesh trace --json` spans is one connected trace.

`jaeger` needs .cache/bin/jaeger; without it the test FAILS (it does not skip), saying to run
`make tools`, since `make test` builds it first.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from support.mesh import REPO, free_port

JAEGER = REPO / ".cache" / "bin" / "jaeger"
T = TypeVar("T")

# Jaeger v2's all-in-one, cut to what the tests use, on loopback ports chosen per run (the
# built-in config binds fixed ports, 4317 among them, which `mesh up`'s receiver also wants).
_CONFIG = """
service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  healthcheckv2:
    use_v2: true
    http:
      endpoint: 127.0.0.1:{health}
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:{query_http}
    grpc:
      endpoint: 127.0.0.1:{query_grpc}
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 1000000  # a fresh mesh replays the shared broker: ~10^5 old traces
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{otlp}
processors:
  batch:
    timeout: 200ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"""


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
    ports = {name: free_port() for name in ("otlp", "query_http", "query_grpc", "health")}
    workdir = tmp_path_factory.mktemp("jaeger")
    config = workdir / "jaeger.yaml"
    config.write_text(_CONFIG.format(**ports))
    log = (workdir / "jaeger.log").open("wb")
    process = subprocess.Popen(
        [str(JAEGER), "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
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
        )
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


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
