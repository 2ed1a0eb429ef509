"""Processes of the local mesh: start detached, recognise after restarts, stop without leftovers.

Each started process gets a record in ``.mesh/run/<name>.json`` (pid, port, command line, and
the kernel's start time of that pid). A record counts as running only while a live process with
that pid has that start time, so a recycled pid is never mistaken for a component. (The start
time is fixed at fork and survives exec; the command line is not a safe key, because right after
exec of a script /proc/PID/cmdline can still read empty.) Every component runs in a session of its
own, so stopping it signals its whole process group and leaves no child behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mesh_runner import logpipe
from meshkit import tls
from meshkit.client import check_health, connect


@dataclass(frozen=True)
class ProcessRecord:
    """A process `mesh up` started."""

    name: str
    pid: int
    port: int
    cmdline: list[str]
    started_at: float
    log: str
    start_ticks: int = -1
    # Where this process's lines begin in its log (logs are appended to across restarts), so a
    # reader of the log (`mesh ps`: which registry instance is the primary) sees this run only.
    log_offset: int = 0

    def save(self, run_dir: Path) -> None:
        """Write the record atomically to ``run_dir/<name>.json``."""
        run_dir.mkdir(parents=True, exist_ok=True)
        tmp = run_dir / f".{self.name}.json.tmp"
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(run_dir / f"{self.name}.json")

    @classmethod
    def load(cls, run_dir: Path, name: str) -> ProcessRecord | None:
        """The record of ``name``, or None when there is none (or it is unreadable)."""
        try:
            return cls(**json.loads((run_dir / f"{name}.json").read_text()))
        except (OSError, ValueError, TypeError):
            return None

    @staticmethod
    def forget(run_dir: Path, name: str) -> None:
        """Remove the record of ``name``."""
        (run_dir / f"{name}.json").unlink(missing_ok=True)


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state first), or None if there is none."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return None


def start_ticks(pid: int) -> int:
    """When ``pid`` started, in clock ticks since boot (-1 when there is no such process)."""
    fields = _stat(pid)
    return int(fields[19]) if fields else -1  # field 22 of stat; 20th after the name


def is_alive(record: ProcessRecord) -> bool:
    """True while the recorded pid is a live (non-zombie) process started when recorded."""
    fields = _stat(record.pid)
    return fields is not None and fields[0] != "Z" and int(fields[19]) == record.start_ticks


def spawn(
    name: str,
    argv: list[str],
    *,
    port: int,
    env: Mapping[str, str],
    cwd: Path,
    log_path: Path,
) -> ProcessRecord:
    """Start ``argv`` detached (own session), output appended to ``log_path``, which is
    rotated by size (mesh_runner.logpipe: MESH_LOG_MAX_BYTES, default 10 MB, and MESH_LOG_KEEP
    older files, default 3), at start and while it runs. The recorded pid is ``argv``'s own.
    ValueError when MESH_LOG_MAX_BYTES or MESH_LOG_KEEP is not a valid number."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    max_bytes, keep = logpipe.limits(env)
    logpipe.rotate_if_full(log_path, max_bytes, keep)
    piped = [
        sys.executable,
        "-m",
        "mesh_runner.logpipe",
        f"--max-bytes={max_bytes}",
        f"--keep={keep}",
        str(log_path),
        "--",
        *argv,
    ]
    with log_path.open("ab") as log:
        offset = log.seek(0, os.SEEK_END)
        process = subprocess.Popen(
            piped,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,  # what logpipe says before it execs argv (a usage error)
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return ProcessRecord(
        name,
        process.pid,
        port,
        argv,
        time.time(),
        str(log_path),
        start_ticks(process.pid),
        offset,
    )


def terminate(record: ProcessRecord, grace: float = 10.0) -> bool:
    """SIGTERM the record's process group, wait up to ``grace``, then SIGKILL. True if it was up."""
    if not is_alive(record):
        _reap(record.pid)
        return False
    _signal_group(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(record.pid)
        if not is_alive(record) and not _group_alive(record.pid):
            return True
        time.sleep(0.05)  # poll interval within the deadline loop
    _signal_group(record.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while (is_alive(record) or _group_alive(record.pid)) and time.monotonic() < deadline:
        _reap(record.pid)
        time.sleep(0.05)  # poll interval within the deadline loop
    return True


class StopRequested(KeyboardInterrupt):
    """SIGTERM or SIGHUP to a foreground `mesh up`: a KeyboardInterrupt, so that whatever
    Ctrl-C stops, these stop too, in the same way; ``signum`` says which it was."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stop(signum: int, frame: object) -> None:
    raise StopRequested(signum)


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """While the block runs, SIGTERM (a service manager, ``kill``) and SIGHUP (the terminal was
    closed) raise StopRequested in the main thread, as SIGINT raises KeyboardInterrupt; the
    previous handlers come back after it. A SIGHUP that is ignored (``nohup mesh up``) stays
    ignored: whoever started us asked to outlive the terminal."""
    previous: dict[signal.Signals, Any] = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        handler = signal.getsignal(sig)
        if sig == signal.SIGHUP and handler == signal.SIG_IGN:
            continue
        previous[sig] = handler
        signal.signal(sig, _raise_stop)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def shield_stop(stop: KeyboardInterrupt) -> None:
    """Before stopping the mesh because of ``stop``: further SIGTERM and SIGHUP are ignored (a
    second one must not cut the stopping short, leaving components behind), and after a SIGHUP
    the terminal is gone, so stdout and stderr, where they were that terminal, go to /dev/null
    (writing there would fail with EIO and end the stopping half way)."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    if not (isinstance(stop, StopRequested) and stop.signum == signal.SIGHUP):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in (1, 2):
            if os.isatty(fd):
                os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    # Zombies still count as group members for kill(); only live ones matter here.
    for entry in Path("/proc").glob("[0-9]*"):
        fields = _stat(int(entry.name))
        if fields and int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _reap(pid: int) -> None:
    """Collect the exit status if ``pid`` is our own child (started by this same `mesh` run)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port.

    Probing a port nobody listens on is not harmless on loopback when the port lies in the
    kernel's ephemeral range (the mesh's gRPC ports do; Linux uses 32768-60999): the kernel may
    pick that very port as the probe's source port and connect the socket to itself (TCP
    simultaneous open). That would report a listener that is not there, and the closed socket
    would then sit in TIME_WAIT on the port for a minute, failing the real server's bind
    ("Address already in use"). So a self-connection counts as closed and is reset (SO_LINGER 0),
    leaving nothing.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except OSError:
        return False
    with socket.socket(family, kind, proto) as sock:
        sock.settimeout(timeout)
        return probe(sock, address)


def probe(sock: socket.socket, address: tuple[Any, ...]) -> bool:
    """Connect ``sock`` to ``address``: True when a listener answered; False when nothing did or
    when ``sock`` connected to itself, which it then resets so that no TIME_WAIT remains."""
    try:
        sock.connect(address)
        if sock.getsockname()[:2] != sock.getpeername()[:2]:
            return True
    except OSError:
        return False
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    return False


def healthy(kind: str, port: int) -> bool:
    """One health probe of a component on 127.0.0.1:port (first a plain TCP probe: a gRPC or
    HTTP client dialling a port nobody listens on yet could connect to itself, see port_open)."""
    if not port_open("127.0.0.1", port):
        return False
    if kind == "grpc":
        with _health_channel(port) as channel:
            return check_health(channel, timeout=1.0)
    if kind == "http":
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1.0) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False
    return True


def _health_channel(port: int) -> grpc.Channel:
    """A channel to 127.0.0.1:port for one health probe: mTLS as ``client`` while the mesh runs
    with TLS (its servers then refuse plaintext; see mesh_runner.certs.adopt), else plaintext."""
    directory = tls.tls_dir()
    if directory is None:
        return connect(f"127.0.0.1:{port}", retry=False)
    credentials = tls.channel_credentials(tls.tls_name(tls.CLIENT), directory)
    return grpc.secure_channel(f"127.0.0.1:{port}", credentials)


def log_lines(record: ProcessRecord) -> list[str]:
    """The lines ``record``'s process has written to its log so far (none when unreadable)."""
    try:
        with Path(record.log).open("rb") as log:
            log.seek(record.log_offset)
            return log.read().decode(errors="replace").splitlines()
    except OSError:
        return []


def tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log file, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --- replicas -------------------------------------------------------------------------------
#
# `mesh up --replicas inventory=2` runs more processes of one component: replica k (k >= 2) is
# named ``inventory#k``, listens on the component's port + REPLICA_PORT_STEP * (k - 1), has a
# record, a pid and a log of its own, and shares everything else with the first (database file,
# OTEL_SERVICE_NAME). How many of each run is part of the mesh's state (REPLICAS_FILE), so a
# later plain `mesh up` restarts a replica that died, and `mesh down` forgets it.

REPLICA_PORT_STEP = 1000
REPLICAS_FILE = "replicas.json"


class ReplicaSpecError(ValueError):
    """A ``--replicas`` value that cannot be: the message names the item and why."""


def replica_name(name: str, k: int) -> str:
    """``inventory`` for the first replica, ``inventory#k`` for the k-th after it."""
    return name if k == 1 else f"{name}#{k}"


def replica_port(port: int, k: int) -> int:
    """Where replica ``k`` of a component on ``port`` listens."""
    return port + REPLICA_PORT_STEP * (k - 1)


def parse_replicas(spec: str) -> dict[str, int]:
    """``"inventory=2,payments=3"`` -> ``{"inventory": 2, "payments": 3}``. ReplicaSpecError for
    an item without ``=``, a count that is not a whole number of at least 1, or a name given
    twice. (Whether the names can be replicated is the mesh's to say: mesh_runner.cli.)"""
    counts: dict[str, int] = {}
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        name, sep, count = (piece.strip() for piece in item.partition("="))
        if not sep or not name:
            raise ReplicaSpecError(f"{item!r}: expected NAME=COUNT, e.g. inventory=2")
        try:
            n = int(count)
        except ValueError:
            raise ReplicaSpecError(f"{item!r}: the count must be a whole number") from None
        if n < 1:
            raise ReplicaSpecError(f"{item!r}: a component runs at least 1 replica, not {n}")
        if name in counts:
            raise ReplicaSpecError(f"{name!r} is given twice")
        counts[name] = n
    if not counts:
        raise ReplicaSpecError("no NAME=COUNT given, e.g. --replicas inventory=2,payments=2")
    return counts


def load_replicas(run_dir: Path) -> dict[str, int]:
    """The replica counts of the running mesh (components running more than one), or {}."""
    try:
        raw = json.loads((run_dir / REPLICAS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(raw, dict):
        return {}
    return {str(k): int(v) for k, v in raw.items() if isinstance(v, int) and v > 1}


def save_replicas(run_dir: Path, counts: Mapping[str, int]) -> None:
    """Record the replica counts (only those above 1; none: the file goes)."""
    kept = {name: n for name, n in sorted(counts.items()) if n > 1}
    if not kept:
        (run_dir / REPLICAS_FILE).unlink(missing_ok=True)
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".{REPLICAS_FILE}.tmp"
    tmp.write_text(json.dumps(kept))
    tmp.replace(run_dir / REPLICAS_FILE)


def replica_records(run_dir: Path, name: str) -> list[ProcessRecord]:
    """The records of ``name``'s extra replicas (``name#k``), by k: also those beyond the
    current count (left by a larger count, for `mesh down` or a scale-down to stop)."""
    found: list[tuple[int, ProcessRecord]] = []
    for path in run_dir.glob(f"{name}#*.json"):
        k = path.stem.rpartition("#")[2]
        record = ProcessRecord.load(run_dir, path.stem)
        if k.isdigit() and record is not None:
            found.append((int(k), record))
    return [record for _, record in sorted(found, key=lambda pair: pair[0])]


# --- circuit breakers -------------------------------------------------------------------------

BREAKER_PREFIX = "meshkit.breaker/"
# grpc.health.v1 statuses of a breaker's health name (meshkit.resilience): SERVING is closed.
_BREAKER_STATES = {
    health_pb2.HealthCheckResponse.NOT_SERVING: "OPEN",
    health_pb2.HealthCheckResponse.UNKNOWN: "HALF-OPEN",
}


def breaker_states(port: int, timeout: float = 1.0) -> dict[str, str] | None:
    """The circuit breakers that are not closed in the component on 127.0.0.1:port, by peer:
    ``{"payments": "OPEN"}`` (grpc.health.v1 Health/List, health names ``meshkit.breaker/<peer>``:
    NOT_SERVING is OPEN, UNKNOWN HALF-OPEN). None when it cannot say (no List, not answering)."""
    try:
        with _health_channel(port) as channel:
            response = health_pb2_grpc.HealthStub(channel).List(
                health_pb2.HealthListRequest(), timeout=timeout
            )
    except grpc.RpcError:
        return None
    states: dict[str, str] = {}
    for service, status in sorted(response.statuses.items()):
        if service.startswith(BREAKER_PREFIX) and status.status in _BREAKER_STATES:
            states[service.removeprefix(BREAKER_PREFIX)] = _BREAKER_STATES[status.status]
    return states
