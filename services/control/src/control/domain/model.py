"""Configuration documents, versioned per namespace: the values, the limits and the rules of
names and documents. Pure: no I/O, no grpc, no generated code.

A namespace (``orders``, ``flags``) holds one JSON object at a time; every change stores a new
version (1, 2, 3... without gaps) and keeps the ones before it, with who made it and why. A
document is kept as the text it was given (numbers keep their exact form), after checking that
it is one JSON object: strict JSON, so NaN, Infinity and duplicate keys, which parsers disagree
on, are refused rather than read one way here and another way in a service.
"""

from __future__ import annotations

import datetime
import json
import re
from dataclasses import dataclass
from typing import Any, NoReturn

from meshkit.errors import FieldViolation, InvalidArgument, Violations, quoted

NAMESPACE_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
"""A namespace: lower-case letters, digits, ".", "_" and "-", 1 to 64, starting with a letter or
a digit (the contract's rule; meshkit's config client checks the same)."""

MAX_DOCUMENT_BYTES = 1 << 20
"""A document (or a schema) is at most 1 MiB of UTF-8: every watcher holds it in memory, and a
gRPC message over 4 MiB would not reach a default client at all."""
MAX_REASON = 1000
"""Characters of a change's reason, at most."""
MAX_CLIENT = 200
"""Characters of a watching client's name, at most."""
MAX_ERROR = 2000
"""Characters of a client's NACK message kept, at most (longer ones are cut, not refused: the
report matters more than its tail)."""
EMPTY_DOCUMENT = "{}"
"""The document of version 0: a namespace with no document yet."""


@dataclass(frozen=True)
class ConfigVersion:
    """One version of a namespace's document: ``version`` 1, 2, 3... (0: none yet, in a watch's
    snapshot), the document as stored, who stored it, why, when, and for a rollback the version
    whose document it restores (else 0)."""

    namespace: str
    version: int
    document: str
    author: str = ""
    reason: str = ""
    created_at: datetime.datetime | None = None
    rollback_of: int = 0

    @classmethod
    def none_yet(cls, namespace: str) -> ConfigVersion:
        """Version 0 of ``namespace``: the empty document, stored by nobody."""
        return cls(namespace, 0, EMPTY_DOCUMENT)


@dataclass(frozen=True)
class NamespaceSchema:
    """The JSON Schema every document of ``namespace`` must satisfy, as registered."""

    namespace: str
    schema: str
    author: str
    updated_at: datetime.datetime


@dataclass(frozen=True)
class NamespaceSummary:
    """A namespace at a glance: its current version (0: none yet), whether a schema is
    registered, and when the current version was stored (None: never)."""

    namespace: str
    version: int
    has_schema: bool
    updated_at: datetime.datetime | None


@dataclass(frozen=True)
class ClientReport:
    """A watching client's latest verdict on a namespace: ACK (``accepted``) or NACK (with
    ``error``) of ``version``, and the version it runs now."""

    namespace: str
    client: str
    version: int
    accepted: bool
    error: str
    running_version: int
    reported_at: datetime.datetime


def check_namespace(violations: Violations, namespace: str, field: str = "namespace") -> None:
    """Record a violation of ``field`` unless ``namespace`` follows NAMESPACE_RE."""
    if not namespace:
        violations.add(field, "is required")
    elif not NAMESPACE_RE.fullmatch(namespace):
        violations.add(
            field,
            f"{quoted(namespace)} is not a namespace: 1 to 64 of a-z, 0-9, '.', '_', '-',"
            " starting with a letter or a digit",
        )


def check_size(violations: Violations, text: str, field: str) -> None:
    """Record a violation of ``field`` when ``text`` is over MAX_DOCUMENT_BYTES of UTF-8."""
    # Characters bound bytes from below: most texts are decided without encoding them.
    if len(text) > MAX_DOCUMENT_BYTES or len(text.encode()) > MAX_DOCUMENT_BYTES:
        violations.add(field, f"must be at most {MAX_DOCUMENT_BYTES} bytes of UTF-8")


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _NotStrictJson(ValueError):
    pass


def _refuse_constant(name: str) -> NoReturn:
    raise _NotStrictJson(f"{name} is not JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise _NotStrictJson(f"the key {quoted(key)} appears twice in one object")
        found[key] = value
    return found


def parse_object(text: str, field: str) -> dict[str, Any]:
    """``text`` as a JSON object; InvalidArgument naming ``field`` when it is not strict JSON
    (NaN, Infinity and duplicate keys refused) or not an object."""
    try:
        value = json.loads(text, parse_constant=_refuse_constant, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as exc:
        _invalid(field, f"is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
    except _NotStrictJson as exc:
        _invalid(field, f"is not strict JSON: {exc}")
    except RecursionError:
        _invalid(field, "is nested too deeply")
    if not isinstance(value, dict):
        _invalid(field, f"must be a JSON object, not {json_type(value)}")
    return value


def json_type(value: Any) -> str:
    """The JSON type of a parsed ``value``, with its article: "an array", "a string"..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _invalid(field: str, description: str) -> NoReturn:
    raise InvalidArgument(violations=[FieldViolation(field, description)])
