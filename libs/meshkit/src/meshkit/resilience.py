"""What every outgoing call of the mesh goes through before gRPC sends it: a deadline, a bulkhead
and a circuit breaker per downstream (the way Envoy's cluster circuit breakers and resilience4j
do it), so one slow or dead peer neither takes every thread of its callers nor gets hammered while
it is down.

Per call, in this order (``Guard``, which ``meshkit.client.connect``'s interceptor calls):

1. **Deadline.** The call's timeout, else the mesh default, cut to what is left of the request
   being served (``meshkit.deadlines``). A spent budget fails the call at once with
   DEADLINE_EXCEEDED; nothing is sent.
2. **Bulkhead.** At most ``max_concurrent`` calls in flight to one downstream (the peer's name:
   every channel to "shipping" in the process shares one). One more fails at once with
   ``BulkheadFull`` (RESOURCE_EXHAUSTED): a slow shipping holds a bounded number of a caller's
   threads, and the rest keep serving the other paths (Hystrix's bulkheads; Envoy's
   ``max_requests``).
3. **Circuit breaker.** A count-based sliding window over the downstream's last ``window`` calls.
   Once at least ``min_calls`` are in it and the failure rate reaches ``failure_rate``, the
   breaker OPENs: calls fail at once with ``BreakerOpen`` (UNAVAILABLE, naming the downstream and
   when the next trial is), for ``open_s`` seconds. Then it is HALF_OPEN: ``half_open_calls``
   trial calls go through; all succeeding closes it, any failing opens it again
   (resilience4j's CircuitBreaker). Failures are the codes that say the downstream is in trouble
   (``FAILURE_CODES``); a business answer (NOT_FOUND, FAILED_PRECONDITION...) is a success.
   State changes are logged at WARNING and reported to listeners (the kit's ``Service`` shows
   them in its health: ``meshkit.breaker/<downstream>``).

Retries are gRPC's own, below this interceptor (meshkit.client), so one logical call is one
outcome for the breaker, whatever number of attempts it took.

Settings, from the environment, read once per process (``Limits.from_env``):
``MESH_BREAKER_WINDOW`` (100), ``MESH_BREAKER_MIN_CALLS`` (20), ``MESH_BREAKER_FAILURE_RATE``
(0.5), ``MESH_BREAKER_OPEN_S`` (5), ``MESH_BREAKER_HALF_OPEN_CALLS`` (3), ``MESH_BULKHEAD`` (16)
and ``MESH_BULKHEAD_<PEER>`` for one downstream.

Thread safety: everything here is safe to share; a breaker's and a bulkhead's state is guarded by
one lock each, held for a few hundred nanoseconds.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import grpc

from meshkit import deadlines
from meshkit.telemetry import _ClientCallDetails

log = logging.getLogger("meshkit.resilience")

FAILURE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
# The grpc.health.v1 name under which the kit's services show a peer's breaker.
HEALTH_PREFIX = "meshkit.breaker/"
# Neither a success nor a failure of the downstream: the caller gave up.
_IGNORED_CODES = frozenset({grpc.StatusCode.CANCELLED})


class State(enum.Enum):
    """A breaker's state."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclasses.dataclass(frozen=True)
class Limits:
    """The breaker's and the bulkhead's settings (see the module doc)."""

    # A window of 100 calls: with 20 % of calls failing at random (a flaky peer, not a dead
    # one), 50 failures among 100 happen with odds of about 1e-11; a window of 20 tripped the
    # breaker at 20 % failures in chaos runs (10 of 20 at random: odds 0.26 % per window, over
    # thousands of windows). A dead peer still opens it within 50 failed calls.
    window: int = 100
    min_calls: int = 20
    failure_rate: float = 0.5
    open_s: float = 5.0
    half_open_calls: int = 3
    # Half of orders' 32 saga threads: one slow participant can hold no more than that.
    max_concurrent: int = 16
    per_peer_concurrent: Mapping[str, int] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Limits:
        """The limits from ``MESH_BREAKER_*`` and ``MESH_BULKHEAD*``; ValueError naming the
        variable for a bad value."""
        env = os.environ if env is None else env

        def number(key: str, default: float, kind: type, low: float, high: float) -> Any:
            raw = env.get(key, "").strip()
            if not raw:
                return default
            try:
                value = kind(raw)
            except ValueError:
                raise ValueError(f"{key}={raw!r} is not a {kind.__name__}") from None
            if not low <= value <= high:
                raise ValueError(f"{key}={raw!r} must be between {low} and {high}")
            return value

        peers = {
            key.removeprefix("MESH_BULKHEAD_").lower(): number(key, 0, int, 1, 100_000)
            for key in env
            if key.startswith("MESH_BULKHEAD_")
        }
        limits = cls(
            window=number("MESH_BREAKER_WINDOW", cls.window, int, 1, 100_000),
            min_calls=number("MESH_BREAKER_MIN_CALLS", cls.min_calls, int, 1, 100_000),
            failure_rate=number("MESH_BREAKER_FAILURE_RATE", cls.failure_rate, float, 0.01, 1.0),
            open_s=number("MESH_BREAKER_OPEN_S", cls.open_s, float, 0.01, 3600.0),
            half_open_calls=number(
                "MESH_BREAKER_HALF_OPEN_CALLS", cls.half_open_calls, int, 1, 1000
            ),
            max_concurrent=number("MESH_BULKHEAD", cls.max_concurrent, int, 1, 100_000),
            per_peer_concurrent=peers,
        )
        if limits.min_calls > limits.window:
            raise ValueError(
                f"MESH_BREAKER_MIN_CALLS={limits.min_calls} is more than the window"
                f" MESH_BREAKER_WINDOW={limits.window}: the breaker could never open"
            )
        return limits

    def bulkhead_of(self, downstream: str) -> int:
        """The cap on concurrent calls to ``downstream``."""
        key = downstream.lower().replace("-", "_")
        return self.per_peer_concurrent.get(key, self.max_concurrent)


class _LocalFailure(grpc.RpcError, grpc.Future, grpc.Call):  # type: ignore[type-arg]
    """A call refused by the client before anything was sent: it is its own failed outcome
    (what an interceptor returns), an RpcError to raise, and a finished Future/Call."""

    _code = grpc.StatusCode.UNKNOWN

    def __init__(self, details: str) -> None:
        super().__init__(details)
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def initial_metadata(self) -> tuple[()]:
        return ()

    def trailing_metadata(self) -> tuple[()]:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float:
        return 0.0

    def cancel(self) -> bool:
        return False

    def cancelled(self) -> bool:
        return False

    def running(self) -> bool:
        return False

    def done(self) -> bool:
        return True

    def result(self, timeout: float | None = None) -> Any:
        raise self

    def exception(self, timeout: float | None = None) -> grpc.RpcError:
        return self

    def traceback(self, timeout: float | None = None) -> None:
        return None

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        fn(self)

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return False

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        raise self

    def __str__(self) -> str:
        return f"<{type(self).__name__} {self._code.name}: {self._details}>"


class BreakerOpen(_LocalFailure):
    """UNAVAILABLE from an open circuit breaker: ``downstream`` is failing, and this call was not
    sent. ``retry_after_s``: when the breaker lets a trial call through."""

    _code = grpc.StatusCode.UNAVAILABLE

    def __init__(self, downstream: str, retry_after_s: float, why: str) -> None:
        super().__init__(
            f"circuit breaker for {downstream!r} is open ({why}); next trial in"
            f" {retry_after_s:.1f}s"
        )
        self.downstream = downstream
        self.retry_after_s = retry_after_s


class BulkheadFull(_LocalFailure):
    """RESOURCE_EXHAUSTED from a full bulkhead: ``downstream`` already has its cap of calls in
    flight from this process, and this call was not sent."""

    _code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, downstream: str, in_flight: int) -> None:
        super().__init__(
            f"bulkhead for {downstream!r} is full ({in_flight} calls in flight);"
            " it is slow or overloaded"
        )
        self.downstream = downstream


class BudgetSpent(_LocalFailure):
    """DEADLINE_EXCEEDED before sending: the request being served has no time left."""

    _code = grpc.StatusCode.DEADLINE_EXCEEDED


Listener = Callable[[str, State], None]


class Breaker:
    """One downstream's circuit breaker (see the module doc)."""

    def __init__(
        self,
        downstream: str,
        limits: Limits,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str, State], None] | None = None,
    ) -> None:
        self.downstream = downstream
        self._limits = limits
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self._outcomes: collections.deque[bool] = collections.deque(maxlen=limits.window)
        self._failures = 0
        self._state = State.CLOSED
        self._opened_at = 0.0
        self._why = ""
        self._trials = 0  # half-open: trial calls let through
        self._trial_successes = 0

    @property
    def state(self) -> State:
        """The current state (an OPEN breaker whose wait is over reads HALF_OPEN)."""
        with self._lock:
            if self._state is State.OPEN and self._clock() - self._opened_at >= self._limits.open_s:
                return State.HALF_OPEN
            return self._state

    @property
    def trying(self) -> bool:
        """Half-open: the calls let through now are trials (a plain read, no lock)."""
        return self._state is State.HALF_OPEN

    def failure_rate(self) -> float:
        """The failure rate over the window (0 when empty)."""
        with self._lock:
            return self._failures / len(self._outcomes) if self._outcomes else 0.0

    def acquire(self) -> BreakerOpen | None:
        """None when a call may go; else the BreakerOpen to answer with. A call let through
        must be followed by exactly one ``record`` (or ``release_trial`` if never sent)."""
        change: State | None = None
        with self._lock:
            if self._state is State.OPEN:
                waited = self._clock() - self._opened_at
                if waited < self._limits.open_s:
                    return BreakerOpen(self.downstream, self._limits.open_s - waited, self._why)
                self._state, self._trials, self._trial_successes = State.HALF_OPEN, 0, 0
                change = State.HALF_OPEN
            if self._state is State.HALF_OPEN:
                if self._trials >= self._limits.half_open_calls:
                    return BreakerOpen(self.downstream, 0.0, "its trial calls are in flight")
                self._trials += 1
        if change is not None:
            self._changed(change, "trying the downstream again")
        return None

    def release_trial(self) -> None:
        """A call acquire() let through was never sent (e.g. the bulkhead was full)."""
        with self._lock:
            if self._state is State.HALF_OPEN and self._trials > 0:
                self._trials -= 1

    def record(self, code: grpc.StatusCode | None) -> None:
        """The outcome of a call acquire() let through (its status code)."""
        if code in _IGNORED_CODES:
            self.release_trial()
            return
        failed = code in FAILURE_CODES
        change: tuple[State, str] | None = None
        with self._lock:
            if self._state is State.HALF_OPEN:
                if failed:
                    change = self._open(f"trial call failed with {_name(code)}")
                else:
                    self._trial_successes += 1
                    if self._trial_successes >= self._limits.half_open_calls:
                        self._state = State.CLOSED
                        self._outcomes.clear()
                        self._failures = 0
                        change = (State.CLOSED, f"{self._trial_successes} trial calls succeeded")
            elif self._state is State.CLOSED:
                if len(self._outcomes) == self._outcomes.maxlen and self._outcomes[0]:
                    self._failures -= 1
                self._outcomes.append(failed)
                self._failures += failed
                calls = len(self._outcomes)
                if (
                    failed
                    and calls >= self._limits.min_calls
                    and self._failures / calls >= self._limits.failure_rate
                ):
                    change = self._open(
                        f"{self._failures} of the last {calls} calls failed, the last with"
                        f" {_name(code)}"
                    )
        if change is not None:
            self._changed(*change)

    def _open(self, why: str) -> tuple[State, str]:
        """Open now (lock held); returns the change to report."""
        self._state = State.OPEN
        self._opened_at = self._clock()
        self._why = why
        return State.OPEN, why

    def _changed(self, state: State, why: str) -> None:
        level = logging.INFO if state is State.HALF_OPEN else logging.WARNING
        verb = {State.OPEN: "opened", State.HALF_OPEN: "is half-open", State.CLOSED: "closed"}
        log.log(
            level,
            "circuit breaker for %r %s: %s",
            self.downstream,
            verb[state],
            why,
            extra={"downstream": self.downstream, "breaker": state.value},
        )
        if self._on_change is not None:
            self._on_change(self.downstream, state)


class Bulkhead:
    """A cap on concurrent calls to one downstream (see the module doc)."""

    def __init__(self, downstream: str, limit: int) -> None:
        self.downstream = downstream
        self.limit = limit
        self._lock = threading.Lock()
        self.in_flight = 0

    def acquire(self) -> BulkheadFull | None:
        """None when a call may go (then ``release`` it once); else the refusal."""
        with self._lock:
            if self.in_flight >= self.limit:
                return BulkheadFull(self.downstream, self.in_flight)
            self.in_flight += 1
            return None

    def release(self) -> None:
        """A call acquired earlier ended."""
        with self._lock:
            self.in_flight -= 1


class Downstreams:
    """The process's breakers and bulkheads, one of each per downstream name, and whoever wants
    to hear of breaker state changes. ``downstreams()`` is the process-wide one."""

    def __init__(self, limits: Limits | None = None) -> None:
        self._limits = limits
        self._lock = threading.Lock()
        self._breakers: dict[str, Breaker] = {}
        self._bulkheads: dict[str, Bulkhead] = {}
        self._listeners: list[Listener] = []

    @property
    def limits(self) -> Limits:
        """The limits (from the environment unless given), read on first use."""
        if self._limits is None:
            self._limits = Limits.from_env()
        return self._limits

    def breaker(self, downstream: str) -> Breaker:
        """``downstream``'s breaker, made on first use."""
        with self._lock:
            breaker = self._breakers.get(downstream)
            if breaker is None:
                breaker = self._breakers[downstream] = Breaker(
                    downstream, self.limits, on_change=self._notify
                )
            return breaker

    def bulkhead(self, downstream: str) -> Bulkhead:
        """``downstream``'s bulkhead, made on first use."""
        with self._lock:
            bulkhead = self._bulkheads.get(downstream)
            if bulkhead is None:
                limit = self.limits.bulkhead_of(downstream)
                bulkhead = self._bulkheads[downstream] = Bulkhead(downstream, limit)
            return bulkhead

    def states(self) -> dict[str, State]:
        """Every breaker's current state, by downstream."""
        with self._lock:
            breakers = list(self._breakers.values())
        return {b.downstream: b.state for b in breakers}

    def listen(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(downstream, state)`` on every breaker state change (from the thread
        whose call changed it); returns the function that stops it."""
        with self._lock:
            self._listeners.append(listener)

        def stop() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return stop

    def _notify(self, downstream: str, state: State) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(downstream, state)
            except Exception:  # a listener's bug must not fail the call that changed the state
                log.exception("breaker listener failed for %r", downstream)


_DOWNSTREAMS = Downstreams()


def unguarded() -> Downstreams:
    """Breakers that never open and bulkheads that never fill, for clients that must keep
    calling whatever happens: a health probe waiting for a peer to start, a test's patient
    client, a benchmark that is itself the load."""
    return Downstreams(Limits(window=1 << 20, min_calls=1 << 20, max_concurrent=1 << 20))


def downstreams() -> Downstreams:
    """The process-wide breakers and bulkheads (what meshkit.client's channels use)."""
    return _DOWNSTREAMS


class Guard:
    """Deadline, bulkhead and breaker for every call of a channel to ``downstream`` (the
    module doc), all four RPC shapes: meshkit.client's one interceptor sends each call through
    ``call``. A stream holds its bulkhead slot until it ends."""

    def __init__(self, downstream: str, registry: Downstreams | None = None) -> None:
        registry = registry or downstreams()
        self.downstream = downstream
        self._breaker = registry.breaker(downstream)
        self._bulkhead = registry.bulkhead(downstream)

    def call(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        """Send ``request`` through ``continuation`` if deadline, bulkhead and breaker let it;
        returns the call, or the local failure (a finished call object) that stopped it."""
        timeout = deadlines.outgoing_timeout(details.timeout)
        if timeout <= 0:
            return BudgetSpent(
                f"no time left for {details.method}: the request being served ran out of its"
                " deadline before this call"
            )
        refused = self._bulkhead.acquire()
        if refused is not None:
            return refused
        refusal = self._breaker.acquire()
        if refusal is not None:
            self._bulkhead.release()
            return refusal
        # A trial call of a half-open breaker waits for the connection (within its deadline):
        # the channel may still be in its reconnect backoff from the outage, and failing the
        # trial at once for that would keep the breaker open another open_s for nothing.
        ready = True if self._breaker.trying else getattr(details, "wait_for_ready", None)
        try:
            call = continuation(_with_timeout(details, timeout, ready), request)
        except BaseException:
            self._bulkhead.release()
            self._breaker.record(grpc.StatusCode.UNKNOWN)
            raise
        if call.done():  # a blocking unary call has completed (or failed) already
            self._finished(call)
        else:  # a future or a stream: when the RPC ends, from gRPC's thread
            call.add_done_callback(self._finished)
        return call

    def _finished(self, call: Any) -> None:
        self._bulkhead.release()
        try:
            code = call.code()
        except Exception:  # noqa: BLE001 - an outcome without a code counts as a failure
            code = grpc.StatusCode.UNKNOWN
        self._breaker.record(code)


def _with_timeout(details: Any, timeout: float, wait_for_ready: bool | None) -> Any:
    if details.timeout == timeout and getattr(details, "wait_for_ready", None) == wait_for_ready:
        return details
    return _ClientCallDetails(
        details.method,
        timeout,
        details.metadata,
        details.credentials,
        wait_for_ready,
        getattr(details, "compression", None),
    )


def _name(code: grpc.StatusCode | None) -> str:
    return code.name if code is not None else "no status"
