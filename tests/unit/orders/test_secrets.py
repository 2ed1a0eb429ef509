"""The payment token at rest: sealed per order with AES-GCM, opened only with its key and its
order, the development key kept beside the database."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from orders.adapters.secrets import SealError, TokenSealer


def test_a_sealed_token_opens_for_its_order_only() -> None:
    sealer = TokenSealer(os.urandom(32))
    sealed = sealer.seal("o-1", "tok_visa")
    assert sealed.startswith("v1.") and "tok_visa" not in sealed
    assert sealer.seal("o-1", "tok_visa") != sealed  # a fresh nonce each time
    assert sealer.open("o-1", sealed) == "tok_visa"
    with pytest.raises(SealError, match="o-2"):
        sealer.open("o-2", sealed)  # copied to another order's row: does not open
    with pytest.raises(SealError):
        TokenSealer(os.urandom(32)).open("o-1", sealed)  # another key
    tampered = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    with pytest.raises(SealError):
        sealer.open("o-1", tampered)


def test_empty_and_older_rows_read_as_they_are() -> None:
    sealer = TokenSealer(os.urandom(32))
    assert sealer.seal("o-1", "") == "" and sealer.open("o-1", "") == ""
    assert sealer.open("o-1", "tok_visa") == "tok_visa"  # written before sealing


def test_the_key_setting_is_checked() -> None:
    key = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
    assert (
        TokenSealer.from_setting(key).open("o", TokenSealer.from_setting(key).seal("o", "t")) == "t"
    )
    with pytest.raises(ValueError, match="32 bytes"):
        TokenSealer.from_setting(base64.urlsafe_b64encode(b"short").decode())
    with pytest.raises(ValueError, match="base64url"):
        TokenSealer.from_setting("not*base64")


def test_the_development_key_is_made_once_beside_the_database(tmp_path: Path) -> None:
    db = tmp_path / "orders.db"
    first = TokenSealer.beside(db)
    key_file = tmp_path / "orders.db.token-key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    again = TokenSealer.beside(db)  # another process, the same key
    assert again.open("o-1", first.seal("o-1", "tok_visa")) == "tok_visa"
