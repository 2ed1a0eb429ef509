"""The order saga as a pure state machine: state in, outcome in, next state (and events) out.

Forward steps, each a call to one participant with an idempotency key::

    RESERVE_STOCK -> AUTHORIZE_PAYMENT -> CREATE_SHIPMENT -> CAPTURE_PAYMENT -> COMMIT_STOCK
    -> CONFIRMED

CAPTURE_PAYMENT is the pivot: once the money is taken the saga only goes forward, so
COMMIT_STOCK retries its transient failures for as long as it takes (and only a business refusal
of it still compensates, with a refund). Capturing before committing keeps the pivot early: a
refused capture can still be undone by a void, whereas committed stock has left the warehouse.

On a business failure of a forward step, or when a step stays down (transient failures) past its
step timeout, the saga compensates in reverse order every step that ran, plus the failed step
itself when its outcome is unknown (it timed out, so it may have acted)::

    CANCEL_SHIPMENT -> CANCEL_PAYMENT (void, or refund once captured) -> RELEASE_STOCK -> CANCELLED

Compensations must succeed: they retry every failure with capped backoff and never give up; a
saga stuck there is what ``mesh sagas`` shows as stuck, for a human to look at.

A step whose participant's circuit breaker is open (``CircuitOpen``: orders' client refused the
call without sending it, because the participant has been failing) *parks*: the call was not
made, so no attempt is spent, the step's deadline clock stops (it is pushed forward by the wait)
so the wait causes no compensation, and the step is due again when the breaker lets a trial
call through (``retry_after_s``, at least ``min_park_s``). ``last_error`` says it, starting with
``PARKED`` (what ``mesh sagas`` shows). When the trial succeeds the saga goes on as if nothing
happened; when it fails, that failure counts as usual. A saga parks before its pivot only while
younger than ``park_limit_s``: past it an open breaker is a transient failure like any other and
the step's deadline runs out, so stock held for an order does not wait on a dead participant for
ever. Compensations and steps after the pivot park without a limit (they never give up anyway).

Nothing here does IO or reads a clock: ``advance(saga, outcome, now, policy)`` is a function, and
``command_for(saga, order)`` says which participant call the current step makes. Instants are
aware UTC datetimes (meshkit.timestamps); the policy's durations are seconds.
"""

from __future__ import annotations

import datetime
import enum
from dataclasses import dataclass, replace
from typing import Any

from meshkit.address import Address
from meshkit.money import Money
from orders.domain.events import (
    OrderCancelled,
    OrderConfirmed,
    OrderEvent,
    OrderPaymentAuthorized,
    OrderPaymentCaptured,
    OrderShipmentCreated,
    OrderStockReserved,
)
from orders.domain.model import Order


class Step(enum.Enum):
    """A step of the saga: five forward steps, three compensations."""

    RESERVE_STOCK = "RESERVE_STOCK"
    AUTHORIZE_PAYMENT = "AUTHORIZE_PAYMENT"
    CREATE_SHIPMENT = "CREATE_SHIPMENT"
    CAPTURE_PAYMENT = "CAPTURE_PAYMENT"
    COMMIT_STOCK = "COMMIT_STOCK"
    CANCEL_SHIPMENT = "CANCEL_SHIPMENT"
    CANCEL_PAYMENT = "CANCEL_PAYMENT"
    RELEASE_STOCK = "RELEASE_STOCK"


FORWARD = (
    Step.RESERVE_STOCK,
    Step.AUTHORIZE_PAYMENT,
    Step.CREATE_SHIPMENT,
    Step.CAPTURE_PAYMENT,
    Step.COMMIT_STOCK,
)
PIVOT = Step.CAPTURE_PAYMENT
COMPENSATION = {
    Step.RESERVE_STOCK: Step.RELEASE_STOCK,
    Step.AUTHORIZE_PAYMENT: Step.CANCEL_PAYMENT,
    Step.CREATE_SHIPMENT: Step.CANCEL_SHIPMENT,
    Step.CAPTURE_PAYMENT: Step.CANCEL_PAYMENT,
    Step.COMMIT_STOCK: Step.RELEASE_STOCK,
}
"""What undoes each forward step (CANCEL_PAYMENT voids or refunds, whichever applies)."""


class SagaStatus(enum.Enum):
    """Where a saga stands: two live states, two final ones."""

    RUNNING = "RUNNING"
    COMPENSATING = "COMPENSATING"
    CONFIRMED = "CONFIRMED"
    CANCELLED = "CANCELLED"


LIVE = (SagaStatus.RUNNING, SagaStatus.COMPENSATING)


@dataclass(frozen=True)
class RetryPolicy:
    """Deadlines and backoff of the saga's participant calls.

    A forward step before the pivot gets ``step_timeout_s`` from its first attempt; each call
    gets at most ``call_timeout_s`` and never more than the step has left. Backoff between
    attempts is ``initial_backoff_s * multiplier**(attempt-1)``, capped at ``max_backoff_s``.
    A step parked on an open breaker waits at least ``min_park_s``; a saga older than
    ``park_limit_s`` no longer parks before its pivot (see the module doc).
    """

    step_timeout_s: float = 15.0
    call_timeout_s: float = 3.0
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 5.0
    multiplier: float = 2.0
    min_call_timeout_s: float = 0.2
    stuck_after_s: float = 60.0
    # A half-open breaker whose trial calls are in flight says "0 s": do not spin on it.
    min_park_s: float = 0.5
    park_limit_s: float = 600.0

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` >= 1 failures so far)."""
        return float(
            min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** max(0, attempt - 1))
        )

    def step_deadline(self, saga: Saga) -> datetime.datetime:
        """When ``saga``'s current step runs out of time (if it has a deadline at all)."""
        return saga.step_started_at + datetime.timedelta(seconds=self.step_timeout_s)

    def call_timeout(self, saga: Saga, now: datetime.datetime) -> float:
        """The deadline (seconds) of the next call of ``saga``'s current step."""
        if not saga.step_has_deadline:
            return self.call_timeout_s
        left = (self.step_deadline(saga) - now).total_seconds()
        return max(self.min_call_timeout_s, min(self.call_timeout_s, left))


@dataclass(frozen=True)
class Saga:
    """The persisted state of one order's saga (one row, keyed by the order id).

    ``attempt`` counts failed attempts of the current step; ``compensations`` lists the
    compensation steps still to run, the current one first, while COMPENSATING.
    ``payment_token`` is kept only while the saga is live (authorizing, or replaying the
    authorization to learn a payment id it must void): a finished saga holds ``""``.
    """

    order_id: str
    status: SagaStatus
    step: Step | None
    started_at: datetime.datetime
    step_started_at: datetime.datetime
    next_attempt_at: datetime.datetime
    updated_at: datetime.datetime
    payment_token: str
    attempt: int = 0
    compensations: tuple[Step, ...] = ()
    reason: str = ""
    last_error: str = ""
    traceparent: str = ""  # the W3C trace context of the PlaceOrder that started it

    @classmethod
    def start(
        cls, order_id: str, payment_token: str, now: datetime.datetime, traceparent: str = ""
    ) -> Saga:
        """A new saga, due at once, at its first step; its steps continue ``traceparent``."""
        return cls(
            traceparent=traceparent,
            order_id=order_id,
            status=SagaStatus.RUNNING,
            step=Step.RESERVE_STOCK,
            started_at=now,
            step_started_at=now,
            next_attempt_at=now,
            updated_at=now,
            payment_token=payment_token,
        )

    @property
    def is_live(self) -> bool:
        """True while RUNNING or COMPENSATING."""
        return self.status in LIVE

    @property
    def step_has_deadline(self) -> bool:
        """True for forward steps up to the pivot: they compensate when they stay down."""
        return (
            self.status is SagaStatus.RUNNING
            and self.step in FORWARD
            and FORWARD.index(self.step) <= FORWARD.index(PIVOT)
        )

    def age(self, now: datetime.datetime) -> datetime.timedelta:
        """How long ago it started (never negative)."""
        return max(datetime.timedelta(0), now - self.started_at)

    def is_stuck(self, now: datetime.datetime, policy: RetryPolicy) -> bool:
        """Live for longer than ``stuck_after_s``: something needs a look."""
        return self.is_live and self.age(now).total_seconds() > policy.stuck_after_s

    @property
    def parked(self) -> bool:
        """True while the current step waits for a participant's circuit breaker to let a call
        through (the last outcome was ``CircuitOpen``)."""
        return self.is_live and self.last_error.startswith(PARKED)

    def resumed(self, now: datetime.datetime) -> Saga:
        """This saga after a restart of the orders process: due now, its step's clock restarted
        (the step had no fair chance while orders itself was down)."""
        return replace(self, step_started_at=now, next_attempt_at=now)


# ----------------------------------------------------------------------------------------------
# outcomes of a step's participant call
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Succeeded:
    """The participant did it (or had done it: a replay of the same idempotency key)."""

    payment_id: str = ""
    shipment_id: str = ""
    tracking_number: str = ""


@dataclass(frozen=True)
class Rejected:
    """A business failure: the participant refused and did nothing (out of stock, declined...)."""

    reason: str


@dataclass(frozen=True)
class Transient:
    """The call may or may not have acted (UNAVAILABLE, DEADLINE_EXCEEDED...): try again."""

    error: str


@dataclass(frozen=True)
class CircuitOpen:
    """The call was not made: orders' circuit breaker for ``participant`` is open (it has been
    failing) and lets a trial call through in ``retry_after_s``. The step parks (module doc)."""

    participant: str
    retry_after_s: float
    detail: str


Outcome = Succeeded | Rejected | Transient | CircuitOpen
PARKED = "parked: "
"""How ``last_error`` of a parked saga starts (then the breaker's own words)."""


# ----------------------------------------------------------------------------------------------
# commands: the participant calls each step makes
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReserveStock:
    """inventory.ReserveStock; idempotent by reservation id (= order id)."""

    reservation_id: str
    lines: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class AuthorizePayment:
    """payments.AuthorizePayment; a decline is a Rejected outcome."""

    idempotency_key: str
    order_id: str
    amount: Money
    payment_token: str


@dataclass(frozen=True)
class CreateShipment:
    """shipping.CreateShipment."""

    idempotency_key: str
    order_id: str
    address: Address
    items: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class CapturePayment:
    """payments.CapturePayment of the authorized payment."""

    idempotency_key: str
    payment_id: str


@dataclass(frozen=True)
class CommitStock:
    """inventory.CommitReservation."""

    reservation_id: str


@dataclass(frozen=True)
class CancelShipment:
    """shipping.CancelShipment. Without a ``shipment_id`` (the create timed out), ``lookup``
    replays the create with its idempotency key to learn it; a refused create left nothing."""

    idempotency_key: str
    shipment_id: str
    lookup: CreateShipment


@dataclass(frozen=True)
class CancelPayment:
    """payments.VoidPayment, or RefundPayment when the payment was captured. Without a
    ``payment_id`` (the authorization timed out), ``lookup`` replays it to learn it."""

    void_key: str
    refund_key: str
    payment_id: str
    lookup: AuthorizePayment


@dataclass(frozen=True)
class ReleaseStock:
    """inventory.ReleaseReservation; an unknown reservation means nothing was held."""

    reservation_id: str


Command = (
    ReserveStock
    | AuthorizePayment
    | CreateShipment
    | CapturePayment
    | CommitStock
    | CancelShipment
    | CancelPayment
    | ReleaseStock
)


def idempotency_key(order_id: str, action: str) -> str:
    """``<order_id>:<action>``, e.g. ``o-1:authorize``: one key per order and participant call."""
    return f"{order_id}:{action}"


def command_for(saga: Saga, order: Order) -> Command:
    """The participant call of ``saga``'s current step, built from the order's state."""
    oid = saga.order_id
    assert order.total is not None and order.shipping_address is not None, "order never placed"
    items = tuple((line.sku, line.quantity) for line in order.lines)
    authorize = AuthorizePayment(
        idempotency_key(oid, "authorize"), oid, order.total, saga.payment_token
    )
    create = CreateShipment(
        idempotency_key(oid, "create-shipment"), oid, order.shipping_address, items
    )
    match saga.step:
        case Step.RESERVE_STOCK:
            return ReserveStock(oid, items)
        case Step.AUTHORIZE_PAYMENT:
            return authorize
        case Step.CREATE_SHIPMENT:
            return create
        case Step.CAPTURE_PAYMENT:
            return CapturePayment(idempotency_key(oid, "capture"), order.payment_id)
        case Step.COMMIT_STOCK:
            return CommitStock(oid)
        case Step.CANCEL_SHIPMENT:
            return CancelShipment(
                idempotency_key(oid, "cancel-shipment"), order.shipment_id, create
            )
        case Step.CANCEL_PAYMENT:
            return CancelPayment(
                idempotency_key(oid, "void"),
                idempotency_key(oid, "refund"),
                order.payment_id,
                authorize,
            )
        case Step.RELEASE_STOCK:
            return ReleaseStock(oid)
    raise ValueError(f"saga {oid} has no step to run ({saga.status.value})")


# ----------------------------------------------------------------------------------------------
# the transition function
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Transition:
    """The saga after an outcome, and the order events to record in the same transaction."""

    saga: Saga
    events: tuple[OrderEvent, ...] = ()


def advance(
    saga: Saga, outcome: Outcome, now: datetime.datetime, policy: RetryPolicy
) -> Transition:
    """Where ``saga`` goes when its current step ended with ``outcome`` at ``now``."""
    if not saga.is_live or saga.step is None:
        raise ValueError(f"saga {saga.order_id} is {saga.status.value}: nothing to advance")
    if saga.status is SagaStatus.COMPENSATING:
        return _advance_compensation(saga, outcome, now, policy)
    step = saga.step
    if isinstance(outcome, CircuitOpen):
        if saga.step_has_deadline and saga.age(now).total_seconds() >= policy.park_limit_s:
            outcome = Transient(f"{outcome.detail} (parked for too long: a failure now)")
        else:
            return Transition(_park(saga, outcome, now, policy))
    match outcome:
        case Succeeded():
            return _forward_done(saga, step, outcome, now)
        case Rejected(reason=reason):
            # A refused step did nothing: undo only the steps before it.
            return _compensate(
                saga, _undo(step, include_self=False), f"{_label(step)}: {reason}", now
            )
        case Transient(error=error):
            timed_out = saga.step_has_deadline and now >= policy.step_deadline(saga)
            if not timed_out:
                return Transition(_retry(saga, error, now, policy))
            # The step may have acted before it went quiet: undo it too.
            why = f"{_label(step)}: no answer within {policy.step_timeout_s:g}s ({error})"
            return _compensate(saga, _undo(step, include_self=True), why, now)
    raise TypeError(f"unknown outcome {outcome!r}")


def _forward_done(saga: Saga, step: Step, outcome: Succeeded, now: datetime.datetime) -> Transition:
    oid = saga.order_id
    events: tuple[OrderEvent, ...]
    match step:
        case Step.RESERVE_STOCK:
            events = (OrderStockReserved(oid, now),)
        case Step.AUTHORIZE_PAYMENT:
            events = (OrderPaymentAuthorized(oid, now, outcome.payment_id),)
        case Step.CREATE_SHIPMENT:
            events = (OrderShipmentCreated(oid, now, outcome.shipment_id, outcome.tracking_number),)
        case Step.CAPTURE_PAYMENT:
            events = (OrderPaymentCaptured(oid, now, outcome.payment_id),)
        case _:  # COMMIT_STOCK, the last one
            events = (OrderConfirmed(oid, now),)
    index = FORWARD.index(step)
    if index + 1 == len(FORWARD):
        done = _start(saga, None, now, status=SagaStatus.CONFIRMED, last_error="", payment_token="")
        return Transition(done, events)
    return Transition(_start(saga, FORWARD[index + 1], now, last_error=""), events)


def _compensate(
    saga: Saga, undo: tuple[Step, ...], reason: str, now: datetime.datetime
) -> Transition:
    if not undo:
        return _cancelled(saga, reason, now)
    compensating = _start(
        saga, undo[0], now, status=SagaStatus.COMPENSATING, compensations=undo, reason=reason
    )
    return Transition(compensating)


def _advance_compensation(
    saga: Saga, outcome: Outcome, now: datetime.datetime, policy: RetryPolicy
) -> Transition:
    if isinstance(outcome, CircuitOpen):
        return Transition(_park(saga, outcome, now, policy))
    if not isinstance(outcome, Succeeded):
        # A compensation has no alternative: retry until it succeeds (capped backoff).
        error = outcome.reason if isinstance(outcome, Rejected) else outcome.error
        return Transition(_retry(saga, error, now, policy))
    rest = saga.compensations[1:]
    if not rest:
        return _cancelled(saga, saga.reason, now)
    return Transition(_start(saga, rest[0], now, compensations=rest, last_error=""))


def _cancelled(saga: Saga, reason: str, now: datetime.datetime) -> Transition:
    done = _start(
        saga,
        None,
        now,
        status=SagaStatus.CANCELLED,
        compensations=(),
        reason=reason,
        payment_token="",
    )
    return Transition(done, (OrderCancelled(saga.order_id, now, reason),))


def _retry(saga: Saga, error: str, now: datetime.datetime, policy: RetryPolicy) -> Saga:
    attempt = saga.attempt + 1
    return replace(
        saga,
        attempt=attempt,
        next_attempt_at=now + datetime.timedelta(seconds=policy.backoff(attempt)),
        updated_at=now,
        last_error=error,
    )


def _park(saga: Saga, outcome: CircuitOpen, now: datetime.datetime, policy: RetryPolicy) -> Saga:
    """``saga`` waiting for ``outcome``'s breaker: no attempt spent, due at its next trial."""
    wait = datetime.timedelta(seconds=max(policy.min_park_s, outcome.retry_after_s))
    return replace(
        saga,
        next_attempt_at=now + wait,
        # The step's clock stops while it waits: the wait is not the participant's failure to
        # answer, and counting it would compensate an order only because a breaker is open.
        step_started_at=saga.step_started_at + wait,
        updated_at=now,
        last_error=f"{PARKED}{outcome.detail}",
    )


def _start(saga: Saga, step: Step | None, now: datetime.datetime, **changes: Any) -> Saga:
    """``saga`` at ``step`` (None: finished), which starts now: no attempts yet, due at once."""
    return replace(
        saga,
        step=step,
        attempt=0,
        step_started_at=now,
        next_attempt_at=now,
        updated_at=now,
        **changes,
    )


def _undo(step: Step, *, include_self: bool) -> tuple[Step, ...]:
    """Compensations of the steps before ``step`` (and of ``step``), latest first, once each."""
    ran = FORWARD[: FORWARD.index(step) + (1 if include_self else 0)]
    undo: list[Step] = []
    for done in reversed(ran):
        if COMPENSATION[done] not in undo:
            undo.append(COMPENSATION[done])
    return tuple(undo)


_LABELS = {
    Step.RESERVE_STOCK: "reserve stock",
    Step.AUTHORIZE_PAYMENT: "authorize payment",
    Step.CREATE_SHIPMENT: "create shipment",
    Step.CAPTURE_PAYMENT: "capture payment",
    Step.COMMIT_STOCK: "commit stock",
}


def _label(step: Step) -> str:
    return _LABELS.get(step, step.value.lower().replace("_", " "))
