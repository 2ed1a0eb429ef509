"""Page sizes and opaque page tokens (keyset: the token names where the last page ended).

A token is base64url JSON of the read model's cursor plus a fingerprint of the request's filters,
so a token only continues the listing it came from; anything else is INVALID_ARGUMENT. Keyset
tokens stay cheap on any page and never skip or repeat an order when orders arrive in between.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

from meshkit.errors import FieldViolation, InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
MAX_TOKEN_LENGTH = 2048
# Part of every token's fingerprint; bumped when what a cursor holds changes meaning, so a token
# of the old kind is refused (start over) rather than read wrongly. 2: times in microseconds.
CURSOR_FORMAT = 2


def page_size(requested: int) -> int:
    """0 means the default; above the maximum is capped (AIP-158); negative is InvalidArgument."""
    if requested < 0:
        raise InvalidArgument(
            violations=[FieldViolation("page_size", "must be 0 (default) or more")]
        )
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _fingerprint(scope: tuple[Any, ...]) -> str:
    return hashlib.sha256(json.dumps([CURSOR_FORMAT, *scope]).encode()).hexdigest()[:16]


def encode_token(scope: tuple[Any, ...], cursor: list[Any]) -> str:
    """The token for the page after ``cursor`` of the listing ``scope`` identifies."""
    raw = json.dumps({"s": _fingerprint(scope), "c": cursor}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_token(token: str, scope: tuple[Any, ...]) -> list[Any] | None:
    """The cursor in ``token`` (None for an empty token: the first page). Raises InvalidArgument
    when the token is malformed or belongs to another listing (other filters, other query)."""
    if not token:
        return None
    try:
        if len(token) > MAX_TOKEN_LENGTH:
            raise ValueError
        raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if not isinstance(raw, dict) or not isinstance(raw.get("c"), list):
            raise ValueError
        if raw.get("s") != _fingerprint(scope):
            raise ValueError
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise bad_page_token() from None
    cursor: list[Any] = raw["c"]
    return cursor


def bad_page_token() -> InvalidArgument:
    """The refusal of a page token that is not a next_page_token of the listing: malformed,
    of other filters, or with a cursor the read model cannot continue from (forged)."""
    return InvalidArgument(
        violations=[
            FieldViolation(
                "page_token",
                "not a next_page_token of this listing (same filters or query);"
                " start over without one",
            )
        ],
        reason="BAD_PAGE_TOKEN",
    )
