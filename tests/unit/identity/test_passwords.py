"""PasswordPolicy (NIST SP 800-63B 5.1.1.2) against the common-password list the service ships."""

from __future__ import annotations

import pytest

from identity.adapters.common_passwords import load_common_passwords
from identity.domain.passwords import PasswordPolicy, common_form, normalise

# A password that breaks no rule, to build longer ones from.
FINE = "Tr0ub4dor&3 horse"


@pytest.fixture(scope="module")
def policy() -> PasswordPolicy:
    return PasswordPolicy(common=load_common_passwords())


def test_the_shipped_list_is_real_and_normalised() -> None:
    common = load_common_passwords()
    assert len(common) >= 10_000
    assert {"password1", "iloveyou1", "fishing1"} <= common
    assert all(word == common_form(word) for word in common)
    # The header is provenance, not a password.
    assert not any(word.startswith("#") for word in common)
    # Shorter ones are refused by the length rule, so the list leaves them out.
    assert min(len(word) for word in common) >= 8


def test_loading_is_cached_per_process() -> None:
    assert load_common_passwords() is load_common_passwords()


def test_seven_characters_are_refused_and_eight_accepted(policy: PasswordPolicy) -> None:
    assert policy.problems("kx9#vq2") == ["The password must be at least 8 characters long."]
    assert policy.problems("kx9#vq2m") == []


@pytest.mark.parametrize("length", [64, 200, 256])
def test_long_passwords_are_accepted(policy: PasswordPolicy, length: int) -> None:
    password = (FINE * 20)[:length]
    assert len(password) == length
    assert policy.problems(password) == []


def test_more_than_256_characters_are_refused(policy: PasswordPolicy) -> None:
    assert policy.problems((FINE * 20)[:257]) == [
        "The password must be at most 256 characters long."
    ]


@pytest.mark.parametrize("password", ["password1", "iloveyou1", "PassWord1", "ILOVEYOU1"])
def test_common_passwords_are_refused_whatever_their_case(
    policy: PasswordPolicy, password: str
) -> None:
    assert policy.problems(password) == [
        "This password is commonly used; choose one that is harder to guess."
    ]


def test_length_is_counted_after_nfkc(policy: PasswordPolicy) -> None:
    # "ﬁ" (U+FB01) is one code point that NFKC turns into "f" + "i".
    assert normalise("ﬁ") == "fi"
    assert len("ﬁ2hk#q7") == 7
    assert policy.problems("ﬁ2hk#q7") == []


def test_common_passwords_are_found_through_nfkc(policy: PasswordPolicy) -> None:
    # Typed with the ligature, "fishing1" is still the common "fishing1"; full-width digits too.
    assert "This password is commonly used; choose one that is harder to guess." in (
        policy.problems("ﬁshing\uff11")
    )


def test_the_email_local_part_is_refused(policy: PasswordPolicy) -> None:
    problem = "The password must not contain the part of your email address before the @."
    assert policy.problems("My-Rosalind-42!", email="rosalind@example.com") == [problem]
    assert policy.problems("rosalind-is-42!", email="Rosalind+shop@example.com") == [problem]
    assert policy.problems("My-Rosalind-42!", email="someone.else@example.com") == []
    # A one- or two-letter local part would refuse almost everything, so it is not checked.
    assert policy.problems("My-Rosalind-42!", email="ro@example.com") == []


@pytest.mark.parametrize("word", ["meshkit", "shop", "MeshKit"])
def test_the_service_name_is_refused(policy: PasswordPolicy, word: str) -> None:
    problems = policy.problems(f"kx9#{word}#vq2")
    assert len(problems) == 1
    assert "the service's name" in problems[0]


@pytest.mark.parametrize(
    "password",
    [
        "aaaaaaaa",
        "ZZZZZZZZZZZZ",
        "12345678",
        "87654321",
        "abcdefghij",
        "zyxwvuts",
        "1234abcd",
        "aaaabbbbcccc",
        "abcabcabc",
        "xyzxyzxyz",
        "11112222",
    ],
)
def test_repetitive_and_sequential_passwords_are_refused(
    password: str,
) -> None:
    # An empty list, so only the repetition rule can speak.
    assert PasswordPolicy().problems(password) == [
        "The password must not be only repeated or sequential characters"
        " (such as aaaaaaaa or 12345678)."
    ]


@pytest.mark.parametrize("password", ["aaaaaaab", "12345678x", "correct horse battery", "xaaa1234"])
def test_runs_inside_other_text_are_accepted(password: str) -> None:
    assert PasswordPolicy().problems(password) == []


def test_every_broken_rule_is_reported(policy: PasswordPolicy) -> None:
    assert policy.problems("shop", email="shop@example.com") == [
        "The password must be at least 8 characters long.",
        "The password must not contain the part of your email address before the @.",
        'The password must not contain the service\'s name "shop".',
    ]


def test_the_policy_is_immutable() -> None:
    policy = PasswordPolicy()
    with pytest.raises(AttributeError):
        policy.min_length = 4  # type: ignore[misc]
