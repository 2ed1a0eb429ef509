"""PasswordHasher: argon2id hashes, verification, rehash detection, the dummy for unknown emails."""

from __future__ import annotations

import pytest
from argon2 import profiles

from identity.adapters.hashing import PasswordHasher


@pytest.fixture(scope="module")
def hasher() -> PasswordHasher:
    return PasswordHasher.for_tests()


def test_the_hash_is_argon2id_and_salted(hasher: PasswordHasher) -> None:
    first = hasher.hash("correct horse battery staple")
    assert first.startswith("$argon2id$v=19$")
    assert hasher.hash("correct horse battery staple") != first


def test_verify_accepts_the_password_and_refuses_others(hasher: PasswordHasher) -> None:
    stored = hasher.hash("correct horse battery staple")
    assert hasher.verify(stored, "correct horse battery staple")
    assert not hasher.verify(stored, "correct horse battery stapl")
    assert not hasher.verify(stored, "")


def test_verify_normalises_the_password(hasher: PasswordHasher) -> None:
    # Typed with the "ﬁ" ligature on one device and plain "fi" on another: the same password.
    stored = hasher.hash("ﬁsh and chips 2024")
    assert hasher.verify(stored, "fish and chips 2024")
    assert hasher.verify(hasher.hash("fish and chips 2024"), "ﬁsh and chips 2024")


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "not a hash",
        "$argon2id$v=19$m=8,t=1,p=1$broken",
        "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",  # bcrypt
        "$argon2id$v=19$m=8,t=1,p=1$ü",
    ],
)
def test_a_malformed_hash_verifies_nothing(hasher: PasswordHasher, stored: str) -> None:
    assert not hasher.verify(stored, "correct horse battery staple")
    assert hasher.needs_rehash(stored)


def test_needs_rehash_when_the_parameters_changed() -> None:
    old = PasswordHasher.for_tests()
    new = PasswordHasher(time_cost=2, memory_cost=16, parallelism=1, hash_len=16, salt_len=16)
    stored = old.hash("correct horse battery staple")
    assert not old.needs_rehash(stored)
    assert new.needs_rehash(stored)
    # The new hasher still verifies what the old one made, so the login can upgrade the hash.
    assert new.verify(stored, "correct horse battery staple")
    assert not new.needs_rehash(new.hash("correct horse battery staple"))


def test_the_defaults_are_rfc_9106_low_memory_above_owasp_minimum() -> None:
    stored = PasswordHasher().hash("correct horse battery staple")
    low = profiles.RFC_9106_LOW_MEMORY
    assert f"$m={low.memory_cost},t={low.time_cost},p={low.parallelism}$" in stored
    # OWASP's argon2id minimum: m=19456 KiB, t=2, p=1.
    assert low.memory_cost >= 19456
    assert low.time_cost >= 2


def test_verify_dummy_is_always_false(hasher: PasswordHasher) -> None:
    assert hasher.verify_dummy("correct horse battery staple") is False
    assert hasher.verify_dummy("") is False
