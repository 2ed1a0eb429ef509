"""Identity's Accounts use cases over a real SQLite store, with argon2's cheapest parameters and
a clock the test moves: lockout over time, the 100-failure hard lock, TOTP replay, sessions."""

from __future__ import annotations

from pathlib import Path

import pyotp
import pytest

from identity.adapters import recovery, totp
from identity.adapters.hashing import PasswordHasher
from identity.adapters.sqlite import MIGRATIONS, SqliteUnitOfWork
from identity.app.accounts import BAD_CREDENTIALS, Accounts, LoginRefused
from identity.domain import events
from identity.domain.model import MAX_CONSECUTIVE_FAILURES, Principal
from identity.domain.passwords import PasswordPolicy
from meshkit.db import Database

PASSWORD = "correct horse battery staple"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    """The event sink: what the units of work published, in order."""

    def __init__(self) -> None:
        self.published: list[object] = []

    def publish(self, conn: object, event: object, *, event_id: str | None = None) -> None:
        self.published.append(event)


@pytest.fixture
def world(tmp_path: Path) -> tuple[Accounts, Clock, Recorder, Database]:
    db = Database(tmp_path / "identity.db", MIGRATIONS)
    sink, clock = Recorder(), Clock()
    accounts = Accounts(
        lambda: SqliteUnitOfWork(db, sink),
        lambda: SqliteUnitOfWork(db, sink, read_only=True),
        hasher=PasswordHasher.for_tests(),
        totp=totp,
        recovery=recovery,
        policy=PasswordPolicy(),
        totp_issuer="test",
        clock=clock,
    )
    yield accounts, clock, sink, db
    db.close()


def _login(accounts: Accounts, password: str, otp: str = "", source: str = "10.0.0.1") -> str:
    return accounts.login("ann@example.com", password, otp, source=source, device="t").cookie


def test_failures_spread_out_never_lock_by_time_but_the_hundredth_locks_for_good(
    world: tuple[Accounts, Clock, Recorder, Database],
) -> None:
    accounts, clock, sink, _ = world
    accounts.register("ann@example.com", PASSWORD)
    for attempt in range(MAX_CONSECUTIVE_FAILURES):
        clock.now += 3600  # one an hour: never 5 within 15 minutes
        with pytest.raises(LoginRefused) as refused:
            _login(accounts, f"wrong {attempt}", source=f"10.0.{attempt}.1")
        assert refused.value.message == BAD_CREDENTIALS
    locked = [e for e in sink.published if isinstance(e, events.AccountLocked)]
    assert [(e.failures, e.locked_until) for e in locked] == [(MAX_CONSECUTIVE_FAILURES, None)]
    # From now on even the right password gets the generic answer: nothing is revealed.
    clock.now += 86400
    with pytest.raises(LoginRefused) as refused:
        _login(accounts, PASSWORD)
    assert (refused.value.reason, refused.value.message) == ("locked", BAD_CREDENTIALS)


def test_the_operators_unlock_lets_the_owner_back_in(
    world: tuple[Accounts, Clock, Recorder, Database],
) -> None:
    accounts, clock, _, db = world
    user_id = accounts.register("ann@example.com", PASSWORD)
    for attempt in range(MAX_CONSECUTIVE_FAILURES):
        clock.now += 3600
        with pytest.raises(LoginRefused):
            _login(accounts, f"wrong {attempt}", source=f"10.0.{attempt}.1")
    with SqliteUnitOfWork(db) as uow:  # what `python -m identity.admin unlock` does
        uow.store.clear_failures(user_id)
    assert _login(accounts, PASSWORD)


def test_five_quick_failures_lock_and_only_the_right_password_hears_it(
    world: tuple[Accounts, Clock, Recorder, Database],
) -> None:
    accounts, clock, sink, _ = world
    accounts.register("ann@example.com", PASSWORD)
    for attempt in range(5):
        clock.now += 10
        with pytest.raises(LoginRefused):
            _login(accounts, f"wrong {attempt}")
    with pytest.raises(LoginRefused) as wrong:
        _login(accounts, "still wrong")
    assert wrong.value.message == BAD_CREDENTIALS
    with pytest.raises(LoginRefused) as right:
        _login(accounts, PASSWORD)
    assert right.value.reason == "locked" and "locked" in right.value.message
    locked = [e for e in sink.published if isinstance(e, events.AccountLocked)]
    assert len(locked) == 1 and locked[0].locked_until is not None
    clock.now += 4 * 3600  # the timed lock lifts by itself
    assert _login(accounts, PASSWORD)


def test_a_totp_code_logs_in_once(world: tuple[Accounts, Clock, Recorder, Database]) -> None:
    accounts, clock, _, _ = world
    user_id = accounts.register("ann@example.com", PASSWORD)
    caller = Principal(user_id, "shop-web", "", ("customer",), None, "jti")
    enrollment = accounts.begin_mfa(caller, PASSWORD)
    code = pyotp.TOTP(enrollment.secret).at(clock.now)
    codes = accounts.confirm_mfa(caller, code)
    assert len(codes) == 10
    clock.now += 30
    fresh = pyotp.TOTP(enrollment.secret).at(clock.now)
    with pytest.raises(LoginRefused) as asked:
        _login(accounts, PASSWORD)
    assert asked.value.reason == "otp_required"
    assert _login(accounts, PASSWORD, fresh)
    with pytest.raises(LoginRefused):
        _login(accounts, PASSWORD, fresh)  # the same code again (RFC 6238 §5.2)
    assert _login(accounts, PASSWORD, codes[0])  # a recovery code, once
    with pytest.raises(LoginRefused):
        _login(accounts, PASSWORD, codes[0])
