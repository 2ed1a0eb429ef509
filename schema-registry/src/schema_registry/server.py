"""`schema-registry serve`: bind once, run N worker processes on the shared socket.

The parent binds (so `--port 0` gives every worker the same port), prints one ready line and
forks workers that each run their own uvloop, `Api` and storage connection; the kernel spreads
connections over them. SQLite is the source of truth and its change counter keeps the workers'
caches honest, so a read on any worker sees a write made on another. The parent restarts a
worker that dies and forwards SIGTERM/SIGINT for a clean stop.

Every write is audited into the storage's outbox (`schema_registry.audit`); the AuditRecorded
schema is registered in the registry itself before it announces it listens. With Kafka
(`--kafka`, else $MESH_KAFKA_BOOTSTRAP) one relay publishes the outbox to `audit.events.v1`: a
thread of the server with one worker, its own child process (restarted like a worker) with
several, so no thread ever crosses a fork. With `--auth JWKS_URL` writes need identity's tokens
(`schema_registry.auth`).

With Kafka storage (`--storage kafka://...`) several instances share one topic: they elect a
primary through Kafka (`schema_registry.election`), each announcing ``--advertise-url`` (default
http://HOST:PORT), and a follower forwards every change to the primary
(`schema_registry.forwarding`) while answering reads from its own copy of the topic.
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
from pathlib import Path
from types import FrameType
from typing import Final

import uvloop

from schema_registry.api import Api
from schema_registry.audit import AuditLog, run_relay
from schema_registry.auth import DEFAULT_AUDIENCE, Guard
from schema_registry.election import Election
from schema_registry.errors import RegistryError
from schema_registry.forwarding import ForwardingApi
from schema_registry.http import HttpLimits, raise_file_limit, run_server
from schema_registry.registry import DEFAULT_MAX_SCHEMA_SIZE, Registry
from schema_registry.storage import (
    KafkaStorage,
    MemoryStorage,
    SqliteStorage,
    Storage,
    open_storage,
    parse_kafka_url,
    parse_storage_url,
)

log = logging.getLogger(__name__)

_STOP_GRACE_S: Final = 10.0
_RESPAWN_WINDOW_S: Final = 5.0
# A worker's writer thread may run seconds of pure Python (a compatibility check of a 100,000-
# field schema): each time the event loop wants the GIL back it waits up to the switch interval,
# several times per read. Python's 5 ms made reads' p99 40 ms during such a check; 1 ms made it
# 10 ms for a check ~7% slower (0.5 ms: 3 ms, but the check 50% slower). While the loop runs
# alone, nobody waits for the GIL and the interval changes nothing.
_SWITCH_INTERVAL_S: Final = 0.001
# How long `serve` waits for its group to name a primary before it announces it listens
# (writes answer 50004 "Leader not known." until one is named).
_ELECTION_WAIT_S: Final = 15.0


@dataclass(frozen=True)
class ServeOptions:
    """What `serve` was asked for."""

    host: str = "127.0.0.1"
    port: int = 8081
    storage_url: str = "sqlite:///.mesh/data/schema-registry.db"
    workers: int = 1
    #: identity's JWKS URL: writes need its tokens (scope schemas:write); "" lets anyone write.
    auth: str = ""
    #: The tokens' issuer; "" means the JWKS URL's origin.
    auth_issuer: str = ""
    auth_audience: str = DEFAULT_AUDIENCE
    #: Kafka bootstrap servers the audit outbox is published to; "" keeps it in the outbox.
    kafka: str = ""
    #: UTF-8 bytes of schema text a registration may carry (more: 42209).
    max_schema_size: int = DEFAULT_MAX_SCHEMA_SIZE

    #: Seconds a keep-alive connection may idle; a request's head may take to arrive; its body
    #: may stall (Confluent's rest-utils: idle.timeout.ms 30 s, for all three).
    idle_timeout: float = 30.0
    header_timeout: float = 30.0
    body_timeout: float = 30.0
    #: Bytes of request line and headers (Jetty's max.request.header.size): more is 414 / 431.
    max_header_size: int = 8192
    #: Connections per worker; 0: as many as the open file limit allows.
    max_connections: int = 0
    #: The share of reads logged as access lines (0..1); writes are always logged.
    access_log_reads: float = 0.0
    #: The URL other instances on the same Kafka topic forward writes to; "" means
    #: http://HOST:PORT as bound (this machine's name when HOST is a wildcard address).
    advertise_url: str = ""

    def limits(self) -> HttpLimits:
        """The HTTP layer's limits these options ask for."""
        return HttpLimits(
            idle_timeout=self.idle_timeout,
            header_timeout=self.header_timeout,
            body_timeout=self.body_timeout,
            max_header_bytes=self.max_header_size,
            max_connections=self.max_connections,
        )

    def guard(self) -> Guard | None:
        """The write guard ``auth`` asks for (None without it)."""
        if not self.auth:
            return None
        return Guard(self.auth, issuer=self.auth_issuer or None, audience=self.auth_audience)


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


def run_worker(
    sock: socket.socket,
    storage: Storage,
    options: ServeOptions | None = None,
    election: Election | None = None,
) -> None:
    """Serve on `sock` in this process until SIGTERM or SIGINT. With an ``election`` (Kafka
    storage), changes go to the group's primary (`ForwardingApi`); it is closed on exit."""
    options = options or ServeOptions()
    sys.setswitchinterval(_SWITCH_INTERVAL_S)
    guard = options.guard()
    own = writer_storage(storage)

    def registry(s: Storage) -> Registry:
        return Registry(s, audit=AuditLog(), max_schema_size=options.max_schema_size)

    reads = Api(registry(storage), guard=guard, access_log_reads=options.access_log_reads)
    writes = (
        ForwardingApi(registry(own), storage=storage, election=election, guard=guard)
        if election is not None and isinstance(storage, KafkaStorage)
        else Api(registry(own), guard=guard)
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_server(reads, writes, sock, limits=options.limits(), stop=stop)

    try:
        uvloop.run(main())
    finally:
        if election is not None:
            election.close()  # first: the group names another primary at once
        if own is not storage:
            own.close()
        storage.close()


def writer_storage(storage: Storage) -> Storage:
    """The storage a worker's writer thread uses beside ``storage`` (the event loop's).

    SQLite: a connection of its own. One connection serialises its users behind a lock, so a
    read on the loop would wait for a write transaction in the writer thread (a compatibility
    check of a huge schema holds one for seconds); with two, WAL lets the read go ahead on its
    snapshot, and the change counter (a file both map) tells the loop's cache about the write.
    Memory: the same store, a dict set behind one lock (it has no connection to add).
    """
    if isinstance(storage, SqliteStorage):
        return SqliteStorage(storage.path)
    return storage


def _announce(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def serve(options: ServeOptions, *, announce: Callable[[str], None] | None = None) -> int:
    """Run the server until stopped; returns the process exit code."""
    announce = announce or _announce
    # Before anything opens a file, and before fork(): the workers inherit it.
    raise_file_limit()
    kafka = parse_kafka_url(options.storage_url)
    if kafka is not None and options.workers <= 1:
        return _serve_in_group(options, announce, *kafka)
    storage = open_storage(options.storage_url)
    if options.workers > 1 and not storage.shared_across_processes:
        storage.close()
        if parse_kafka_url(options.storage_url) is not None:
            announce(
                "schema-registry: Kafka storage keeps its state in one process per instance; "
                "use --workers 1 (run more instances on the topic for more)"
            )
        else:
            announce("schema-registry: memory storage lives in one process; use --workers 1")
        return 2
    try:
        options.guard()  # a bad --auth URL fails here, before anything listens
        audit_id = Registry(storage, audit=AuditLog()).ensure_audit_schema()
    except BaseException:
        storage.close()
        raise
    relay_db = _relay_database(options, announce)
    sock = bind(options.host, options.port)
    port = sock.getsockname()[1]
    announce(
        f"schema-registry listening on http://{options.host}:{port} "
        f"(workers={options.workers}, storage={options.storage_url}, "
        f"auth={options.auth or 'off: anyone may write'}, "
        f"audit schema id {audit_id}, audit relay={options.kafka if relay_db else 'off'})"
    )
    if options.workers <= 1:
        with _relay_thread(relay_db, options.kafka):
            run_worker(sock, storage, options)
        return 0
    # Workers open their own connections: SQLite handles must not cross fork().
    storage.close()
    return _supervise(sock, options, relay_db)


def advertised_url(options: ServeOptions, port: int) -> str:
    """``--advertise-url``, else http://HOST:PORT (the host name for a wildcard HOST)."""
    if options.advertise_url:
        return options.advertise_url.rstrip("/")
    host = options.host
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 - naming the wildcard, not binding it
        host = socket.getfqdn()
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _serve_in_group(
    options: ServeOptions, announce: Callable[[str], None], bootstrap: str, topic: str
) -> int:
    """One instance of a group on a Kafka topic: replay it, join the election, serve."""
    _relay_database(options, announce)  # says --kafka is not used
    storage = KafkaStorage(bootstrap, topic, elected=True)
    election: Election | None = None
    try:
        options.guard()  # a bad --auth URL fails here, before anything listens
        sock = bind(options.host, options.port)
        port = sock.getsockname()[1]
        url = advertised_url(options, port)
        election = Election(
            bootstrap,
            topic,
            storage.transactional_id,
            url,
            on_elected=storage.become_primary,
            on_deposed=storage.step_down,
        )
        primary = election.wait_settled(_ELECTION_WAIT_S)
        audit_id: int | None = None
        try:
            # A follower finds it registered (by the first primary) and writes nothing.
            audit_id = Registry(storage, audit=AuditLog()).ensure_audit_schema()
        except RegistryError as exc:
            log.warning("the AuditRecorded schema is not registered yet: %s", exc.message)
    except BaseException:
        if election is not None:
            election.close()
        storage.close()
        raise
    announce(
        f"schema-registry listening on http://{options.host}:{port} "
        f"(workers=1, storage={options.storage_url}, "
        f"auth={options.auth or 'off: anyone may write'}, "
        f"audit schema id {audit_id}, advertised as {url}, "
        f"primary={'this instance' if primary == url else primary or 'not known yet'})"
    )
    run_worker(sock, storage, options, election)
    return 0


def _relay_database(options: ServeOptions, announce: Callable[[str], None]) -> Path | None:
    """The SQLite file whose outbox a relay publishes, or None when nothing is published."""
    if not options.kafka:
        return None
    path = parse_storage_url(options.storage_url)
    if path is None and parse_kafka_url(options.storage_url) is not None:
        announce(
            "schema-registry: Kafka storage writes audit records to audit.events.v1 with each "
            "change, on its own brokers; --kafka is not used"
        )
    elif path is None:
        announce(
            "schema-registry: audit records of memory storage cannot be published to Kafka "
            "(the relay reads a SQLite file); they stay in this process"
        )
    return path


@contextmanager
def _relay_thread(db_path: Path | None, bootstrap: str) -> Iterator[None]:
    if db_path is None:
        yield
        return
    stop = threading.Event()
    thread = threading.Thread(
        target=run_relay, args=(db_path, bootstrap, stop), name="audit-relay", daemon=True
    )
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=_STOP_GRACE_S)


def _run_relay_process(db_path: Path, bootstrap: str) -> None:
    """The relay child of a multi-worker server: publishes until SIGTERM."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    run_relay(db_path, bootstrap, stop)


def _supervise(sock: socket.socket, options: ServeOptions, relay_db: Path | None = None) -> int:
    children: dict[int, float] = {}
    relay: list[int] = []  # the relay child's pid, when there is one

    def spawn(as_relay: bool = False) -> None:
        pid = os.fork()
        if pid == 0:  # the worker (or the relay)
            code = 0
            try:
                _die_with_parent()
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                if as_relay:
                    sock.close()
                    assert relay_db is not None
                    _run_relay_process(relay_db, options.kafka)
                else:
                    run_worker(sock, open_storage(options.storage_url), options)
            except BaseException:
                log.exception("%s %d failed", "relay" if as_relay else "worker", os.getpid())
                code = 1
            finally:
                os._exit(code)
        children[pid] = time.monotonic()
        if as_relay:
            relay[:] = [pid]

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise _Shutdown

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    exit_code = 0
    try:
        for _ in range(options.workers):
            spawn()
        if relay_db is not None:
            spawn(as_relay=True)
        while children:
            pid, status = os.wait()
            started = children.pop(pid, None)
            if started is None:
                continue
            was_relay = pid in relay
            log.warning("%s %d exited (status %d)", "relay" if was_relay else "worker", pid, status)
            if time.monotonic() - started < _RESPAWN_WINDOW_S:
                # Dying right after start means it will keep dying: stop instead of spinning.
                exit_code = 1
                raise _Shutdown
            spawn(as_relay=was_relay)
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
def running_server(
    storage: Storage | None = None,
    host: str = "127.0.0.1",
    *,
    guard: Guard | None = None,
    audit: bool = False,
    limits: HttpLimits | None = None,
) -> Iterator[str]:
    """A server on a free port in a background thread of this process; yields its base URL.

    For tests and embedding: the same `Api` and HTTP protocol as `serve`, one worker, with its
    writer thread (on a second connection to ``storage``, closed on exit; ``storage`` is the
    caller's to close). Writes are guarded with ``guard``; ``audit`` records them in the
    storage's outbox (off by default, so the AuditRecorded schema does not take an id the
    caller expects for its own). ``limits``: the HTTP timeouts and sizes (default `serve`'s).
    """
    storage = storage if storage is not None else MemoryStorage()
    registry = Registry(storage, audit=AuditLog() if audit else None)
    registry.ensure_audit_schema()
    own = writer_storage(storage)
    writes = Api(Registry(own, audit=AuditLog() if audit else None), guard=guard)
    sock = bind(host, 0)
    port = sock.getsockname()[1]
    api = Api(registry, guard=guard)
    loop = uvloop.new_event_loop()
    ready = threading.Event()
    holder: dict[str, asyncio.Event] = {}
    failure: list[BaseException] = []

    async def main() -> None:
        holder["stop"] = asyncio.Event()
        started: asyncio.Future[None] = loop.create_future()
        started.add_done_callback(lambda _: ready.set())
        await run_server(api, writes, sock, limits=limits, started=started, stop=holder["stop"])

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
        if own is not storage:
            own.close()
        raise RuntimeError("schema registry failed to start") from failure[0]
    try:
        yield f"http://{host}:{port}"
    finally:
        loop.call_soon_threadsafe(holder["stop"].set)
        thread.join(timeout=30)
        sock.close()
        if own is not storage:
            own.close()
