"""One-time recovery codes for an account whose second factor is lost (OWASP MFA Cheat Sheet).

Codes are shown to the user once; only their digests are stored. Using a code means finding its
digest with matches() and deleting that digest, which the caller does in the same transaction.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable

COUNT = 10

# 80 bits per code: 16 base32 characters, shown as four groups of four.
_CODE_BYTES = 10
_GROUP = 4


def new_codes(count: int = COUNT) -> list[str]:
    """count distinct codes like "k3xq-7mzp-a2bd-4hwe": lower-case base32, 80 random bits each."""
    codes: list[str] = []
    while len(codes) < count:
        raw = base64.b32encode(secrets.token_bytes(_CODE_BYTES)).decode("ascii").lower()
        code = "-".join(raw[i : i + _GROUP] for i in range(0, len(raw), _GROUP))
        # A repeat is next to impossible at 80 bits, but the user is promised count usable codes.
        if code not in codes:
            codes.append(code)
    return codes


def _canonical(code: str) -> str:
    """Case, dashes and spaces are how people copy codes, not part of them."""
    return "".join(code.split()).replace("-", "").lower()


def digest(code: str) -> str:
    """The SHA-256 hex digest of the code without case, dashes or spaces: what is stored.

    A fast hash is enough here, unlike for passwords: slow hashes exist to make guessing
    low-entropy human choices expensive, and a code has 80 random bits, so finding one from its
    digest means about 2**79 SHA-256 evaluations even for someone holding the database.
    """
    return hashlib.sha256(_canonical(code).encode("utf-8")).hexdigest()


def matches(code: str, digests: Iterable[str]) -> str | None:
    """The digest in digests that code produces, or None.

    Every digest is compared in constant time, and all of them are compared, so timing tells
    neither how close a guess came nor where in the list its digest was.
    """
    wanted = digest(code).encode("ascii")
    found: str | None = None
    for stored in digests:
        if hmac.compare_digest(stored.encode("ascii"), wanted) and found is None:
            found = stored
    return found
