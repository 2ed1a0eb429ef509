"""The saga worker: advances due sagas one step at a time, each step in its own transaction.

One step is: read the saga and its order (short transaction), call the participant with the
step's idempotency key and a deadline (no transaction open: the SQLite write lock is never held
across the network), then in one transaction check the saga has not moved, record the order
events the state machine returned (with the expected version), save the saga's new state and,
through the event store, the outbox rows. A crash anywhere in between replays the step, and the
participant's idempotency key makes the replay act once.
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

from meshkit import timestamps
from orders.app.ports import Participants, UnitOfWork
from orders.domain.saga import Command, RetryPolicy, Saga, Transient, advance, command_for

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


class SagaWorker:
    """Drives every live saga to CONFIRMED or CANCELLED.

    ``run_once()`` advances the sagas due now (up to ``batch``, ``parallelism`` at a time, never
    one saga on two threads) and returns how many steps it completed; ``run_forever(stop)``
    resumes the sagas in flight (after a crash or restart) and loops ``run_once``.

    Thread safety: one worker per database; ``wake()`` may be called from any thread (PlaceOrder
    calls it so a new saga starts without waiting for the next poll). Running two workers over
    one database is safe (a step whose saga moved meanwhile is dropped), only wasteful.
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
    ) -> None:
        self._uow = unit_of_work
        self._step_span = step_span
        self._participants = participants
        self._policy = policy or RetryPolicy()
        self._clock = clock
        self._batch = batch
        self._parallelism = parallelism
        self._pool = (
            ThreadPoolExecutor(parallelism, thread_name_prefix="orders-saga")
            if parallelism > 1
            else None
        )
        self._wake = threading.Event()
        self._runner_id = uuid.uuid4().hex
        self._last_beat: datetime.datetime | None = None

    def wake(self) -> None:
        """Run the next ``run_once`` now rather than after the idle poll."""
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
        """Advance each saga due now by one step; returns how many steps were completed."""
        self._beat()
        with self._uow() as uow:
            due = uow.sagas.due(self._clock(), self._batch)
        if not due:
            return 0
        if self._pool is None:
            return sum(self._advance_safely(order_id) for order_id in due)
        return sum(self._pool.map(self._advance_safely, due))

    def _advance_safely(self, order_id: str) -> bool:
        try:
            return self.advance(order_id)
        except Exception:  # one saga's trouble must not stop the others
            log.exception("saga %s: step failed; it stays due", order_id)
            return False

    def advance(self, order_id: str) -> bool:
        """Run the current step of one saga if it is due; True when the saga moved."""
        now = self._clock()
        with self._uow() as uow:
            saga = uow.sagas.get(order_id)
            if saga is None or not saga.is_live or saga.next_attempt_at > now:
                return False
            order = uow.orders.get(order_id)
        if order is None:
            raise LookupError(f"saga {order_id} has no order")
        command = command_for(saga, order)
        attributes = {"order.id": order_id, "saga.step": saga.step.value if saga.step else ""}
        # The step's span continues the PlaceOrder's trace: participant calls made through
        # meshkit channels and the outbox rows written below become its children.
        with self._step_span(
            f"saga {attributes['saga.step'].lower()}", saga.traceparent, attributes
        ):
            return self._run_step(order_id, saga, command, now)

    def _run_step(
        self, order_id: str, saga: Saga, command: Command, now: datetime.datetime
    ) -> bool:
        timeout = self._policy.call_timeout(saga, now)
        try:
            outcome = self._participants.execute(command, timeout)
        except Exception as exc:  # a bug in an adapter: retry like a transient failure
            log.exception("saga %s: %s raised", order_id, type(command).__name__)
            outcome = Transient(f"{type(exc).__name__}: {exc}")
        transition = advance(saga, outcome, self._clock(), self._policy)
        with self._uow() as uow:
            if uow.sagas.get(order_id) != saga:
                return False  # another worker moved it; our call was idempotent
            order = uow.orders.get(order_id)
            assert order is not None
            for event in transition.events:
                order.record(event)
            uow.orders.save(order)
            uow.sagas.save(transition.saga)
        after = transition.saga
        level = logging.INFO if after.attempt == 0 else logging.WARNING
        log.log(
            level,
            "saga %s: %s -> %s %s (%s)",
            order_id,
            saga.step.value if saga.step else "-",
            after.status.value,
            after.step.value if after.step else "",
            type(outcome).__name__ + (f": {after.last_error}" if after.last_error else ""),
            extra={"order_id": order_id, "attempt": after.attempt},
        )
        return True

    def run_forever(self, stop: threading.Event, *, idle_s: float = 0.1) -> None:
        """Resume the sagas in flight, then advance due sagas until ``stop`` is set."""
        backoff = idle_s
        while not stop.is_set():
            try:
                self.resume()
                break
            except Exception:  # e.g. the database is locked for long: try again
                log.exception("saga worker: cannot resume sagas; retrying")
                stop.wait(backoff)
                backoff = min(5.0, backoff * 2)
        while not stop.is_set():
            try:
                done = self.run_once()
            except Exception:
                log.exception("saga worker: run_once failed; backing off")
                stop.wait(backoff)
                backoff = min(5.0, backoff * 2)
                continue
            backoff = idle_s
            if done == 0:
                # Sleep until woken by PlaceOrder or the next poll; stop is checked each poll.
                self._wake.wait(idle_s)
                self._wake.clear()
        self.close()

    def close(self) -> None:
        """Stop the worker threads (waits for steps in progress)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
