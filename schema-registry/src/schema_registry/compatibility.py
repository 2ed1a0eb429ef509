"""Compatibility levels, whatever the schema type: which existing versions a new schema is
checked against, and in which direction, as Confluent's `CompatibilityChecker` does.

Each schema type brings its own pair check (reader, writer) -> reasons; this module applies a
level to it (BACKWARD: the new schema reads the latest; FORWARD: the latest reads the new one;
FULL: both; *_TRANSITIVE: against every live version) and says on each reason which schema was
the reader. `Incompatibility` is the one shape of a reason for every type.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Final, TypeVar

S = TypeVar("S")

COMPATIBILITY_LEVELS: Final = (
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
    "NONE",
)


@dataclass(frozen=True, slots=True)
class Incompatibility:
    """One reason a reader schema cannot read data written with a writer schema."""

    rule: str
    """The type's name for the rule broken (Avro: Java's `SchemaIncompatibilityType`)."""
    path: str
    """Where, in the reader schema (Avro: a JSON pointer, Java's location style)."""
    message: str
    """A full sentence: path, field, what is wrong, rule, and (shortened) both fragments."""
    reader_fragment: str
    """The reader sub-schema at `path`, as text."""
    writer_fragment: str
    """The writer sub-schema matched against it, as text."""
    detail: str = ""
    """The original checker's own message, e.g. "expected: 8, found: 4"."""
    direction: str = ""
    """Set by `check_compatibility`: "BACKWARD" (new schema is the reader) or "FORWARD"
    (an existing schema is the reader)."""
    existing_index: int | None = None
    """Set by `check_compatibility`: index into `existing` of the schema compared with."""


def check_compatibility(
    level: str, new: S, existing: Sequence[S], pair: Callable[[S, S], list[Incompatibility]]
) -> list[Incompatibility]:
    """Check `new` against the live versions of a subject, `existing` (oldest first).

    BACKWARD: new reads the latest; FORWARD: the latest reads new; FULL: both; *_TRANSITIVE:
    the same against every existing version (latest first, as Confluent reports); NONE: [].
    Each message starts by saying which schema is the reader and which the writer. ``pair``
    is the schema type's check: every reason its reader cannot read its writer's data.
    """
    if level not in COMPATIBILITY_LEVELS:
        raise ValueError(
            f"unknown compatibility level {level!r}; "
            f"expected one of {', '.join(COMPATIBILITY_LEVELS)}"
        )
    if level == "NONE" or not existing:
        return []
    base = level.removesuffix("_TRANSITIVE")
    last = len(existing) - 1
    indices = range(last, -1, -1) if level.endswith("_TRANSITIVE") else (last,)
    result: list[Incompatibility] = []
    for index in indices:
        old = existing[index]
        which = f"existing schema {index + 1} of {len(existing)}" + (
            " (latest)" if index == last else ""
        )
        if base in ("BACKWARD", "FULL"):
            prefix = f"BACKWARD: the new schema (reader) cannot read data written with {which} "
            result.extend(
                replace(
                    i,
                    message=f"{prefix}(writer): {i.message}",
                    direction="BACKWARD",
                    existing_index=index,
                )
                for i in pair(new, old)
            )
        if base in ("FORWARD", "FULL"):
            prefix = f"FORWARD: {which} (reader) cannot read data written with the new schema "
            result.extend(
                replace(
                    i,
                    message=f"{prefix}(writer): {i.message}",
                    direction="FORWARD",
                    existing_index=index,
                )
                for i in pair(old, new)
            )
    return result
