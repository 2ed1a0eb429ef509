"""Payments' use cases against an in-memory fake and against SQLite: one suite, both stores.

The SQLite flavour writes events through the REAL meshkit Outbox against an in-process schema
registry holding proto/shop/payments/v1/avro (registered by the real `register-all`), so every
event the use cases emit is checked against its Avro contract and read back from the outbox.
"""

from __future__ import annotations

import copy
import datetime
import io
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import fastavro
import pytest
from support.registry import run_cli

from meshkit import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from meshkit.db import Database
from meshkit.events import EventCatalog, EventPublisher, Outbox
from meshkit.money import Money, minor_units
from payments.adapters.events import EVENTS
from payments.adapters.sqlite import MIGRATIONS, SqliteUnitOfWork
from payments.app.payments import Payments
from payments.app.ports import PaymentResult
from payments.bootstrap import SERVICE
from payments.domain.events import (
    PaymentAuthorized,
    PaymentCaptured,
    PaymentDeclined,
    PaymentEvent,
    PaymentRefunded,
    PaymentVoided,
)
from payments.domain.model import CURRENCIES, Payment, PaymentStatus
from shop.common.v1 import common_pb2

REPO = Path(__file__).resolve().parents[3]
AVRO = REPO / "proto" / "shop" / "payments" / "v1" / "avro"
SOURCE = SERVICE.source


def wire(currency_code: str, units: int, nanos: int = 0) -> common_pb2.Money:
    """An amount exactly as a request carries it (the wire message), not validated yet."""
    return common_pb2.Money(currency_code=currency_code, units=units, nanos=nanos)


EUR_12_30 = wire("EUR", 12, 300_000_000)


# ---------------------------------------------------------------------------------------------
# The in-memory fake
# ---------------------------------------------------------------------------------------------


class FakeStore:
    """Committed state of the fake: what a database would hold."""

    def __init__(self) -> None:
        self.payments: dict[str, Payment] = {}
        self.keys: dict[str, PaymentResult] = {}
        self.events: list[PaymentEvent] = []
        self.lock = threading.Lock()


class FakePayments:
    def __init__(self, items: dict[str, Payment]) -> None:
        self.items = items

    def get(self, payment_id: str) -> Payment | None:
        return copy.deepcopy(self.items.get(payment_id))

    def add(self, payment: Payment) -> None:
        assert payment.payment_id not in self.items
        self.items[payment.payment_id] = copy.deepcopy(payment)

    def save(self, payment: Payment) -> None:
        assert payment.payment_id in self.items
        self.items[payment.payment_id] = copy.deepcopy(payment)


class FakeIdempotency:
    def __init__(self, items: dict[str, PaymentResult]) -> None:
        self.items = items

    def get(self, key: str) -> PaymentResult | None:
        return copy.deepcopy(self.items.get(key))

    def add(self, result: PaymentResult) -> None:
        assert result.key not in self.items
        self.items[result.key] = copy.deepcopy(result)


class FakeUnitOfWork:
    """Works on copies, publishes them on a clean exit, serialised like BEGIN IMMEDIATE."""

    def __init__(self, store: FakeStore) -> None:
        self._store = store

    def __enter__(self) -> Self:
        self._store.lock.acquire()
        self.payments = FakePayments(copy.deepcopy(self._store.payments))
        self.idempotency = FakeIdempotency(copy.deepcopy(self._store.keys))
        self.pending: list[PaymentEvent] = []
        return self

    def publish(self, event: PaymentEvent, *, event_id: str | None = None) -> None:
        self.pending.append(event)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                self._store.payments = self.payments.items
                self._store.keys = self.idempotency.items
                self._store.events += self.pending
        finally:
            self._store.lock.release()


# ---------------------------------------------------------------------------------------------
# Harness: the use cases plus what they committed (payments and published events)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Published:
    """One committed event, as a consumer would see it."""

    type: str
    key: str
    record: dict[str, Any]


class FixedClock:
    """A clock tests move by hand, so timestamps are predictable."""

    def __init__(self) -> None:
        self.now = datetime.datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=datetime.UTC)

    def __call__(self) -> datetime.datetime:
        return self.now

    def tick(self, seconds: float = 1.0) -> None:
        self.now += datetime.timedelta(seconds=seconds)


@dataclass
class Harness:
    payments: Payments
    published: Callable[[], list[Published]]
    payment_count: Callable[[], int]
    clock: FixedClock
    reopen: Callable[[], Payments] | None = None


@pytest.fixture(scope="module")
def registry_url() -> Iterator[str]:
    """An in-process schema registry with the payments contracts registered, as `mesh up` does."""
    from schema_registry.server import running_server
    from schema_registry.storage import MemoryStorage

    storage = MemoryStorage()
    with running_server(storage) as url:
        result = run_cli("register-all", str(AVRO), url=url)
        assert result.returncode == 0, result.stdout + result.stderr
        yield url
    storage.close()


@pytest.fixture(scope="module")
def outbox(registry_url: str) -> Outbox:
    return Outbox(EventCatalog.load(AVRO), registry_url, source=SOURCE)


def _normalise(event_type: str, key: str, record: dict[str, Any]) -> Published:
    record = dict(record)
    moment = record.pop("occurred_at")
    assert isinstance(moment, datetime.datetime) and moment.tzinfo is not None
    return Published(event_type, key, record)


def _read_outbox(db: Database) -> list[Published]:
    catalog = EventCatalog.load(AVRO)
    by_topic_name = {t.full_name: t for t in catalog}
    out = []
    with db.snapshot() as conn:
        rows = conn.execute("SELECT topic, key, value, headers FROM meshkit_outbox ORDER BY id")
        for row in rows.fetchall():
            headers = dict(json.loads(row["headers"]))
            event_type = by_topic_name[headers["ce_type"]]
            assert row["topic"] == "payments.events.v1" == event_type.topic
            assert headers["ce_subject"] == row["key"]
            assert headers["ce_source"] == SOURCE
            value = bytes(row["value"])
            assert value[0] == 0, "Confluent wire format: magic byte 0"
            record = fastavro.schemaless_reader(io.BytesIO(value[5:]), event_type.parsed)
            assert isinstance(record, dict)
            out.append(_normalise(event_type.full_name, row["key"], record))
    return out


@pytest.fixture(params=["fake", "sqlite"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    clock = FixedClock()
    ids = (f"pay_{n:04d}" for n in range(1, 10_000))
    if request.param == "fake":
        store = FakeStore()
        yield Harness(
            Payments(lambda: FakeUnitOfWork(store), clock=clock, new_id=lambda: next(ids)),
            lambda: [
                _normalise(EVENTS.type_of(e), EVENTS.key_of(e), EVENTS.to_record(e))
                for e in store.events
            ],
            lambda: len(store.payments),
            clock,
        )
        return
    box = EventPublisher(request.getfixturevalue("outbox"), EVENTS)
    path = tmp_path / "payments.db"
    dbs = [Database(path, MIGRATIONS)]

    def make(db: Database) -> Payments:
        return Payments(lambda: SqliteUnitOfWork(db, box), clock=clock, new_id=lambda: next(ids))

    def reopen() -> Payments:
        # What a restart after kill -9 sees: a new process, a new connection, the same file.
        dbs.append(Database(path, MIGRATIONS))
        return make(dbs[-1])

    def count() -> int:
        with dbs[-1].snapshot() as conn:
            return int(conn.execute("SELECT count(*) FROM payments").fetchone()[0])

    yield Harness(make(dbs[0]), lambda: _read_outbox(dbs[-1]), count, clock, reopen)
    for db in dbs:
        db.close()


def authorize(h: Harness, key: str = "k-auth", token: str = "tok_visa", **kw: Any) -> Payment:
    return h.payments.authorize(
        key, kw.get("order_id", "order-1"), kw.get("amount", EUR_12_30), token
    )


def amount_record(units: int, nanos: int, code: str = "EUR") -> dict[str, Any]:
    return {"units": units, "nanos": nanos, "currency_code": code}


# ---------------------------------------------------------------------------------------------
# Tokens
# ---------------------------------------------------------------------------------------------


def test_tok_visa_authorizes_and_publishes_payment_authorized(harness: Harness) -> None:
    payment = authorize(harness)
    assert payment.status is PaymentStatus.AUTHORIZED
    assert payment.decline_reason == ""
    assert (payment.payment_id, payment.order_id) == ("pay_0001", "order-1")
    assert payment.amount == Money.of("EUR", 12, 300_000_000)
    assert payment.created_at == payment.updated_at == harness.clock.now
    assert harness.payments.get("pay_0001") == payment
    assert harness.published() == [
        Published(
            "shop.payments.v1.PaymentAuthorized",
            "order-1",
            {
                "payment_id": "pay_0001",
                "order_id": "order-1",
                "amount": amount_record(12, 3 * 10**8),
            },
        )
    ]


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("tok_chargeDeclined", "generic_decline"),
        ("tok_chargeDeclinedInsufficientFunds", "insufficient_funds"),
        ("tok_chargeDeclinedExpiredCard", "expired_card"),
    ],
)
def test_decline_tokens_answer_declined_with_a_reason(
    harness: Harness, token: str, reason: str
) -> None:
    payment = authorize(harness, token=token)
    assert payment.status is PaymentStatus.DECLINED
    assert payment.decline_reason == reason
    assert harness.published() == [
        Published(
            "shop.payments.v1.PaymentDeclined",
            "order-1",
            {
                "payment_id": payment.payment_id,
                "order_id": "order-1",
                "amount": amount_record(12, 3 * 10**8),
                "decline_reason": reason,
            },
        )
    ]


@pytest.mark.parametrize("token", ["tok_mastercard", "tok_amex"])
def test_other_approving_tokens(harness: Harness, token: str) -> None:
    assert authorize(harness, token=token).status is PaymentStatus.AUTHORIZED


@pytest.mark.parametrize(
    ("token", "says"),
    [
        ("tok_vsia", "unknown test token 'tok_vsia'; known: tok_amex"),
        ("4242424242424242", "must be a test token such as 'tok_visa'"),
        ("tok_", "must be a test token"),
        ("tok_visa ", "must be a test token"),
        ("", "must not be empty"),
    ],
)
def test_unknown_or_malformed_tokens_are_invalid_not_declined(
    harness: Harness, token: str, says: str
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        authorize(harness, token=token)
    [violation] = raised.value.violations
    assert violation.field == "payment_token"
    assert says in violation.description
    assert harness.payment_count() == 0
    assert harness.published() == []


# ---------------------------------------------------------------------------------------------
# Transitions
# ---------------------------------------------------------------------------------------------


def test_authorize_capture_refund(harness: Harness) -> None:
    payment = authorize(harness)
    harness.clock.tick()
    captured = harness.payments.capture("k-cap", payment.payment_id)
    assert captured.status is PaymentStatus.CAPTURED
    assert captured.updated_at == harness.clock.now != captured.created_at
    harness.clock.tick()
    refunded = harness.payments.refund("k-ref", payment.payment_id)
    assert refunded.status is PaymentStatus.REFUNDED
    assert harness.payments.get(payment.payment_id) == refunded
    assert [p.type.rsplit(".", 1)[1] for p in harness.published()] == [
        "PaymentAuthorized",
        "PaymentCaptured",
        "PaymentRefunded",
    ]
    assert {p.key for p in harness.published()} == {"order-1"}


def test_authorize_void(harness: Harness) -> None:
    payment = authorize(harness)
    voided = harness.payments.void("k-void", payment.payment_id)
    assert voided.status is PaymentStatus.VOIDED
    assert harness.published()[-1] == Published(
        "shop.payments.v1.PaymentVoided",
        "order-1",
        {"payment_id": "pay_0001", "order_id": "order-1", "amount": amount_record(12, 3 * 10**8)},
    )


def _in_state(h: Harness, state: str) -> str:
    """A payment id in ``state`` (reached through the use cases)."""
    token = "tok_chargeDeclined" if state == "DECLINED" else "tok_visa"
    payment_id = authorize(h, key=f"setup-{state}", token=token).payment_id
    steps = {
        "CAPTURED": ["capture"],
        "REFUNDED": ["capture", "refund"],
        "VOIDED": ["void"],
    }.get(state, [])
    for step in steps:
        getattr(h.payments, step)(f"setup-{state}-{step}", payment_id)
    return payment_id


@pytest.mark.parametrize(
    ("state", "action", "hint"),
    [
        ("DECLINED", "capture", ""),
        ("DECLINED", "void", ""),
        ("DECLINED", "refund", ""),
        ("AUTHORIZED", "refund", "void it instead"),
        ("CAPTURED", "capture", ""),
        ("CAPTURED", "void", "refund it instead"),
        ("VOIDED", "capture", ""),
        ("VOIDED", "void", ""),
        ("VOIDED", "refund", ""),
        ("REFUNDED", "capture", ""),
        ("REFUNDED", "void", ""),
        ("REFUNDED", "refund", ""),
    ],
)
def test_illegal_transitions_are_failed_precondition(
    harness: Harness, state: str, action: str, hint: str
) -> None:
    payment_id = _in_state(harness, state)
    before = harness.payments.get(payment_id)
    published = harness.published()
    with pytest.raises(FailedPrecondition) as raised:
        getattr(harness.payments, action)("k-illegal", payment_id)
    error = raised.value
    assert error.reason == f"PAYMENT_{state}"
    assert error.metadata == {"payment_id": payment_id, "status": state, "action": action}
    assert f"cannot {action} payment {payment_id!r}: it is {state.lower()}" in error.message
    assert hint in error.message
    assert [v.type for v in error.violations] == ["PAYMENT_STATUS"]
    assert harness.payments.get(payment_id) == before
    assert harness.published() == published
    # The failed call recorded nothing under its key: the key is still free.
    fresh = authorize(harness, key="k-illegal", order_id="order-2")
    assert fresh.status is PaymentStatus.AUTHORIZED


@pytest.mark.parametrize("action", ["capture", "void", "refund"])
def test_transitions_of_an_unknown_payment_are_not_found(harness: Harness, action: str) -> None:
    with pytest.raises(NotFound) as raised:
        getattr(harness.payments, action)("k", "pay_nope")
    assert raised.value.reason == "PAYMENT_NOT_FOUND"
    assert raised.value.metadata == {"payment_id": "pay_nope"}


def test_get_unknown_is_not_found_and_empty_id_invalid(harness: Harness) -> None:
    with pytest.raises(NotFound):
        harness.payments.get("pay_nope")
    with pytest.raises(InvalidArgument) as raised:
        harness.payments.get("")
    assert [v.field for v in raised.value.violations] == ["payment_id"]


# ---------------------------------------------------------------------------------------------
# Idempotency
# ---------------------------------------------------------------------------------------------


def test_replay_of_authorize_returns_the_first_result_and_acts_once(harness: Harness) -> None:
    first = authorize(harness)
    harness.clock.tick()
    again = authorize(harness)
    assert again == first
    assert harness.payment_count() == 1
    assert len(harness.published()) == 1


def test_replay_of_a_decline_is_the_same_decline(harness: Harness) -> None:
    first = authorize(harness, token="tok_chargeDeclinedInsufficientFunds")
    again = authorize(harness, token="tok_chargeDeclinedInsufficientFunds")
    assert again == first and again.decline_reason == "insufficient_funds"
    assert harness.payment_count() == 1


@pytest.mark.parametrize("action", ["capture", "void"])
def test_replay_of_a_transition_acts_once(harness: Harness, action: str) -> None:
    payment_id = authorize(harness).payment_id
    first = getattr(harness.payments, action)("k-2", payment_id)
    harness.clock.tick()
    again = getattr(harness.payments, action)("k-2", payment_id)
    assert again == first
    assert len(harness.published()) == 2


def test_replay_returns_the_first_result_even_after_later_changes(harness: Harness) -> None:
    authorized = authorize(harness)
    harness.clock.tick()
    captured = harness.payments.capture("k-cap", authorized.payment_id)
    harness.clock.tick()
    harness.payments.refund("k-ref", authorized.payment_id)
    # The saga retrying a call whose answer it lost gets that answer, not today's state.
    assert authorize(harness) == authorized
    assert harness.payments.capture("k-cap", authorized.payment_id) == captured
    assert len(harness.published()) == 3


@pytest.mark.parametrize(
    "other",
    [
        {"order_id": "order-2"},
        {"amount": wire("EUR", 12, 310_000_000)},
        {"amount": wire("USD", 12, 300_000_000)},
        {"token": "tok_chargeDeclined"},
    ],
    ids=["order", "amount", "currency", "token"],
)
def test_same_key_different_authorization_is_already_exists(
    harness: Harness, other: dict[str, Any]
) -> None:
    first = authorize(harness)
    with pytest.raises(AlreadyExists) as raised:
        authorize(harness, **other)
    assert raised.value.reason == "IDEMPOTENCY_KEY_REUSED"
    assert raised.value.metadata == {
        "idempotency_key": "k-auth",
        "operation": "authorize",
        "payment_id": first.payment_id,
    }
    assert harness.payment_count() == 1


def test_keys_are_global_across_operations_and_payments(harness: Harness) -> None:
    one = authorize(harness, key="a1").payment_id
    two = authorize(harness, key="a2", order_id="order-2").payment_id
    harness.payments.capture("shared", one)
    with pytest.raises(AlreadyExists, match="capture of payment 'pay_0001'"):
        harness.payments.capture("shared", two)
    with pytest.raises(AlreadyExists):
        harness.payments.void("shared", one)
    with pytest.raises(AlreadyExists):
        authorize(harness, key="shared")
    assert harness.payments.get(two).status is PaymentStatus.AUTHORIZED


def test_a_rejected_request_does_not_consume_its_key(harness: Harness) -> None:
    with pytest.raises(InvalidArgument):
        authorize(harness, amount=wire("EUR", 0, 0))
    assert authorize(harness).status is PaymentStatus.AUTHORIZED


def test_concurrent_calls_with_one_new_key_act_once(harness: Harness) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: authorize(harness, key="race"), range(8)))
    assert all(r == results[0] for r in results)
    assert harness.payment_count() == 1
    assert len(harness.published()) == 1


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def test_a_bad_authorization_names_every_field(harness: Harness) -> None:
    with pytest.raises(InvalidArgument) as raised:
        harness.payments.authorize("", " ", None, "card")
    assert [v.field for v in raised.value.violations] == [
        "idempotency_key",
        "order_id",
        "amount",
        "payment_token",
    ]
    assert "idempotency_key: must not be empty" in raised.value.message
    assert "amount: is required" in raised.value.message


@pytest.mark.parametrize(
    ("amount", "field", "says"),
    [
        (wire("EUR", 0, 0), "amount", "must be positive"),
        (wire("EUR", -5, 0), "amount", "must be positive"),
        (wire("EUR", 0, -10_000_000), "amount", "must be positive"),
        (wire("eur", 1, 0), "amount.currency_code", "three upper-case letters"),
        (wire("", 1, 0), "amount.currency_code", "three upper-case letters"),
        (wire("EURO", 1, 0), "amount.currency_code", "three upper-case letters"),
        # A real currency the simulated processor does not settle, and a code that is none.
        (wire("KWD", 1, 0), "amount.currency_code", "unsupported currency 'KWD'; supported: AUD"),
        (wire("XXX", 1, 0), "amount.currency_code", "'XXX' is not an ISO 4217 currency"),
        (wire("EUR", 1, 1_000_000_000), "amount.nanos", "between -999999999 and 999999999"),
        (wire("EUR", 1, -1_000_000_000), "amount.nanos", "between"),
        (wire("EUR", 1, -500_000_000), "amount.nanos", "same sign as units"),
        (wire("EUR", 1, 5_000_000), "amount.nanos", "whole multiples of its smallest unit"),
        (wire("JPY", 100, 500_000_000), "amount.nanos", "(JPY 1)"),
        (wire("EUR", 10**9 + 1, 0), "amount.units", "at most 1000000000"),
    ],
)
def test_bad_amounts_name_the_subfield(
    harness: Harness, amount: common_pb2.Money, field: str, says: str
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        authorize(harness, amount=amount)
    assert [v.field for v in raised.value.violations] == [field]
    assert says in raised.value.violations[0].description
    assert harness.payment_count() == 0


def test_several_bad_money_fields_at_once(harness: Harness) -> None:
    with pytest.raises(InvalidArgument) as raised:
        authorize(harness, amount=wire("eur", 1, 2_000_000_000))
    assert [v.field for v in raised.value.violations] == ["amount.currency_code", "amount.nanos"]


@pytest.mark.parametrize("action", ["capture", "void", "refund"])
def test_bad_transition_requests_name_the_fields(harness: Harness, action: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        getattr(harness.payments, action)("", "")
    assert [v.field for v in raised.value.violations] == ["idempotency_key", "payment_id"]
    with pytest.raises(InvalidArgument, match="at most 255"):
        getattr(harness.payments, action)("k" * 256, "pay_1")


# ---------------------------------------------------------------------------------------------
# Money
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "total", "shown"),
    [
        (wire("EUR", 12, 300_000_000), 12_300_000_000, "EUR 12.30"),
        (wire("EUR", 0, 10_000_000), 10_000_000, "EUR 0.01"),
        (wire("JPY", 1500, 0), 1_500_000_000_000, "JPY 1500"),
        (wire("CHF", 999_999_999, 990_000_000), 999_999_999_990_000_000, "CHF 999999999.99"),
    ],
)
def test_money_is_exact_integer_nanos_through_the_store(
    harness: Harness, raw: common_pb2.Money, total: int, shown: str
) -> None:
    payment = authorize(harness, amount=raw)
    assert payment.amount.total_nanos == total
    assert str(payment.amount) == shown
    stored = harness.payments.get(payment.payment_id).amount
    assert (stored.units, stored.nanos, stored.currency_code) == (
        raw.units,
        raw.nanos,
        raw.currency_code,
    )
    assert harness.published()[0].record["amount"] == amount_record(
        raw.units, raw.nanos, raw.currency_code
    )


def test_money_splits_negative_amounts_with_one_sign() -> None:
    money = Money("EUR", -1_250_000_000)
    assert (money.units, money.nanos) == (-1, -250_000_000)
    assert Money.of("EUR", -1, -250_000_000) == money
    assert str(money) == "EUR -1.25"
    assert Money.of("EUR", 1, 0) < Money.of("EUR", 1, 10_000_000)


def test_every_settled_currency_is_iso_4217_with_its_minor_units() -> None:
    assert {code: minor_units(code) for code in CURRENCIES} == {
        **dict.fromkeys(CURRENCIES - {"JPY"}, 2),
        "JPY": 0,
    }


# ---------------------------------------------------------------------------------------------
# Event mapping
# ---------------------------------------------------------------------------------------------


def test_events_map_to_records_keyed_by_the_order_and_back() -> None:
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    amount = Money.of("JPY", 1500)
    events: list[PaymentEvent] = [
        PaymentAuthorized("pay_1", "order-1", amount, now),
        PaymentDeclined("pay_1", "order-1", amount, "expired_card", now),
        PaymentCaptured("pay_1", "order-1", amount, now),
        PaymentVoided("pay_1", "order-1", amount, now),
        PaymentRefunded("pay_1", "order-1", amount, now),
    ]
    assert EVENTS.types == {f"shop.payments.v1.{type(e).__name__}" for e in events}
    for event in events:
        name = EVENTS.type_of(event)
        assert name == f"shop.payments.v1.{type(event).__name__}"
        assert EVENTS.key_of(event) == "order-1"
        record = EVENTS.to_record(event)
        assert record["amount"] == amount_record(1500, 0, "JPY")
        assert EVENTS.event(name, record) == event


# ---------------------------------------------------------------------------------------------
# SQLite only: durability and atomicity
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("harness", ["sqlite"], indirect=True)
def test_replays_survive_a_restart(harness: Harness) -> None:
    h = harness
    first = authorize(h)
    captured = h.payments.capture("k-cap", first.payment_id)
    assert h.reopen is not None
    restarted = h.reopen()
    assert restarted.authorize("k-auth", "order-1", EUR_12_30, "tok_visa") == first
    assert restarted.capture("k-cap", first.payment_id) == captured
    with pytest.raises(AlreadyExists):
        restarted.authorize("k-auth", "order-1", EUR_12_30, "tok_amex")
    assert h.payment_count() == 1
    assert len(h.published()) == 2


class BrokenOutbox:
    """An outbox whose append fails, as when the registry is unreachable."""

    def publish(
        self, conn: sqlite3.Connection, event: PaymentEvent, *, event_id: str | None = None
    ) -> None:
        raise RuntimeError("registry down")


def test_a_failed_outbox_write_rolls_back_state_and_key(tmp_path: Path, outbox: Outbox) -> None:
    db = Database(tmp_path / "p.db", MIGRATIONS)
    try:
        broken = Payments(lambda: SqliteUnitOfWork(db, BrokenOutbox()))
        with pytest.raises(RuntimeError):
            broken.authorize("k", "order-1", EUR_12_30, "tok_visa")
        working = Payments(lambda: SqliteUnitOfWork(db, EventPublisher(outbox, EVENTS)))
        payment = working.authorize("k", "order-1", EUR_12_30, "tok_visa")
        assert payment.status is PaymentStatus.AUTHORIZED
        with db.snapshot() as conn:
            assert conn.execute("SELECT count(*) FROM payments").fetchone()[0] == 1
            assert conn.execute("SELECT count(*) FROM idempotency_keys").fetchone()[0] == 1
            assert conn.execute("SELECT count(*) FROM meshkit_outbox").fetchone()[0] == 1
    finally:
        db.close()
