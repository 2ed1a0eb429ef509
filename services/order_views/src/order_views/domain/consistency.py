"""Consistency tokens: how a caller asks to read its own write.

PlaceOrder answers ``consistency_token = "<order_id>@<version>"``: the order's version after the
write. A query given the token answers only once the read model holds that order at that version
or later (``OrderRecord.version >= version``).
"""

from __future__ import annotations

from dataclasses import dataclass

from meshkit.errors import FieldViolation, InvalidArgument

MAX_TOKEN_LENGTH = 300


@dataclass(frozen=True)
class ConsistencyToken:
    """A write to wait for: ``order_id`` at ``version`` (1 or more)."""

    order_id: str
    version: int

    @classmethod
    def parse(cls, text: str, field: str = "consistency_token") -> ConsistencyToken | None:
        """The token in ``text``; None for an empty text (no wait). Raises InvalidArgument naming
        ``field`` when it is not ``<order_id>@<version>`` with a positive version."""
        if not text:
            return None
        order_id, sep, version = text.rpartition("@")
        if (
            len(text) > MAX_TOKEN_LENGTH
            or not sep
            or not order_id
            or not version.isascii()
            or not version.isdigit()
            or int(version) < 1
        ):
            raise InvalidArgument(
                violations=[
                    FieldViolation(
                        field, "must be a consistency token from PlaceOrder: <order_id>@<version>"
                    )
                ],
                reason="BAD_CONSISTENCY_TOKEN",
            )
        return cls(order_id, int(version))

    def __str__(self) -> str:
        return f"{self.order_id}@{self.version}"
