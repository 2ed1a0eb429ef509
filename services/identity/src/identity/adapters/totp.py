"""TOTP second factor (RFC 6238) with pyotp: secrets, enrollment URI and QR code, verification.

The parameters are the ones every authenticator app assumes when the otpauth:// URI does not say
otherwise: HMAC-SHA-1, 6 digits, 30-second steps from the Unix epoch. verify() returns the time
step it accepted; the caller stores it per user and passes it back as last_step, which is how a
code is never accepted twice (RFC 6238 §5.2; pyotp's own verify() does not do this).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import secrets

import pyotp
import segno

STEP = 30
DIGITS = 6
# One step either side absorbs clock drift and the seconds it takes to type a code; RFC 6238 §5.2
# recommends no more.
WINDOW = 1

# 160 bits, the length of an HMAC-SHA-1 output: RFC 4226 R6 recommends it for the shared secret.
_SECRET_BYTES = 20


def new_secret() -> str:
    """A fresh shared secret: 160 random bits from secrets, base32 without padding (32 chars)."""
    return base64.b32encode(secrets.token_bytes(_SECRET_BYTES)).decode("ascii")


def _totp(secret: str) -> pyotp.TOTP:
    return pyotp.TOTP(secret, digits=DIGITS, digest=hashlib.sha1, interval=STEP)


def provisioning_uri(secret: str, *, account: str, issuer: str) -> str:
    """The otpauth://totp/ URI (Google's Key Uri Format) an authenticator app enrolls from.

    account and issuer are what the app shows (e.g. the email and "meshkit shop").
    """
    return _totp(secret).provisioning_uri(name=account, issuer_name=issuer)


def qr_png(uri: str) -> bytes:
    """The URI as a QR code PNG, for the enrollment page to show."""
    # A full QR code (not a Micro QR, which segno.make may choose and apps do not read); error
    # level M survives a photographed or slightly cut-off screen.
    qr = segno.make_qr(uri, error="m")
    out = io.BytesIO()
    qr.save(out, kind="png", scale=5, border=4)
    return out.getvalue()


def verify(secret: str, code: str, *, now: float, last_step: int | None) -> int | None:
    """The time step code belongs to, or None when it is wrong, stale or already used.

    Accepted are the steps floor(now / STEP) + d for d in -WINDOW..WINDOW that are later than
    last_step (the step of the user's last accepted code, None if there is none): a code is never
    accepted twice, nor one older than a code already accepted (RFC 6238 §5.2). code must be
    exactly DIGITS ASCII digits once spaces are removed ("123 456" is how apps show it).
    Raises ValueError when now is before the epoch or after the year 9999.
    """
    typed = "".join(code.split())
    if len(typed) != DIGITS or not (typed.isascii() and typed.isdigit()):
        return None
    totp = _totp(secret)
    current = totp.timecode(now)
    accepted: int | None = None
    for step in range(current - WINDOW, current + WINDOW + 1):
        if step < 0 or (last_step is not None and step <= last_step):
            continue
        # Constant-time comparison, so response timing does not tell how many digits matched.
        if hmac.compare_digest(totp.generate_otp(step).encode(), typed.encode()):
            accepted = step
            break
    return accepted
