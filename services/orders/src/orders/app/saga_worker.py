"""The saga worker: carries each due saga through its steps, each step in one write transaction.

A worker thread takes a due saga and runs its steps back to back until it finishes or must wait
(a backoff after a failure). It reads the saga and its order once, in a snapshot (no write lock),
and keeps both in memory from then on. One step is: call the participant with the step's
idempotency key and a deadline (no transaction open: the SQLite write lock is never held across
the network), then in one transaction check the saga has not moved (its stored row is the one
this thread holds), record the order events the state machine returned (at the expected
version), save the saga's new state and, through the event store, the outbox rows. A crash
anywhere in between replays the step, and the participant's idempotency key makes the replay act
once. Two workers never both move a saga: the second one's check fails and it drops the saga.

``run_forever`` keeps up to ``parallelism`` sagas in flight: a thread that is done with one saga
frees its slot at once (no waiting for a whole batch), and PlaceOrder wakes the dispatcher so a
new saga starts without waiting for the next poll.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace

from meshkit import timestamps
from meshkit.audit import Actor, AuditEntry
from orders.app.ports import Participants, UnitOfWork
from orders.domain.events import OrderCancelled
from orders.domain.model import Order
from orders.domain.saga import RetryPolicy, Saga, Transient, Transition, advance, command_for

log = logging.getLogger("orders.saga")

# A worker records that it is alive at most this often (one small write), and counts as gone
# after ALIVE_FOR without one.
HEARTBEAT = datetime.timedelta(seconds=1)
ALIVE_FOR = datetime.timedelta(seconds=5)

StepSpan = Callable[[str, str, Mapping[str, str]], AbstractContextManager[object]]
"""Opens a span around one step: (name, the saga's stored traceparent, attributes)."""


def _no_span(
    name: str, traceparent: str, attributes: Mapping[str, str]
) -> AbstractContextManager[object]:
    return contextlib.nullcontext()


def _acting_for_nobody(_customer: str) -> AbstractContextManager[None]:
    return contextlib.nullcontext()


class SagaWorker:
    """Drives every live saga to CONFIRMED or CANCELLED.

    ``run_forever(stop)`` resumes the sagas in flight (after a crash or restart), then keeps up
    to ``parallelism`` due sagas in flight, each carried by one thread through as many steps as
    it can run now. ``run_once()`` carries the sagas due now (up to ``batch``) and returns how
    many steps it completed, once all of them are done (for tests and tools).

    Thread safety: one worker per database; ``wake()`` may be called from any thread (PlaceOrder
    calls it so a new saga starts without waiting for the next poll). Never one saga on two
    threads of a worker. Running two workers over one database is safe (a step whose saga moved
    meanwhile is dropped), only wasteful.

    ``read_only`` opens a unit of work that only reads (a snapshot, no write lock); by default
    ``unit_of_work`` serves for reads too.
    """

    def __init__(
        self,
        unit_of_work: Callable[[], UnitOfWork],
        participants: Participants,
        policy: RetryPolicy | None = None,
        *,
        clock: Callable[[], datetime.datetime] = timestamps.now,
        batch: int = 64,
        parallelism: int = 8,
        step_span: StepSpan = _no_span,
        read_only: Callable[[], UnitOfWork] | None = None,
        acting_for: Callable[[str], AbstractContextManager[None]] = lambda _: (
            contextlib.nullcontext()
        ),
    ) -> None:
        self._uow = unit_of_work
        self._acting_for = acting_for
        self._read = read_only or unit_of_work
        self._step_span = step_span
        self._participants = participants
        self._policy = policy or RetryPolicy()
        self._clock = clock
        self._batch = batch
        self._parallelism = parallelism
        self._pool = (
            ThreadPoolExecutor(parallelism, thread_name_prefix="orders-saga")
            if parallelism > 1
            else None  # one at a time, on the caller's thread
        )
        self._wake = threading.Event()
        self._in_flight: set[str] = set()
        self._in_flight_lock = threading.Lock()
        self._stopping = threading.Event()
        self._runner_id = uuid.uuid4().hex
        self._last_beat: datetime.datetime | None = None
        self._commits = _GroupCommit(unit_of_work)

    def wake(self) -> None:
        """Look for due sagas now rather than after the idle poll."""
        self._wake.set()

    def resume(self) -> int:
        """Make every live saga due now with its step's clock restarted; returns how many.

        Called once at start-up: the process was down, so the participants were not given the
        step's full deadline. Not while another worker is alive on this database (a replica, or
        the process this one replaces, still stopping): it is running those sagas, and restarting
        their clocks would let a hanging step outlive its deadline.
        """
        now = self._clock()
        with self._uow() as uow:
            if uow.sagas.others_alive(self._runner_id, now - ALIVE_FOR):
                uow.sagas.beat(self._runner_id, now)
                self._last_beat = now
                log.info("another saga worker is alive: its sagas keep their step clocks")
                return 0
            live = uow.sagas.live()
            for saga in live:
                uow.sagas.save(saga.resumed(now))
            uow.sagas.beat(self._runner_id, now)
            self._last_beat = now
        if live:
            log.info("resuming %d saga(s) in flight", len(live))
        return len(live)

    def _beat(self) -> None:
        """Record, at most every HEARTBEAT, that this worker is alive."""
        now = self._clock()
        if self._last_beat is not None and now - self._last_beat < HEARTBEAT:
            return
        with self._uow() as uow:
            uow.sagas.beat(self._runner_id, now)
        self._last_beat = now

    def run_once(self) -> int:
        """Carry every saga due now (up to ``batch``) as far as it goes now; returns how many
        steps were completed, once all are done."""
        self._beat()
        with self._read() as uow:
            due = uow.sagas.due(self._clock(), self._batch)
        claimed = [order_id for order_id in due if self._claim(order_id)]
        if self._pool is None:
            return sum(self._carry_claimed(order_id) for order_id in claimed)
        return sum(self._pool.map(self._carry_claimed, claimed))

    def _claim(self, order_id: str) -> bool:
        """Take ``order_id`` for one of this worker's threads; False when one already has it."""
        with self._in_flight_lock:
            if order_id in self._in_flight:
                return False
            self._in_flight.add(order_id)
            return True

    def _carry_claimed(self, order_id: str) -> int:
        """``carry`` a claimed saga (logging what goes wrong), then free its slot."""
        try:
            return self.carry(order_id)
        except Exception:  # one saga's trouble must not stop the others
            log.exception("saga %s: step failed; it stays due", order_id)
            return 0
        finally:
            with self._in_flight_lock:
                self._in_flight.discard(order_id)
            self._wake.set()  # a slot is free

    def advance(self, order_id: str) -> bool:
        """Run the current step of one saga if it is due; True when the saga moved."""
        return self.carry(order_id, max_steps=1) == 1

    def carry(self, order_id: str, max_steps: int | None = None) -> int:
        """Run the steps of one saga back to back while it is due (at most ``max_steps``);
        returns how many steps moved it. Stops at a backoff, at the end, when the saga moved
        under it (another worker) or when the worker is stopping."""
        now = self._clock()
        with self._read() as uow:
            saga = uow.sagas.get(order_id)
            if saga is None or not saga.is_live or saga.next_attempt_at > now:
                return 0
            order = uow.orders.get(order_id)
        if order is None:
            raise LookupError(f"saga {order_id} has no order")
        steps = 0
        while max_steps is None or steps < max_steps:
            moved = self._step(saga, order, now)
            if moved is None:
                break
            steps += 1
            (saga, order), now = moved, self._clock()
            if not saga.is_live or saga.next_attempt_at > now or self._stopping.is_set():
                break
        return steps

    def _step(self, saga: Saga, order: Order, now: datetime.datetime) -> tuple[Saga, Order] | None:
        """Run ``saga``'s current step; the saga and its order as now stored, or None when
        another worker moved the saga first. ``order`` is the saga's order as stored (it is
        not changed)."""
        command = command_for(saga, order)
        step = saga.step.value if saga.step else ""
        attributes = {"order.id": saga.order_id, "saga.step": step}
        # The step's span continues the PlaceOrder's trace: participant calls made through
        # meshkit channels and the outbox rows written below become its children.
        with self._step_span(f"saga {step.lower()}", saga.traceparent, attributes):
            timeout = self._policy.call_timeout(saga, now)
            try:
                # Runs later, on a worker thread: the participants are called as orders, on
                # behalf of the customer who placed the order (meshkit.authz.acting_for).
                with self._acting_for(order.customer_id):
                    outcome = self._participants.execute(command, timeout)
            except Exception as exc:  # a bug in an adapter: retry like a transient failure
                log.exception("saga %s: %s raised", saga.order_id, type(command).__name__)
                outcome = Transient(f"{type(exc).__name__}: {exc}")
            transition = advance(saga, outcome, self._clock(), self._policy)
            stored = self._commits.write(_Write(saga, transition, order))
        if stored is None:
            return None  # another worker moved it; our call was idempotent
        after, order = transition.saga, stored
        # Every step of every order at INFO would be most of the log; the routine forward step
        # is DEBUG, what an operator looks for (retries, compensation, the end) is not. A step
        # parking on an open breaker is INFO once (the breaker's own WARNING says why), DEBUG
        # while it stays parked.
        routine = after.attempt == 0 and after.is_live and after.status is saga.status
        level = logging.WARNING if after.attempt else logging.DEBUG if routine else logging.INFO
        if after.parked:
            level = logging.DEBUG if saga.parked else logging.INFO
        if log.isEnabledFor(level):
            log.log(
                level,
                "saga %s: %s -> %s %s (%s)",
                saga.order_id,
                step or "-",
                after.status.value,
                after.step.value if after.step else "",
                type(outcome).__name__ + (f": {after.last_error}" if after.last_error else ""),
                extra={"order_id": saga.order_id, "attempt": after.attempt},
            )
        return after, order

    def run_forever(self, stop: threading.Event, *, idle_s: float = 0.1) -> None:
        """Resume the sagas in flight, then keep due sagas in flight until ``stop`` is set;
        waits for the steps in progress before returning."""
        backoff = idle_s
        while not stop.is_set():
            try:
                self.resume()
                break
            except Exception:  # e.g. the database is locked for long: try again
                log.exception("saga worker: cannot resume sagas; retrying")
                stop.wait(backoff)
                backoff = min(5.0, backoff * 2)
        backoff = idle_s
        while not stop.is_set():
            # Cleared before looking, so a wake() from now on is not lost.
            self._wake.clear()
            try:
                self._dispatch()
            except Exception:
                log.exception("saga worker: cannot read the due sagas; backing off")
                stop.wait(backoff)
                backoff = min(5.0, backoff * 2)
                continue
            backoff = idle_s
            # Until PlaceOrder or a freed slot wakes it, or the next poll (sagas in backoff).
            self._wake.wait(idle_s)
        self.close()

    def _dispatch(self) -> None:
        """Hand due sagas to free threads, up to ``parallelism`` in flight."""
        self._beat()
        with self._in_flight_lock:
            busy = len(self._in_flight)
        free = self._parallelism - busy
        if free <= 0:
            return
        # The busy ones are due too and may come first: ask for enough to fill every free slot.
        with self._read() as uow:
            due = uow.sagas.due(self._clock(), busy + free)
        for order_id in due:
            if free == 0:
                break
            if self._claim(order_id):
                if self._pool is None:
                    self._carry_claimed(order_id)
                else:
                    self._pool.submit(self._carry_claimed, order_id)
                free -= 1

    def close(self) -> None:
        """Stop the worker threads: each ends after its current step; waits for them."""
        self._stopping.set()
        if self._pool is not None:
            self._pool.shutdown(wait=True)


@dataclass
class _Write:
    """One step's result to store: the saga as the step found it, where it goes, and its order
    as stored before the step. ``stored`` is the order with the step's events once committed
    (None: the saga had moved), ``error`` what its writing raised."""

    saga: Saga
    transition: Transition
    order: Order
    stored: Order | None = None
    error: BaseException | None = None
    done: bool = field(default=False, compare=False)

    def apply(self, uow: UnitOfWork) -> None:
        """Write the step in ``uow``'s transaction (``stored`` stays None if the saga moved)."""
        self.stored = None
        if uow.sagas.get(self.saga.order_id) != self.saga:
            return  # another worker moved it
        draft = replace(self.order, pending=[])  # the carrier's order changes only on commit
        for event in self.transition.events:
            draft.record(event)
            if isinstance(event, OrderCancelled):
                uow.publish(_cancelled(draft, event))
        uow.orders.save(draft)  # at the expected version: Aborted if it moved
        uow.sagas.save(self.transition.saga)
        self.stored = draft


def _cancelled(order: Order, event: OrderCancelled) -> AuditEntry:
    """The audit record of a cancellation: the saga cancelled it, as orders, on behalf of the
    order's customer."""
    return AuditEntry(
        "orders.cancel",
        resource_type="Order",
        resource_id=order.order_id,
        reason=event.reason,
        actor=Actor(
            subject="orders", roles=("service",), service="orders", on_behalf_of=order.customer_id
        ),
        occurred_at=event.occurred_at,
    )


class _GroupCommit:
    """Writes the steps of many sagas in one transaction (group commit).

    A thread hands in its step and waits; whichever thread finds no transaction in progress
    writes every step waiting then, in one transaction, and wakes their threads. So the saga
    threads do not queue one by one for the write lock (the profile showed most of their time
    there), and many steps share one BEGIN ... COMMIT and one fsync. Each step still checks,
    in the transaction, that its saga has not moved. When the shared transaction fails, each
    step is written again alone, so one step's failure is only its own.
    """

    def __init__(self, unit_of_work: Callable[[], UnitOfWork]) -> None:
        self._uow = unit_of_work
        self._cv = threading.Condition()
        self._waiting: list[_Write] = []
        self._writing = False

    def write(self, step: _Write) -> Order | None:
        """Store ``step``; its order as stored, or None when its saga had moved. Raises what
        writing it raised."""
        with self._cv:
            self._waiting.append(step)
            while not step.done and self._writing:
                self._cv.wait()
            if not step.done:  # nobody is writing: write everything waiting, ours included
                batch, self._waiting = self._waiting, []
                self._writing = True
        if not step.done:
            try:
                self._write(batch)
            except BaseException as exc:  # e.g. interrupted: no step of the batch is known
                for each in batch:
                    each.stored, each.error = None, each.error or exc
                raise
            finally:
                with self._cv:
                    for each in batch:
                        each.done = True
                    self._writing = False
                    self._cv.notify_all()
        if step.error is not None:
            raise step.error
        return step.stored

    def _write(self, batch: list[_Write]) -> None:
        try:
            with self._uow() as uow:
                for step in batch:
                    step.apply(uow)
            return
        # Errors are raised again in the thread whose step it is (write()).
        except Exception as exc:  # noqa: BLE001 - one step's trouble, or the commit's: whose?
            if len(batch) == 1:
                batch[0].error = exc
                return
        for step in batch:
            try:
                with self._uow() as uow:
                    step.apply(uow)
            except Exception as exc:  # noqa: BLE001 - raised again in its own thread
                step.error = exc
