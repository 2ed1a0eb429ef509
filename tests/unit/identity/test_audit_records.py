"""Identity's audit records (issue 14, item 5): each important action publishes one AuditEntry in
the same unit of work as the change (or the identity event beside it), naming who acted, from
where, with what outcome, and never a password, token, TOTP or recovery code, or cookie."""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest
from unit.identity.world import World

from identity.app.accounts import LoginRefused
from identity.app.oauth import OAuthError, s256
from identity.domain import events
from identity.domain.model import Principal
from meshkit.audit import AuditEntry, to_record

PASSWORD = "correct horse battery staple"
EMAIL = "ann@example.com"
WEB = "10.1.2.3"  # the browser's address, as the HTTP side passes it
REDIRECT = "http://127.0.0.1:8765/callback"


def _event(world: World, kind: type[Any]) -> Any:
    [event] = [e for e in world.sink.published if isinstance(e, kind)]
    return event


def _one(world: World, action: str) -> AuditEntry:
    [entry] = world.sink.audits(action)
    return entry


def _same_unit(world: World, event: Any, entry: AuditEntry) -> None:
    assert world.sink.unit(event) == world.sink.unit(entry)


def _login(world: World, password: str = PASSWORD, otp: str = "", source: str = WEB) -> Any:
    return world.accounts.login(EMAIL, password, otp, source=source, device="Firefox on Linux")


def _caller(user_id: str, session_id: str | None = None) -> Principal:
    return Principal(user_id, "shop-web", "orders", ("customer",), session_id, "jti-1")


def test_a_new_account_is_recorded_with_its_registration(world: World) -> None:
    user_id = world.accounts.register(EMAIL, PASSWORD)
    entry = _one(world, "user_created")
    _same_unit(world, _event(world, events.UserRegistered), entry)
    assert (entry.resource_type, entry.resource_id) == ("Account", user_id)
    assert entry.outcome == "SUCCESS"
    assert entry.actor is not None and entry.actor.subject == user_id


def test_a_login_is_recorded_with_who_from_where_and_its_session(world: World) -> None:
    user_id = world.accounts.register(EMAIL, PASSWORD)
    login = _login(world)
    entry = _one(world, "authn_login_success")
    _same_unit(world, _event(world, events.LoginSucceeded), entry)
    assert entry.actor is not None
    assert (entry.actor.subject, entry.actor.roles) == (user_id, ("customer",))
    assert entry.source_address == WEB
    assert entry.details["session_id"] == login.session.session_id
    assert entry.details["mfa"] == "false"
    assert entry.occurred_at is not None
    assert entry.occurred_at.timestamp() == world.clock.now


def test_a_failed_login_names_the_reason_but_never_the_password(world: World) -> None:
    user_id = world.accounts.register(EMAIL, PASSWORD)
    with pytest.raises(LoginRefused):
        _login(world, "Tr0ub4dor&3 wrong")
    entry = _one(world, "authn_login_fail")
    _same_unit(world, _event(world, events.LoginFailed), entry)
    assert (entry.outcome, entry.reason, entry.resource_id) == (
        "FAILURE",
        "bad_credentials",
        user_id,
    )
    assert entry.source_address == WEB
    assert "Tr0ub4dor" not in repr(to_record(entry, "identity"))


def test_a_login_for_an_unknown_email_records_neither_the_email_nor_the_password(
    world: World,
) -> None:
    # People type their password in the email field: what was typed there is not recorded.
    with pytest.raises(LoginRefused):
        world.accounts.login("hunter2-oops", "hunter2", "", source=WEB, device="d")
    entry = _one(world, "authn_login_fail")
    assert (entry.resource_id, entry.reason) == ("", "bad_credentials")
    assert "hunter2" not in repr(to_record(entry, "identity"))


def test_the_lockout_is_recorded_beside_its_event_and_so_is_knocking_on_the_locked_door(
    world: World,
) -> None:
    user_id = world.accounts.register(EMAIL, PASSWORD)
    for attempt in range(5):
        world.clock.now += 10
        with pytest.raises(LoginRefused):
            _login(world, f"wrong {attempt}")
    lock = _one(world, "authn_login_lock")
    _same_unit(world, _event(world, events.AccountLocked), lock)
    assert lock.resource_id == user_id and lock.details["failures"] == "5"
    assert lock.details["locked_until"].startswith("20")  # an ISO time: the lock lifts itself
    with pytest.raises(LoginRefused):
        _login(world)  # the right password, while locked
    knocks = [e for e in world.sink.audits("authn_login_fail") if e.reason == "locked"]
    assert len(knocks) == 1 and knocks[0].source_address == WEB


def test_mfa_enrollment_a_recovery_code_and_a_wrong_code_are_recorded_without_any_code(
    world: World,
) -> None:
    user_id = world.accounts.register(EMAIL, PASSWORD)
    caller = _caller(user_id)
    enrollment = world.accounts.begin_mfa(caller, PASSWORD, source="ipv4:10.9.9.9:5000")
    started = _one(world, "mfa_enrollment_started")
    assert started.source_address == "ipv4:10.9.9.9:5000"
    first = pyotp.TOTP(enrollment.secret).at(world.clock.now)
    codes = world.accounts.confirm_mfa(caller, first)
    enrolled = _one(world, "mfa_enrolled")
    _same_unit(world, _event(world, events.MfaEnrolled), enrolled)
    assert enrolled.actor is not None and enrolled.actor.subject == user_id

    world.clock.now += 60
    with pytest.raises(LoginRefused):
        _login(world, otp=pyotp.TOTP(enrollment.secret).at(world.clock.now - 3600))  # stale
    assert [e.reason for e in world.sink.audits("authn_login_fail")] == ["bad_otp"]
    _login(world, otp=codes[0])
    used = _one(world, "mfa_recovery_code_used")
    _same_unit(world, _event(world, events.RecoveryCodeUsed), used)
    assert used.details["remaining"] == "9"

    everything = repr([to_record(e, "identity") for e in world.sink.audits()])
    for secret in (enrollment.secret, first, *codes, PASSWORD):
        assert secret not in everything


def test_a_wrong_password_when_changing_mfa_is_a_failed_login_during_the_change(
    world: World,
) -> None:
    user_id = world.accounts.register(EMAIL, PASSWORD)
    with pytest.raises(Exception, match="password"):
        world.accounts.begin_mfa(_caller(user_id), "not my password", source="ipv4:1.2.3.4:5")
    entry = _one(world, "authn_login_fail")
    assert entry.details["during"] == "mfa_change"
    assert entry.actor is not None and entry.actor.subject == user_id


def test_role_grants_name_the_admin_who_granted(world: World) -> None:
    user_id = world.accounts.register(EMAIL, PASSWORD)
    admin = Principal("admin-7", "shop-web", "orders", ("customer", "admin"), "s1", "j1")
    world.accounts.grant_role(admin, user_id, "support")
    entry = _one(world, "authz_change")
    _same_unit(world, _event(world, events.RoleGranted), entry)
    assert entry.actor is not None
    assert (entry.actor.subject, entry.actor.roles) == ("admin-7", ("customer", "admin"))
    assert (entry.resource_id, dict(entry.details)) == (
        user_id,
        {"role": "support", "change": "granted"},
    )
    world.accounts.grant_role(admin, user_id, "support")  # nothing changes: nothing recorded
    assert len(world.sink.audits("authz_change")) == 1


def test_session_revocations_one_all_and_the_logout_page(world: World) -> None:
    user_id = world.accounts.register(EMAIL, PASSWORD)
    first, second, third = _login(world), _login(world), _login(world)
    caller = _caller(user_id, first.session.session_id)
    world.accounts.revoke_session(caller, second.session.session_id)
    one = _one(world, "session_revoked")
    assert one.details == {"session_id": second.session.session_id, "why": "logout"}

    world.accounts.logout(third.cookie, source=WEB)
    by_page = world.sink.audits("session_revoked")[1]
    assert by_page.source_address == WEB and by_page.actor is not None
    assert by_page.actor.subject == user_id
    assert third.cookie not in repr(to_record(by_page, "identity"))

    assert world.accounts.revoke_all_sessions(caller) == 1
    everywhere = _one(world, "session_revoked_all")
    assert everywhere.details["sessions"] == "1"
    assert everywhere.details["session_ids"] == first.session.session_id


def _code_flow(world: World) -> tuple[dict[str, Any], str, str]:
    """Tokens of a login through the authorization code flow, with the code and its verifier."""
    world.accounts.register(EMAIL, PASSWORD)
    login = _login(world)
    verifier = secrets.token_urlsafe(48)
    request = world.oauth.validate_authorize(
        {
            "client_id": "shop-web",
            "redirect_uri": REDIRECT,
            "response_type": "code",
            "scope": "orders offline_access",
            "code_challenge": s256(verifier),
            "code_challenge_method": "S256",
        }
    )
    code = parse_qs(urlsplit(world.oauth.authorize(request, login.session)).query)["code"][0]
    client = world.oauth.clients["shop-web"]
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": verifier,
        "redirect_uri": REDIRECT,
    }
    return world.oauth.token(client, form, source=WEB, device="d"), code, verifier


def test_refresh_token_reuse_is_recorded_with_the_family_it_revoked(world: World) -> None:
    tokens, _, _ = _code_flow(world)
    client = world.oauth.clients["shop-web"]
    form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    rotated = world.oauth.token(client, form, source=WEB, device="d")
    with pytest.raises(OAuthError):
        world.oauth.token(client, form, source="10.6.6.6", device="d")  # the old one again
    entry = _one(world, "authn_token_reuse")
    _same_unit(world, _event(world, events.RefreshTokenReuseDetected), entry)
    assert (entry.outcome, entry.source_address) == ("FAILURE", "10.6.6.6")
    assert entry.details["kind"] == "refresh_token"
    record = repr(to_record(entry, "identity"))
    for token in (tokens["refresh_token"], rotated["refresh_token"], tokens["access_token"]):
        assert token not in record


def test_a_replayed_authorization_code_is_token_reuse_too(world: World) -> None:
    _, code, verifier = _code_flow(world)
    client = world.oauth.clients["shop-web"]
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": verifier,
        "redirect_uri": REDIRECT,
    }
    with pytest.raises(OAuthError):
        world.oauth.token(client, form, source="10.6.6.6", device="d")
    entry = _one(world, "authn_token_reuse")
    assert entry.details["kind"] == "authorization_code"
    assert code not in repr(to_record(entry, "identity"))


def test_a_revocation_at_the_endpoint_is_recorded(world: World) -> None:
    tokens, _, _ = _code_flow(world)
    client = world.oauth.clients["shop-web"]
    world.oauth.revoke(client, tokens["refresh_token"], source=WEB)
    entry = _one(world, "authn_token_revoked")
    _same_unit(world, _event(world, events.TokenRevoked), entry)
    assert (entry.details["kind"], entry.source_address) == ("refresh_token", WEB)
    assert tokens["refresh_token"] not in repr(to_record(entry, "identity"))


def test_every_record_is_a_valid_audit_record_of_identity(world: World) -> None:
    """The records convert to AuditRecorded as the kit writes it (the outbox validates the
    schema itself in the e2e test); each names the Account it concerns."""
    tokens, _, _ = _code_flow(world)
    client = world.oauth.clients["shop-web"]
    world.oauth.revoke(client, tokens["refresh_token"], source=WEB)
    records = [to_record(e, "identity") for e in world.sink.audits()]
    assert {r["action"] for r in records} == {
        "user_created",
        "authn_login_success",
        "authn_token_revoked",
    }
    assert all(r["service"] == "identity" and r["resource_type"] == "Account" for r in records)
