"""Helpers for schema-registry tests: a real `schema-registry serve` process, schema builders.

In-process servers come from `schema_registry.server.running_server` (public); this module adds
the subprocess flavour (workers, persistence, restarts) and small Avro schema builders.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from schema_registry.client import RegistryClient

REPO = Path(__file__).resolve().parents[2]
SCHEMA_REGISTRY = REPO / ".venv" / "bin" / "schema-registry"
_READY = re.compile(r"listening on http://([^\s:]+|\[[^\]]+\]):(\d+)")


def record(name: str, *fields: dict[str, Any], namespace: str = "shop.test") -> str:
    """An Avro record schema as text."""
    return json.dumps(
        {"type": "record", "name": name, "namespace": namespace, "fields": list(fields)}
    )


def field(name: str, type_: Any = "string", **extra: Any) -> dict[str, Any]:
    """An Avro record field."""
    return {"name": name, "type": type_, **extra}


def wait_until(predicate: Any, *, timeout: float = 10.0, what: str = "condition") -> None:
    """Poll `predicate` until true or fail after `timeout` seconds (never a bare sleep)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


class ServeProcess:
    """`schema-registry serve --port 0 ...` as a subprocess; `url` is set once it is ready."""

    def __init__(self, *args: str, cwd: Path) -> None:
        self.args = args
        self.cwd = cwd
        self.url = ""
        self.stderr_lines: list[str] = []
        self._proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 30.0) -> ServeProcess:
        """Start and wait for the ready line."""
        self.stderr_lines = []
        self._proc = subprocess.Popen(
            [str(SCHEMA_REGISTRY), "serve", "--port", "0", *self.args],
            cwd=self.cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        ready = threading.Event()
        proc = self._proc

        def pump() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                self.stderr_lines.append(line)
                match = _READY.search(line)
                if match and not ready.is_set():
                    self.url = f"http://{match.group(1)}:{match.group(2)}"
                    ready.set()
            ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(timeout) or not self.url:
            self.stop()
            raise AssertionError("registry did not start:\n" + "".join(self.stderr_lines))
        with RegistryClient(self.url) as client:
            wait_until(lambda: _answers(client), what=f"{self.url} to answer GET /")
        return self

    def stop(self) -> int:
        """SIGTERM, wait (SIGKILL after 20 s); returns the exit status."""
        proc, self._proc = self._proc, None
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()

    @property
    def pid(self) -> int:
        """The server's (parent) process id."""
        assert self._proc is not None
        return self._proc.pid


def _answers(client: RegistryClient) -> bool:
    try:
        return client.get("/").status == 200
    except OSError:
        client.close()
        return False


@contextmanager
def serve(*args: str, cwd: Path) -> Iterator[ServeProcess]:
    """A running `schema-registry serve` subprocess, stopped on exit."""
    server = ServeProcess(*args, cwd=cwd).start()
    try:
        yield server
    finally:
        server.stop()


def run_cli(
    *args: str, url: str | None = None, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real `schema-registry` command; `url` goes in as --url."""
    argv: Sequence[str] = [str(SCHEMA_REGISTRY), *(["--url", url] if url else []), *args]
    full_env = {**os.environ, **(env or {})}
    if url is None and env is None:
        full_env.pop("SCHEMA_REGISTRY_URL", None)
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=60, cwd=cwd, env=full_env, check=False
    )


@contextmanager
def in_process(backend: str, tmp_path: Path) -> Iterator[RegistryClient]:
    """A client of an in-process server on `backend` ("memory" or "sqlite") storage."""
    from schema_registry.server import running_server
    from schema_registry.storage import MemoryStorage, SqliteStorage, Storage

    storage: Storage = MemoryStorage() if backend == "memory" else SqliteStorage(tmp_path / "r.db")
    try:
        with running_server(storage) as url, RegistryClient(url) as client:
            yield client
    finally:
        storage.close()


def register(client: RegistryClient, subject: str, schema: str, **extra: Any) -> dict[str, Any]:
    """Register and return the JSON answer; fails the test unless it is 200."""
    from schema_registry.client import subject_path

    reply = client.post(f"/subjects/{subject_path(subject)}/versions", {"schema": schema, **extra})
    assert reply.status == 200, reply.body
    found: dict[str, Any] = reply.json()
    return found
