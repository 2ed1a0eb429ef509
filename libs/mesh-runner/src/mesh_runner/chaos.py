"""``mesh chaos SCENARIO``: a fault under load, and the account of every order it touched.

    mesh chaos SCENARIO [--rate R] [--duration S] [--baseline S] [--drain S] [--json]
                        [--every N] [--outage S] [--targets a,b] [--seed N] [--token T]

Scenarios (their names are a promise: scripts may call them):

- ``kill``: kill -9 a random service (of ``--targets``) every ``--every`` seconds; the mesh is
  then brought back as a supervisor would, by ``mesh up -d`` (which starts what is missing).
- ``payments-unavailable``: 20 % of payments' calls fail with UNAVAILABLE (its fault file).
- ``shipping-slow``: every shipping call is 500 ms slower (its fault file).
- ``broker-restart``: stop the Kafka broker, keep it down ``--outage`` seconds, start it again;
  only a broker this runner controls (``mesh up --kafka local``, or scripts/kafka's broker, the
  test suite's included): the one the mesh's recorded bootstrap names.
- ``registry-outage``: stop the schema registry for ``--outage`` seconds (default 30).

Each run places the same open-loop load twice, with ``mesh load``'s engine (PlaceOrder at
``--rate``, every order's fate from GetOrder): first without faults (the baseline), then with
the scenario's fault. The fault starts with the load (an outage a little into it: ``lead_s``) and
is removed when the last order is due; then the run waits, at most ``--drain`` seconds, until
every order is CONFIRMED or CANCELLED. Each phase orders its own fresh SKU (``chaos-<id>-<phase>``)
so its stock moves only with its own orders. A PlaceOrder that fails with UNAVAILABLE (say, orders
was just killed) is sent again with the same request id for up to ``PLACE_RETRY_S``, as a client
that wants its order would; orders answers a repeat with the order the first call made.

The report, per phase and side by side:

- placed (orders accepted: acknowledged, or found in orders' database under the run's request ids
  although the call failed), confirmed, cancelled, still running, and **lost**: accepted but
  unknown to orders, or not terminal when the drain ended. Must be 0.
- **effects doubled**: an order with two payments, two shipments, or more stock reserved than it
  ordered, read from payments', shipping's and inventory's SQLite files (read-only). Must be 0.
- **effects left wrong**: a confirmed order without exactly one captured payment, one booked
  shipment and a committed reservation; a cancelled one with a captured or still authorized
  payment, a booked shipment, or stock still reserved or committed. Must be 0.
- **the stock invariant**: on hand at the start == on hand now + units of confirmed orders, and
  nothing left reserved (but by orders still running).
- p50/p99 of order latency (the orders service's own stamps, placed -> terminal).

The invariants hold when all four say so: exit 0; else exit 1. ``--json`` prints the report as
JSON on stdout (progress stays on stderr).

Exit codes: 0 the invariants held, 1 they did not, 2 usage error or a scenario this mesh cannot
run (said why), 3 the mesh is not up or could not be brought back, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import grpc
from grpc import aio

from mesh_runner import faults as fault_files
from mesh_runner import load, local_kafka
from mesh_runner.config import ConfigError, Mesh, load_mesh
from mesh_runner.kafka import KafkaChoice
from mesh_runner.processes import ProcessRecord, is_alive, terminate
from meshkit.addresses import AddressError

log = logging.getLogger(__name__)

EXIT_HELD = 0
EXIT_BROKEN = 1
EXIT_USAGE = 2
EXIT_NOT_UP = 3
EXIT_INTERRUPTED = 130

ROLE = "admin"  # mesh load's role: stock top-up and orders for its test customers
REGISTRY = "schema-registry"
ORDERS = "orders"
PAYMENTS = "payments"
SHIPPING = "shipping"
INVENTORY = "inventory"

DEFAULT_RATE = 10.0
DEFAULT_DURATION_S = 30.0
DEFAULT_DRAIN_S = 60.0
DEFAULT_EVERY_S = 5.0
DEFAULT_REGISTRY_OUTAGE_S = 30.0
DEFAULT_BROKER_OUTAGE_S = 10.0
# The services kill picks from by default: the order's path and its read model. identity, the
# gateway and audit are not on it (a token is minted once, before the load).
DEFAULT_KILL_TARGETS = (ORDERS, INVENTORY, PAYMENTS, SHIPPING, "order_views")
PLACE_RETRY_S = 20.0
UNITS_PER_ORDER = 1  # mesh load's orders: one line of one unit (load._Run.request)
MESH_UP_TIMEOUT_S = 180.0
KILL_WAIT_S = 10.0
LOOK_TIMEOUT_S = 5.0
LOOK_INTERVAL_S = 0.5
LOOK_CONCURRENCY = 16
SQLITE_CHUNK = 500  # ids per IN (...) query, well under SQLite's variable limit
EXAMPLES_SHOWN = 5

SCENARIOS: dict[str, str] = {
    "kill": "kill -9 a random service every --every s; `mesh up -d` brings it back",
    "payments-unavailable": "20 % of payments' calls fail with UNAVAILABLE (fault file)",
    "shipping-slow": "every shipping call 500 ms slower (fault file)",
    "broker-restart": "stop the Kafka broker for --outage s (default 10), then start it",
    "registry-outage": "stop the schema registry for --outage s (default 30), then start it",
}
FAULT_FILE_SCENARIOS: dict[str, tuple[str, dict[str, Any]]] = {
    "payments-unavailable": (
        PAYMENTS,
        {
            "method": "shop.payments.v1.PaymentsService/*",
            "abort": {"code": "UNAVAILABLE", "percent": 20},
        },
    ),
    "shipping-slow": (
        SHIPPING,
        {"method": "shop.shipping.v1.ShippingService/*", "delay": {"ms": 500, "percent": 100}},
    ),
}


class Refused(RuntimeError):
    """This mesh cannot run the scenario (its broker is not ours, a part is missing); says why."""


class NotUp(RuntimeError):
    """The mesh (or a part the run needs) is not up, or could not be brought back."""


# -- the account: pure arithmetic over what the services hold --------------------------------------


@dataclass(frozen=True)
class Stock:
    """A SKU's stock as inventory counts it: on hand (reserved included) and reserved."""

    on_hand: int
    reserved: int


@dataclass
class Evidence:
    """What one phase left behind, as read from the services once the drain ended.

    ``statuses``: every accepted order by id, "CONFIRMED", "CANCELLED" or "" (not terminal);
    ``unknown``: acknowledged orders that orders answers NOT_FOUND for; ``late``: orders accepted
    although their PlaceOrder failed. ``payments`` / ``shipments``: the statuses of every payment
    / shipment of each order (payments' and shipping's databases). ``reservations``: inventory's
    reservations holding the phase's SKU, by reservation id (= order id): (status, units).
    """

    statuses: dict[str, str]
    unknown: set[str] = field(default_factory=set)
    late: set[str] = field(default_factory=set)
    payments: dict[str, list[str]] = field(default_factory=dict)
    shipments: dict[str, list[str]] = field(default_factory=dict)
    reservations: dict[str, tuple[str, int]] = field(default_factory=dict)
    stock_start: Stock = Stock(0, 0)
    stock_end: Stock = Stock(0, 0)


def assess(evidence: Evidence) -> dict[str, Any]:
    """The phase's figures and every violation of the invariants found in ``evidence``.

    ``placed == confirmed + cancelled + still_running + unknown``; ``lost = still_running +
    unknown``. ``held`` is True when nothing is lost, doubled or left wrong and the stock adds up;
    ``violations`` says what did not, in words.
    """
    statuses = evidence.statuses
    confirmed = sorted(o for o, s in statuses.items() if s == "CONFIRMED")
    cancelled = sorted(o for o, s in statuses.items() if s == "CANCELLED")
    running = sorted(o for o, s in statuses.items() if not s and o not in evidence.unknown)
    unknown = sorted(evidence.unknown)
    lost = len(running) + len(unknown)

    doubled_payments = sorted(o for o, p in evidence.payments.items() if len(p) > 1)
    doubled_shipments = sorted(o for o, s in evidence.shipments.items() if len(s) > 1)
    doubled_stock = sorted(
        o for o, (_, units) in evidence.reservations.items() if units > UNITS_PER_ORDER
    )
    doubled = len(doubled_payments) + len(doubled_shipments) + len(doubled_stock)

    wrong = [
        *(f"{o}: {why}" for o in confirmed if (why := _confirmed_wrong(o, evidence))),
        *(f"{o}: {why}" for o in cancelled if (why := _cancelled_wrong(o, evidence))),
        *(
            f"{o}: stock reserved ({status}) for an order orders does not know"
            for o, (status, _) in sorted(evidence.reservations.items())
            if o not in statuses
        ),
    ]

    start, end = evidence.stock_start, evidence.stock_end
    confirmed_units = len(confirmed) * UNITS_PER_ORDER
    held_by_running = sum(
        units
        for o, (status, units) in evidence.reservations.items()
        if status == "RESERVED" and o in running
    )
    stock_faults = []
    if start.on_hand != end.on_hand + confirmed_units:
        stock_faults.append(
            f"on hand {start.on_hand} at the start != {end.on_hand} now + {confirmed_units}"
            " units of confirmed orders"
        )
    if end.reserved - start.reserved != held_by_running:
        stock_faults.append(
            f"{end.reserved - start.reserved} units left reserved, {held_by_running} of them by"
            " orders still running"
        )

    violations = []
    if lost:
        violations.append(
            f"{lost} orders lost ({len(unknown)} unknown to orders, {len(running)} not"
            " terminal after the drain)"
        )
    if doubled:
        violations.append(
            f"{doubled} effects doubled ({len(doubled_payments)} payments,"
            f" {len(doubled_shipments)} shipments, {len(doubled_stock)} reservations)"
        )
    if wrong:
        violations.append(f"{len(wrong)} orders' effects do not match their outcome")
    violations += [f"stock invariant: {why}" for why in stock_faults]
    return {
        "placed": len(statuses),
        "accepted_unacknowledged": len(evidence.late),
        "confirmed": len(confirmed),
        "cancelled": len(cancelled),
        "still_running": len(running),
        "unknown": len(unknown),
        "lost": lost,
        "lost_orders": (unknown + running)[:EXAMPLES_SHOWN],
        "doubled": {
            "payments": len(doubled_payments),
            "shipments": len(doubled_shipments),
            "stock": len(doubled_stock),
            "total": doubled,
            "orders": (doubled_payments + doubled_shipments + doubled_stock)[:EXAMPLES_SHOWN],
        },
        "mismatched": {"count": len(wrong), "examples": wrong[:EXAMPLES_SHOWN]},
        "stock": {
            "start": {"on_hand": start.on_hand, "reserved": start.reserved},
            "end": {"on_hand": end.on_hand, "reserved": end.reserved},
            "confirmed_units": confirmed_units,
            "held": not stock_faults,
            "faults": stock_faults,
        },
        "held": not violations,
        "violations": violations,
    }


def _confirmed_wrong(order: str, evidence: Evidence) -> str:
    payments = evidence.payments.get(order, [])
    shipments = evidence.shipments.get(order, [])
    reservation = evidence.reservations.get(order)
    if payments.count("CAPTURED") != 1:
        return f"confirmed with payments {payments or 'none'} (one CAPTURED expected)"
    if shipments.count("BOOKED") != 1:
        return f"confirmed with shipments {shipments or 'none'} (one BOOKED expected)"
    if reservation is None or reservation[0] != "COMMITTED":
        return f"confirmed with stock {reservation[0] if reservation else 'never reserved'}"
    return ""


def _cancelled_wrong(order: str, evidence: Evidence) -> str:
    payments = evidence.payments.get(order, [])
    shipments = evidence.shipments.get(order, [])
    reservation = evidence.reservations.get(order)
    if kept := [p for p in payments if p in ("CAPTURED", "AUTHORIZED")]:
        return f"cancelled with a payment still {kept[0]}"
    if "BOOKED" in shipments:
        return "cancelled with a shipment still BOOKED"
    if reservation is not None and reservation[0] in ("RESERVED", "COMMITTED"):
        return f"cancelled with its stock still {reservation[0]}"
    return ""


# -- reading the services' databases (read-only) -------------------------------------------------


def database_of(mesh: Mesh, name: str, environ: Mapping[str, str] | None = None) -> Path:
    """The SQLite file of component ``name``: its ``<NAME>_DB_PATH`` (mesh.toml's env for it,
    else ours, as `mesh up` passes it on), else ``.mesh/data/<name>.db``; relative to the root."""
    environ = os.environ if environ is None else environ
    key = f"{name.upper().replace('-', '_')}_DB_PATH"
    component = mesh.component(name)
    raw = component.env.get(key) or environ.get(key) or f".mesh/data/{name}.db"
    path = Path(raw)
    return path if path.is_absolute() else mesh.root / path


@contextlib.contextmanager
def _read_only(path: Path) -> Any:
    if not path.exists():
        raise NotUp(f"{path} does not exist: cannot check the effects without it")
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
    try:
        yield conn
    finally:
        conn.close()


def _chunks(ids: Iterable[str]) -> Iterable[list[str]]:
    ordered = sorted(set(ids))
    for i in range(0, len(ordered), SQLITE_CHUNK):
        yield ordered[i : i + SQLITE_CHUNK]


def read_accepted(path: Path, run_id: str) -> dict[str, str]:
    """request id -> order id of every order orders accepted under the run's request ids
    (``load-<run_id>-<i>``), from orders' database."""
    with _read_only(path) as conn:
        rows = conn.execute(
            "SELECT request_id, order_id FROM order_requests WHERE request_id LIKE ?",
            (f"load-{run_id}-%",),
        ).fetchall()
    return {str(r): str(o) for r, o in rows}


def read_statuses_by_order(path: Path, table: str, orders: Iterable[str]) -> dict[str, list[str]]:
    """order id -> the statuses of its rows in ``table`` (``payments`` or ``shipments``, both
    keyed by an order_id column), for the given orders."""
    if table not in ("payments", "shipments"):
        raise ValueError(f"not a table of order effects: {table}")
    found: dict[str, list[str]] = {}
    with _read_only(path) as conn:
        for chunk in _chunks(orders):
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(
                f"SELECT order_id, status FROM {table} WHERE order_id IN ({marks})"
                " ORDER BY order_id, created_" + ("us" if table == "payments" else "at_ms"),
                chunk,
            ).fetchall()
            for order, status in rows:
                found.setdefault(str(order), []).append(str(status))
    return found


def read_reservations(path: Path, sku: str) -> dict[str, tuple[str, int]]:
    """reservation id -> (status, units of ``sku``) of every reservation holding ``sku``, from
    inventory's database."""
    with _read_only(path) as conn:
        rows = conn.execute(
            "SELECT r.reservation_id, r.status, l.quantity FROM reservations r"
            " JOIN reservation_lines l ON l.reservation_id = r.reservation_id WHERE l.sku = ?",
            (sku,),
        ).fetchall()
    return {str(r): (str(s), int(q)) for r, s, q in rows}


# -- the faults ------------------------------------------------------------------------------------


Say = Callable[[str], None]


class Fault(Protocol):
    """What a scenario does to the mesh: ``start`` when the load starts, ``stop`` when its last
    order is due (and again in any case when the phase ends: it must be idempotent). ``events``:
    what it did, for the report."""

    events: list[str]

    async def start(self) -> None:
        """Begin the fault (may leave a task running)."""

    async def stop(self) -> None:
        """End the fault and leave the mesh whole again (every part up)."""


class _Clock:
    def __init__(self, say: Say) -> None:
        self.t0 = time.monotonic()
        self.say = say
        self.events: list[str] = []

    def event(self, text: str) -> None:
        line = f"{time.monotonic() - self.t0:6.1f}s  {text}"
        self.events.append(line)
        self.say(line)


class FaultFile:
    """A fault in a service's fault file, merged with what was there; the file is put back as it
    was by ``stop``."""

    def __init__(self, mesh: Mesh, service: str, fault: Mapping[str, Any], say: Say) -> None:
        self.path = fault_files.fault_file(mesh.root, service)
        self.service = service
        self.fault = fault_files.check_fault(fault)
        self.clock = _Clock(say)
        self.events = self.clock.events
        self.before: bytes | None = None
        self.active = False

    async def start(self) -> None:
        self.clock.t0 = time.monotonic()
        self.before = self.path.read_bytes() if self.path.exists() else None
        faults = fault_files.with_fault(fault_files.read_faults(self.path), self.fault)
        fault_files.write_faults(self.path, faults)
        self.active = True
        self.clock.event(f"{self.service}: {fault_files.describe(self.fault)} ({self.path.name})")

    async def stop(self) -> None:
        if not self.active:
            return
        self.active = False
        if self.before is None:
            self.path.unlink(missing_ok=True)
        else:
            tmp = self.path.with_name(f".{self.path.name}.restore")
            tmp.write_bytes(self.before)
            tmp.replace(self.path)
        self.clock.event(f"{self.service}: fault removed")


def mesh_up(mesh: Mesh) -> tuple[bool, str]:
    """``mesh up -d`` for the mesh at ``mesh.root``: what a supervisor does, start what is not
    running (health-gated, Kafka as recorded). (ok, its output)."""
    argv = [sys.executable, "-c", "import sys; from mesh_runner.cli import main; sys.exit(main())"]
    try:
        done = subprocess.run(
            [*argv, "--root", str(mesh.root), "up", "-d"],
            capture_output=True,
            text=True,
            timeout=MESH_UP_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False, f"mesh up -d did not finish in {MESH_UP_TIMEOUT_S:g}s"
    return done.returncode == 0, (done.stdout + done.stderr).strip()


async def _ensure_up(mesh: Mesh, clock: _Clock) -> None:
    started = time.monotonic()
    ok, said = await asyncio.to_thread(mesh_up, mesh)
    if not ok:
        tail = "\n".join(said.splitlines()[-8:])
        clock.event(f"mesh up -d FAILED: {tail}")
        raise NotUp(f"mesh up -d could not bring the mesh back:\n{tail}")
    # `mesh up` says "==> NAME: healthy on ..." of each component it started.
    restarted = [line for line in said.splitlines() if "healthy on" in line]
    what = ", ".join(line.split("==>")[-1].split(":")[0].strip() for line in restarted)
    clock.event(f"mesh up -d: {what or 'nothing was missing'} ({time.monotonic() - started:.1f}s)")


def processes_of(mesh: Mesh, names: Sequence[str]) -> list[ProcessRecord]:
    """The live processes of the components ``names`` (their replicas, ``name#k``, included)."""
    found = []
    for path in sorted(mesh.run_dir.glob("*.json")):
        base = path.stem.split("#", 1)[0]
        record = ProcessRecord.load(mesh.run_dir, path.stem) if base in names else None
        if record is not None and is_alive(record):
            found.append(record)
    return sorted(found, key=lambda r: r.name)


def kill_9(record: ProcessRecord) -> bool:
    """SIGKILL the process (its whole process group: `mesh up` starts each in a session of its
    own) and wait until it is gone. True when it died within KILL_WAIT_S."""
    try:
        os.killpg(record.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, signal.SIGKILL)
    deadline = time.monotonic() + KILL_WAIT_S
    while is_alive(record):
        if time.monotonic() > deadline:
            return False
        with contextlib.suppress(ChildProcessError):
            os.waitpid(record.pid, os.WNOHANG)  # ours when an earlier mesh up -d here started it
        time.sleep(0.02)  # poll interval within the deadline loop
    return True


class Killer:
    """kill -9 a random live process of ``targets`` every ``every`` seconds; after each, ``mesh
    up -d`` brings the mesh back (the next kill waits for it)."""

    def __init__(
        self, mesh: Mesh, targets: Sequence[str], every: float, rng: random.Random, say: Say
    ) -> None:
        self.mesh, self.targets, self.every, self.rng = mesh, tuple(targets), every, rng
        self.clock = _Clock(say)
        self.events = self.clock.events
        self.kills: Counter[str] = Counter()
        self.task: asyncio.Task[None] | None = None
        self.quit = asyncio.Event()

    async def start(self) -> None:
        self.clock.t0 = time.monotonic()
        self.quit.clear()
        self.task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_kill = loop.time() + self.every
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.quit.wait(), max(0.0, next_kill - loop.time()))
            if self.quit.is_set():
                return
            victims = processes_of(self.mesh, self.targets)
            if victims:
                victim = self.rng.choice(victims)
                died = await asyncio.to_thread(kill_9, victim)
                self.kills[victim.name] += 1
                self.clock.event(
                    f"kill -9 {victim.name} (pid {victim.pid})" + ("" if died else ": STILL ALIVE")
                )
            else:
                self.clock.event(f"nothing of {', '.join(self.targets)} is running to kill")
            await _ensure_up(self.mesh, self.clock)
            next_kill = max(next_kill + self.every, loop.time())

    async def stop(self) -> None:
        if self.task is None:
            return
        task, self.task = self.task, None
        self.quit.set()
        await task  # a restart under way finishes first; what it raised is raised
        await _ensure_up(self.mesh, self.clock)


class Outage:
    """Stop a part ``lead`` seconds into the load, keep it down ``outage`` seconds, start it.
    ``stop`` waits for it to be back (and brings it back at once when the run ends early)."""

    def __init__(
        self,
        what: str,
        down: Callable[[], str],
        up: Callable[[], str],
        *,
        lead: float,
        outage: float,
        say: Say,
    ) -> None:
        self.what, self.down, self.up, self.lead, self.outage = what, down, up, lead, outage
        self.clock = _Clock(say)
        self.events = self.clock.events
        self.task: asyncio.Task[None] | None = None
        self.cut_short = asyncio.Event()

    async def start(self) -> None:
        self.clock.t0 = time.monotonic()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.cut_short.wait(), self.lead)
        if self.cut_short.is_set():
            return
        started = time.monotonic()
        said = await asyncio.to_thread(self.down)
        self.clock.event(f"{self.what} stopped{said} ({time.monotonic() - started:.1f}s)")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.cut_short.wait(), self.outage)
        started = time.monotonic()
        said = await asyncio.to_thread(self.up)
        self.clock.event(f"{self.what} started again{said} ({time.monotonic() - started:.1f}s)")

    async def stop(self) -> None:
        if self.task is None:
            return
        task, self.task = self.task, None
        await task  # the part is back (what bringing it back raised is raised)

    def interrupt(self) -> None:
        """End the outage now (the run was interrupted, or failed): ``stop`` then starts the part
        at once, or never stops it when the outage had not begun."""
        self.cut_short.set()


def controlled_broker(mesh: Mesh) -> local_kafka.Paths:
    """The local broker this runner controls and the mesh runs on; Refused (saying why) when the
    mesh's broker is the embedded mock cluster or one someone else runs."""
    choice = KafkaChoice.load(mesh.run_dir)
    if choice is None:
        raise NotUp("the mesh records no Kafka: is it up? (`mesh up -d`)")
    if choice.mode == "embedded":
        raise Refused(
            "broker-restart: the mesh runs on the embedded mock cluster, which holds every topic"
            " in memory: restarting it makes a new, empty cluster, not a restarted broker. Run the"
            " mesh on a real broker this runner controls: `mesh down && mesh up -d --kafka local`"
        )
    host, _, port = choice.bootstrap.rpartition(":")
    # The brokers this runner may have started: the mesh's own (`mesh up --kafka local`, at the
    # mesh's port offset), and its checkout's scripts/kafka ones (the default, and --test: the
    # test suite's broker, which the test meshes use as an external HOST:PORT).
    candidates = [local_kafka.Paths.for_root(mesh.root, mesh.port_offset)]
    script = (mesh.root / "scripts" / "kafka").resolve()
    if script.exists():
        checkout = script.parent.parent
        candidates += [local_kafka.Paths.for_root(checkout), local_kafka.Paths.for_tests(checkout)]
    ours = [
        p for p in candidates if host in (local_kafka.HOST, "localhost") and str(p.port) == port
    ]
    if not ours:
        raise Refused(
            f"broker-restart: the mesh's broker {choice.bootstrap} is not one this runner started"
            " (`mesh up --kafka local`, or scripts/kafka): restart it with its own tools"
        )
    for paths in ours:
        if local_kafka.running_pid(paths) is not None:
            return paths
    raise Refused(
        f"broker-restart: a broker answers on {choice.bootstrap}, but neither this mesh nor its"
        f" scripts/kafka started it (no live pid in {', '.join(str(p.pid) for p in ours)}):"
        " restart it with the tools that started it"
    )


def _broker_down(paths: local_kafka.Paths) -> Callable[[], str]:
    def down() -> str:
        with contextlib.redirect_stdout(sys.stderr):
            pid = local_kafka.running_pid(paths)
            local_kafka.cmd_stop(paths)
        return f" (pid {pid}, SIGTERM: a controlled shutdown)"

    return down


def _broker_up(paths: local_kafka.Paths) -> Callable[[], str]:
    def up() -> str:
        with contextlib.redirect_stdout(sys.stderr):
            code = local_kafka.cmd_start(paths)
        if code != local_kafka.EXIT_OK:
            raise NotUp(f"the broker did not start again (log: {paths.log})")
        return f" (pid {local_kafka.running_pid(paths)})"

    return up


def _registry_down(mesh: Mesh) -> Callable[[], str]:
    def down() -> str:
        record = ProcessRecord.load(mesh.run_dir, REGISTRY)
        if record is None or not is_alive(record):
            raise NotUp(f"{REGISTRY} is not running: is the mesh up?")
        terminate(record)
        ProcessRecord.forget(mesh.run_dir, REGISTRY)
        return f" (pid {record.pid})"

    return down


def _mesh_up_sync(mesh: Mesh) -> Callable[[], str]:
    def up() -> str:
        ok, said = mesh_up(mesh)
        if not ok:
            tail = "\n".join(said.splitlines()[-8:])
            raise NotUp(f"mesh up -d could not bring the mesh back:\n{tail}")
        return " by mesh up -d"

    return up


def lead_s(duration: float) -> float:
    """How far into the load an outage begins (and at least how long the load goes on after it):
    5 s, or a fifth of a short load."""
    return min(5.0, duration / 5)


def load_duration(scenario: str, duration: float, outage: float) -> float:
    """How long the faulted load runs: ``duration``, stretched for an outage so that orders are
    placed before, during and after it."""
    if scenario in ("broker-restart", "registry-outage"):
        return max(duration, outage + 2 * lead_s(duration))
    return duration


# -- a run -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """A chaos run's parameters (the command's flags)."""

    scenario: str
    rate: float = DEFAULT_RATE
    duration: float = DEFAULT_DURATION_S
    baseline: float | None = None  # None: as long as the faulted load
    drain: float = DEFAULT_DRAIN_S
    every: float = DEFAULT_EVERY_S
    outage: float | None = None  # None: the scenario's default
    targets: tuple[str, ...] = DEFAULT_KILL_TARGETS
    seed: int | None = None
    concurrency: int = load.DEFAULT_CONCURRENCY

    @property
    def outage_s(self) -> float:
        """The outage of broker-restart / registry-outage, defaulted per scenario."""
        if self.outage is not None:
            return self.outage
        return (
            DEFAULT_BROKER_OUTAGE_S
            if self.scenario == "broker-restart"
            else (DEFAULT_REGISTRY_OUTAGE_S)
        )

    def describe(self) -> str:
        """What the scenario does, with this run's figures."""
        if self.scenario == "kill":
            return (
                f"kill -9 one of {', '.join(self.targets)} every {self.every:g}s;"
                " `mesh up -d` brings it back"
            )
        if self.scenario == "broker-restart":
            return f"stop the Kafka broker for {self.outage_s:g}s, then start it"
        if self.scenario == "registry-outage":
            return f"stop the schema registry for {self.outage_s:g}s, then start it"
        return SCENARIOS[self.scenario]

    def params(self) -> dict[str, Any]:
        """The scenario's own knobs, for the report."""
        if self.scenario == "kill":
            return {"every_s": self.every, "targets": list(self.targets), "seed": self.seed}
        if self.scenario in ("broker-restart", "registry-outage"):
            return {"outage_s": self.outage_s, "lead_s": lead_s(self.duration)}
        service, fault = FAULT_FILE_SCENARIOS[self.scenario]
        return {"service": service, "fault": fault}


def make_fault(options: Options, mesh: Mesh, say: Say) -> Fault:
    """The scenario's fault for ``mesh``; Refused / NotUp when it cannot run there."""
    scenario = options.scenario
    if scenario == "kill":
        known = {c.name for c in mesh.components}
        if unknown := sorted(set(options.targets) - known):
            raise Refused(f"kill: not components of the mesh: {', '.join(unknown)}")
        return Killer(mesh, options.targets, options.every, random.Random(options.seed), say)  # noqa: S311 (not crypto)
    if scenario in FAULT_FILE_SCENARIOS:
        service, fault = FAULT_FILE_SCENARIOS[scenario]
        mesh.component(service)
        if importlib.util.find_spec("meshkit.faults") is None:
            raise Refused(
                f"{scenario}: this checkout's meshkit has no fault injection (meshkit.faults),"
                " so its services would ignore the fault file"
            )
        return FaultFile(mesh, service, fault, say)
    lead = lead_s(options.duration)
    if scenario == "broker-restart":
        paths = controlled_broker(mesh)
        return Outage(
            "kafka",
            _broker_down(paths),
            _broker_up(paths),
            lead=lead,
            outage=options.outage_s,
            say=say,
        )
    if scenario == "registry-outage":
        mesh.component(REGISTRY)
        return Outage(
            REGISTRY,
            _registry_down(mesh),
            _mesh_up_sync(mesh),
            lead=lead,
            outage=options.outage_s,
            say=say,
        )
    raise Refused(f"no scenario {scenario!r}; known: {', '.join(SCENARIOS)}")


@dataclass
class Phase:
    """One load of a run (baseline or faulted) and everything measured of it."""

    plan: load.Plan
    result: load.RunResult | None = None
    stock_start: Stock | None = None
    in_flight_at_recovery: int = 0
    events: list[str] = field(default_factory=list)
    evidence: Evidence | None = None


class Chaos:
    """A whole run: the baseline, the faulted load, the account of both."""

    def __init__(
        self,
        options: Options,
        mesh: Mesh,
        targets: load.Targets,
        *,
        token: Callable[[], str],
        reporter: load.Reporter,
        stop: asyncio.Event,
    ) -> None:
        self.options, self.mesh, self.targets = options, mesh, targets
        self.reporter = reporter
        self.stop = stop
        self._get_token = token
        self._token: str | None = None
        self.run_id = uuid.uuid4().hex[:8]

    def token(self) -> str:
        """The access token, got once: the first load asks for it once orders and inventory
        answer (minting one is pointless when the mesh is down)."""
        if self._token is None:
            self._token = self._get_token()
        return self._token

    @property
    def metadata(self) -> load.Metadata:
        """Call metadata with the token (got by the time anything but the load calls)."""
        return load.bearer(self.token())

    def say(self, text: str) -> None:
        """A notice on stderr."""
        self.reporter(text, True)

    def plan(self, phase: str, duration: float) -> load.Plan:
        """The load of ``phase``: the run's rate, a SKU of its own, client retries of PlaceOrder."""
        return load.Plan(
            rate=self.options.rate,
            duration=duration,
            concurrency=self.options.concurrency,
            sku=f"chaos-{self.run_id}-{phase}",
            drain_timeout=self.options.drain,
            place_retry_s=PLACE_RETRY_S,
        )

    async def run(self) -> dict[str, Any]:
        """Baseline, then the scenario; the report (see ``report``)."""
        options = self.options
        fault = make_fault(options, self.mesh, self.say)
        faulted_s = load_duration(options.scenario, options.duration, options.outage_s)
        baseline_s = options.baseline if options.baseline is not None else faulted_s
        preset = fault_files.all_faults(self.mesh.root)
        if preset:
            self.say(f"faults are set already and stay on in both phases: {sorted(preset)}")
        self.say(f"baseline: {options.rate:g} orders/s for {baseline_s:g}s, no faults")
        baseline = await self.phase(self.plan("baseline", baseline_s), None)
        if self.stop.is_set():
            return self.report(baseline, None, preset, interrupted=True)
        self.say(
            f"{options.scenario}: {options.describe()};"
            f" {options.rate:g} orders/s for {faulted_s:g}s"
        )
        faulted = await self.phase(self.plan(options.scenario, faulted_s), fault)
        return self.report(baseline, faulted, preset, interrupted=self.stop.is_set())

    async def phase(self, plan: load.Plan, fault: Fault | None) -> Phase:
        """One load with ``fault`` on from its first order to its last, then its account."""
        phase = Phase(plan)
        async with load.channel(self.targets.inventory) as inventory:

            async def on_start(_: load.Tally) -> None:
                phase.stock_start = await get_stock(inventory, plan.sku, self.metadata)
                if fault is not None:
                    await fault.start()

            async def on_send_end(tally: load.Tally) -> None:
                if fault is not None:
                    if isinstance(fault, Outage) and self.stop.is_set():
                        fault.interrupt()
                    await fault.stop()
                phase.in_flight_at_recovery = tally.in_flight

            try:
                phase.result = await load.drive_run(
                    plan,
                    self.targets,
                    report=self.reporter,
                    stop=self.stop,
                    token=self.token,
                    hooks=load.Hooks(on_start, on_send_end),
                )
            finally:
                if fault is not None:
                    if isinstance(fault, Outage):
                        fault.interrupt()
                    await fault.stop()
                    phase.events = list(fault.events)
            self.reporter.end_line()
            phase.evidence = await self.gather(phase, inventory)
        return phase

    async def gather(self, phase: Phase, inventory: aio.Channel) -> Evidence:
        """Read what the phase left: every accepted order's status (GetOrder, looking again
        until terminal or the drain's deadline), their payments, shipments and reservations."""
        assert phase.result is not None and phase.stock_start is not None
        result, mesh = phase.result, self.mesh
        tally = result.tally
        accepted = await asyncio.to_thread(read_accepted, database_of(mesh, ORDERS), result.run_id)
        statuses = dict(tally.outcomes)
        late = {o for o in accepted.values() if o not in statuses}
        statuses.update(dict.fromkeys(late, ""))
        loop = asyncio.get_running_loop()
        deadline = result.drain_end if result.drain_end is not None else loop.time()
        unknown: set[str] = set()
        async with load.channel(self.targets.orders) as orders:
            looker = _Looker(orders, self.metadata)
            while True:
                pending = [o for o, s in statuses.items() if not s and o not in unknown]
                if not pending:
                    break
                found = await looker.look(pending)
                for order, status in found.items():
                    if status == "NOT_FOUND":
                        unknown.add(order)
                    elif status in ("CONFIRMED", "CANCELLED"):
                        statuses[order] = status
                if loop.time() >= deadline or self.stop.is_set():
                    break
                await asyncio.sleep(LOOK_INTERVAL_S)  # poll interval until the drain's deadline
        # Effects are looked up for every accepted order, the lost ones included: an effect
        # of an order orders forgot is exactly what must not exist.
        order_ids = list(statuses)
        payments, shipments, reservations = await asyncio.gather(
            asyncio.to_thread(
                read_statuses_by_order, database_of(mesh, PAYMENTS), "payments", order_ids
            ),
            asyncio.to_thread(
                read_statuses_by_order, database_of(mesh, SHIPPING), "shipments", order_ids
            ),
            asyncio.to_thread(read_reservations, database_of(mesh, INVENTORY), phase.plan.sku),
        )
        stock_end = await get_stock(inventory, phase.plan.sku, self.metadata)
        return Evidence(
            statuses=statuses,
            unknown=unknown,
            late=late,
            payments=payments,
            shipments=shipments,
            reservations=reservations,
            stock_start=phase.stock_start,
            stock_end=stock_end,
        )

    def report(
        self,
        baseline: Phase,
        faulted: Phase | None,
        preset: Mapping[str, Any],
        *,
        interrupted: bool,
    ) -> dict[str, Any]:
        """The run's report (what ``--json`` prints)."""
        phases = {"baseline": phase_report(baseline)}
        if faulted is not None:
            phases["faulted"] = phase_report(faulted)
        held = all(p["held"] for p in phases.values()) and faulted is not None
        return {
            "scenario": self.options.scenario,
            "description": self.options.describe(),
            "params": self.options.params(),
            "rate": self.options.rate,
            "run_id": self.run_id,
            "preset_faults": dict(preset),
            **phases,
            "held": held and not interrupted,
            "interrupted": interrupted,
        }


class _Looker:
    """GetOrder of many orders at once, a few in flight: order id -> status name (without the
    ORDER_STATUS_ prefix), ``NOT_FOUND``, or ``ERROR:<code>``."""

    def __init__(self, channel: aio.Channel, metadata: load.Metadata) -> None:
        from shop.orders.v1 import orders_pb2, orders_pb2_grpc

        self.pb = orders_pb2
        self.stub = orders_pb2_grpc.OrdersServiceStub(channel)
        self.metadata = metadata
        self.gate = asyncio.Semaphore(LOOK_CONCURRENCY)

    async def one(self, order_id: str) -> tuple[str, str]:
        async with self.gate:
            try:
                got = await self.stub.GetOrder(
                    self.pb.GetOrderRequest(order_id=order_id),
                    timeout=LOOK_TIMEOUT_S,
                    metadata=self.metadata,
                )
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.NOT_FOUND:
                    return order_id, "NOT_FOUND"
                return order_id, f"ERROR:{error.code().name}"
        return order_id, self.pb.OrderStatus.Name(got.order.status).removeprefix("ORDER_STATUS_")

    async def look(self, order_ids: Sequence[str]) -> dict[str, str]:
        return dict(await asyncio.gather(*(self.one(o) for o in order_ids)))


async def get_stock(channel: aio.Channel, sku: str, metadata: load.Metadata) -> Stock:
    """``sku``'s stock from inventory's GetStock (NotUp when inventory does not answer)."""
    from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc

    stub = inventory_pb2_grpc.InventoryServiceStub(channel)
    deadline = time.monotonic() + 30
    while True:
        try:
            got = await stub.GetStock(
                inventory_pb2.GetStockRequest(sku=sku), timeout=LOOK_TIMEOUT_S, metadata=metadata
            )
        except grpc.aio.AioRpcError as error:
            # Inventory may be restarting (kill): look again until the deadline.
            if error.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise NotUp(
                    f"inventory's GetStock({sku}): {error.code().name}: {error.details()}"
                ) from None
            await asyncio.sleep(LOOK_INTERVAL_S)  # poll interval within the deadline loop
            continue
        return Stock(on_hand=got.available + got.reserved, reserved=got.reserved)


def phase_report(phase: Phase) -> dict[str, Any]:
    """One phase's figures: the load's own (rate, latency, place failures) and ``assess``'s."""
    assert phase.result is not None and phase.evidence is not None
    summary = phase.result.summary
    account = assess(phase.evidence)
    return {
        "sku": phase.plan.sku,
        "duration_s": phase.plan.duration,
        "scheduled": summary["scheduled"],
        "acknowledged": summary["placed"],
        "place_failed": summary["place_failed"] - account["accepted_unacknowledged"],
        "place_retries": phase.result.tally.place_retries,
        "place_errors": summary["place_errors"],
        **account,
        "in_flight_at_recovery": phase.in_flight_at_recovery,
        "latency_ms": summary["latency_ms"],
        "cancel_reasons": summary["cancel_reasons"],
        "drain_s": summary["drain_s"],
        "events": phase.events,
    }


# -- the report for people -------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "held" if value else "BROKEN"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:g} ms"


def render(report: Mapping[str, Any]) -> str:
    """The report as a table, baseline beside the faulted load, then what the fault did and the
    verdict (what ``mesh chaos`` prints without ``--json``)."""
    base = report["baseline"]
    hit = report.get("faulted")
    phases = [base, *([hit] if hit else [])]
    name = report["scenario"]
    rows: list[tuple[str, list[str], str]] = [
        ("orders placed", [_cell(p["placed"]) for p in phases], ""),
        ("  confirmed", [_cell(p["confirmed"]) for p in phases], ""),
        ("  cancelled", [_cell(p["cancelled"]) for p in phases], ""),
        ("  still running", [_cell(p["still_running"]) for p in phases], "after the drain"),
        ("  lost", [_cell(p["lost"]) for p in phases], "must be 0"),
        ("effects doubled", [_cell(p["doubled"]["total"]) for p in phases], "must be 0"),
        ("effects left wrong", [_cell(p["mismatched"]["count"]) for p in phases], "must be 0"),
        ("stock invariant", [_cell(p["stock"]["held"]) for p in phases], ""),
        ("latency p50", [_ms(p["latency_ms"]["p50"]) for p in phases], "placed -> terminal"),
        ("latency p99", [_ms(p["latency_ms"]["p99"]) for p in phases], ""),
        ("PlaceOrder failed", [_cell(p["place_failed"]) for p in phases], "never accepted"),
        ("  sent again", [_cell(p["place_retries"]) for p in phases], "same request id"),
        ("in flight at recovery", [_cell(p["in_flight_at_recovery"]) for p in phases], ""),
        (
            "accepted, call failed",
            [_cell(p["accepted_unacknowledged"]) for p in phases],
            "in orders' database; counted as placed",
        ),
        ("drain", [f"{p['drain_s']:g}s" for p in phases], ""),
    ]
    width = max(10, len(name), *(len(v) for _, values, _ in rows for v in values))
    lines = [
        f"mesh chaos {name}: {report['description']}",
        f"  {report['rate']:g} orders/s; baseline {base['duration_s']:g}s"
        + (f", {name} {hit['duration_s']:g}s" if hit else ""),
        "",
        f"  {'':<24}{'baseline':>{width}}" + (f"{name:>{width + 2}}" if hit else ""),
    ]
    for label, values, note in rows:
        cells = "".join(f"{v:>{width}}" if i == 0 else f"{v:>{width + 2}}" for i, v in
                        enumerate(values))  # fmt: skip
        lines.append(f"  {label:<24}{cells}" + (f"   ({note})" if note else ""))
    for phase_name, phase in (("baseline", base), (name, hit)):
        if phase and phase["cancel_reasons"]:
            reasons = ", ".join(f"{k}: {v}" for k, v in phase["cancel_reasons"].items())
            lines.append(f"  cancel reasons ({phase_name}): {reasons}")
        if phase and phase["place_errors"]:
            errors = ", ".join(f"{k}: {v}" for k, v in phase["place_errors"].items())
            lines.append(f"  PlaceOrder errors ({phase_name}): {errors}")
    if hit and hit["events"]:
        lines += ["", f"  what {name} did (seconds into its load):"]
        lines += [f"    {event}" for event in hit["events"]]
    problems = [f"{phase_name}: {v}" for phase_name, phase in (("baseline", base), (name, hit))
                if phase for v in phase["violations"]]  # fmt: skip
    for phase_name, phase in (("baseline", base), (name, hit)):
        if phase:
            problems += [f"{phase_name}: {ex}" for ex in phase["mismatched"]["examples"]]
            problems += [f"{phase_name}: lost order {o}" for o in phase["lost_orders"]]
    lines.append("")
    if report["interrupted"]:
        lines.append("verdict: INTERRUPTED (the figures cover what ran)")
    elif report["held"]:
        lines.append("verdict: HELD: 0 lost, 0 doubled, effects match, stock invariant held")
    else:
        lines.append("verdict: BROKEN")
    lines += [f"  {problem}" for problem in problems]
    return "\n".join(lines)


# -- the command -----------------------------------------------------------------------------------

DESCRIPTION = (
    """\
Runs a fault scenario under load and accounts for every order. The same open-loop load as
`mesh load` (PlaceOrder at --rate, each order's fate from GetOrder) runs twice: first without
faults (the baseline), then with the scenario's fault, which is removed when the last order is
due; then it waits (at most --drain s) for every order to end. The report, baseline beside the
fault: orders placed, confirmed, cancelled, still running and lost (must be 0), effects doubled
(two payments or shipments for one order, stock reserved twice: must be 0), effects that do not
match the outcome, the stock invariant (stock at the start == stock now + units of confirmed
orders, nothing left reserved), and p50/p99 of order latency.

scenarios:
"""
    + "\n".join(f"  {name:<22}{text}" for name, text in SCENARIOS.items())
    + """

Exit 0 when the invariants held, 1 when not, 2 usage error or a scenario this mesh cannot run,
3 the mesh is not up (or could not be brought back), 130 interrupted. It reads payments',
shipping's, inventory's and orders' SQLite files read-only, so it runs where the mesh runs.
Every call carries --token, else $MESH_TOKEN, else an admin token it mints (as mesh load)."""
)

EXAMPLES = """\
examples:
  mesh up -d && mesh chaos kill
      kill -9 orders, inventory, payments, shipping or order_views every 5 s for 30 s
  mesh chaos payments-unavailable --rate 20 --duration 60 --json > run.json
  mesh chaos registry-outage --outage 10
  mesh down && mesh up -d --kafka local && mesh chaos broker-restart
      a broker the runner controls (or scripts/kafka's); the embedded mock cluster is refused
"""


def _targets(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError("give component names, comma-separated")
    return names


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``chaos`` to the ``mesh`` parser."""
    chaos = sub.add_parser(
        "chaos",
        help="run a fault scenario under load; report lost/doubled orders and the stock",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    chaos.add_argument("scenario", choices=list(SCENARIOS), metavar="SCENARIO",
                       help=", ".join(SCENARIOS))  # fmt: skip
    chaos.add_argument(
        "--rate",
        type=load.positive_number(float),
        default=DEFAULT_RATE,
        help=f"orders per second (default {DEFAULT_RATE:g})",
    )
    chaos.add_argument(
        "--duration",
        type=load.positive_number(float),
        default=DEFAULT_DURATION_S,
        metavar="SECONDS",
        help=f"how long the faulted load runs (default {DEFAULT_DURATION_S:g}; an outage"
        " stretches it to cover the outage with a few seconds either side)",
    )
    chaos.add_argument(
        "--baseline",
        type=load.positive_number(float),
        metavar="SECONDS",
        help="how long the baseline load runs (default: as long as the faulted one)",
    )
    chaos.add_argument(
        "--drain",
        type=load.non_negative_number,
        default=DEFAULT_DRAIN_S,
        metavar="SECONDS",
        help="after the fault is removed, wait at most this long for every order to end"
        f" (default {DEFAULT_DRAIN_S:g})",
    )
    chaos.add_argument(
        "--every",
        type=load.positive_number(float),
        default=DEFAULT_EVERY_S,
        metavar="SECONDS",
        help=f"kill: seconds between kills (default {DEFAULT_EVERY_S:g})",
    )
    chaos.add_argument(
        "--targets",
        type=_targets,
        default=DEFAULT_KILL_TARGETS,
        metavar="A,B",
        help=f"kill: the components it picks from (default {','.join(DEFAULT_KILL_TARGETS)})",
    )
    chaos.add_argument("--seed", type=int, help="kill: the random choice's seed (repeatable runs)")
    chaos.add_argument(
        "--outage",
        type=load.positive_number(float),
        metavar="SECONDS",
        help="broker-restart / registry-outage: how long the part stays down (defaults"
        f" {DEFAULT_BROKER_OUTAGE_S:g} / {DEFAULT_REGISTRY_OUTAGE_S:g})",
    )
    chaos.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    from mesh_runner.cli import token_help

    chaos.add_argument("--token", help=token_help(ROLE))


def run(args: argparse.Namespace, root: Path | None = None) -> int:
    """Run ``mesh chaos SCENARIO`` on the mesh of ``root`` (else the one found from the cwd)."""
    try:
        mesh = load_mesh(root)
        targets = load.resolve_targets(load.command_env(root))
    except (ConfigError, AddressError) as exc:
        print(f"mesh chaos: {exc}", file=sys.stderr)
        return EXIT_USAGE
    options = Options(
        scenario=args.scenario,
        rate=args.rate,
        duration=args.duration,
        baseline=args.baseline,
        drain=args.drain,
        every=args.every,
        outage=args.outage,
        targets=args.targets,
        seed=args.seed,
    )
    reporter = load.Reporter(sys.stderr, prefix="mesh chaos: ")
    token = load.admin_token(args.token, root)

    async def work(stop: asyncio.Event) -> dict[str, Any]:
        chaos = Chaos(options, mesh, targets, token=token, reporter=reporter, stop=stop)
        return await chaos.run()

    try:
        make_fault(options, mesh, lambda _: None)  # refuse before any load
        report = asyncio.run(load.until_interrupted(work))
    except (Refused, ConfigError) as exc:
        reporter.end_line()
        print(f"mesh chaos: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (NotUp, load.MeshNotUp, load.NoToken) as exc:
        reporter.end_line()
        print(f"mesh chaos: {exc}", file=sys.stderr)
        return EXIT_NOT_UP
    reporter.end_line()
    sys.stderr.flush()
    print(json.dumps(report, indent=2) if args.json else render(report), flush=True)
    if report["interrupted"]:
        return EXIT_INTERRUPTED
    return EXIT_HELD if report["held"] else EXIT_BROKEN
