"""`schema-registry serve`: bind once, run N worker processes on the shared socket.

The parent binds (so `--port 0` gives every worker the same port), prints one ready line and
forks workers that each run their own uvloop, `Api` and storage connection; the kernel spreads
connections over them. SQLite is the source of truth and its change counter keeps the workers'
caches honest, so a read on any worker sees a write made on another. The parent restarts a
worker that dies and forwards SIGTERM/SIGINT for a clean stop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from types import FrameType
from typing import Final

import uvloop

from schema_registry.api import Api
from schema_registry.http import run_server
from schema_registry.registry import Registry
from schema_registry.storage import MemoryStorage, Storage, open_storage

log = logging.getLogger(__name__)

_STOP_GRACE_S: Final = 10.0
_RESPAWN_WINDOW_S: Final = 5.0


@dataclass(frozen=True)
class ServeOptions:
    """What `serve` was asked for."""

    host: str = "127.0.0.1"
    port: int = 8081
    storage_url: str = "sqlite:///.mesh/data/schema-registry.db"
    workers: int = 1


class _Shutdown(Exception):
    """Raised by the supervisor's signal handler to leave os.wait()."""


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket (IPv6 when the host is an IPv6 address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def run_worker(sock: socket.socket, storage: Storage) -> None:
    """Serve on `sock` in this process until SIGTERM or SIGINT."""
    api = Api(Registry(storage))

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_server(api, sock, stop=stop)

    try:
        uvloop.run(main())
    finally:
        storage.close()


def _announce(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def serve(options: ServeOptions, *, announce: Callable[[str], None] | None = None) -> int:
    """Run the server until stopped; returns the process exit code."""
    announce = announce or _announce
    storage = open_storage(options.storage_url)
    if options.workers > 1 and not storage.shared_across_processes:
        storage.close()
        announce("schema-registry: memory storage lives in one process; use --workers 1")
        return 2
    sock = bind(options.host, options.port)
    port = sock.getsockname()[1]
    announce(
        f"schema-registry listening on http://{options.host}:{port} "
        f"(workers={options.workers}, storage={options.storage_url})"
    )
    if options.workers <= 1:
        run_worker(sock, storage)
        return 0
    # Workers open their own connections: SQLite handles must not cross fork().
    storage.close()
    return _supervise(sock, options)


def _supervise(sock: socket.socket, options: ServeOptions) -> int:
    children: dict[int, float] = {}

    def spawn() -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            code = 0
            try:
                _die_with_parent()
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                run_worker(sock, open_storage(options.storage_url))
            except BaseException:
                log.exception("worker %d failed", os.getpid())
                code = 1
            finally:
                os._exit(code)
        children[pid] = time.monotonic()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise _Shutdown

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    exit_code = 0
    try:
        for _ in range(options.workers):
            spawn()
        while children:
            pid, status = os.wait()
            started = children.pop(pid, None)
            if started is None:
                continue
            log.warning("worker %d exited (status %d)", pid, status)
            if time.monotonic() - started < _RESPAWN_WINDOW_S:
                # Dying right after start means it will keep dying: stop instead of spinning.
                exit_code = 1
                raise _Shutdown
            spawn()
    except _Shutdown:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _stop_children(children)
    return exit_code


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker when the supervisor dies, even by SIGKILL (no orphans)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the supervisor's own SIGTERM path remains
        pass


def _stop_children(children: dict[int, float]) -> None:
    for pid in children:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + _STOP_GRACE_S
    while children and time.monotonic() < deadline:
        for pid in list(children):
            with suppress(ChildProcessError):
                done, _ = os.waitpid(pid, os.WNOHANG)
                if done == 0:
                    continue
            children.pop(pid, None)
        if children:
            time.sleep(0.05)  # polling our own children with a deadline, not waiting on a test
    for pid in children:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with suppress(ChildProcessError):
            os.waitpid(pid, 0)


@contextmanager
def running_server(storage: Storage | None = None, host: str = "127.0.0.1") -> Iterator[str]:
    """A server on a free port in a background thread of this process; yields its base URL.

    For tests and embedding: the same `Api` and HTTP protocol as `serve`, one worker.
    """
    storage = storage if storage is not None else MemoryStorage()
    sock = bind(host, 0)
    port = sock.getsockname()[1]
    api = Api(Registry(storage))
    loop = uvloop.new_event_loop()
    ready = threading.Event()
    holder: dict[str, asyncio.Event] = {}
    failure: list[BaseException] = []

    async def main() -> None:
        holder["stop"] = asyncio.Event()
        started: asyncio.Future[None] = loop.create_future()
        started.add_done_callback(lambda _: ready.set())
        await run_server(api, sock, started=started, stop=holder["stop"])

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(main())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            failure.append(exc)
            ready.set()
        finally:
            loop.close()

    thread = threading.Thread(target=run, name=f"schema-registry:{port}", daemon=True)
    thread.start()
    ready.wait(timeout=30)
    if failure:
        raise RuntimeError("schema registry failed to start") from failure[0]
    try:
        yield f"http://{host}:{port}"
    finally:
        loop.call_soon_threadsafe(holder["stop"].set)
        thread.join(timeout=30)
        sock.close()
