"""A namespace's JSON Schema, compiled, and what a document does wrong against it.

Validation is the reference implementation's (``jsonschema``), in the draft the schema's
``$schema`` names (2020-12 when it names none; an unknown one is refused rather than guessed).
Formats are annotations, as the 2020-12 specification has them by default. References resolve
within the schema only: nothing is fetched over the network, so a schema with a remote ``$ref``
must be bundled into one file first (as flagd's is for the ``flags`` namespace).

Errors name the failing field as a path into the document (``max_lines_per_order``,
``flags.new-checkout.variants``, ``lines[0].quantity``), the most relevant first
(``jsonschema``'s ``best_match``), worded the way meshkit's field violations are ("must be at
least 1").
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import referencing.exceptions
from jsonschema import exceptions as schema_errors

from control.domain.model import check_size, clip, json_type, parse_object
from meshkit.errors import FailedPrecondition, FieldViolation, InvalidArgument, Violations

MAX_VIOLATIONS = 10
"""Field violations reported for one document, at most (the best first)."""
_DESCRIPTION_LIMIT = 300
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


class Schema:
    """A compiled JSON Schema. Immutable; ``violations`` may be called from any thread."""

    def __init__(self, text: str, field: str = "schema") -> None:
        """Compile ``text``; InvalidArgument naming ``field`` (or the schema's own bad part,
        e.g. ``schema.properties.x.minimum``) when it is not a valid JSON Schema."""
        violations = Violations()
        check_size(violations, text, field)
        violations.raise_if_any()
        parsed = parse_object(text, field)
        validator_class = _validator_class(parsed, field)
        try:
            validator_class.check_schema(parsed)
        except schema_errors.SchemaError as exc:
            where = _path(exc.absolute_path)
            raise InvalidArgument(
                violations=[
                    FieldViolation(
                        f"{field}.{where}" if where else field,
                        "is not a valid JSON Schema: " + clip(exc.message, _DESCRIPTION_LIMIT),
                    )
                ]
            ) from None
        self.text = text
        self.parsed = parsed
        self._validator = validator_class(parsed)

    def same_as(self, text: str) -> bool:
        """True when ``text`` is this schema, whatever its whitespace and key order."""
        try:
            other = json.loads(text)
        except ValueError:
            return False
        return _canonical(other) == _canonical(self.parsed)

    def violations(self, document: Any) -> list[FieldViolation]:
        """What ``document`` (parsed JSON) does wrong, the most relevant first, one per field,
        at most MAX_VIOLATIONS; empty when it is valid. FailedPrecondition when the schema
        cannot be applied (a ``$ref`` that does not resolve)."""
        try:
            errors = list(self._validator.iter_errors(document))
        except referencing.exceptions.Unresolvable as exc:
            raise FailedPrecondition(
                f"the namespace's schema cannot be applied: a $ref does not resolve ({exc});"
                " register the schema bundled into one file",
                reason="SCHEMA_UNRESOLVABLE",
            ) from None
        if not errors:
            return []
        best = schema_errors.best_match(errors)
        ordered = [best, *sorted((e for e in errors if e is not best), key=_relevance)]
        found: dict[str, FieldViolation] = {}
        for error in ordered:
            for violation in _describe(error):
                found.setdefault(violation.field, violation)
            if len(found) >= MAX_VIOLATIONS:
                break
        return list(found.values())[:MAX_VIOLATIONS]


def _relevance(error: schema_errors.ValidationError) -> Any:
    return schema_errors.relevance(error)


class _Unknown:
    """validator_for's answer for a ``$schema`` it does not know."""


def _validator_class(schema: dict[str, Any], field: str) -> Any:
    if "$schema" not in schema:
        return jsonschema.Draft202012Validator
    found = jsonschema.validators.validator_for(schema, default=_Unknown)
    if found is _Unknown:
        raise InvalidArgument(
            violations=[
                FieldViolation(
                    f"{field}.$schema",
                    f"names no JSON Schema draft this service knows"
                    f" ({clip(str(schema['$schema']), 80)}); use"
                    " https://json-schema.org/draft/2020-12/schema or an earlier draft's URI",
                )
            ]
        )
    return found


def _canonical(value: Any) -> str:
    # sort_keys and the exact number forms: {"a": 1} and {"a": true} are not the same schema.
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _path(parts: Iterable[Any]) -> str:
    """A document path as meshkit names fields: ``lines[0].quantity``; a key that is not an
    identifier in brackets, quoted: ``flags["new.checkout"]``."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _IDENTIFIER.fullmatch(part):
            text += f".{part}" if text else part
        else:
            text += f"[{json.dumps(part)}]"
    return text


def _join(base: str, key: str) -> str:
    """``base`` (a formatted path) and one key more."""
    if _IDENTIFIER.fullmatch(key):
        return f"{base}.{key}" if base else key
    return f"{base}[{json.dumps(key)}]"


def _describe(error: schema_errors.ValidationError) -> list[FieldViolation]:
    """The field violation(s) of one error: the path of the value at fault, and why."""
    where = _path(error.absolute_path)
    keyword, expected, instance = error.validator, error.validator_value, error.instance
    if keyword == "required" and isinstance(instance, dict):
        missing = [name for name in expected if name not in instance]
        return [FieldViolation(_join(where, str(name)), "is required") for name in missing]
    if keyword in ("additionalProperties", "unevaluatedProperties") and isinstance(instance, dict):
        extras = _extras(error.schema, instance)
        if extras:
            return [
                FieldViolation(_join(where, name), "is not a field of this namespace's schema")
                for name in extras
            ]
    return [FieldViolation(where or "document", _why(keyword, expected, instance, error.message))]


def _extras(schema: Any, instance: dict[str, Any]) -> list[str]:
    if not isinstance(schema, dict):
        return []
    named = schema.get("properties") or {}
    patterns = list((schema.get("patternProperties") or {}).keys())
    return [
        key
        for key in instance
        if key not in named and not any(re.search(pattern, key) for pattern in patterns)
    ]


_BOUNDS = {
    "minimum": "must be at least {}",
    "maximum": "must be at most {}",
    "exclusiveMinimum": "must be greater than {}",
    "exclusiveMaximum": "must be less than {}",
    "multipleOf": "must be a multiple of {}",
    "minLength": "must be at least {} characters long",
    "maxLength": "must be at most {} characters long",
    "minItems": "must have at least {} items",
    "maxItems": "must have at most {} items",
    "minProperties": "must have at least {} fields",
    "maxProperties": "must have at most {} fields",
}
_ARTICLES = {"array": "an array", "object": "an object", "integer": "an integer"}


def _why(keyword: str, expected: Any, instance: Any, message: str) -> str:
    if keyword in _BOUNDS and not isinstance(expected, bool):
        return _BOUNDS[keyword].format(expected) + f" (is {_shown(instance)})"
    if keyword == "type":
        kinds = expected if isinstance(expected, list) else [expected]
        wanted = " or ".join(_ARTICLES.get(k, "null" if k == "null" else f"a {k}") for k in kinds)
        return f"must be {wanted}, not {json_type(instance)}"
    if keyword == "enum" and isinstance(expected, Sequence):
        shown = ", ".join(json.dumps(v) for v in list(expected)[:10])
        more = f" and {len(expected) - 10} more" if len(expected) > 10 else ""
        return f"must be one of {shown}{more} (is {_shown(instance)})"
    if keyword == "const":
        return f"must be {clip(json.dumps(expected), 80)} (is {_shown(instance)})"
    if keyword == "pattern":
        return f"must match the pattern {clip(str(expected), 80)!r} (is {_shown(instance)})"
    return clip(message, _DESCRIPTION_LIMIT)


def _shown(value: Any) -> str:
    try:
        return clip(json.dumps(value), 40)
    except (TypeError, ValueError):
        return json_type(value)
