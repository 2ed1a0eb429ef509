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

Replicas: orders processes sharing one database never carry one saga at once, when the store
keeps claims (``SagaClaims``; SQLite does). A worker claims a due saga (a row: its id, until
when) before carrying it, in one write transaction for all it takes at a time; the claim lasts
``claim_for`` (default: a participant call's timeout + ALIVE_FOR), is renewed by every step it
writes and by the worker's heartbeat, and is dropped when the saga ends and when the worker
stops. A call is made only while the claim lasts for the whole call (plus CLAIM_MARGIN), so a
worker that lost its claim (it hung past it, another took the saga over) never calls; its late
write finds the claim another's and is dropped. A dead worker's claims expire, or go at once
when it ran on the same host (its heartbeat row names a process that is gone).

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
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import Protocol, runtime_checkable

from meshkit import timestamps
from meshkit.audit import Actor, AuditEntry
from orders.app.ports import Conversion, Participants, UnitOfWork
from orders.domain.events import OrderCancelled, OrderConfirmed
from orders.domain.model import Order
from orders.domain.saga import (
    Rejected,
    RetryPolicy,
    Saga,
    Transient,
    Transition,
    advance,
    command_for,
)

log = logging.getLogger("orders.saga")

# A worker records that it is alive at most this often (one small write), and counts as gone
# after ALIVE_FOR without one.
HEARTBEAT = datetime.timedelta(seconds=1)
ALIVE_FOR = datetime.timedelta(seconds=5)
# A participant call is made only while the saga's claim lasts this much longer than the call.
CLAIM_MARGIN = datetime.timedelta(seconds=1)


@runtime_checkable
class SagaClaims(Protocol):
    """What a saga store offers so that workers in several processes never carry one saga at
    once (orders.adapters.sqlite.SqliteSagas has it). A store without it serves one process:
    its workers claim sagas in memory only. Every method works in the unit of work's open
    transaction."""

    def due_unclaimed(self, runner_id: str, now: datetime.datetime, limit: int) -> list[str]:
        """Like ``due``, without the sagas another worker holds a claim on past ``now``."""

    def claim(
        self,
        runner_id: str,
        order_ids: Sequence[str],
        now: datetime.datetime,
        until: datetime.datetime,
    ) -> list[str]:
        """Claim until ``until`` those of ``order_ids`` no other worker holds past ``now``."""

    def renew(
        self, runner_id: str, order_ids: Sequence[str], until: datetime.datetime
    ) -> list[str]:
        """Extend ``runner_id``'s claims to ``until``; those it still held."""

    def release(self, runner_id: str, order_ids: Sequence[str] | None = None) -> None:
        """Drop ``runner_id``'s claims on ``order_ids`` (None: all)."""


class StepTrace(Protocol):
    """What a step's span is told about the step's outcome."""

    def rejected(self, reason: str) -> None:
        """The participant refused (out of stock, payment declined...): the span is an error
        saying ``reason``, so a trace shows why the order was cancelled, whoever refused."""


StepSpan = Callable[[str, str, Mapping[str, str]], AbstractContextManager[StepTrace | None]]
"""Opens a span around one step: (name, the saga's stored traceparent, attributes); what it
yields (None: nothing to tell) hears of a Rejected outcome."""


def _no_span(
    name: str, traceparent: str, attributes: Mapping[str, str]
) -> AbstractContextManager[StepTrace | None]:
    return contextlib.nullcontext()


def _acting_for_nobody(_customer: str) -> AbstractContextManager[None]:
    return contextlib.nullcontext()


def _no_conversions(_order: Order) -> Iterable[Conversion]:
    return ()


class SagaWorker:
    """Drives every live saga to CONFIRMED or CANCELLED.

    ``run_forever(stop)`` resumes the sagas in flight (after a crash or restart), then keeps up
    to ``parallelism`` due sagas in flight, each carried by one thread through as many steps as
    it can run now. ``run_once()`` carries the sagas due now (up to ``batch``) and returns how
    many steps it completed, once all of them are done (for tests and tools).

    Thread safety: ``wake()`` may be called from any thread (PlaceOrder calls it so a new saga
    starts without waiting for the next poll). Never one saga on two threads of a worker, nor,
    when the store keeps claims (``SagaClaims``), on two workers, in any processes (module
    doc). ``carry`` and ``advance`` (for tests and tools) take no claim; a step whose saga moved
    meanwhile is still dropped.

    ``read_only`` opens a unit of work that only reads (a snapshot, no write lock); by default
    ``unit_of_work`` serves for reads too.

    ``conversions(order)``: what an order's confirmation counts in experiments (the checkout
    experiment's ``order_confirmed``), published in the transaction of the step that confirms
    the order, so a conversion exists exactly when the confirmation does.
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
        claim_for: datetime.timedelta | None = None,
        conversions: Callable[[Order], Iterable[Conversion]] = _no_conversions,
    ) -> None:
        self._uow = unit_of_work
        self._conversions = conversions
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
        call = datetime.timedelta(seconds=self._policy.call_timeout_s)
        self._claim_for = claim_for or call + ALIVE_FOR
        if self._claim_for <= call + CLAIM_MARGIN:
            raise ValueError(f"claim_for must exceed a call's timeout ({call}) + {CLAIM_MARGIN}")
        # The store's claims, known once a unit of work has shown its store (None: not yet).
        self._shared: bool | None = None
        # This worker's claims in the store on the sagas it carries now, and until when.
        self._claims: dict[str, datetime.datetime] = {}

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
            self._shared = isinstance(uow.sagas, SagaClaims)
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
        """Record, at most every HEARTBEAT, that this worker is alive, and renew its claims on
        the sagas it carries (a claim another worker took over is forgotten: its carrier stops
        before its next call)."""
        now = self._clock()
        if self._last_beat is not None and now - self._last_beat < HEARTBEAT:
            return
        with self._in_flight_lock:
            held = list(self._claims)
        until = now + self._claim_for
        with self._uow() as uow:
            uow.sagas.beat(self._runner_id, now)
            sagas = uow.sagas
            renewed = (
                sagas.renew(self._runner_id, held, until)
                if held and isinstance(sagas, SagaClaims)
                else []
            )
        self._last_beat = now
        if held:
            self._note_claims(held, set(renewed), until)

    def _note_claims(self, asked: Sequence[str], held: set[str], until: datetime.datetime) -> None:
        """Record the outcome of claiming or renewing ``asked``: ``held`` last until ``until``,
        the others are not (or no longer) this worker's."""
        with self._in_flight_lock:
            for order_id in asked:
                if order_id not in self._in_flight:
                    continue  # its carrier is done with it meanwhile
                if order_id in held:
                    self._claims[order_id] = until
                elif self._claims.pop(order_id, None) is not None:
                    log.warning("saga %s: claimed by another worker meanwhile", order_id)

    def _due(self, limit: int) -> list[str]:
        """Due sagas, up to ``limit``, without those another worker holds a claim on."""
        now = self._clock()
        with self._read() as uow:
            sagas = uow.sagas
            self._shared = isinstance(sagas, SagaClaims)
            if isinstance(sagas, SagaClaims):
                return sagas.due_unclaimed(self._runner_id, now, limit)
            return sagas.due(now, limit)

    def _take(self, order_ids: Sequence[str], limit: int) -> list[str]:
        """Take up to ``limit`` of ``order_ids`` for this worker's threads: those no thread of
        it carries and, when the store keeps claims, that it could claim there."""
        with self._in_flight_lock:
            mine = [o for o in order_ids if o not in self._in_flight][:limit]
            self._in_flight.update(mine)
        if not mine or not self._shared:
            return mine
        now = self._clock()
        until = now + self._claim_for
        claimed: list[str] = []
        try:
            with self._uow() as uow:
                sagas = uow.sagas
                if isinstance(sagas, SagaClaims):
                    claimed = sagas.claim(self._runner_id, mine, now, until)
        finally:
            with self._in_flight_lock:
                for order_id in mine:
                    if order_id in claimed:
                        self._claims[order_id] = until
                    else:
                        self._in_flight.discard(order_id)
        return claimed

    def _hold_claim(self, order_id: str, timeout: float) -> bool:
        """True when a call of ``timeout`` seconds for ``order_id`` may be made now: the saga is
        not claimed by this worker (``carry`` by hand), or its claim lasts past the call (renewed
        now if it would not). False once another worker has it."""
        with self._in_flight_lock:
            until = self._claims.get(order_id)
        if until is None:
            return order_id not in self._in_flight or not self._shared
        now = self._clock()
        if until - now >= datetime.timedelta(seconds=timeout) + CLAIM_MARGIN:
            return True
        until = now + self._claim_for
        with self._uow() as uow:
            sagas = uow.sagas
            renewed = (
                sagas.renew(self._runner_id, [order_id], until)
                if isinstance(sagas, SagaClaims)
                else []
            )
        self._note_claims([order_id], set(renewed), until)
        return bool(renewed)

    def run_once(self) -> int:
        """Carry every saga due now (up to ``batch``) as far as it goes now; returns how many
        steps were completed, once all are done."""
        self._beat()
        claimed = self._take(self._due(self._batch), self._batch)
        if self._pool is None:
            return sum(self._carry_claimed(order_id) for order_id in claimed)
        return sum(self._pool.map(self._carry_claimed, claimed))

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
                # Its row stays until it expires, is taken again by this worker when the saga
                # is next due, or goes with the saga's end (written with its last step).
                self._claims.pop(order_id, None)
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
        with self._step_span(f"saga {step.lower()}", saga.traceparent, attributes) as traced:
            timeout = self._policy.call_timeout(saga, now)
            if not self._hold_claim(saga.order_id, timeout):
                return None  # another worker carries it now
            try:
                # Runs later, on a worker thread: the participants are called as orders, on
                # behalf of the customer who placed the order (meshkit.authz.acting_for).
                with self._acting_for(order.customer_id):
                    outcome = self._participants.execute(command, timeout)
            except Exception as exc:  # a bug in an adapter: retry like a transient failure
                log.exception("saga %s: %s raised", saga.order_id, type(command).__name__)
                outcome = Transient(f"{type(exc).__name__}: {exc}")
            if isinstance(outcome, Rejected) and traced is not None:
                # A decline answers OK on the wire: only the step knows it failed.
                traced.rejected(outcome.reason)
            transition = advance(saga, outcome, self._clock(), self._policy)
            claim = self._claim_to_renew(saga.order_id)
            confirms = any(isinstance(e, OrderConfirmed) for e in transition.events)
            extra = tuple(self._conversions(order)) if confirms else ()
            stored = self._commits.write(_Write(saga, transition, order, claim, extra))
        if stored is None:
            return None  # another worker moved it (or claimed it); our call was idempotent
        if claim is not None:
            self._note_claims([saga.order_id], {saga.order_id}, claim[1])
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
        for order_id in self._take(self._due(busy + free), free):
            if self._pool is None:
                self._carry_claimed(order_id)
            else:
                self._pool.submit(self._carry_claimed, order_id)

    def _claim_to_renew(self, order_id: str) -> tuple[str, datetime.datetime] | None:
        """(this worker, until when) for a step's write to renew its claim on ``order_id`` in
        the step's own transaction; None when it holds no claim on it."""
        with self._in_flight_lock:
            if order_id not in self._claims:
                return None
        return self._runner_id, self._clock() + self._claim_for

    def close(self) -> None:
        """Stop the worker threads: each ends after its current step; waits for them. Then
        give up this worker's claims, so another worker takes its sagas over at once."""
        self._stopping.set()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if self._shared:
            try:
                with self._uow() as uow:
                    sagas = uow.sagas
                    if isinstance(sagas, SagaClaims):
                        sagas.release(self._runner_id)
            except Exception:  # e.g. the database closed first: the claims expire instead
                log.warning("saga worker: could not release its claims; they expire", exc_info=True)


@dataclass
class _Write:
    """One step's result to store: the saga as the step found it, where it goes, and its order
    as stored before the step. ``stored`` is the order with the step's events once committed
    (None: the saga had moved), ``error`` what its writing raised."""

    saga: Saga
    transition: Transition
    order: Order
    # (worker, until): the claim on the saga the write renews, None when it holds none.
    claim: tuple[str, datetime.datetime] | None = None
    # Published with the step (an order's confirmation: its experiment conversions).
    conversions: tuple[Conversion, ...] = ()
    stored: Order | None = None
    error: BaseException | None = None
    done: bool = field(default=False, compare=False)

    def apply(self, uow: UnitOfWork) -> None:
        """Write the step in ``uow``'s transaction (``stored`` stays None if the saga moved)."""
        self.stored = None
        sagas = uow.sagas
        order_id = self.saga.order_id
        claims = sagas if isinstance(sagas, SagaClaims) else None
        runner_id, until = self.claim or ("", self.saga.updated_at)
        if claims is not None and runner_id and not claims.renew(runner_id, [order_id], until):
            return  # another worker claimed it after this one's claim ran out
        if sagas.get(order_id) != self.saga:
            return  # another worker moved it
        if claims is not None and runner_id and not self.transition.saga.is_live:
            claims.release(runner_id, [order_id])  # the saga is over
        draft = replace(self.order, pending=[])  # the carrier's order changes only on commit
        for event in self.transition.events:
            draft.record(event)
            if isinstance(event, OrderCancelled):
                uow.publish(_cancelled(draft, event))
        for conversion in self.conversions:
            uow.publish(conversion, event_id=conversion.event_id)
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
