"""Recovery codes: ten distinct one-time codes, stored as digests, matched in constant time."""

from __future__ import annotations

import base64
import re

from identity.adapters import recovery


def test_ten_distinct_codes_of_80_bits() -> None:
    codes = recovery.new_codes()
    assert len(codes) == recovery.COUNT == 10
    assert len(set(codes)) == 10
    for code in codes:
        assert re.fullmatch(r"[a-z2-7]{4}(-[a-z2-7]{4}){3}", code)
        assert len(base64.b32decode(code.replace("-", "").upper())) == 10


def test_any_count() -> None:
    assert len(recovery.new_codes(3)) == 3
    assert recovery.new_codes(0) == []


def test_the_digest_is_sha256_hex_and_ignores_case_dashes_and_spaces() -> None:
    code = "k3xq-7mzp-a2bd-4hwe"
    stored = recovery.digest(code)
    assert re.fullmatch(r"[0-9a-f]{64}", stored)
    assert recovery.digest("K3XQ-7MZP-A2BD-4HWE") == stored
    assert recovery.digest("k3xq7mzpa2bd4hwe") == stored
    assert recovery.digest(" k3xq 7mzp a2bd 4hwe ") == stored
    assert recovery.digest("k3xq-7mzp-a2bd-4hwf") != stored


def test_matches_finds_the_digest_of_the_code() -> None:
    codes = recovery.new_codes()
    digests = [recovery.digest(code) for code in codes]
    assert recovery.matches(codes[7].upper(), digests) == digests[7]
    assert recovery.matches(codes[0].replace("-", ""), iter(digests)) == digests[0]


def test_matches_refuses_other_codes() -> None:
    digests = [recovery.digest(code) for code in recovery.new_codes()]
    assert recovery.matches(recovery.new_codes(1)[0], digests) is None
    assert recovery.matches("", digests) is None
    assert recovery.matches("anything", []) is None


def test_a_used_code_no_longer_matches_once_its_digest_is_removed() -> None:
    codes = recovery.new_codes()
    digests = [recovery.digest(code) for code in codes]
    used = recovery.matches(codes[3], digests)
    assert used is not None
    digests.remove(used)
    assert recovery.matches(codes[3], digests) is None
