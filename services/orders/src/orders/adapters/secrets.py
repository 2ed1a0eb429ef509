"""The payment token at rest: sealed with AES-GCM while a saga needs it (issue 14, item 9).

A saga keeps the customer's payment token from PlaceOrder until the payment step has used it
(it is erased once the saga ends). In the sagas table it is stored sealed: AES-256-GCM under a
key from ORDERS_PAYMENT_TOKEN_KEY (32 bytes, base64url), with a fresh 96-bit nonce per seal and
the order id as associated data, so a sealed token copied to another order's row does not open.
Stored form: ``v1.<base64url(nonce || ciphertext+tag)>``; an empty token stays empty, and a row
written before sealing (no ``v1.`` prefix) is read as it is and sealed when next saved.

Without the setting, a key is made once and kept in a file beside the database (mode 0600):
that keeps a copy of the database alone from revealing tokens, not a copy of the whole disk,
so production sets the variable from its secret store. The cryptography is `cryptography`'s.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger(__name__)

PREFIX = "v1."
KEY_BYTES = 32


class SealError(ValueError):
    """A sealed token that does not open with this key for this order (wrong key, or altered)."""


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSealer:
    """Seals and opens payment tokens. Thread safety: safe to share."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"the payment token key must be {KEY_BYTES} bytes, not {len(key)}")
        self._aead = AESGCM(key)

    @classmethod
    def from_setting(cls, value: str) -> TokenSealer:
        """From ORDERS_PAYMENT_TOKEN_KEY's value (base64url of 32 bytes); ValueError naming what
        is wrong."""
        try:
            key = _b64decode(value.strip())
        except (binascii.Error, ValueError):
            raise ValueError("ORDERS_PAYMENT_TOKEN_KEY is not base64url") from None
        return cls(key)

    @classmethod
    def beside(cls, db_path: Path) -> TokenSealer:
        """The development key kept beside the database (made on first use, mode 0600)."""
        path = db_path.with_name(db_path.name + ".token-key")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return cls(_b64decode(path.read_text().strip()))
        key = secrets.token_bytes(KEY_BYTES)
        with os.fdopen(fd, "w") as out:
            out.write(base64.urlsafe_b64encode(key).decode())
        log.warning(
            "payment tokens are sealed with a key made in %s: set ORDERS_PAYMENT_TOKEN_KEY from"
            " a secret store in production",
            path,
        )
        return cls(key)

    def seal(self, order_id: str, token: str) -> str:
        """The stored form of ``token`` for ``order_id`` ("" stays "")."""
        if not token:
            return ""
        nonce = secrets.token_bytes(12)
        sealed = self._aead.encrypt(nonce, token.encode(), order_id.encode())
        return PREFIX + base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode()

    def open(self, order_id: str, stored: str) -> str:
        """The token a stored form holds; SealError when it does not open."""
        if not stored.startswith(PREFIX):
            return stored  # "" or a row from before sealing
        try:
            raw = _b64decode(stored[len(PREFIX) :])
            return self._aead.decrypt(raw[:12], raw[12:], order_id.encode()).decode()
        except (InvalidTag, ValueError, binascii.Error):
            raise SealError(f"the payment token of order {order_id} does not open") from None
