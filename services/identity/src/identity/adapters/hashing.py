"""Password hashing with argon2id (argon2-cffi), the first choice of OWASP's Password Storage sheet.

Passwords are NFKC-normalised (identity.domain.passwords.normalise) before hashing and verifying,
so a password typed differently on another device (a ligature, full-width digits) still verifies.
"""

from __future__ import annotations

import secrets

import argon2
from argon2 import profiles
from argon2.exceptions import VerificationError

from identity.domain.passwords import normalise

# RFC 9106's second recommended profile (argon2-cffi's default): t=3, m=64 MiB, p=4. That is above
# OWASP's argon2id minimum (m=19 MiB, t=2, p=1) on both memory and passes.
_DEFAULT = profiles.RFC_9106_LOW_MEMORY


class PasswordHasher:
    """Hashes passwords with argon2id and verifies them; safe to share across threads.

    verify() never raises for a bad stored hash: a wrong password and a damaged hash both mean
    "not this password". needs_rehash() says when a stored hash was made with other parameters,
    so the login that just verified it can store a new one. verify_dummy() spends the same time
    as verify() on an account that does not exist, so timing does not reveal which emails have
    accounts (OWASP Authentication Cheat Sheet, "Authentication Responses").
    """

    def __init__(
        self,
        *,
        time_cost: int = _DEFAULT.time_cost,
        memory_cost: int = _DEFAULT.memory_cost,
        parallelism: int = _DEFAULT.parallelism,
        hash_len: int = _DEFAULT.hash_len,
        salt_len: int = _DEFAULT.salt_len,
    ) -> None:
        self._hasher = argon2.PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_cost,
            parallelism=parallelism,
            hash_len=hash_len,
            salt_len=salt_len,
            type=argon2.Type.ID,
        )
        # Made here, with these parameters, so checking it costs what checking a real hash does.
        # Its password is random and thrown away: nothing can ever match it.
        self._dummy = self._hasher.hash(secrets.token_urlsafe(32))

    @classmethod
    def for_tests(cls) -> PasswordHasher:
        """A hasher with argon2-cffi's CHEAPEST parameters: fast, and useless against attackers."""
        cheapest = profiles.CHEAPEST
        return cls(
            time_cost=cheapest.time_cost,
            memory_cost=cheapest.memory_cost,
            parallelism=cheapest.parallelism,
            hash_len=cheapest.hash_len,
            salt_len=cheapest.salt_len,
        )

    def hash(self, password: str) -> str:
        """The PHC-format hash of the normalised password ("$argon2id$v=19$m=...")."""
        return self._hasher.hash(normalise(password))

    def verify(self, stored: str, password: str) -> bool:
        """True when password is the one stored was made from; False otherwise.

        False too when stored is not an argon2 hash at all: the caller treats both the same way.
        """
        try:
            return self._hasher.verify(stored, normalise(password))
        except (VerificationError, ValueError):
            # VerifyMismatchError (wrong password) is a VerificationError; InvalidHashError and the
            # UnicodeEncodeError of a non-ASCII "hash" are ValueErrors.
            return False

    def needs_rehash(self, stored: str) -> bool:
        """True when stored was not made with this hasher's parameters (or is no argon2 hash).

        Only meaningful after verify() succeeded: that is the moment the password is at hand.
        """
        try:
            return self._hasher.check_needs_rehash(stored)
        except ValueError:
            return True

    def verify_dummy(self, password: str) -> bool:
        """Spends the time of one verify() for an unknown account; always False."""
        self.verify(self._dummy, password)
        return False
