"""The one error hierarchy of the mesh.

Domain and application code raise these; the server edge maps each to a gRPC status exactly once
(see meshkit.server), with google.rpc details: BadRequest field violations for InvalidArgument,
PreconditionFailure for FailedPrecondition, ErrorInfo when a machine-readable reason is given.

This module imports nothing from grpc, so a service's pure domain layer may raise these errors
without depending on the transport.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

QUOTE_LIMIT = 32
"""Characters of a client's value an error message repeats, at most (``quoted``)."""
LISTED = 5
"""Items of a list (values, field violations) an error message names, at most (``listed``)."""


@dataclass(frozen=True)
class FieldViolation:
    """One bad request field: its path as the contract names it (e.g. ``lines[0].quantity``)."""

    field: str
    description: str


@dataclass(frozen=True)
class PreconditionViolation:
    """One unmet precondition: its type (e.g. ``STOCK``), subject (e.g. the SKU) and why."""

    type: str
    subject: str
    description: str


class MeshError(Exception):
    """Base of every error the edge maps to a gRPC status (``status`` is the StatusCode name).

    ``reason`` (UPPER_SNAKE_CASE) and ``metadata`` become a google.rpc.ErrorInfo detail, so clients
    can branch on a stable reason rather than on message text.
    """

    status: ClassVar[str] = "UNKNOWN"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.metadata: dict[str, str] = dict(metadata or {})


class InvalidArgument(MeshError):
    """The request is malformed; ``violations`` names every bad field (BadRequest detail)."""

    status = "INVALID_ARGUMENT"

    def __init__(
        self,
        message: str | None = None,
        *,
        violations: Sequence[FieldViolation] = (),
        reason: str | None = None,
    ) -> None:
        self.violations = tuple(violations)
        if message is None:
            # The first few say what to fix; the BadRequest detail lists them (up to the edge's
            # bound), and a message listing thousands would not reach the caller at all.
            shown = self.violations[:LISTED]
            message = "invalid request: " + "; ".join(f"{v.field}: {v.description}" for v in shown)
            if len(self.violations) > len(shown):
                message += f"; and {len(self.violations) - len(shown)} more"
        super().__init__(message, reason=reason)


class NotFound(MeshError):
    """The named entity does not exist."""

    status = "NOT_FOUND"


class AlreadyExists(MeshError):
    """An entity with that identity exists already (e.g. an idempotency key reused)."""

    status = "ALREADY_EXISTS"


class FailedPrecondition(MeshError):
    """The system is not in a state that allows the operation (e.g. not enough stock)."""

    status = "FAILED_PRECONDITION"

    def __init__(
        self,
        message: str,
        *,
        violations: Sequence[PreconditionViolation] = (),
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.violations = tuple(violations)


class Aborted(MeshError):
    """A concurrency conflict (an optimistic version check failed); retry the operation."""

    status = "ABORTED"


class OutOfRange(MeshError):
    """A value is past the valid range (e.g. reading beyond the end)."""

    status = "OUT_OF_RANGE"


class PermissionDenied(MeshError):
    """The caller is known but not allowed to do this."""

    status = "PERMISSION_DENIED"


class Unauthenticated(MeshError):
    """The caller is not known."""

    status = "UNAUTHENTICATED"


class ResourceExhausted(MeshError):
    """A quota or rate limit was hit."""

    status = "RESOURCE_EXHAUSTED"


class Unavailable(MeshError):
    """A dependency is down; the call may succeed if retried later."""

    status = "UNAVAILABLE"


class DeadlineExceeded(MeshError):
    """The operation did not finish in time."""

    status = "DEADLINE_EXCEEDED"


@dataclass
class Violations:
    """Collects field violations so a request reports every bad field at once, not the first.

    >>> v = Violations()
    >>> v.check(sku != "", "sku", "must not be empty")   # doctest: +SKIP
    >>> v.raise_if_any()                                  # doctest: +SKIP
    """

    items: list[FieldViolation] = field(default_factory=list)

    def check(self, ok: bool, field_path: str, description: str) -> bool:
        """Record a violation of ``field_path`` unless ``ok``; returns ``ok``."""
        if not ok:
            self.items.append(FieldViolation(field_path, description))
        return ok

    def add(self, field_path: str, description: str) -> None:
        """Record a violation unconditionally."""
        self.items.append(FieldViolation(field_path, description))

    def raise_if_any(self) -> None:
        """Raise InvalidArgument naming every recorded field, if any were recorded."""
        if self.items:
            raise InvalidArgument(violations=self.items)


def listed(values: Iterable[object], limit: int = LISTED) -> str:
    """The first ``limit`` of ``values``, each ``quoted``, then how many more there are:
    ``'A', 'B', 'C' and 7 more``. For a list of a client's values in an error message."""
    items = list(values)
    shown = ", ".join(quoted(v) for v in items[:limit])
    return shown if len(items) <= limit else f"{shown} and {len(items) - limit} more"


def quoted(value: object, limit: int = QUOTE_LIMIT) -> str:
    """``value``'s repr for an error message, cut to ``limit`` characters with an ellipsis.

    Never echo a client's value whole: an unbounded value in a status message can overflow the
    caller's metadata limit (grpcio's is 16 KiB) and turn a clear INVALID_ARGUMENT into
    RESOURCE_EXHAUSTED.
    """
    text = value if isinstance(value, str) else str(value)
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "…"
