"""Reading a JSON Schema text as Confluent's `JsonSchema` does, and its canonical forms.

A schema is JSON whose root is an object or a boolean. A new one is validated against the
metaschema of the draft its `$schema` names (draft-04, -06, -07, 2019-09, 2020-12; draft-07
when it names none or another, as Confluent defaults); a stored one is read leniently.
`$ref`s resolve through one `referencing` registry holding the schema, each referenced schema
(under its reference name when the registry passes names, and under its own `$id`), and the
drafts' metaschemas, so no `$ref` ever fetches from the network; a `$ref` that resolves to
nothing is an invalid schema (42201).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

import referencing
import referencing.jsonschema
from jsonschema import validators  # type: ignore[import-untyped]
from jsonschema.exceptions import SchemaError  # type: ignore[import-untyped]
from jsonschema_specifications import REGISTRY as _METASCHEMAS  # type: ignore[import-untyped]

from schema_registry.errors import InvalidSchema

#: `$schema` (scheme, trailing "#" dropped) -> the draft's validator and referencing spec.
_DRAFTS: Final[dict[str, tuple[Any, referencing.Specification[Any]]]] = {
    "json-schema.org/draft-04/schema": (
        validators.Draft4Validator,
        referencing.jsonschema.DRAFT4,
    ),
    "json-schema.org/draft-06/schema": (
        validators.Draft6Validator,
        referencing.jsonschema.DRAFT6,
    ),
    "json-schema.org/draft-07/schema": (
        validators.Draft7Validator,
        referencing.jsonschema.DRAFT7,
    ),
    "json-schema.org/draft/2019-09/schema": (
        validators.Draft201909Validator,
        referencing.jsonschema.DRAFT201909,
    ),
    "json-schema.org/draft/2020-12/schema": (
        validators.Draft202012Validator,
        referencing.jsonschema.DRAFT202012,
    ),
}
_DEFAULT_DRAFT: Final = "json-schema.org/draft-07/schema"


@dataclass(frozen=True, eq=False)
class JsonSchema:
    """A parsed JSON schema: the JSON value as read (key order kept), its draft, and the
    registry its `$ref`s resolve in. Immutable; `model` is the diff model, built once."""

    tree: Any
    draft: str
    registry: referencing.Registry[Any]
    base_uri: str
    model: Any  # schema_registry.json_schema._compat.Node

    @property
    def id(self) -> str | None:
        """The schema's own `$id` (`id` in draft-04), if it declares one."""
        if not isinstance(self.tree, dict):
            return None
        value = self.tree.get("id" if self.draft.endswith("draft-04/schema") else "$id")
        return value if isinstance(value, str) else None


def draft_of(tree: Any) -> str:
    """The draft a schema declares (Confluent's SpecificationVersion.getFromUrl), else draft-07."""
    if isinstance(tree, dict) and isinstance(tree.get("$schema"), str):
        url: str = tree["$schema"].split("://", 1)[-1].rstrip("#")
        if url in _DRAFTS:
            return url
    return _DEFAULT_DRAFT


def _reject_constant(name: str) -> Any:
    raise InvalidSchema(f"Invalid schema: {name} is not JSON")


def parse_schema(
    text: str, references: Sequence[Any] = (), *, new: bool = True, names: Sequence[str] = ()
) -> JsonSchema:
    """``text`` parsed; ``references`` are parsed `JsonSchema`s, ``names`` their reference
    names (same order; may be empty). Raises `InvalidSchema`."""
    from schema_registry.json_schema._compat import build_model

    try:
        tree = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        if isinstance(exc, InvalidSchema):
            raise
        raise InvalidSchema(f"Invalid schema: not JSON: {exc}") from None
    if not isinstance(tree, (dict, bool)):
        raise InvalidSchema(
            "Invalid schema: expected an object or boolean at the root, found "
            f"{type(tree).__name__}"
        )
    draft = draft_of(tree)
    validator, spec = _DRAFTS[draft]
    if new:
        try:
            validator.check_schema(tree)
        except SchemaError as exc:
            where = "/".join(str(p) for p in exc.absolute_path)
            raise InvalidSchema(
                f"Invalid schema: not a valid {draft.split('/', 1)[1]} schema"
                f"{f' at /{where}' if where else ''}: {exc.message}"
            ) from None
    registry: referencing.Registry[Any] = _METASCHEMAS
    for index, ref in enumerate(references):
        if not isinstance(ref, JsonSchema):
            raise InvalidSchema("Invalid schema: a JSON schema can only reference JSON schemas")
        registry = registry.combine(ref.registry)
        resource = _DRAFTS[ref.draft][1].create_resource(ref.tree)
        if index < len(names) and names[index]:
            registry = registry.with_resource(names[index], resource)
        if ref.id:
            registry = registry.with_resource(ref.id, resource)
    root = spec.create_resource(tree)
    base_uri = (root.id() or "") if isinstance(tree, dict) else ""
    registry = registry.with_resource(base_uri, root).crawl()
    model = build_model(tree, registry.resolver(base_uri), spec, strict=new)
    return JsonSchema(tree, draft, registry, base_uri, model)


def _java_double(value: float) -> str:
    """Java's Double.toString, which Jackson writes a double with."""
    if math.isnan(value) or math.isinf(value):
        return json.dumps(str(value).replace("inf", "Infinity").replace("nan", "NaN"))
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    sign, digits, exponent = Decimal(repr(value)).normalize().as_tuple()
    assert isinstance(exponent, int)
    text = "".join(map(str, digits))
    point = len(text) + exponent  # digits before the decimal point
    magnitude = abs(value)
    if 1e-3 <= magnitude < 1e7:
        if point <= 0:
            plain = "0." + "0" * -point + text
        elif point >= len(text):
            plain = text + "0" * (point - len(text)) + ".0"
        else:
            plain = text[:point] + "." + text[point:]
    else:
        plain = f"{text[0]}.{text[1:] or '0'}E{point - 1}"
    return ("-" if sign else "") + plain


def _jackson(value: Any, *, sort: bool) -> str:
    """Jackson's compact serialization of a tree (``sort``: keys ordered, as Confluent's
    objectMapperWithOrderedProps writes them)."""
    parts: list[str] = []
    stack: list[Any] = [value]
    # Iterative, as the registry's other walks are: deep schemas never overflow Python's stack.
    while stack:
        item = stack.pop()
        if isinstance(item, _Raw):
            parts.append(item.text)
        elif isinstance(item, dict):
            keys = sorted(item) if sort else list(item)
            todo: list[Any] = [_Raw("{")]
            for i, key in enumerate(keys):
                todo.append(_Raw(("," if i else "") + json.dumps(key, ensure_ascii=False) + ":"))
                todo.append(item[key])
            todo.append(_Raw("}"))
            stack.extend(reversed(todo))
        elif isinstance(item, list):
            todo = [_Raw("[")]
            for i, element in enumerate(item):
                if i:
                    todo.append(_Raw(","))
                todo.append(element)
            todo.append(_Raw("]"))
            stack.extend(reversed(todo))
        elif isinstance(item, float):
            parts.append(_java_double(item))
        else:
            parts.append(json.dumps(item, ensure_ascii=False))
    return "".join(parts)


@dataclass(frozen=True, slots=True)
class _Raw:
    text: str


def canonical_string(parsed: JsonSchema) -> str:
    """Confluent's canonicalString(): the tree written compactly, key order kept."""
    return _jackson(parsed.tree, sort=False)


def normalized_string(parsed: JsonSchema) -> str:
    """Confluent's normalize(): the canonical tree re-read with keys ordered, written compactly."""
    return _jackson(parsed.tree, sort=True)
