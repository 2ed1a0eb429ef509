"""The Namespace aggregate and its rules. Pure: no I/O, no grpc, no generated code."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from meshkit.errors import Violations

MAX_DISPLAY_NAME = 200
MAX_ID = 64


@dataclass(frozen=True)
class Namespace:
    """A Namespace: its id, its name for people, when it was created."""

    namespace_id: str
    display_name: str
    created_at: datetime.datetime


def validate_display_name(violations: Violations, display_name: str) -> None:
    """A display name is 1 to MAX_DISPLAY_NAME characters, not only blanks."""
    violations.check(display_name.strip() != "", "display_name", "is required")
    violations.check(
        len(display_name) <= MAX_DISPLAY_NAME,
        "display_name",
        f"must be at most {MAX_DISPLAY_NAME} characters",
    )


def validate_id(violations: Violations, namespace_id: str) -> None:
    """An id is 1 to MAX_ID characters."""
    violations.check(namespace_id != "", "namespace_id", "is required")
    violations.check(
        len(namespace_id) <= MAX_ID, "namespace_id", f"must be at most {MAX_ID} characters"
    )
