"""TOTP (RFC 6238) and its HOTP core (RFC 4226) against the RFCs' own appendix vectors."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable

import pyotp
import pytest

from identity.adapters import totp


def b32(seed: bytes) -> str:
    return base64.b32encode(seed).decode("ascii")


# RFC 6238 Appendix A/B (with errata): the seed is as long as the hash output.
SEED_SHA1 = b"12345678901234567890"
SEEDS: dict[str, tuple[bytes, Callable[..., object]]] = {
    "SHA1": (SEED_SHA1, hashlib.sha1),
    "SHA256": (b"12345678901234567890123456789012", hashlib.sha256),
    "SHA512": (b"1234567890123456789012345678901234567890123456789012345678901234", hashlib.sha512),
}

# RFC 6238 Appendix B: (time, step T, TOTP, mode).
RFC6238 = [
    (59, 0x1, "94287082", "SHA1"),
    (59, 0x1, "46119246", "SHA256"),
    (59, 0x1, "90693936", "SHA512"),
    (1111111109, 0x23523EC, "07081804", "SHA1"),
    (1111111109, 0x23523EC, "68084774", "SHA256"),
    (1111111109, 0x23523EC, "25091201", "SHA512"),
    (1111111111, 0x23523ED, "14050471", "SHA1"),
    (1111111111, 0x23523ED, "67062674", "SHA256"),
    (1111111111, 0x23523ED, "99943326", "SHA512"),
    (1234567890, 0x273EF07, "89005924", "SHA1"),
    (1234567890, 0x273EF07, "91819424", "SHA256"),
    (1234567890, 0x273EF07, "93441116", "SHA512"),
    (2000000000, 0x3F940AA, "69279037", "SHA1"),
    (2000000000, 0x3F940AA, "90698825", "SHA256"),
    (2000000000, 0x3F940AA, "38618901", "SHA512"),
    (20000000000, 0x27BC86AA, "65353130", "SHA1"),
    (20000000000, 0x27BC86AA, "77737706", "SHA256"),
    (20000000000, 0x27BC86AA, "47863826", "SHA512"),
]
SHA1_VECTORS = [(t, step, code) for t, step, code, mode in RFC6238 if mode == "SHA1"]

# RFC 4226 Appendix D: HOTP values for counters 0..9, secret "12345678901234567890".
RFC4226 = [
    "755224",
    "287082",
    "359152",
    "969429",
    "338314",
    "254676",
    "287922",
    "162583",
    "399871",
    "520489",
]


def test_all_eighteen_rfc_6238_vectors_are_listed() -> None:
    assert len(RFC6238) == 18
    assert len(SHA1_VECTORS) == 6


@pytest.mark.parametrize(("now", "step", "expected", "mode"), RFC6238)
def test_rfc_6238_appendix_b(now: int, step: int, expected: str, mode: str) -> None:
    seed, digest = SEEDS[mode]
    # Configured as totp.py configures pyotp (STEP-second steps from T0 = 0), with 8 digits and
    # the mode's hash as in the appendix.
    generator = pyotp.TOTP(b32(seed), digits=8, digest=digest, interval=totp.STEP)
    assert generator.timecode(now) == step == now // totp.STEP
    assert generator.at(now) == expected


@pytest.mark.parametrize(("now", "step", "expected"), SHA1_VECTORS)
def test_verify_accepts_the_six_digit_sha1_vectors(now: int, step: int, expected: str) -> None:
    assert totp.verify(b32(SEED_SHA1), expected[-6:], now=now, last_step=None) == step


@pytest.mark.parametrize("counter", range(10))
def test_rfc_4226_appendix_d(counter: int) -> None:
    assert pyotp.HOTP(b32(SEED_SHA1)).at(counter) == RFC4226[counter]


SECRET = b32(SEED_SHA1)
NOW = 1111111111  # step 0x23523ED, 1 s into it


def code_at(step: int) -> str:
    return pyotp.HOTP(SECRET).at(step)


def test_one_step_either_side_is_accepted() -> None:
    current = NOW // totp.STEP
    assert totp.verify(SECRET, code_at(current - 1), now=NOW, last_step=None) == current - 1
    assert totp.verify(SECRET, code_at(current + 1), now=NOW, last_step=None) == current + 1


def test_two_steps_away_are_refused() -> None:
    current = NOW // totp.STEP
    assert totp.verify(SECRET, code_at(current - 2), now=NOW, last_step=None) is None
    assert totp.verify(SECRET, code_at(current + 2), now=NOW, last_step=None) is None


def test_a_code_is_accepted_once() -> None:
    code = code_at(NOW // totp.STEP)
    step = totp.verify(SECRET, code, now=NOW, last_step=None)
    assert step == NOW // totp.STEP
    assert totp.verify(SECRET, code, now=NOW, last_step=step) is None
    # Still refused a step later, while it is inside the window.
    assert totp.verify(SECRET, code, now=NOW + totp.STEP, last_step=step) is None


def test_an_older_code_after_a_newer_one_is_refused() -> None:
    current = NOW // totp.STEP
    newer = totp.verify(SECRET, code_at(current + 1), now=NOW, last_step=None)
    assert newer == current + 1
    assert totp.verify(SECRET, code_at(current), now=NOW, last_step=newer) is None
    assert totp.verify(SECRET, code_at(current - 1), now=NOW, last_step=newer) is None


def test_the_next_code_after_the_last_step_is_accepted() -> None:
    current = NOW // totp.STEP
    assert totp.verify(SECRET, code_at(current), now=NOW, last_step=current - 1) == current


@pytest.mark.parametrize("typed", ["050 471", " 050471 ", "050\u00a0471"])
def test_spaces_in_the_code_are_ignored(typed: str) -> None:
    # 14050471 is the 8-digit SHA1 vector at 1111111111; apps show its last six.
    assert totp.verify(SECRET, typed, now=NOW, last_step=None) == NOW // totp.STEP


@pytest.mark.parametrize(
    "typed",
    [
        "",
        "50471",
        "0504711",
        "14050471",
        "05047a",
        "٠٥٠٤٧١",
        "\uff10\uff15\uff10\uff14\uff17\uff11",
        "+50471",
    ],
)
def test_anything_but_six_ascii_digits_is_refused(typed: str) -> None:
    assert totp.verify(SECRET, typed, now=NOW, last_step=None) is None


def test_new_secrets_are_160_random_bits_in_base32() -> None:
    secrets_ = {totp.new_secret() for _ in range(20)}
    assert len(secrets_) == 20
    for secret in secrets_:
        assert len(base64.b32decode(secret)) == 20


def test_a_new_secret_round_trips_through_verify() -> None:
    secret = totp.new_secret()
    now = 1_800_000_000.5
    code = pyotp.TOTP(secret).at(now)
    assert totp.verify(secret, code, now=now, last_step=None) == int(now) // totp.STEP


def test_the_provisioning_uri_names_account_issuer_and_secret() -> None:
    secret = totp.new_secret()
    uri = totp.provisioning_uri(secret, account="ada@example.com", issuer="meshkit shop")
    assert uri.startswith("otpauth://totp/meshkit%20shop:ada%40example.com?")
    assert f"secret={secret}" in uri
    assert "issuer=meshkit%20shop" in uri
    parsed = pyotp.parse_uri(uri)
    assert isinstance(parsed, pyotp.TOTP)
    assert (parsed.digits, parsed.interval, parsed.digest().name) == (6, 30, "sha1")


def test_the_qr_code_is_a_png() -> None:
    uri = totp.provisioning_uri(totp.new_secret(), account="ada@example.com", issuer="meshkit")
    png = totp.qr_png(uri)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 100
