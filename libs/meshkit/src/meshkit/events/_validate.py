"""Strict validation of an event against its (parsed) Avro schema, naming every bad field.

fastavro's writer coerces or silently drops some mistakes (unknown keys are ignored) and its own
validator names fields by record type (``shop.x.Line.qty``) rather than by where they sit in the
datum; a producer fixing its code wants ``lines[2].quantity``. So we walk the schema ourselves.
"""

from __future__ import annotations

import datetime
import decimal
import uuid
from collections.abc import Mapping
from typing import Any

from meshkit.errors import FieldViolation

_INT_RANGE = (-(2**31), 2**31 - 1)
_LONG_RANGE = (-(2**63), 2**63 - 1)


def violations(datum: Any, parsed_schema: Any) -> list[FieldViolation]:
    """Every way ``datum`` does not conform to ``parsed_schema`` (a fastavro parsed record)."""
    named: Mapping[str, Any] = parsed_schema.get("__named_schemas", {})
    found: list[FieldViolation] = []
    _check(datum, parsed_schema, "", named, found)
    return found


def _check(  # noqa: PLR0912 - one branch per Avro type reads best
    datum: Any, schema: Any, path: str, named: Mapping[str, Any], out: list[FieldViolation]
) -> None:
    if isinstance(schema, list):  # union
        for branch in schema:
            trial: list[FieldViolation] = []
            _check(datum, branch, path, named, trial)
            if not trial:
                return
        names = ", ".join(_label(b) for b in schema)
        out.append(
            FieldViolation(path or "<event>", f"expected one of [{names}], got {_show(datum)}")
        )
        return
    if isinstance(schema, str):
        if schema in named:
            _check(datum, named[schema], path, named, out)
            return
        _primitive(datum, schema, None, path, out)
        return
    kind = schema.get("type")
    if kind == "record":
        _record(datum, schema, path, named, out)
    elif kind == "array":
        if not isinstance(datum, (list, tuple)):
            out.append(FieldViolation(path or "<event>", f"expected an array, got {_show(datum)}"))
            return
        for index, item in enumerate(datum):
            _check(item, schema["items"], f"{path}[{index}]", named, out)
    elif kind == "map":
        if not isinstance(datum, Mapping):
            out.append(FieldViolation(path or "<event>", f"expected a map, got {_show(datum)}"))
            return
        for key, value in datum.items():
            if not isinstance(key, str):
                out.append(FieldViolation(path, f"map keys must be strings, got {_show(key)}"))
            _check(value, schema["values"], f"{path}[{key!r}]", named, out)
    elif kind == "enum":
        if datum not in schema["symbols"]:
            out.append(
                FieldViolation(path, f"expected one of {schema['symbols']}, got {_show(datum)}")
            )
    elif kind == "fixed":
        if not isinstance(datum, (bytes, bytearray)) or len(datum) != schema["size"]:
            out.append(FieldViolation(path, f"expected {schema['size']} bytes, got {_show(datum)}"))
    else:
        _primitive(datum, str(kind), schema.get("logicalType"), path, out)


def _record(
    datum: Any,
    schema: Mapping[str, Any],
    path: str,
    named: Mapping[str, Any],
    out: list[FieldViolation],
) -> None:
    if not isinstance(datum, Mapping):
        out.append(FieldViolation(path or "<event>", f"expected a record, got {_show(datum)}"))
        return
    known = set()
    for spec in schema["fields"]:
        name = spec["name"]
        known.add(name)
        where = f"{path}.{name}" if path else name
        if name not in datum:
            if "default" not in spec:
                out.append(FieldViolation(where, "missing (the field has no default)"))
            continue
        _check(datum[name], spec["type"], where, named, out)
    for extra in sorted(set(datum) - known, key=str):
        where = f"{path}.{extra}" if path else str(extra)
        out.append(FieldViolation(where, "not in the schema"))


def _primitive(
    datum: Any, kind: str, logical: str | None, path: str, out: list[FieldViolation]
) -> None:
    ok = _PRIMITIVES.get(kind, lambda _: False)(datum)
    if logical in (
        "timestamp-millis",
        "timestamp-micros",
        "local-timestamp-millis",
        "local-timestamp-micros",
    ):
        ok = ok or isinstance(datum, datetime.datetime)
    elif logical == "date":
        ok = ok or isinstance(datum, datetime.date)
    elif logical in ("time-millis", "time-micros"):
        ok = ok or isinstance(datum, datetime.time)
    elif logical == "decimal":
        ok = ok or isinstance(datum, decimal.Decimal)
    elif logical == "uuid":
        ok = ok or isinstance(datum, uuid.UUID)
    if not ok:
        what = f"{kind} ({logical})" if logical else kind
        out.append(FieldViolation(path or "<event>", f"expected {what}, got {_show(datum)}"))


def _is_int(datum: Any, bounds: tuple[int, int]) -> bool:
    return (
        isinstance(datum, int) and not isinstance(datum, bool) and bounds[0] <= datum <= bounds[1]
    )


_PRIMITIVES: dict[str, Any] = {
    "null": lambda d: d is None,
    "boolean": lambda d: isinstance(d, bool),
    "int": lambda d: _is_int(d, _INT_RANGE),
    "long": lambda d: _is_int(d, _LONG_RANGE),
    "float": lambda d: isinstance(d, (int, float)) and not isinstance(d, bool),
    "double": lambda d: isinstance(d, (int, float)) and not isinstance(d, bool),
    "bytes": lambda d: isinstance(d, (bytes, bytearray)),
    "string": lambda d: isinstance(d, str),
}


def _label(schema: Any) -> str:
    if isinstance(schema, str):
        return schema
    if isinstance(schema, Mapping):
        return str(schema.get("name") or schema.get("logicalType") or schema.get("type"))
    return "union"


def _show(datum: Any) -> str:
    text = repr(datum)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(datum).__name__} {text}"
