"""Password rules of NIST SP 800-63B (5.1.1.2): length, breached and context words, repetition.

Pure: no I/O and no third-party imports. The list of common passwords is handed in by the caller
(identity.adapters.common_passwords reads the one the service ships), so this module stays testable
with any set. Every rule looks at the password after NFKC normalisation, the form it is hashed in.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

# Context-specific words (800-63B: "the name of the service"): the platform's and the shop's.
SERVICE_WORDS: tuple[str, ...] = ("meshkit", "shop")

# Runs shorter than this are ordinary text ("ab", "oo"); from three on they read as a pattern.
_MIN_RUN = 3

# A local part of one or two characters would be found inside most passwords and refuse them for
# no gain, so the email rule starts at three.
_MIN_LOCAL_PART = 3


def normalise(password: str) -> str:
    """The NFKC form of password: what is measured, compared and hashed (800-63B 5.1.1.2).

    NFKC makes the ways a user's keyboard may type the same text (a ligature, full-width digits,
    composed or decomposed accents) one string, so the same password verifies from any device.
    """
    return unicodedata.normalize("NFKC", password)


def common_form(password: str) -> str:
    """The form PasswordPolicy.common holds: NFKC-normalised, then lower-cased.

    Case is ignored for the list because "Password1" is as guessable as "password1".
    """
    return normalise(password).lower()


@dataclass(frozen=True)
class PasswordPolicy:
    """Which passwords may be chosen; problems() lists every reason a password is refused.

    min_length and max_length count Unicode code points after NFKC normalisation. 800-63B asks
    for at least 8 and for at least 64 to be allowed; the 256 cap only keeps a single request from
    feeding megabytes to the hash. common holds passwords in common_form(); service_words are
    context words no password may contain. Immutable, so one instance is shared across threads.
    """

    min_length: int = 8
    max_length: int = 256
    common: frozenset[str] = frozenset()
    service_words: tuple[str, ...] = SERVICE_WORDS

    def problems(self, password: str, *, email: str = "") -> list[str]:
        """Human sentences, one per broken rule; [] when the password is acceptable.

        email, when given, is the account's address: its local part may not appear in the
        password. No composition rules (a digit, a symbol...) are applied: 800-63B says not to.
        """
        text = normalise(password)
        length = len(text)
        if length > self.max_length:
            # The other rules say nothing useful about an over-long input; skip their work.
            return [f"The password must be at most {self.max_length} characters long."]
        problems: list[str] = []
        if length < self.min_length:
            problems.append(f"The password must be at least {self.min_length} characters long.")
        folded = text.lower()
        if folded in self.common:
            problems.append("This password is commonly used; choose one that is harder to guess.")
        for part in _local_parts(email):
            if part in folded:
                problems.append(
                    "The password must not contain the part of your email address before the @."
                )
                break
        for word in self.service_words:
            if word.lower() in folded:
                problems.append(f'The password must not contain the service\'s name "{word}".')
        if length >= _MIN_RUN and _only_runs(folded):
            problems.append(
                "The password must not be only repeated or sequential characters"
                " (such as aaaaaaaa or 12345678)."
            )
        return problems


def _local_parts(email: str) -> list[str]:
    """The email's local part, and its base without a "+tag" (bob+shop@ and bob@ are one person)."""
    local, at, _domain = common_form(email).rpartition("@")
    if not at:
        return []
    parts = [local, local.split("+", 1)[0]]
    return [part for part in dict.fromkeys(parts) if len(part) >= _MIN_LOCAL_PART]


def _only_runs(text: str) -> bool:
    """True when text splits into runs of at least _MIN_RUN characters each.

    A run is one character repeated or consecutive code points, up or down: 800-63B's "repetitive
    or sequential characters". Besides aaaaaaaa and 12345678 this catches 1234abcd, aaabbbccc and
    abcabcabc, which are runs put side by side. Keyboard walks such as qwertyui are left to the
    common-password list, which holds the frequent ones.
    """
    n = len(text)
    # run_start[end]: the first index from which text[index:end] is still a single run.
    run_start = list(range(n + 1))
    for end in range(2, n + 1):
        step = ord(text[end - 1]) - ord(text[end - 2])
        if step not in (-1, 0, 1):
            run_start[end] = end - 1
        elif end >= 3 and ord(text[end - 2]) - ord(text[end - 3]) == step:
            run_start[end] = run_start[end - 1]
        else:
            run_start[end] = end - 2
    # split[i]: text[:i] splits into runs. O(n^2) at worst over at most max_length characters.
    split = [True] + [False] * n
    for end in range(_MIN_RUN, n + 1):
        split[end] = any(split[start] for start in range(run_start[end], end - _MIN_RUN + 1))
    return split[n]
