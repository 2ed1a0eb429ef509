"""``mesh load``: drive PlaceOrder at a steady rate against a running mesh, and say what became of
every order.

    mesh load --rate 50 --duration 30 [--concurrency 1000] [--sku mesh-load] [--json] [--token T]

The schedule is open loop: order *i* starts at ``i / rate`` seconds after the first, whether or
not the earlier ones have answered, so a slow mesh shows up as latency and orders in flight, not
as a quietly lower rate (the "coordinated omission" of closed-loop tools). In flight means placed
and not yet seen CONFIRMED or CANCELLED; at ``--concurrency`` of them a due start is skipped, said
at once and counted in the summary, so a stalled mesh cannot make the tool grow without bound.

Each order's outcome comes from GetOrder on the orders service. Latency is the service's own
stamps, ``created_at`` (accepted) to ``updated_at`` of the terminal state: one clock (no skew
between this machine and the mesh), and independent of when this tool happens to look. That is
what lets the polling be sparse: the first GetOrder of an order waits about the typical latency
seen so far, later ones back off, so the mesh serves a couple of reads per order, not dozens (the
summary reports how many).

Every call carries an access token: ``--token``, else ``$MESH_TOKEN``, else an admin token minted
by the mesh's identity (``mesh token --role admin``), asked for once the mesh answers. Admin is the
least role that does the whole run: the stock top-up is SetStock (admins only), and the orders are
placed for the tool's own test customers (``load-0`` .. ``load-99``), which orders' policy lets an
admin do (a customer's token may place and read its own orders only).

One asyncio loop over grpc.aio does all of it: a start is a coroutine, not a thread, and a rate
of hundreds per second costs a few percent of one core (the summary reports the tool's own CPU).

Exit codes: 0 the run happened (whatever the orders' fate: see the summary), 1 the mesh is not
up (the message names the address tried), 2 usage error, 130 interrupted (summary still printed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, TypeVar

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from meshkit import tls
from meshkit.addresses import AddressError, address_of, env_key, find_config
from meshkit.client import RETRY_SERVICE_CONFIG

T = TypeVar("T")

EXIT_NOT_UP = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

ORDERS = "orders"  # by name in mesh.toml, as every mesh command finds them
ROLE = "admin"  # sets stock and places orders for the test customers (orders' policy)
INVENTORY = "inventory"
DEFAULT_SKU = "mesh-load"  # its own SKU, so a run neither drains nor is drained by real stock
DEFAULT_CONCURRENCY = 1000
DEFAULT_DRAIN_TIMEOUT_S = 30.0
DEFAULT_PAYMENT_TOKEN = "tok_visa"  # noqa: S105 (a public test token: payments approves it)
STOCK_MARGIN = 1.1  # top up 10 % (and at least 10 units) above what the schedule can order
INT32_MAX = 2**31 - 1

PLACE_TIMEOUT_S = 10.0
# With Plan.place_retry_s, a PlaceOrder that failed with one of these codes is sent again (same
# request_id: orders answers a repeat with the order the first one made), backing off from the
# first to the most, as a client that wants its order in would. gRPC's own retry (the channel's
# service config) has already spent its few attempts within a second when these surface.
PLACE_RETRY_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.UNKNOWN,
    }
)
PLACE_RETRY_FIRST_S = 0.2
PLACE_RETRY_MAX_S = 2.0
POLL_TIMEOUT_S = 5.0
CHECK_TIMEOUT_S = 3.0
# GetOrder pacing. The figures come from the service's stamps, so a later look only delays
# *seeing* an outcome (in flight, the drain), never changes the measured latency; looking less
# keeps this tool from loading the very service it measures. An order's first look waits about
# the typical latency so far (an EWMA of what was measured); after that the gap is half the
# order's age, between MIN_POLL_S and the larger of MAX_POLL_S and half the typical latency.
# Over all orders, GetOrder calls are paced to POLLS_PER_ORDER x the rate (at least
# MIN_POLLS_PER_S): when the mesh falls behind, hundreds of orders in flight would otherwise ask
# every second, on the service that is already the bottleneck.
FIRST_POLL_GUESS_S = 0.1
MIN_POLL_S = 0.02
MAX_POLL_S = 1.0
EWMA_WEIGHT = 0.1
POLLS_PER_ORDER = 2.0
MIN_POLLS_PER_S = 20.0
POLL_BURST_S = 0.5
TTY_PROGRESS_S = 1.0
LOG_PROGRESS_S = 5.0
PERCENTILES = (50, 95, 99)


class MeshNotUp(RuntimeError):
    """A component the run needs does not answer; the message names it and the address tried."""


class NoToken(RuntimeError):
    """No access token was given and none could be minted; the message says what to pass."""


# -- the pure parts: schedule, percentiles, summary, progress line ---------------------------------


def planned_count(rate: float, duration: float) -> int:
    """How many orders an open-loop schedule of ``rate``/s starts within ``duration`` seconds:
    those due at ``i / rate < duration`` (floats rounded, so 0.1/s for 30 s is 3, not 4)."""
    return max(0, math.ceil(rate * duration - 1e-9))


def start_offsets(rate: float, duration: float) -> list[float]:
    """When each order is due, in seconds after the first: ``i / rate``, all before ``duration``.

    Absolute offsets from one start (not a sleep after each send), so lateness never accumulates:
    a start that was late is followed by one on time.
    """
    return [i / rate for i in range(planned_count(rate, duration))]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0 < q <= 100) of ``values`` by nearest rank (a value that was
    measured, never an interpolation); None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def latency_stats(values: Sequence[float]) -> dict[str, float | int | None]:
    """``{"count", "p50", "p95", "p99", "max"}`` of ``values`` (ms, rounded to 0.1 ms)."""
    stats: dict[str, float | int | None] = {"count": len(values)}
    for q in PERCENTILES:
        value = percentile(values, q)
        stats[f"p{q}"] = None if value is None else round(value, 1)
    stats["max"] = round(max(values), 1) if values else None
    return stats


@dataclass
class Tally:
    """What happened so far. Mutated only on the run's event loop (no locks needed)."""

    scheduled: int = 0
    sent: int = 0  # PlaceOrder started
    placed: int = 0  # PlaceOrder answered with an order id
    confirmed: int = 0
    cancelled: int = 0
    place_failed: int = 0
    place_retries: int = 0  # PlaceOrder calls sent again (Plan.place_retry_s)
    skipped: int = 0  # due while --concurrency orders were in flight
    polls: int = 0
    poll_errors: int = 0
    max_in_flight: int = 0
    latencies_ms: list[float] = field(default_factory=list)  # service created_at -> updated_at
    place_rpc_ms: list[float] = field(default_factory=list)  # PlaceOrder round trip, here
    start_lag_ms: list[float] = field(default_factory=list)  # start time minus due time
    place_errors: Counter[str] = field(default_factory=Counter)
    cancel_reasons: Counter[str] = field(default_factory=Counter)
    first_created: float | None = None  # service stamps (epoch s), for the confirmed rate
    last_terminal: float | None = None
    # Every placed order by id: "" until seen terminal, then its status ("CONFIRMED" or
    # "CANCELLED"); and the request ids whose PlaceOrder never got an answer with an order id.
    outcomes: dict[str, str] = field(default_factory=dict)
    failed_requests: list[str] = field(default_factory=list)

    @property
    def in_flight(self) -> int:
        """Started and not yet seen finished (nor failed to place)."""
        return self.sent - self.place_failed - self.confirmed - self.cancelled

    @property
    def not_finished(self) -> int:
        """Placed and not seen CONFIRMED or CANCELLED."""
        return self.placed - self.confirmed - self.cancelled

    def finished(self, confirmed: bool, created: float, updated: float, reason: str) -> None:
        """Count one order that reached a terminal state at ``updated`` (placed at ``created``)."""
        if confirmed:
            self.confirmed += 1
        else:
            self.cancelled += 1
            self.cancel_reasons[reason or "(no reason given)"] += 1
        self.latencies_ms.append(max(0.0, (updated - created) * 1000))
        if self.first_created is None or created < self.first_created:
            self.first_created = created
        if self.last_terminal is None or updated > self.last_terminal:
            self.last_terminal = updated


@dataclass(frozen=True)
class Plan:
    """What a run is asked to do."""

    rate: float
    duration: float
    concurrency: int = DEFAULT_CONCURRENCY
    sku: str = DEFAULT_SKU
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT_S
    payment_token: str = DEFAULT_PAYMENT_TOKEN
    place_retry_s: float = 0.0  # send a failed PlaceOrder again for this long (0: never)


def summarize(
    plan: Plan,
    tally: Tally,
    *,
    send_s: float,
    drain_s: float,
    client_cpu_s: float,
    orders: str = "",
    stock: Mapping[str, Any] | None = None,
    interrupted: bool = False,
) -> dict[str, Any]:
    """The summary of a run as JSON-ready data (what ``--json`` prints).

    ``placed == confirmed + cancelled + not_finished`` always holds; orders that were due but
    never placed are ``skipped`` (the concurrency cap) or ``place_failed`` (by gRPC code in
    ``place_errors``). ``latency_ms`` is place -> terminal state by the service's own stamps.
    """
    confirmed_per_s = None
    if tally.confirmed and tally.first_created is not None and tally.last_terminal is not None:
        span = tally.last_terminal - tally.first_created
        confirmed_per_s = round(tally.confirmed / span, 1) if span > 0 else None
    finished = tally.confirmed + tally.cancelled
    # Over the schedule's window; an interrupted run's only lasted until the interruption.
    window = send_s if interrupted else plan.duration
    return {
        "orders_address": orders,
        "rate": plan.rate,
        "duration_s": plan.duration,
        "achieved_rate": round(tally.sent / window, 1) if window > 0 else 0.0,
        "scheduled": tally.scheduled,
        "placed": tally.placed,
        "confirmed": tally.confirmed,
        "cancelled": tally.cancelled,
        "not_finished": tally.not_finished,
        "place_failed": tally.place_failed,
        "skipped": tally.skipped,
        "latency_ms": latency_stats(tally.latencies_ms),
        "latency_source": "orders service: created_at -> updated_at of CONFIRMED/CANCELLED",
        "confirmed_per_s": confirmed_per_s,
        "place_rpc_ms": latency_stats(tally.place_rpc_ms),
        "start_lag_ms": latency_stats(tally.start_lag_ms),
        "concurrency": plan.concurrency,
        "max_in_flight": tally.max_in_flight,
        "drain_timeout_s": plan.drain_timeout,
        "drain_s": round(drain_s, 2),
        "send_s": round(send_s, 2),
        "place_errors": dict(tally.place_errors),
        "cancel_reasons": dict(tally.cancel_reasons),
        "get_order_calls": tally.polls + tally.poll_errors,
        "get_order_calls_per_order": round((tally.polls + tally.poll_errors) / finished, 2)
        if finished
        else None,
        "client_cpu_s": round(client_cpu_s, 2),
        "client_cpu_ms_per_order": round(client_cpu_s * 1000 / tally.sent, 3)
        if tally.sent
        else None,
        "sku": plan.sku,
        "stock": dict(stock or {}),
        "interrupted": interrupted,
    }


def render_summary(summary: Mapping[str, Any]) -> str:
    """The summary for people (what ``mesh load`` prints without ``--json``)."""
    lat = summary["latency_ms"]
    lines = [
        f"mesh load: {summary['rate']:g} orders/s for {summary['duration_s']:g}s against"
        f" {summary['orders_address']}" + (" (interrupted)" if summary["interrupted"] else ""),
        f"  started      {summary['scheduled'] - summary['skipped']} of {summary['scheduled']}"
        f" due, {summary['achieved_rate']:g}/s achieved (start lag p99"
        f" {_ms(summary['start_lag_ms']['p99'])})",
        f"  placed       {summary['placed']}",
        f"  confirmed    {summary['confirmed']}",
        f"  cancelled    {summary['cancelled']}" + _reasons(summary["cancel_reasons"]),
        f"  not finished {summary['not_finished']} (waited {summary['drain_s']:g}s for"
        f" stragglers, at most {summary['drain_timeout_s']:g}s: --drain-timeout)",
    ]
    if summary["skipped"]:
        lines.append(
            f"  SKIPPED      {summary['skipped']}: due while {summary['concurrency']} orders were"
            " in flight (--concurrency); the mesh did not keep up"
        )
    if summary["place_failed"]:
        lines.append(
            f"  FAILED       {summary['place_failed']} PlaceOrder calls"
            + _reasons(summary["place_errors"])
        )
    lines += [
        f"  latency      p50 {_ms(lat['p50'])}  p95 {_ms(lat['p95'])}  p99 {_ms(lat['p99'])}"
        f"  max {_ms(lat['max'])}  (place -> CONFIRMED/CANCELLED, the service's stamps)",
        f"  PlaceOrder   p50 {_ms(summary['place_rpc_ms']['p50'])}"
        f"  p99 {_ms(summary['place_rpc_ms']['p99'])}  (round trip from here)",
    ]
    if summary["confirmed_per_s"] is not None:
        lines.append(f"  confirmed/s  {summary['confirmed_per_s']:g} (first placed -> last done)")
    lines.append(
        f"  this tool    {summary['client_cpu_s']:g}s CPU"
        f" ({_num(summary['client_cpu_ms_per_order'])} ms per order),"
        f" {_num(summary['get_order_calls_per_order'])} GetOrder calls per finished order,"
        f" at most {summary['max_in_flight']} in flight"
    )
    return "\n".join(lines)


def progress_line(
    tally: Tally, *, elapsed: float, duration: float, rate_now: float, draining: bool = False
) -> str:
    """One line of live progress: the rate achieved over the last interval and the counts."""
    head = (
        f"draining {elapsed - duration:4.1f}s"
        if draining
        else f"{min(elapsed, duration):5.1f}/{duration:g}s  rate {rate_now:6.1f}/s"
    )
    line = (
        f"{head}  placed {tally.placed}  confirmed {tally.confirmed}"
        f"  cancelled {tally.cancelled}  in flight {tally.in_flight}"
    )
    if tally.skipped:
        line += f"  SKIPPED {tally.skipped}"
    if tally.place_failed:
        line += f"  failed {tally.place_failed}"
    return line


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:g} ms"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _reasons(counts: Mapping[str, int]) -> str:
    if not counts:
        return ""
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:4]
    return " (" + ", ".join(f"{name}: {n}" for name, n in top) + ")"


# -- the run -------------------------------------------------------------------------------------


def channel(target: str) -> aio.Channel:
    """An aio channel with the mesh's client options: PlaceOrder is idempotent by request_id, so
    gRPC may retry an UNAVAILABLE attempt. mTLS as the CLI's ``client`` certificate while the
    mesh runs with TLS (``MESH_TLS_DIR``, set by `mesh up --tls` for later commands): its
    servers then refuse plaintext."""
    options = [
        ("grpc.enable_retries", 1),
        ("grpc.service_config", json.dumps(RETRY_SERVICE_CONFIG)),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 2000),
    ]
    directory = tls.tls_dir()
    if directory is None:
        return aio.insecure_channel(target, options=options)
    credentials = tls.channel_credentials(tls.tls_name(tls.CLIENT), directory)
    return aio.secure_channel(target, credentials, options=options)


async def _check_up(channel: aio.Channel, name: str, target: str, source: str) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=CHECK_TIMEOUT_S)
    except grpc.aio.AioRpcError as error:
        raise MeshNotUp(
            f"{name} does not answer at {target} ({source}): {error.code().name}:"
            f" {error.details()}. Is the mesh up? `mesh up -d` starts it, `mesh ps` shows it."
        ) from None
    if response.status != health_pb2.HealthCheckResponse.SERVING:
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
        raise MeshNotUp(f"{name} at {target} ({source}) answers {status}, not SERVING")


Metadata = tuple[tuple[str, str], ...]


def bearer(token: str) -> Metadata:
    """The call metadata carrying ``token`` (none when it is empty)."""
    return (("authorization", f"Bearer {token}"),) if token else ()


async def _top_up(
    channel: aio.Channel, sku: str, needed: int, metadata: Metadata = ()
) -> dict[str, Any]:
    """Make sure ``sku`` has ``needed`` units available (SetStock counts reserved units in)."""
    from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc

    stub = inventory_pb2_grpc.InventoryServiceStub(channel)
    available = reserved = 0
    try:
        got = await stub.GetStock(
            inventory_pb2.GetStockRequest(sku=sku), timeout=POLL_TIMEOUT_S, metadata=metadata
        )
        available, reserved = got.available, got.reserved
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.NOT_FOUND:
            raise
    if available >= needed:
        return {"available_before": available, "set_to": None, "needed": needed}
    quantity = min(INT32_MAX, reserved + needed)
    await stub.SetStock(
        inventory_pb2.SetStockRequest(sku=sku, quantity=quantity),
        timeout=POLL_TIMEOUT_S,
        metadata=metadata,
    )
    return {"available_before": available, "set_to": quantity, "needed": needed}


class Pacer:
    """Spaces events to ``per_s`` a second, FIFO, letting up to ``burst_s`` worth through at once
    after a quiet spell. For one event loop (not thread safe)."""

    def __init__(self, per_s: float, burst_s: float = 0.0) -> None:
        self.interval = 1 / per_s
        self.burst_s = burst_s
        self.next = -math.inf

    def delay(self, now: float) -> float:
        """Reserve the next slot at or after ``now``; how long to wait for it."""
        slot = max(self.next, now - self.burst_s)
        self.next = slot + self.interval
        return max(0.0, slot - now)

    async def wait(self) -> None:
        """Wait for the next slot."""
        if (delay := self.delay(asyncio.get_running_loop().time())) > 0:
            await asyncio.sleep(delay)


@dataclass(frozen=True)
class Hooks:
    """What a caller runs at a run's turning points (``mesh chaos`` starts and removes its fault
    here). ``on_start``: after the stock top-up, before the first order is due (the schedule
    starts when it returns). ``on_send_end``: when the last order was due, before the wait for
    stragglers, whose clock (``Plan.drain_timeout``) starts when it returns. Both get the run's
    tally as it is then (read it, do not change it). What they raise ends the run."""

    on_start: Callable[[Tally], Awaitable[None]] | None = None
    on_send_end: Callable[[Tally], Awaitable[None]] | None = None


class _Run:
    """One run: the schedule, every order's coroutine, the progress ticker."""

    def __init__(
        self,
        plan: Plan,
        orders: aio.Channel,
        report: Callable[[str, bool], None],
        stop: asyncio.Event,
        metadata: Metadata = (),
        *,
        hooks: Hooks | None = None,
    ) -> None:
        from shop.common.v1 import common_pb2
        from shop.orders.v1 import orders_pb2, orders_pb2_grpc

        self.plan = plan
        self.pb = orders_pb2
        self.stub = orders_pb2_grpc.OrdersServiceStub(orders)
        self.report = report
        self.stop = stop
        self.metadata = metadata
        self.tally = Tally()
        self.hooks = hooks or Hooks()
        self.run_id = uuid.uuid4().hex[:10]
        self.ewma_s = FIRST_POLL_GUESS_S
        self.pacer = Pacer(max(MIN_POLLS_PER_S, POLLS_PER_ORDER * plan.rate), POLL_BURST_S)
        self.warned_cap = False
        self.drain_end: float | None = None  # loop time the wait for stragglers ends
        self.price = common_pb2.Money(currency_code="EUR", units=1)
        self.address = common_pb2.Address(
            name="Load Test", line1="Unter den Linden 1", city="Berlin", postal_code="10117",
            country_code="DE",
        )  # fmt: skip

    def request(self, index: int) -> Any:
        """The ``index``-th order of this run: one unit of the load SKU, valid everywhere."""
        return self.pb.PlaceOrderRequest(
            request_id=f"load-{self.run_id}-{index}",
            customer_id=f"load-{index % 100}",
            lines=[self.pb.OrderLine(sku=self.plan.sku, quantity=1, unit_price=self.price)],
            payment_token=self.plan.payment_token,
            shipping_address=self.address,
        )

    async def one(self, index: int) -> None:
        """Place one order, then look at it until it is CONFIRMED or CANCELLED."""
        tally, loop = self.tally, asyncio.get_running_loop()
        sent = loop.time()
        request = self.request(index)
        give_up = sent + self.plan.place_retry_s
        backoff = PLACE_RETRY_FIRST_S
        while True:
            try:
                placed = await self.stub.PlaceOrder(
                    request, timeout=PLACE_TIMEOUT_S, metadata=self.metadata
                )
                break
            except asyncio.CancelledError:
                tally.place_failed += 1
                tally.place_errors["NO_ANSWER_BY_DRAIN_TIMEOUT"] += 1
                tally.failed_requests.append(request.request_id)
                raise
            except grpc.aio.AioRpcError as error:
                if error.code() in PLACE_RETRY_CODES and loop.time() + backoff < give_up:
                    tally.place_retries += 1
                    await asyncio.sleep(backoff)
                    backoff = min(2 * backoff, PLACE_RETRY_MAX_S)
                    continue
                tally.place_failed += 1
                tally.place_errors[error.code().name] += 1
                tally.failed_requests.append(request.request_id)
                return
        tally.placed += 1
        tally.outcomes[placed.order_id] = ""
        tally.place_rpc_ms.append((loop.time() - sent) * 1000)
        get = self.pb.GetOrderRequest(order_id=placed.order_id)
        await asyncio.sleep(max(MIN_POLL_S, self.ewma_s))
        while True:
            await self.pacer.wait()
            try:
                order = (
                    await self.stub.GetOrder(get, timeout=POLL_TIMEOUT_S, metadata=self.metadata)
                ).order
            except grpc.aio.AioRpcError:
                tally.poll_errors += 1
            else:
                tally.polls += 1
                if order.status in (self.pb.ORDER_STATUS_CONFIRMED, self.pb.ORDER_STATUS_CANCELLED):
                    tally.outcomes[placed.order_id] = self.pb.OrderStatus.Name(order.status)[
                        len("ORDER_STATUS_") :
                    ]
                    created = order.created_at.ToNanoseconds() / 1e9
                    updated = order.updated_at.ToNanoseconds() / 1e9
                    tally.finished(
                        order.status == self.pb.ORDER_STATUS_CONFIRMED,
                        created,
                        updated,
                        order.cancellation_reason,
                    )
                    self.ewma_s += EWMA_WEIGHT * ((updated - created) - self.ewma_s)
                    return
            age = loop.time() - sent
            await asyncio.sleep(min(max(MIN_POLL_S, age / 2), max(MAX_POLL_S, self.ewma_s / 2)))

    async def run(self) -> tuple[float, float, bool]:
        """Send on schedule, then wait for stragglers; (send seconds, drain seconds,
        interrupted)."""
        plan, tally, loop = self.plan, self.tally, asyncio.get_running_loop()
        offsets = start_offsets(plan.rate, plan.duration)
        tasks: set[asyncio.Task[None]] = set()
        if self.hooks.on_start is not None:
            await self.hooks.on_start(tally)
        started = loop.time()
        ticker = asyncio.create_task(self.progress(started))
        try:
            for index, offset in enumerate(offsets):
                due = started + offset
                while (wait := due - loop.time()) > 0 and not self.stop.is_set():
                    # In slices, so Ctrl-C is honoured at once even at a rate of 0.1/s.
                    await asyncio.sleep(min(wait, 0.25))
                if self.stop.is_set():
                    break
                tally.scheduled += 1
                if tally.in_flight >= plan.concurrency:
                    tally.skipped += 1
                    if not self.warned_cap:
                        self.warned_cap = True
                        self.report(
                            f"{plan.concurrency} orders in flight (--concurrency): due orders"
                            " are skipped until some finish; the mesh is not keeping up",
                            True,
                        )
                    continue
                tally.start_lag_ms.append(max(0.0, (loop.time() - due) * 1000))
                tally.sent += 1
                tally.max_in_flight = max(tally.max_in_flight, tally.in_flight)
                task = asyncio.create_task(self.one(index))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            interrupted = self.stop.is_set()
            self.stop.clear()  # a second Ctrl-C ends the wait for stragglers
            send_end = loop.time()
            if self.hooks.on_send_end is not None:
                # The drain's clock starts once the hook is done (e.g. a fault removed).
                await self.hooks.on_send_end(tally)
            drain_end = loop.time() + plan.drain_timeout
            self.drain_end = drain_end
            # Where sending ended, also in a log (whose lines come only every few seconds).
            self.report(
                progress_line(
                    tally,
                    elapsed=send_end - started,
                    duration=plan.duration,
                    rate_now=tally.sent / max(send_end - started, 1e-9),
                ),
                False,
            )
            while tasks and not self.stop.is_set() and (left := drain_end - loop.time()) > 0:
                await asyncio.wait(set(tasks), timeout=min(left, 0.25))
            interrupted = interrupted or self.stop.is_set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            return send_end - started, loop.time() - send_end, interrupted
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker

    async def progress(self, started: float) -> None:
        loop = asyncio.get_running_loop()
        every = TTY_PROGRESS_S if sys.stderr.isatty() else LOG_PROGRESS_S
        last_t, last_sent = started, 0
        while True:
            await asyncio.sleep(every)
            now = loop.time()
            elapsed = now - started
            rate_now = (self.tally.sent - last_sent) / (now - last_t)
            last_t, last_sent = now, self.tally.sent
            self.report(
                progress_line(
                    self.tally,
                    elapsed=elapsed,
                    duration=self.plan.duration,
                    rate_now=rate_now,
                    draining=elapsed > self.plan.duration,
                ),
                False,
            )


@dataclass(frozen=True)
class Targets:
    """Where the orders and inventory services are, and where that came from."""

    orders: str
    inventory: str
    orders_source: str
    inventory_source: str


def resolve_targets(env: Mapping[str, str] | None = None) -> Targets:
    """The addresses of orders and inventory as every mesh command finds them
    (``MESH_ADDRESS_<NAME>``, else mesh.toml); AddressError when neither says."""
    env = os.environ if env is None else env

    def source(name: str) -> str:
        if env.get(env_key(name), "").strip():
            return f"from {env_key(name)}"
        return f"from {find_config(env)}"

    return Targets(
        address_of(ORDERS, env), address_of(INVENTORY, env), source(ORDERS), source(INVENTORY)
    )


@dataclass(frozen=True)
class RunResult:
    """A finished run: its summary, the tally behind it (every placed order's fate in
    ``tally.outcomes``), the run's id (its request ids are ``load-<run_id>-<i>``), and the loop
    time the wait for stragglers ended (or would have: None when it never began)."""

    summary: dict[str, Any]
    tally: Tally
    run_id: str
    drain_end: float | None


async def drive(
    plan: Plan,
    targets: Targets,
    *,
    report: Callable[[str, bool], None],
    stop: asyncio.Event | None = None,
    token: str | Callable[[], str] = "",
) -> dict[str, Any]:
    """Run ``plan`` against ``targets``; the summary (see ``summarize``); ``drive_run`` says
    the rest."""
    result = await drive_run(plan, targets, report=report, stop=stop, token=token)
    return result.summary


async def drive_run(
    plan: Plan,
    targets: Targets,
    *,
    report: Callable[[str, bool], None],
    stop: asyncio.Event | None = None,
    token: str | Callable[[], str] = "",
    hooks: Hooks | None = None,
) -> RunResult:
    """Run ``plan`` against ``targets``, calling ``hooks`` at its turning points.

    ``report(text, is_notice)`` gets the progress lines (False) and one-off notices (True).
    Setting ``stop`` ends the sending early; setting it again ends the wait for stragglers.
    Every call carries the access ``token`` (an admin's: see the module doc); given as a
    function, it is called once orders and inventory answer (minting one takes a second, and
    is pointless when the mesh is down), and what it raises is raised.
    Raises MeshNotUp before sending anything when orders or inventory does not answer, or
    refuses the stock top-up.
    """
    stop = stop or asyncio.Event()
    cpu_start = time.process_time()
    async with channel(targets.orders) as orders, channel(targets.inventory) as inventory:
        await _check_up(orders, ORDERS, targets.orders, targets.orders_source)
        await _check_up(inventory, INVENTORY, targets.inventory, targets.inventory_source)
        metadata = bearer(token if isinstance(token, str) else await asyncio.to_thread(token))
        planned = planned_count(plan.rate, plan.duration)
        needed = max(planned + 10, math.ceil(planned * STOCK_MARGIN))
        try:
            stock = await _top_up(inventory, plan.sku, needed, metadata)
        except grpc.aio.AioRpcError as error:
            raise MeshNotUp(
                f"inventory at {targets.inventory} refused the stock top-up of {plan.sku!r}:"
                f" {error.code().name}: {error.details()}"
            ) from None
        if stock["set_to"] is None:
            report(
                f"stock: {plan.sku} has {stock['available_before']} available, enough for"
                f" {planned} orders",
                True,
            )
        else:
            report(
                f"stock: topped up {plan.sku} to {stock['set_to']} (was {stock['available_before']}"
                f" available) through inventory's SetStock, so {planned} orders do not run out",
                True,
            )
        run = _Run(plan, orders, report, stop, metadata, hooks=hooks)
        send_s, drain_s, interrupted = await run.run()
    summary = summarize(
        plan,
        run.tally,
        send_s=send_s,
        drain_s=drain_s,
        client_cpu_s=time.process_time() - cpu_start,
        orders=targets.orders,
        stock=stock,
        interrupted=interrupted,
    )
    return RunResult(summary, run.tally, run.run_id, run.drain_end)


# -- the command ---------------------------------------------------------------------------------


class Reporter:
    """Progress on stderr: one line rewritten in place on a terminal, plain lines otherwise;
    notices prefixed with ``prefix``. Call ``end_line`` before printing anything else."""

    def __init__(self, stream: TextIO, prefix: str = "mesh load: ") -> None:
        self.stream = stream
        self.prefix = prefix
        self.tty = stream.isatty()
        self.open_line = False

    def __call__(self, text: str, notice: bool) -> None:
        if self.tty and not notice:
            self.stream.write(f"\r\033[K{text}")
            self.open_line = True
        else:
            self.end_line()
            self.stream.write(f"{self.prefix if notice else ''}{text}\n")
        self.stream.flush()

    def end_line(self) -> None:
        """Finish the progress line being rewritten, if any."""
        if self.open_line:
            self.stream.write("\n")
            self.open_line = False


def positive_number(kind: type[float] | type[int]) -> Callable[[str], float | int]:
    """An argparse ``type``: a finite number of ``kind`` above 0."""

    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value > 0 or not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be more than 0: {text!r}")
        return value

    return parse


def non_negative_number(text: str) -> float:
    """An argparse ``type``: a finite float of 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be 0 or more: {text!r}")
    return value


DESCRIPTION = """\
Places orders at a steady rate against the running mesh (open loop: each starts on time however
slow the earlier ones are), shows live progress, and ends with placed / confirmed / cancelled /
not finished and the p50/p95/p99 latency from place to CONFIRMED or CANCELLED (the orders
service's own created_at -> updated_at). Exit 0 when it ran, 1 when the mesh is not up (or no
token could be had), 2 on a usage error, 130 when interrupted (the summary is printed all the
same).

It sets stock and places orders for its test customers (load-0 .. load-99), both an admin's to
do: every call carries --token, else $MESH_TOKEN, else an admin token it mints through the
mesh's identity (as `mesh token --role admin` does)."""

EXAMPLES = """\
examples:
  mesh up -d && mesh load --rate 50 --duration 30
      50 orders/s for 30 s; live progress, then the summary
  mesh load --rate 120 --duration 30 --json > run.json
      the summary as JSON, e.g. to check `placed == confirmed` and latency_ms.p99 in a script
  MESH_ADDRESS_ORDERS=10.0.0.5:50051 MESH_ADDRESS_INVENTORY=10.0.0.6:50052 mesh load --rate 10 \\
      --duration 60    a mesh elsewhere (addresses as every mesh command takes them)
  mesh load --rate 20 --duration 10 --payment-token tok_chargeDeclined
      every order declined: the compensation path under load
  MESH_ADDRESS_ORDERS=... MESH_ADDRESS_INVENTORY=... mesh load --rate 10 --duration 60 \
      --token "$ADMIN_TOKEN"    a mesh whose identity is not this checkout's: bring its token

The run tops up the SKU's stock first (inventory SetStock; said in the output). Orders that are
due while --concurrency are in flight are skipped and counted, never sent late in a burst.
Ctrl-C stops sending and waits for the stragglers; a second Ctrl-C stops waiting.
"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``load`` to the ``mesh`` parser."""
    load = sub.add_parser(
        "load",
        help="drive PlaceOrder at a steady rate against the running mesh; latency summary",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    load.add_argument(
        "--rate", type=positive_number(float), required=True, help="orders per second"
    )
    load.add_argument(
        "--duration",
        type=positive_number(float),
        required=True,
        metavar="SECONDS",
        help="how long to keep placing orders",
    )
    load.add_argument(
        "--concurrency",
        type=positive_number(int),
        default=DEFAULT_CONCURRENCY,
        help="at most this many orders in flight (placed, not finished); a due order beyond it is"
        f" skipped and counted (default {DEFAULT_CONCURRENCY})",
    )
    load.add_argument(
        "--sku",
        default=DEFAULT_SKU,
        help=f"the SKU ordered, its stock topped up before the run (default {DEFAULT_SKU})",
    )
    load.add_argument(
        "--drain-timeout",
        type=non_negative_number,
        default=DEFAULT_DRAIN_TIMEOUT_S,
        metavar="SECONDS",
        help="after the last order, wait at most this long for the rest to finish"
        f" (default {DEFAULT_DRAIN_TIMEOUT_S:g})",
    )
    load.add_argument(
        "--payment-token",
        default=DEFAULT_PAYMENT_TOKEN,
        help=f"payments test token of every order (default {DEFAULT_PAYMENT_TOKEN}, approves)",
    )
    load.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    # Imported here: cli imports this module to build its parser.
    from mesh_runner.cli import token_help

    load.add_argument("--token", help=token_help(ROLE))


def command_env(root: Path | None) -> dict[str, str]:
    """Our environment, pointed at the mesh of ``root`` when one is given (``--root``), so that
    addresses are found as every mesh command finds them."""
    env = dict(os.environ)
    if root is not None:
        env.pop("MESH_CONFIG", None)
        env["MESH_ROOT"] = str(root)
    return env


def admin_token(given: str | None, root: Path | None) -> Callable[[], str]:
    """The access token of a command that places load (``--token``, else ``$MESH_TOKEN``, else
    one minted with role admin), got when called; NoToken saying what to pass when none can be
    had."""

    def token() -> str:
        from mesh_runner.cli import call_token

        try:
            return call_token(given, root, ROLE)
        except RuntimeError as exc:
            raise NoToken(str(exc)) from None

    return token


async def until_interrupted(work: Callable[[asyncio.Event], Awaitable[T]]) -> T:
    """``work(stop)``, with ``stop`` set by Ctrl-C (SIGINT) while it runs."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, stop.set)
    try:
        return await work(stop)
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)


def run(args: argparse.Namespace, root: Path | None = None) -> int:
    """Run ``mesh load`` against the mesh of ``root`` (else the one found from the cwd)."""
    try:
        targets = resolve_targets(command_env(root))
    except AddressError as exc:
        print(f"mesh load: {exc}", file=sys.stderr)
        return EXIT_USAGE
    plan = Plan(
        rate=args.rate,
        duration=args.duration,
        concurrency=args.concurrency,
        sku=args.sku,
        drain_timeout=args.drain_timeout,
        payment_token=args.payment_token,
    )
    reporter = Reporter(sys.stderr)
    token = admin_token(args.token, root)

    async def work(stop: asyncio.Event) -> dict[str, Any]:
        return await drive(plan, targets, report=reporter, stop=stop, token=token)

    try:
        summary = asyncio.run(until_interrupted(work))
    except (MeshNotUp, NoToken) as exc:
        reporter.end_line()
        print(f"mesh load: {exc}", file=sys.stderr)
        return EXIT_NOT_UP
    reporter.end_line()
    sys.stderr.flush()
    print(json.dumps(summary, indent=2) if args.json else render_summary(summary), flush=True)
    return EXIT_INTERRUPTED if summary["interrupted"] else 0
