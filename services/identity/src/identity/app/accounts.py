"""Accounts: registration, login with lockout and MFA, roles, TOTP enrollment and sessions.

Password hashing (argon2id, tens of milliseconds on purpose) never runs inside a write
transaction: the account is read in a snapshot, the hash checked outside, and the outcome
written in a short transaction after.
"""

from __future__ import annotations

import datetime
import logging
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from identity.app import audit
from identity.app.ports import Hasher, RecoveryCodes, Totp, UnitOfWork
from identity.domain import events
from identity.domain.model import (
    DEFAULT_ROLE,
    MAX_CONSECUTIVE_FAILURES,
    MAX_DEVICE,
    Account,
    Lockout,
    Principal,
    Session,
    SessionPolicy,
    normalise_email,
    validate_email,
    validate_id,
    validate_role,
)
from identity.domain.passwords import PasswordPolicy
from meshkit.audit import FAILURE
from meshkit.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Violations,
)

log = logging.getLogger(__name__)

# One generic sentence for an unknown email, a wrong password and a wrong code (OWASP):
# nothing in it tells which was wrong.
BAD_CREDENTIALS = "Incorrect email, password or code."
# The rule: 5 failures in 15 minutes lock an account. An address gets more room (several
# people may share one), and is throttled rather than any account locked.
ACCOUNT_LOCKOUT = Lockout()
SOURCE_LOCKOUT = Lockout(threshold=20)


class LoginRefused(Exception):
    """A login that did not succeed. ``reason`` is for logs and events (bad_credentials,
    otp_required, locked, throttled); ``message`` is what the person is shown."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Login:
    """A successful login: the session it began and the cookie that opens it."""

    session: Session
    cookie: str
    account: Account
    mfa: bool


@dataclass(frozen=True)
class Enrollment:
    """What an authenticator app needs to enroll."""

    otpauth_uri: str
    qr_png: bytes
    secret: str


def _at(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC)


class Accounts:
    """Accounts and sessions. Thread safety: safe to share; every call opens its own units of
    work."""

    def __init__(
        self,
        unit_of_work: Callable[[], UnitOfWork],
        snapshot: Callable[[], UnitOfWork],
        *,
        hasher: Hasher,
        totp: Totp,
        recovery: RecoveryCodes,
        policy: PasswordPolicy,
        totp_issuer: str,
        account_lockout: Lockout = ACCOUNT_LOCKOUT,
        source_lockout: Lockout = SOURCE_LOCKOUT,
        session_policy: SessionPolicy = SessionPolicy(),  # noqa: B008  (frozen value)
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._uow = unit_of_work
        self._snapshot = snapshot
        self._hasher = hasher
        self._totp = totp
        self._recovery = recovery
        self._policy = policy
        self._totp_issuer = totp_issuer
        self._account_lockout = account_lockout
        self._source_lockout = source_lockout
        self.session_policy = session_policy
        self._clock = clock

    # registration and roles ---------------------------------------------------------------
    def register(self, email: str, password: str) -> str:
        """A new customer account's user_id. InvalidArgument names every bad field;
        AlreadyExists when the email has an account."""
        violations = Violations()
        validate_email(violations, email)
        if violations.check(password != "", "password", "is required"):
            for problem in self._policy.problems(password, email=email):
                violations.add("password", problem)
        violations.raise_if_any()
        email = normalise_email(email)
        account = Account(
            user_id=uuid.uuid4().hex,
            email=email,
            password_hash=self._hasher.hash(password),
            roles=(DEFAULT_ROLE,),
            created_at=self._clock(),
        )
        with self._uow() as uow:
            if not uow.store.add_account(account):
                raise AlreadyExists("an account with this email exists", reason="EMAIL_TAKEN")
            uow.publish(
                events.UserRegistered(
                    account.user_id, email, list(account.roles), _at(account.created_at)
                )
            )
            # Self-registration: the new account is its own actor; the RPC's peer is where from.
            uow.publish(
                audit.entry(
                    audit.USER_CREATED,
                    account.user_id,
                    actor=audit.actor_of_account(account),
                    at=_at(account.created_at),
                    details={"roles": ",".join(account.roles)},
                )
            )
        return account.user_id

    def account(self, user_id: str) -> Account:
        """The account; NotFound when there is none."""
        with self._snapshot() as uow:
            account = uow.store.account(user_id)
        if account is None:
            raise NotFound("no such account", reason="USER_NOT_FOUND")
        return account

    def grant_role(self, caller: Principal, user_id: str, role: str) -> Account:
        """Grant ``role``; only an admin may (PermissionDenied otherwise)."""
        violations = Violations()
        validate_id(violations, user_id, "user_id")
        validate_role(violations, role)
        violations.raise_if_any()
        if not caller.has_role("admin"):
            raise PermissionDenied("only an admin grants roles", reason="ADMIN_REQUIRED")
        with self._uow() as uow:
            account = uow.store.account(user_id)
            if account is None:
                raise NotFound("no such account", reason="USER_NOT_FOUND")
            if role not in account.roles:
                at = _at(self._clock())
                uow.store.set_roles(user_id, (*account.roles, role))
                uow.publish(events.RoleGranted(user_id, role, caller.sub, at))
                uow.publish(
                    audit.entry(
                        audit.AUTHZ_CHANGE,
                        user_id,
                        actor=audit.actor_of(caller),
                        at=at,
                        details={"role": role, "change": "granted"},
                    )
                )
            return uow.store.account(user_id) or account

    # login --------------------------------------------------------------------------------
    def login(
        self,
        email: str,
        password: str,
        otp: str,
        *,
        source: str,
        device: str,
        client_id: str = "",
    ) -> Login:
        """Check the credentials and begin a session, or raise LoginRefused.

        In this order: a source address with too many recent failures is throttled before
        anything is checked; an unknown email is checked against a dummy hash (the same time
        as a wrong password) and refused with the same sentence; a wrong password counts a
        failure and may lock the account; a locked account says so only once the password is
        right; with MFA on, a missing code asks for one and a wrong one counts a failure.
        After MAX_CONSECUTIVE_FAILURES the account is not checked at all until an operator
        unlocks it (``unlock``).
        """
        now = self._clock()
        with self._snapshot() as uow:
            throttled = self._source_lockout.locked_until(
                uow.store.failures_of_source(source, "login", now - self._source_lockout.window),
                now,
            )
            account = uow.store.account_by_email(normalise_email(email))
            failures = (
                uow.store.failures_of_user(account.user_id, now - self._account_lockout.window)
                if account
                else []
            )
        if throttled is not None:
            self._fail(None, source, "throttled", 0, client_id=client_id)
            raise LoginRefused(
                "throttled",
                "Too many failed attempts from your address."
                f" Try again in {_wait(throttled - now)}.",
            )
        if account is None:
            self._hasher.verify_dummy(password)
            self._fail(None, source, "bad_credentials", 0, client_id=client_id)
            raise LoginRefused("bad_credentials", BAD_CREDENTIALS)
        if account.consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
            # Checked no more: the answer is the generic one whatever the password, and it
            # takes a hash's time like every other (see MAX_CONSECUTIVE_FAILURES).
            self._hasher.verify_dummy(password)
            self._fail(account, source, "locked", len(failures) + 1, client_id=client_id)
            raise LoginRefused("locked", BAD_CREDENTIALS)
        if not self._hasher.verify(account.password_hash, password):
            self._fail(
                account, source, "bad_credentials", len(failures) + 1, failures, client_id=client_id
            )
            raise LoginRefused("bad_credentials", BAD_CREDENTIALS)
        locked = self._account_lockout.locked_until(failures, now)
        if locked is not None:
            # Not counted as a failure (that would lengthen the lock its owner waits out), but
            # an attempt on a locked account is what an auditor looks for: recorded alone.
            with self._uow() as uow:
                uow.publish(
                    audit.entry(
                        audit.LOGIN_FAIL,
                        account.user_id,
                        actor=audit.actor_of_account(account, client_id),
                        at=_at(now),
                        outcome=FAILURE,
                        reason="locked",
                        source=source,
                        details={"locked_until": _at(locked).isoformat()},
                    )
                )
            raise LoginRefused(
                "locked",
                "This account is locked after too many failed attempts."
                f" Try again in {_wait(locked - now)}.",
            )
        mfa = False
        if account.mfa_enabled:
            self._check_second_factor(account, otp, source, failures, now, client_id=client_id)
            mfa = True
        self.rehash_if_needed(account, password)
        return self._begin_session(
            account, source=source, device=device, client_id=client_id, mfa=mfa, now=now
        )

    def _check_second_factor(
        self,
        account: Account,
        otp: str,
        source: str,
        failures: list[float],
        now: float,
        *,
        client_id: str,
    ) -> None:
        code = otp.strip()
        if not code:
            raise LoginRefused("otp_required", "Enter the code from your authenticator app.")
        assert account.mfa_secret is not None
        step = self._totp.verify(account.mfa_secret, code, now=now, last_step=account.mfa_last_step)
        if step is not None:
            with self._uow() as uow:
                if uow.store.accept_totp_step(account.user_id, step):
                    return
            # Another login accepted this very code first: it is spent (RFC 6238 §5.2).
        elif len(code.replace("-", "").replace(" ", "")) > 8:
            with self._uow() as uow:
                unused = uow.store.unused_recovery_codes(account.user_id)
                match = self._recovery.matches(code, unused)
                if match is not None and uow.store.use_recovery_code(account.user_id, match, now):
                    uow.publish(events.RecoveryCodeUsed(account.user_id, len(unused) - 1, _at(now)))
                    uow.publish(
                        audit.entry(
                            audit.MFA_RECOVERY_CODE_USED,
                            account.user_id,
                            actor=audit.actor_of_account(account, client_id),
                            at=_at(now),
                            source=source,
                            details={"remaining": str(len(unused) - 1)},
                        )
                    )
                    return
        self._fail(account, source, "bad_otp", len(failures) + 1, failures, client_id=client_id)
        raise LoginRefused("bad_credentials", BAD_CREDENTIALS)

    def _begin_session(
        self, account: Account, *, source: str, device: str, client_id: str, mfa: bool, now: float
    ) -> Login:
        cookie = secrets.token_urlsafe(32)
        session = Session(uuid.uuid4().hex, account.user_id, device[:MAX_DEVICE], now, now)
        with self._uow() as uow:
            uow.store.clear_failures(account.user_id)
            uow.store.add_session(session, cookie)
            uow.publish(
                events.LoginSucceeded(
                    account.user_id, session.session_id, client_id, source, mfa, _at(now)
                )
            )
            uow.publish(
                audit.entry(
                    audit.LOGIN_SUCCESS,
                    account.user_id,
                    actor=audit.actor_of_account(account, client_id),
                    at=_at(now),
                    source=source,
                    details={
                        "session_id": session.session_id,
                        "mfa": "true" if mfa else "false",
                        "device": session.device,
                    },
                )
            )
        return Login(session, cookie, account, mfa)

    def rehash_if_needed(self, account: Account, password: str) -> bool:
        """Rehash the password with today's parameters when the stored hash used others (call
        after a successful login, with the password that was just verified)."""
        if not self._hasher.needs_rehash(account.password_hash):
            return False
        fresh = self._hasher.hash(password)
        with self._uow() as uow:
            uow.store.set_password_hash(account.user_id, fresh)
        log.info("rehashed the password of %s with the current parameters", account.user_id)
        return True

    def _fail(
        self,
        account: Account | None,
        source: str,
        reason: str,
        count: int,
        earlier: list[float] | None = None,
        *,
        client_id: str = "",
        during: str = "login",
    ) -> None:
        """Record a failed attempt (``during`` a login, or a re-authentication before an MFA
        change), its event and audit record, and the lock it may set off, in one transaction."""
        now = self._clock()
        user_id = account.user_id if account else None
        actor = audit.actor_of_account(account, client_id)
        with self._uow() as uow:
            consecutive = 0
            if reason != "throttled":
                consecutive = uow.store.add_failure(user_id, source, "login", now)
            uow.publish(events.LoginFailed(user_id, reason, source, count, _at(now)))
            uow.publish(
                audit.entry(
                    audit.LOGIN_FAIL,
                    user_id,
                    actor=actor,
                    at=_at(now),
                    outcome=FAILURE,
                    reason=reason,
                    source=source,
                    details={"failures": str(count), "during": during},
                )
            )
            locked: tuple[int, datetime.datetime | None] | None = None
            if account is not None and consecutive == MAX_CONSECUTIVE_FAILURES:
                log.warning(
                    "account %s locked until an operator unlocks it: %d consecutive failures",
                    account.user_id,
                    consecutive,
                )
                locked = (consecutive, None)
            elif account is not None and earlier is not None:
                before = self._account_lockout.locked_until(earlier, now)
                after = self._account_lockout.locked_until([*earlier, now], now)
                if after is not None and before is None:
                    locked = (count, _at(after))
            if account is not None and locked is not None:
                failures, until = locked
                uow.publish(events.AccountLocked(account.user_id, failures, until, _at(now)))
                uow.publish(
                    audit.entry(
                        audit.LOGIN_LOCK,
                        account.user_id,
                        actor=actor,
                        at=_at(now),
                        source=source,
                        details={
                            "failures": str(failures),
                            "locked_until": until.isoformat() if until else "operator unlock",
                        },
                    )
                )

    def _snapshot_failures(self, user_id: str, now: float) -> list[float]:
        with self._snapshot() as uow:
            return uow.store.failures_of_user(user_id, now - self._account_lockout.window)

    # MFA ----------------------------------------------------------------------------------
    def begin_mfa(self, caller: Principal, password: str, *, source: str = "grpc") -> Enrollment:
        """A new TOTP secret held pending until ``confirm_mfa``. FailedPrecondition when MFA is
        on already.

        The account's password is asked again (OWASP: re-authenticate before changing an
        authenticator): a stolen access token alone must not let its thief enroll their own
        authenticator and shut the owner out. A wrong password counts as a failed login."""
        violations = Violations()
        violations.check(password != "", "password", "is required (enter it again to confirm)")
        violations.raise_if_any()
        account = self.account(caller.sub)
        if not self._hasher.verify(account.password_hash, password):
            now = self._clock()
            earlier = self._snapshot_failures(account.user_id, now)
            self._fail(
                account, source, "bad_credentials", len(earlier) + 1, earlier, during="mfa_change"
            )
            raise InvalidArgument(
                violations=[FieldViolation("password", "is not this account's password")]
            )
        if account.mfa_enabled:
            raise FailedPrecondition("MFA is on already", reason="MFA_ALREADY_ENABLED")
        secret = self._totp.new_secret()
        with self._uow() as uow:
            uow.store.set_mfa_pending(caller.sub, secret)
            uow.publish(
                audit.entry(
                    audit.MFA_ENROLLMENT_STARTED,
                    caller.sub,
                    actor=audit.actor_of(caller),
                    at=_at(self._clock()),
                    source=source,
                    details={"factor": "totp"},
                )
            )
        uri = self._totp.provisioning_uri(secret, account=account.email, issuer=self._totp_issuer)
        return Enrollment(uri, self._totp.qr_png(uri), secret)

    def confirm_mfa(self, caller: Principal, code: str) -> list[str]:
        """Turn MFA on once ``code`` matches the pending secret; the ten recovery codes, in
        clear this once (stored as digests)."""
        violations = Violations()
        violations.check(code.strip() != "", "code", "is required")
        violations.raise_if_any()
        account = self.account(caller.sub)
        if account.mfa_pending is None:
            raise FailedPrecondition(
                "no MFA enrollment is pending: call BeginMfaEnrollment first",
                reason="NO_PENDING_ENROLLMENT",
            )
        now = self._clock()
        step = self._totp.verify(account.mfa_pending, code, now=now, last_step=None)
        if step is None:
            raise InvalidArgument(
                violations=[
                    FieldViolation("code", "does not match the authenticator's current code")
                ]
            )
        codes = self._recovery.new_codes()
        with self._uow() as uow:
            uow.store.enable_mfa(caller.sub, account.mfa_pending, step)
            uow.store.set_recovery_codes(caller.sub, [self._recovery.digest(c) for c in codes])
            uow.publish(events.MfaEnrolled(caller.sub, len(codes), _at(now)))
            uow.publish(
                audit.entry(
                    audit.MFA_ENROLLED,
                    caller.sub,
                    actor=audit.actor_of(caller),
                    at=_at(now),
                    details={"factor": "totp", "recovery_count": str(len(codes))},
                )
            )
        return codes

    # sessions -----------------------------------------------------------------------------
    def session_by_cookie(self, cookie: str) -> Session | None:
        """The live session a cookie opens, or None."""
        if not cookie:
            return None
        with self._snapshot() as uow:
            session = uow.store.session_by_cookie(cookie)
        return session if self.session_policy.live(session, self._clock()) else None

    def live_session(self, session_id: str) -> Session | None:
        """The session if it is live."""
        with self._snapshot() as uow:
            session = uow.store.session(session_id)
        return session if self.session_policy.live(session, self._clock()) else None

    def sessions(self, caller: Principal) -> list[Session]:
        """The caller's live sessions, newest first."""
        now = self._clock()
        with self._snapshot() as uow:
            sessions = uow.store.live_sessions(caller.sub)
        return [s for s in sessions if self.session_policy.live(s, now)]

    def revoke_session(self, caller: Principal, session_id: str, reason: str = "logout") -> None:
        """End one of the caller's sessions with every token issued in it."""
        violations = Violations()
        validate_id(violations, session_id, "session_id")
        violations.raise_if_any()
        now = self._clock()
        with self._uow() as uow:
            session = uow.store.session(session_id)
            if session is None or session.user_id != caller.sub or session.revoked_at:
                raise NotFound("no such live session of yours", reason="SESSION_NOT_FOUND")
            uow.store.revoke_session(session_id, now)
            uow.publish(events.SessionRevoked(caller.sub, session_id, reason, _at(now)))
            uow.publish(
                audit.entry(
                    audit.SESSION_REVOKED,
                    caller.sub,
                    actor=audit.actor_of(caller),
                    at=_at(now),
                    details={"session_id": session_id, "why": reason},
                )
            )

    def revoke_all_sessions(self, caller: Principal) -> int:
        """ "Log out everywhere": end every live session of the caller; how many there were."""
        now = self._clock()
        with self._uow() as uow:
            sessions = uow.store.live_sessions(caller.sub)
            for session in sessions:
                uow.store.revoke_session(session.session_id, now)
                uow.publish(
                    events.SessionRevoked(
                        caller.sub, session.session_id, "logout_everywhere", _at(now)
                    )
                )
            # One record for the one action, naming every session it ended.
            uow.publish(
                audit.entry(
                    audit.SESSION_REVOKED_ALL,
                    caller.sub,
                    actor=audit.actor_of(caller),
                    at=_at(now),
                    details={
                        "sessions": str(len(sessions)),
                        "session_ids": ",".join(s.session_id for s in sessions),
                    },
                )
            )
        return len(sessions)

    def logout(self, cookie: str, *, source: str = "") -> None:
        """End the session a cookie opens (the login page's sign out, from ``source``)."""
        session = self.session_by_cookie(cookie)
        if session is None:
            return
        now = self._clock()
        with self._uow() as uow:
            if uow.store.revoke_session(session.session_id, now):
                account = uow.store.account(session.user_id)
                uow.publish(
                    events.SessionRevoked(session.user_id, session.session_id, "logout", _at(now))
                )
                uow.publish(
                    audit.entry(
                        audit.SESSION_REVOKED,
                        session.user_id,
                        actor=audit.actor_of_account(account),
                        at=_at(now),
                        source=source,
                        details={"session_id": session.session_id, "why": "logout"},
                    )
                )


def _wait(seconds: float) -> str:
    seconds = max(1, int(seconds + 0.999))
    if seconds < 90:
        return f"{seconds} seconds"
    return f"{(seconds + 59) // 60} minutes"
