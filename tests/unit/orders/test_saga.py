"""The order saga as a pure state machine: every step x every outcome, no IO, no clock."""

from __future__ import annotations

import datetime
from dataclasses import replace

import pytest

from meshkit.address import Address
from meshkit.money import Money
from meshkit.timestamps import from_micros
from orders.domain.events import (
    OrderCancelled,
    OrderConfirmed,
    OrderPaymentAuthorized,
    OrderPaymentCaptured,
    OrderShipmentCreated,
    OrderStockReserved,
)
from orders.domain.model import Order
from orders.domain.saga import (
    FORWARD,
    PARKED,
    AuthorizePayment,
    CancelPayment,
    CancelShipment,
    CapturePayment,
    CircuitOpen,
    CommitStock,
    CreateShipment,
    Outcome,
    Rejected,
    ReleaseStock,
    ReserveStock,
    RetryPolicy,
    Saga,
    SagaStatus,
    Step,
    Succeeded,
    Transient,
    advance,
    command_for,
)
from orders.domain.values import OrderLine

POLICY = RetryPolicy(step_timeout_s=10.0, call_timeout_s=3.0, initial_backoff_s=0.1)
T0 = from_micros(1_000_000_000)


def seconds(n: float) -> datetime.timedelta:
    return datetime.timedelta(seconds=n)


S = Step
RUNNING, COMPENSATING = SagaStatus.RUNNING, SagaStatus.COMPENSATING
CONFIRMED, CANCELLED = SagaStatus.CONFIRMED, SagaStatus.CANCELLED

OK = Succeeded(payment_id="pay-1", shipment_id="shp-1", tracking_number="TRK1")
NO = Rejected("nope")
DOWN = Transient("UNAVAILABLE: connection refused")


def saga_at(step: Step, status: SagaStatus = RUNNING, comps: tuple[Step, ...] = ()) -> Saga:
    saga = Saga.start("o-1", "tok_visa", T0)
    return replace(saga, step=step, status=status, compensations=comps, reason="why")


def at(saga: Saga, outcome: Outcome, *, timed_out: bool) -> tuple[Saga, list[type]]:
    """Advance ``saga`` before its step deadline, or just after it."""
    now = T0 + seconds(POLICY.step_timeout_s if timed_out else 1.0)
    result = advance(saga, outcome, now, POLICY)
    return result.saga, [type(e) for e in result.events]


# (step, outcome, timed out?) -> (status, next step, compensations left, event types)
FORWARD_TABLE = [
    # reserve stock: nothing ran before it
    (S.RESERVE_STOCK, OK, False, RUNNING, S.AUTHORIZE_PAYMENT, (), [OrderStockReserved]),
    (S.RESERVE_STOCK, NO, False, CANCELLED, None, (), [OrderCancelled]),
    (S.RESERVE_STOCK, DOWN, False, RUNNING, S.RESERVE_STOCK, (), []),
    (S.RESERVE_STOCK, DOWN, True, COMPENSATING, S.RELEASE_STOCK, (S.RELEASE_STOCK,), []),
    # authorize payment
    (S.AUTHORIZE_PAYMENT, OK, False, RUNNING, S.CREATE_SHIPMENT, (), [OrderPaymentAuthorized]),
    (S.AUTHORIZE_PAYMENT, NO, False, COMPENSATING, S.RELEASE_STOCK, (S.RELEASE_STOCK,), []),
    (S.AUTHORIZE_PAYMENT, DOWN, False, RUNNING, S.AUTHORIZE_PAYMENT, (), []),
    (
        S.AUTHORIZE_PAYMENT, DOWN, True, COMPENSATING, S.CANCEL_PAYMENT,
        (S.CANCEL_PAYMENT, S.RELEASE_STOCK), [],
    ),
    # create shipment
    (S.CREATE_SHIPMENT, OK, False, RUNNING, S.CAPTURE_PAYMENT, (), [OrderShipmentCreated]),
    (
        S.CREATE_SHIPMENT, NO, False, COMPENSATING, S.CANCEL_PAYMENT,
        (S.CANCEL_PAYMENT, S.RELEASE_STOCK), [],
    ),
    (S.CREATE_SHIPMENT, DOWN, False, RUNNING, S.CREATE_SHIPMENT, (), []),
    (
        S.CREATE_SHIPMENT, DOWN, True, COMPENSATING, S.CANCEL_SHIPMENT,
        (S.CANCEL_SHIPMENT, S.CANCEL_PAYMENT, S.RELEASE_STOCK), [],
    ),
    # capture payment: the pivot
    (S.CAPTURE_PAYMENT, OK, False, RUNNING, S.COMMIT_STOCK, (), [OrderPaymentCaptured]),
    (
        S.CAPTURE_PAYMENT, NO, False, COMPENSATING, S.CANCEL_SHIPMENT,
        (S.CANCEL_SHIPMENT, S.CANCEL_PAYMENT, S.RELEASE_STOCK), [],
    ),
    (S.CAPTURE_PAYMENT, DOWN, False, RUNNING, S.CAPTURE_PAYMENT, (), []),
    (
        S.CAPTURE_PAYMENT, DOWN, True, COMPENSATING, S.CANCEL_PAYMENT,
        (S.CANCEL_PAYMENT, S.CANCEL_SHIPMENT, S.RELEASE_STOCK), [],
    ),
    # commit stock: past the pivot, a timeout does not compensate, a refusal refunds
    (S.COMMIT_STOCK, OK, False, CONFIRMED, None, (), [OrderConfirmed]),
    (
        S.COMMIT_STOCK, NO, False, COMPENSATING, S.CANCEL_PAYMENT,
        (S.CANCEL_PAYMENT, S.CANCEL_SHIPMENT, S.RELEASE_STOCK), [],
    ),
    (S.COMMIT_STOCK, DOWN, False, RUNNING, S.COMMIT_STOCK, (), []),
    (S.COMMIT_STOCK, DOWN, True, RUNNING, S.COMMIT_STOCK, (), []),
]  # fmt: skip


@pytest.mark.parametrize(
    ("step", "outcome", "timed_out", "status", "next_step", "comps", "events"),
    FORWARD_TABLE,
    ids=[f"{r[0].value}-{type(r[1]).__name__}{'-timeout' if r[2] else ''}" for r in FORWARD_TABLE],
)
def test_forward_step_outcomes(
    step: Step,
    outcome: Outcome,
    timed_out: bool,
    status: SagaStatus,
    next_step: Step | None,
    comps: tuple[Step, ...],
    events: list[type],
) -> None:
    saga, emitted = at(saga_at(step), outcome, timed_out=timed_out)
    assert (saga.status, saga.step, saga.compensations, emitted) == (
        status,
        next_step,
        comps,
        events,
    )
    if isinstance(outcome, Transient) and status is RUNNING:
        # A retry: same step, one more attempt, due after the first backoff, error kept.
        assert (saga.attempt, saga.last_error) == (1, DOWN.error)
        assert saga.next_attempt_at == T0 + seconds((10.0 if timed_out else 1.0) + 0.1)
        assert saga.step_started_at == T0, "the step's deadline does not move on a retry"
    else:
        assert saga.attempt == 0 and saga.next_attempt_at == saga.updated_at, "due at once"
    # The token is for authorizing (and replaying that to void): a finished saga forgets it.
    assert saga.payment_token == ("" if status in (CONFIRMED, CANCELLED) else "tok_visa")
    if status is COMPENSATING or status is CANCELLED:
        assert saga.reason.startswith(step.value.lower().replace("_", " ") + ":")
        if timed_out:
            assert "no answer within 10s" in saga.reason and DOWN.error in saga.reason


COMPENSATIONS = (S.CANCEL_SHIPMENT, S.CANCEL_PAYMENT, S.RELEASE_STOCK)


@pytest.mark.parametrize("step", COMPENSATIONS, ids=lambda s: s.value)
@pytest.mark.parametrize(
    ("outcome", "timed_out"), [(NO, False), (DOWN, False), (DOWN, True)], ids=str
)
def test_compensations_retry_every_failure_and_never_give_up(
    step: Step, outcome: Outcome, timed_out: bool
) -> None:
    comps = COMPENSATIONS[COMPENSATIONS.index(step) :]
    saga, events = at(saga_at(step, COMPENSATING, comps), outcome, timed_out=timed_out)
    assert (saga.status, saga.step, saga.compensations, events) == (COMPENSATING, step, comps, [])
    assert saga.attempt == 1 and saga.next_attempt_at > saga.updated_at


@pytest.mark.parametrize("step", COMPENSATIONS, ids=lambda s: s.value)
def test_a_compensation_done_moves_to_the_next_or_cancels(step: Step) -> None:
    comps = COMPENSATIONS[COMPENSATIONS.index(step) :]
    result = advance(saga_at(step, COMPENSATING, comps), OK, T0 + seconds(1), POLICY)
    if len(comps) > 1:
        assert (result.saga.status, result.saga.step) == (COMPENSATING, comps[1])
        assert result.events == ()
    else:
        assert (result.saga.status, result.saga.step) == (CANCELLED, None)
        assert result.events == (OrderCancelled("o-1", T0 + seconds(1), "why"),)
        assert result.saga.payment_token == "", "a finished saga keeps no payment token"


def test_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(initial_backoff_s=0.1, multiplier=2.0, max_backoff_s=1.0)
    assert [policy.backoff(n) for n in range(1, 7)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


def test_call_timeout_never_outlives_the_step() -> None:
    saga = saga_at(S.AUTHORIZE_PAYMENT)
    assert POLICY.call_timeout(saga, T0) == 3.0
    assert POLICY.call_timeout(saga, T0 + seconds(8.5)) == pytest.approx(1.5)
    assert POLICY.call_timeout(saga, T0 + seconds(30)) == POLICY.min_call_timeout_s
    past_pivot = saga_at(S.COMMIT_STOCK)
    assert POLICY.call_timeout(past_pivot, T0 + seconds(30)) == 3.0


def test_finished_sagas_do_not_advance() -> None:
    done = replace(saga_at(S.RESERVE_STOCK), status=CONFIRMED, step=None)
    with pytest.raises(ValueError, match="nothing to advance"):
        advance(done, OK, T0, POLICY)


def test_resumed_saga_is_due_and_its_step_clock_restarts() -> None:
    saga = replace(saga_at(S.CAPTURE_PAYMENT), attempt=3, next_attempt_at=T0 + seconds(50))
    resumed = saga.resumed(T0 + seconds(100))
    assert (resumed.step_started_at, resumed.next_attempt_at, resumed.attempt) == (
        T0 + seconds(100),
        T0 + seconds(100),
        3,
    )


ADDRESS = Address("Ada", "1 Main St", "Berlin", "10115", "DE")


def placed_order() -> Order:
    lines = [
        OrderLine("mug", 2, Money.of("EUR", 12, 500_000_000)),
        OrderLine("cap", 1, Money.of("EUR", 5)),
    ]
    order = Order.place(
        "o-1",
        request_id="r-1",
        customer_id="c-1",
        lines=lines,
        shipping_address=ADDRESS,
        now=T0,
    )
    order.record(OrderPaymentAuthorized("o-1", T0, "pay-1"))
    order.record(OrderShipmentCreated("o-1", T0, "shp-1", "TRK1"))
    return order


def test_every_step_calls_its_participant_with_its_idempotency_key() -> None:
    order = placed_order()
    items = (("mug", 2), ("cap", 1))
    authorize = AuthorizePayment("o-1:authorize", "o-1", Money.of("EUR", 30), "tok_visa")
    create = CreateShipment("o-1:create-shipment", "o-1", ADDRESS, items)
    expected = {
        S.RESERVE_STOCK: ReserveStock("o-1", items),
        S.AUTHORIZE_PAYMENT: authorize,
        S.CREATE_SHIPMENT: create,
        S.CAPTURE_PAYMENT: CapturePayment("o-1:capture", "pay-1"),
        S.COMMIT_STOCK: CommitStock("o-1"),
        S.CANCEL_SHIPMENT: CancelShipment("o-1:cancel-shipment", "shp-1", create),
        S.CANCEL_PAYMENT: CancelPayment("o-1:void", "o-1:refund", "pay-1", authorize),
        S.RELEASE_STOCK: ReleaseStock("o-1"),
    }
    for step, command in expected.items():
        assert command_for(saga_at(step), order) == command, step


def test_a_happy_run_end_to_end_through_the_order() -> None:
    order = Order.place(
        "o-1",
        request_id="r-1",
        customer_id="c-1",
        lines=[OrderLine("mug", 1, Money.of("EUR", 3))],
        shipping_address=ADDRESS,
        now=T0,
    )
    saga, now = Saga.start("o-1", "tok_visa", T0), T0
    while saga.is_live:
        now += seconds(1)
        result = advance(saga, OK, now, POLICY)
        for event in result.events:
            order.record(event)
        saga = result.saga
    assert saga.status is CONFIRMED
    assert (order.status.value, order.version, order.payment_id, order.shipment_id) == (
        "CONFIRMED",
        6,
        "pay-1",
        "shp-1",
    )


# ----------------------------------------------------------------------------------------------
# an open circuit breaker parks the step (issue 15: graceful degradation)
# ----------------------------------------------------------------------------------------------

OPEN = CircuitOpen(
    "payments",
    4.0,
    "UNAVAILABLE: circuit breaker for 'payments' is open (10 of the last 10 calls failed);"
    " next trial in 4.0s",
)
PARKS_EVERYWHERE = [*FORWARD, *COMPENSATIONS]


@pytest.mark.parametrize("step", PARKS_EVERYWHERE, ids=lambda s: s.value)
def test_an_open_breaker_parks_the_step_without_spending_an_attempt(step: Step) -> None:
    compensating = step in COMPENSATIONS
    before = replace(
        saga_at(step, COMPENSATING if compensating else RUNNING, (step,) if compensating else ()),
        attempt=2,
        last_error="UNAVAILABLE: connection refused",
    )
    now = T0 + seconds(3)
    result = advance(before, OPEN, now, POLICY)
    parked = result.saga
    assert result.events == ()
    assert (parked.status, parked.step, parked.compensations, parked.attempt) == (
        before.status,
        step,
        before.compensations,
        2,  # the call was not made: no attempt spent
    )
    assert parked.next_attempt_at == now + seconds(4.0), "due at the breaker's next trial"
    assert parked.step_started_at == T0 + seconds(4.0), "the step's clock stopped meanwhile"
    assert parked.last_error == PARKED + OPEN.detail and parked.parked
    assert not before.parked


def test_a_step_parked_past_its_deadline_does_not_compensate_and_resumes() -> None:
    saga, now = saga_at(S.AUTHORIZE_PAYMENT), T0
    saga = advance(saga, DOWN, now + seconds(1), POLICY).saga  # a real failure first
    for _ in range(10):  # 40 s of an open breaker: four times the step's 10 s timeout
        now = saga.next_attempt_at
        saga = advance(saga, OPEN, now, POLICY).saga
        assert (saga.status, saga.step, saga.attempt) == (RUNNING, S.AUTHORIZE_PAYMENT, 1)
    now = saga.next_attempt_at
    # The breaker lets a trial through and it fails: a retry, not a compensation...
    retried = advance(saga, DOWN, now, POLICY).saga
    assert (retried.status, retried.attempt, retried.parked) == (RUNNING, 2, False)
    assert POLICY.call_timeout(retried, now) == 3.0, "the step still has its time"
    # ...and when it succeeds the saga goes on as if nothing happened.
    result = advance(saga, OK, now, POLICY)
    assert (result.saga.status, result.saga.step, result.saga.last_error) == (
        RUNNING,
        S.CREATE_SHIPMENT,
        "",
    )
    assert [type(e) for e in result.events] == [OrderPaymentAuthorized]


def test_a_half_open_breaker_saying_zero_seconds_still_parks_for_a_while() -> None:
    busy = CircuitOpen("payments", 0.0, "its trial calls are in flight")
    parked = advance(saga_at(S.AUTHORIZE_PAYMENT), busy, T0, POLICY).saga
    assert parked.next_attempt_at == T0 + seconds(POLICY.min_park_s)


def test_an_old_saga_no_longer_parks_before_its_pivot() -> None:
    policy = replace(POLICY, park_limit_s=60.0)
    old = saga_at(S.CREATE_SHIPMENT)  # started at T0, its step too: the deadline is gone
    late = T0 + seconds(61)
    result = advance(old, OPEN, late, policy)
    assert (result.saga.status, result.saga.step) == (COMPENSATING, S.CANCEL_SHIPMENT)
    assert "parked for too long" in result.saga.reason
    young = advance(old, OPEN, T0 + seconds(59), policy).saga
    assert young.parked and young.status is RUNNING
    # Past the pivot there is nothing to give up for: it parks however old.
    committing = advance(saga_at(S.COMMIT_STOCK), OPEN, late, policy).saga
    assert committing.parked and (committing.status, committing.attempt) == (RUNNING, 0)
