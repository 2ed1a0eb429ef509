"""JSON Schema compatibility, rule for rule Confluent's `json/diff` package (SchemaDiff and its
per-type diffs over everit's schema model).

`build_model` reads a schema into the model Confluent's checker walks (everit's shape: a schema
with several keyword families is a synthetic allOf; `"type": [..]` an anyOf; integer is a
number that requires integers). `differences(original, update)` lists Confluent's Difference
types with their `#/` JSON pointer, original being the writer and update the reader, as
`JsonSchema.isBackwardCompatible` calls it; `check_pair` keeps those not in
COMPATIBLE_CHANGES_STRICT. Left out: unevaluatedProperties/Items, contains, reserved properties.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import referencing.jsonschema
from referencing.exceptions import Unresolvable

from schema_registry.compatibility import Incompatibility
from schema_registry.errors import InvalidSchema

#: SchemaDiff.COMPATIBLE_CHANGES_STRICT.
COMPATIBLE_CHANGES: Final = frozenset(
    [
        "ID_CHANGED",
        "DESCRIPTION_CHANGED",
        "TITLE_CHANGED",
        "DEFAULT_CHANGED",
        "SCHEMA_REMOVED",
        "TYPE_EXTENDED",
        "MAX_LENGTH_INCREASED",
        "MAX_LENGTH_REMOVED",
        "MIN_LENGTH_DECREASED",
        "MIN_LENGTH_REMOVED",
        "PATTERN_REMOVED",
        "MAXIMUM_INCREASED",
        "MAXIMUM_REMOVED",
        "MINIMUM_DECREASED",
        "MINIMUM_REMOVED",
        "EXCLUSIVE_MAXIMUM_INCREASED",
        "EXCLUSIVE_MAXIMUM_REMOVED",
        "EXCLUSIVE_MINIMUM_DECREASED",
        "EXCLUSIVE_MINIMUM_REMOVED",
        "MULTIPLE_OF_REDUCED",
        "MULTIPLE_OF_REMOVED",
        "REQUIRED_ATTRIBUTE_WITH_DEFAULT_ADDED",
        "REQUIRED_ATTRIBUTE_REMOVED",
        "DEPENDENCY_ARRAY_NARROWED",
        "DEPENDENCY_ARRAY_REMOVED",
        "DEPENDENCY_SCHEMA_REMOVED",
        "MAX_PROPERTIES_INCREASED",
        "MAX_PROPERTIES_REMOVED",
        "MIN_PROPERTIES_DECREASED",
        "MIN_PROPERTIES_REMOVED",
        "ADDITIONAL_PROPERTIES_ADDED",
        "ADDITIONAL_PROPERTIES_EXTENDED",
        "PROPERTY_WITH_EMPTY_SCHEMA_ADDED_TO_OPEN_CONTENT_MODEL",
        "REQUIRED_PROPERTY_WITH_DEFAULT_ADDED_TO_UNOPEN_CONTENT_MODEL",
        "OPTIONAL_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL",
        "PROPERTY_WITH_FALSE_REMOVED_FROM_CLOSED_CONTENT_MODEL",
        "PROPERTY_REMOVED_FROM_OPEN_CONTENT_MODEL",
        "PROPERTY_ADDED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL",
        "PROPERTY_REMOVED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL",
        "MAX_ITEMS_INCREASED",
        "MAX_ITEMS_REMOVED",
        "MIN_ITEMS_DECREASED",
        "MIN_ITEMS_REMOVED",
        "UNIQUE_ITEMS_REMOVED",
        "ADDITIONAL_ITEMS_ADDED",
        "ADDITIONAL_ITEMS_EXTENDED",
        "ITEM_WITH_EMPTY_SCHEMA_ADDED_TO_OPEN_CONTENT_MODEL",
        "ITEM_ADDED_TO_CLOSED_CONTENT_MODEL",
        "ITEM_WITH_FALSE_REMOVED_FROM_CLOSED_CONTENT_MODEL",
        "ITEM_REMOVED_FROM_OPEN_CONTENT_MODEL",
        "ITEM_ADDED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL",
        "ITEM_REMOVED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL",
        "ENUM_ARRAY_EXTENDED",
        "COMBINED_TYPE_EXTENDED",
        "PRODUCT_TYPE_NARROWED",
        "SUM_TYPE_EXTENDED",
        "NOT_TYPE_NARROWED",
    ]
)

_MISSING: Final = object()
_OBJECT_KEYS: Final = frozenset(
    [
        "properties",
        "required",
        "additionalProperties",
        "patternProperties",
        "dependencies",
        "minProperties",
        "maxProperties",
        "propertyNames",
        "dependentRequired",
        "dependentSchemas",
    ]
)
_ARRAY_KEYS: Final = frozenset(
    ["items", "prefixItems", "additionalItems", "minItems", "maxItems", "uniqueItems", "contains"]
)
_NUMBER_KEYS: Final = frozenset(
    ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"]
)
_STRING_KEYS: Final = frozenset(["minLength", "maxLength", "pattern", "format"])


@dataclass(eq=False)
class Node:
    """One schema in everit's model: ``kind`` is its class (empty, true, false, string,
    number, boolean, null, object, array, enum, const, combined, not, ref)."""

    kind: str
    source: Any = None
    id: Any = None
    title: Any = None
    description: Any = None
    default: Any = _MISSING
    attrs: dict[str, Any] = field(default_factory=dict)
    properties: dict[str, Node] = field(default_factory=dict)
    required: list[str] = field(default_factory=list)
    subs: list[Node] = field(default_factory=list)
    pattern_props: list[tuple[str, Node]] = field(default_factory=list)
    prop_deps: dict[str, frozenset[str]] = field(default_factory=dict)
    schema_deps: dict[str, Node] = field(default_factory=dict)
    child: Node | None = None  # items (all), not, ref target, additional* schema
    extra: Node | None = None  # schema of additionalProperties / additionalItems
    permits_extra: bool = True
    item_list: list[Node] | None = None
    unresolved: str = ""

    @property
    def is_empty(self) -> bool:
        return self.kind in ("empty", "true")


def build_model(tree: Any, resolver: Any, spec: Any, *, strict: bool) -> Node:
    """The model of ``tree``; `$ref`s resolved through ``resolver`` (unresolvable: with
    ``strict`` an `InvalidSchema`, else a reference to nothing, reported when compared)."""
    return _Builder(spec, strict).build(tree, resolver)


class _Builder:
    def __init__(self, spec: Any, strict: bool) -> None:
        self.spec = spec
        self.strict = strict
        self.memo: dict[int, Node] = {}
        self.draft4 = spec is referencing.jsonschema.DRAFT4

    def build(self, tree: Any, resolver: Any) -> Node:  # noqa: PLR0912, PLR0915 (everit's loader, step by step)
        if tree is True:
            return Node("true", tree)
        if tree is False:
            return Node("false", tree)
        if not isinstance(tree, dict):
            return Node("empty", tree)
        key = id(tree)
        if key in self.memo:
            return self.memo[key]
        id_key = "id" if self.draft4 else "$id"
        if isinstance(tree.get(id_key), str):
            resolver = resolver.in_subresource(self.spec.create_resource(tree))
        if isinstance(tree.get("$ref"), str):
            node = Node("ref", tree)
            self.memo[key] = node
            try:
                resolved = resolver.lookup(tree["$ref"])
            except Unresolvable:
                if self.strict:
                    raise InvalidSchema(
                        f"Invalid schema: $ref '{tree['$ref']}' resolves to nothing: name it "
                        "in a reference (its name, or the referenced schema's $id)"
                    ) from None
                node.unresolved = tree["$ref"]
                return node
            node.child = self.build(resolved.contents, resolved.resolver)
            return node
        parts: list[Node] = []
        placeholder = Node("combined", tree, attrs={"criterion": "allOf"})
        self.memo[key] = placeholder
        if "enum" in tree and isinstance(tree["enum"], list):
            parts.append(Node("enum", tree, attrs={"values": tree["enum"]}))
        for criterion in ("allOf", "anyOf", "oneOf"):
            if isinstance(tree.get(criterion), list):
                subs = [self.build(s, resolver) for s in tree[criterion]]
                parts.append(Node("combined", tree, attrs={"criterion": criterion}, subs=subs))
        if "not" in tree:
            parts.append(Node("not", tree, child=self.build(tree["not"], resolver)))
        if "const" in tree:
            parts.append(Node("const", tree, attrs={"value": tree["const"]}))
        types = tree.get("type")
        if isinstance(types, str):
            parts.append(self._typed(types, tree, resolver))
        elif isinstance(types, list):
            subs = [self._typed(t, tree, resolver) for t in types if isinstance(t, str)]
            parts.append(Node("combined", tree, attrs={"criterion": "anyOf"}, subs=subs))
        else:
            keys = set(tree)
            for kind, family in (
                ("array", _ARRAY_KEYS),
                ("object", _OBJECT_KEYS),
                ("number", _NUMBER_KEYS),
                ("string", _STRING_KEYS),
            ):
                if keys & family:
                    parts.append(self._typed(kind, tree, resolver))
        if not parts:
            node = Node("empty", tree)
        elif len(parts) == 1:
            node = parts[0]
        else:
            node = placeholder
            node.subs = parts
        for part in (node, *parts):
            part.id = tree.get(id_key)
            part.title = tree.get("title")
            part.description = tree.get("description")
            part.default = tree.get("default", _MISSING)
        if node is not placeholder:  # a $ref back to this schema finds the real node
            placeholder.__dict__.update(node.__dict__)
            self.memo[key] = node
        return node

    def _typed(self, kind: str, tree: dict[str, Any], resolver: Any) -> Node:
        if kind == "integer":
            node = Node("number", tree, attrs={"integer": True})
        else:
            node = Node(kind, tree)
        attrs = node.attrs
        if node.kind == "string":
            for name in ("maxLength", "minLength", "pattern"):
                attrs[name] = tree.get(name)
        elif node.kind == "number":
            attrs.setdefault("integer", False)
            for name in ("maximum", "minimum", "multipleOf"):
                attrs[name] = tree.get(name)
            for name in ("exclusiveMaximum", "exclusiveMinimum"):
                value = tree.get(name)
                attrs[name] = value if not isinstance(value, bool) else None
        elif node.kind == "object":
            self._object(node, tree, resolver)
        elif node.kind == "array":
            self._array(node, tree, resolver)
        return node

    def _object(self, node: Node, tree: dict[str, Any], resolver: Any) -> None:
        props = tree.get("properties")
        if isinstance(props, dict):
            node.properties = {k: self.build(v, resolver) for k, v in props.items()}
        required = tree.get("required")
        node.required = list(required) if isinstance(required, list) else []
        additional = tree.get("additionalProperties", True)
        node.permits_extra = additional is not False
        if isinstance(additional, dict):
            node.extra = self.build(additional, resolver)
        patterns = tree.get("patternProperties")
        if isinstance(patterns, dict):
            node.pattern_props = [(k, self.build(v, resolver)) for k, v in patterns.items()]
        deps: dict[str, Any] = {}
        for name in ("dependencies", "dependentRequired", "dependentSchemas"):
            if isinstance(tree.get(name), dict):
                deps.update(tree[name])
        for name, value in deps.items():
            if isinstance(value, list):
                node.prop_deps[name] = frozenset(value)
            else:
                node.schema_deps[name] = self.build(value, resolver)
        node.attrs["maxProperties"] = tree.get("maxProperties")
        node.attrs["minProperties"] = tree.get("minProperties")

    def _array(self, node: Node, tree: dict[str, Any], resolver: Any) -> None:
        items = tree.get("items", _MISSING)
        additional = tree.get("additionalItems", True)
        if isinstance(tree.get("prefixItems"), list):  # 2020-12: items is the rest
            node.item_list = [self.build(s, resolver) for s in tree["prefixItems"]]
            additional = True if items is _MISSING else items
        elif isinstance(items, list):
            node.item_list = [self.build(s, resolver) for s in items]
        elif items is not _MISSING:
            node.child = self.build(items, resolver)
        node.permits_extra = additional is not False
        if isinstance(additional, dict):
            node.extra = self.build(additional, resolver)
        node.attrs["maxItems"] = tree.get("maxItems")
        node.attrs["minItems"] = tree.get("minItems")
        node.attrs["uniqueItems"] = tree.get("uniqueItems") is True


@dataclass(frozen=True, slots=True)
class Difference:
    """One of Confluent's Difference: its Type name and `#/` JSON pointer."""

    type: str
    path: str


class _Context:
    def __init__(self, path: tuple[str, ...] = (), stack: set[tuple[int, int]] | None = None):
        self.path = list(path)
        self.diffs: list[Difference] = []
        self.stack = stack if stack is not None else set()

    def sub(self) -> _Context:
        return _Context(tuple(self.path), self.stack)

    @contextmanager
    def enter(self, *steps: str) -> Iterator[None]:
        self.path.extend(steps)
        try:
            yield
        finally:
            del self.path[len(self.path) - len(steps) :]

    def add(self, type_: str, *attr: str) -> None:
        self.diffs.append(Difference(type_, "#/" + "/".join([*self.path, *attr])))

    @property
    def compatible(self) -> bool:
        return all(d.type in COMPATIBLE_CHANGES for d in self.diffs)


def _target(node: Node) -> Node:
    seen = 0
    while node.kind == "ref":
        if node.child is None:
            raise _Unresolved(node.unresolved)
        node = node.child
        seen += 1
        if seen > 1000:
            raise _Unresolved("a cycle of $refs")
    return node


class _Unresolved(Exception):
    pass


def _compare(ctx: _Context, original: Node | None, update: Node | None) -> None:
    if original is None and update is None:
        return
    if original is None:
        ctx.add("SCHEMA_ADDED")
        return
    if update is None:
        ctx.add("SCHEMA_REMOVED")
        return
    original, update = _target(original), _target(update)
    pair = (id(original), id(update))
    if pair in ctx.stack:  # a recursive pair already being compared: taken as compatible
        return
    ctx.stack.add(pair)
    try:
        _compare_types(ctx, original, update)
    finally:
        ctx.stack.discard(pair)


def _compare_types(ctx: _Context, original: Node, update: Node) -> None:  # noqa: PLR0912 (SchemaDiff.compareTypes)
    if original.kind != "combined" and update.kind == "combined":
        if len(update.subs) == 1:
            sub = ctx.sub()
            _compare(sub, original, update.subs[0])
            if sub.compatible:
                ctx.diffs.extend(sub.diffs)
                return
        elif update.attrs["criterion"] in ("anyOf", "oneOf"):
            for schema in update.subs:
                sub = ctx.sub()
                _compare(sub, original, schema)
                if sub.compatible:
                    ctx.diffs.extend(sub.diffs)
                    ctx.add("SUM_TYPE_EXTENDED")
                    return
    elif original.kind == "combined" and update.kind != "combined":
        if len(original.subs) == 1:
            sub = ctx.sub()
            _compare(sub, original.subs[0], update)
            if sub.compatible:
                ctx.diffs.extend(sub.diffs)
                return
        elif original.attrs["criterion"] == "allOf":
            for schema in original.subs:
                sub = ctx.sub()
                _compare(sub, schema, update)
                if sub.compatible:
                    ctx.diffs.extend(sub.diffs)
                    ctx.add("PRODUCT_TYPE_NARROWED")
                    return
    if _class(original) != _class(update):
        if original.kind == "false" or update.is_empty:
            return
        ctx.add("TYPE_CHANGED")
        return
    if original.id != update.id:
        ctx.add("ID_CHANGED")
    if original.title != update.title:
        ctx.add("TITLE_CHANGED")
    if original.description != update.description:
        ctx.add("DESCRIPTION_CHANGED")
    if original.default != update.default:
        ctx.add("DEFAULT_CHANGED")
    compare = _BY_KIND.get(original.kind)
    if compare is not None:
        compare(ctx, original, update)


def _class(node: Node) -> str:
    return node.kind


def _bounds(ctx: _Context, name: str, rule: str, old: Any, new: Any) -> None:
    """Confluent's X_ADDED / X_REMOVED / X_INCREASED / X_DECREASED for one attribute."""
    if old == new:
        return
    if old is None:
        ctx.add(f"{rule}_ADDED", name)
    elif new is None:
        ctx.add(f"{rule}_REMOVED", name)
    elif old < new:
        ctx.add(f"{rule}_INCREASED", name)
    elif old > new:
        ctx.add(f"{rule}_DECREASED", name)


def _string(ctx: _Context, original: Node, update: Node) -> None:
    o, u = original.attrs, update.attrs
    _bounds(ctx, "maxLength", "MAX_LENGTH", o["maxLength"], u["maxLength"])
    _bounds(ctx, "minLength", "MIN_LENGTH", o["minLength"], u["minLength"])
    if o["pattern"] is None and u["pattern"] is not None:
        ctx.add("PATTERN_ADDED", "pattern")
    elif o["pattern"] is not None and u["pattern"] is None:
        ctx.add("PATTERN_REMOVED", "pattern")
    elif o["pattern"] != u["pattern"]:
        ctx.add("PATTERN_CHANGED", "pattern")


def _number(ctx: _Context, original: Node, update: Node) -> None:
    from decimal import Decimal

    o, u = original.attrs, update.attrs
    _bounds(ctx, "maximum", "MAXIMUM", o["maximum"], u["maximum"])
    _bounds(ctx, "minimum", "MINIMUM", o["minimum"], u["minimum"])
    _bounds(
        ctx, "exclusiveMaximum", "EXCLUSIVE_MAXIMUM", o["exclusiveMaximum"], u["exclusiveMaximum"]
    )
    _bounds(
        ctx, "exclusiveMinimum", "EXCLUSIVE_MINIMUM", o["exclusiveMinimum"], u["exclusiveMinimum"]
    )
    old = Decimal(str(o["multipleOf"])) if o["multipleOf"] is not None else None
    new = Decimal(str(u["multipleOf"])) if u["multipleOf"] is not None else None
    if old != new:
        if old is None:
            ctx.add("MULTIPLE_OF_ADDED", "multipleOf")
        elif new is None:
            ctx.add("MULTIPLE_OF_REMOVED", "multipleOf")
        elif old != 0 and new % old == 0:
            ctx.add("MULTIPLE_OF_EXPANDED", "multipleOf")
        elif new != 0 and old % new == 0:
            ctx.add("MULTIPLE_OF_REDUCED", "multipleOf")
        else:
            ctx.add("MULTIPLE_OF_CHANGED", "multipleOf")
    if o["integer"] != u["integer"]:
        ctx.add("TYPE_EXTENDED" if o["integer"] else "TYPE_NARROWED")


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _enum(ctx: _Context, original: Node, update: Node) -> None:
    old = {_key(v) for v in original.attrs["values"]}
    new = {_key(v) for v in update.attrs["values"]}
    if old != new:
        if new >= old:
            ctx.add("ENUM_ARRAY_EXTENDED", "enum")
        elif old >= new:
            ctx.add("ENUM_ARRAY_NARROWED", "enum")
        else:
            ctx.add("ENUM_ARRAY_CHANGED", "enum")


def _const(ctx: _Context, original: Node, update: Node) -> None:
    if _key(original.attrs["value"]) != _key(update.attrs["value"]):
        ctx.add("ENUM_ARRAY_CHANGED", "const")


def _not(ctx: _Context, original: Node, update: Node) -> None:
    with ctx.enter("not"):
        sub = ctx.sub()
        _compare(sub, update.child, original.child)  # reversed, as Confluent does
        ctx.add("NOT_TYPE_NARROWED" if sub.compatible else "NOT_TYPE_EXTENDED")


def _combined(ctx: _Context, original: Node, update: Node) -> None:
    oc, uc = original.attrs["criterion"], update.attrs["criterion"]
    if oc != uc:
        singleton_o, singleton_u = len(original.subs) == 1, len(update.subs) == 1
        if (
            uc == "anyOf"
            or (singleton_o and singleton_u)
            or (singleton_o and uc == "oneOf")
            or (singleton_u and oc == "allOf")
        ):
            ctx.add("COMBINED_TYPE_EXTENDED")
        else:
            ctx.add("COMBINED_TYPE_CHANGED")
            return
    olds = _distinct(original.subs)
    news = _distinct(update.subs)
    if len(olds) < len(news):
        ctx.add("PRODUCT_TYPE_EXTENDED" if uc == "allOf" else "SUM_TYPE_EXTENDED")
    elif len(olds) > len(news):
        ctx.add("SUM_TYPE_NARROWED" if oc in ("anyOf", "oneOf") else "PRODUCT_TYPE_NARROWED")
    edges: dict[tuple[int, int], list[Difference]] = {}
    for i, old in enumerate(olds):
        with ctx.enter(oc, str(i)):
            for j, new in enumerate(news):
                sub = ctx.sub()
                _compare(sub, old, new)
                if sub.compatible:
                    edges[(i, j)] = sub.diffs
    matching = _max_matching(edges, len(olds))
    for edge in matching:
        ctx.diffs.extend(edges[edge])
    if len(matching) < min(len(olds), len(news)):
        ctx.add("COMBINED_TYPE_SUBSCHEMAS_CHANGED")


def _distinct(nodes: list[Node]) -> list[Node]:
    seen: dict[str, Node] = {}
    for node in nodes:
        # everit compares subschemas by their text; a "type" list's members share one source
        key = f"{node.kind}:{node.attrs.get('criterion')}:{_key(node.source)}"
        seen.setdefault(key, node)
    return list(seen.values())


def _max_matching(edges: dict[tuple[int, int], Any], left: int) -> list[tuple[int, int]]:
    """A maximum-cardinality bipartite matching (augmenting paths; subschema lists are short)."""
    right_of: dict[int, int] = {}
    adjacent: dict[int, list[int]] = {}
    for i, j in edges:
        adjacent.setdefault(i, []).append(j)

    def augment(i: int, seen: set[int]) -> bool:
        for j in adjacent.get(i, ()):
            if j not in seen:
                seen.add(j)
                if j not in right_of or augment(right_of[j], seen):
                    right_of[j] = i
                    return True
        return False

    for i in range(left):
        augment(i, set())
    return sorted((i, j) for j, i in right_of.items())


def _open(node: Node) -> bool:
    return node.permits_extra and node.extra is None and not node.pattern_props


def _partial(node: Node, key: str | None) -> Node | None:
    for pattern, schema in node.pattern_props:
        if key is not None and re.search(pattern, key):
            return schema
    return node.extra


def _object(ctx: _Context, original: Node, update: Node) -> None:  # noqa: PLR0912 (ObjectSchemaDiff)
    with ctx.enter("required"):
        for key in original.properties:
            if key in update.properties:
                was, now = key in original.required, key in update.required
                if was and not now:
                    ctx.add("REQUIRED_ATTRIBUTE_REMOVED", key)
                elif now and not was:
                    with_default = _target(update.properties[key]).default is not _MISSING
                    ctx.add(
                        "REQUIRED_ATTRIBUTE_WITH_DEFAULT_ADDED"
                        if with_default
                        else "REQUIRED_ATTRIBUTE_ADDED",
                        key,
                    )
    with ctx.enter("properties"):
        for key in _union(original.properties, update.properties):
            with ctx.enter(key):
                _property(ctx, original, update, key)
    with ctx.enter("dependencies"):
        for key in _union(original.prop_deps, update.prop_deps):
            old_deps, new_deps = original.prop_deps.get(key), update.prop_deps.get(key)
            if new_deps is None:
                ctx.add("DEPENDENCY_ARRAY_REMOVED", key)
            elif old_deps is None:
                ctx.add("DEPENDENCY_ARRAY_ADDED", key)
            elif old_deps != new_deps:
                ctx.add(
                    "DEPENDENCY_ARRAY_EXTENDED"
                    if new_deps >= old_deps
                    else "DEPENDENCY_ARRAY_NARROWED"
                    if old_deps >= new_deps
                    else "DEPENDENCY_ARRAY_CHANGED",
                    key,
                )
        for key in _union(original.schema_deps, update.schema_deps):
            old_dep, new_dep = original.schema_deps.get(key), update.schema_deps.get(key)
            if new_dep is None:
                ctx.add("DEPENDENCY_SCHEMA_REMOVED", key)
            elif old_dep is None:
                ctx.add("DEPENDENCY_SCHEMA_ADDED", key)
            else:
                with ctx.enter(key):
                    _compare(ctx, old_dep, new_dep)
    with ctx.enter("additionalProperties"):
        if original.permits_extra != update.permits_extra:
            ctx.add(
                "ADDITIONAL_PROPERTIES_ADDED"
                if update.permits_extra
                else "ADDITIONAL_PROPERTIES_REMOVED"
            )
        elif original.extra is None and update.extra is not None:
            ctx.add("ADDITIONAL_PROPERTIES_NARROWED")
        elif update.extra is None and original.extra is not None:
            ctx.add("ADDITIONAL_PROPERTIES_EXTENDED")
        else:
            _compare(ctx, original.extra, update.extra)
    _bounds(
        ctx,
        "maxProperties",
        "MAX_PROPERTIES",
        original.attrs["maxProperties"],
        update.attrs["maxProperties"],
    )
    _bounds(
        ctx,
        "minProperties",
        "MIN_PROPERTIES",
        original.attrs["minProperties"],
        update.attrs["minProperties"],
    )


def _union(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return list(dict.fromkeys([*a, *b]))


def _property(ctx: _Context, original: Node, update: Node, key: str) -> None:  # noqa: PLR0912
    old, new = original.properties.get(key), update.properties.get(key)
    if new is None:
        assert old is not None
        if _open(update):
            ctx.add("PROPERTY_REMOVED_FROM_OPEN_CONTENT_MODEL")
            return
        partial = _partial(update, key)
        if partial is not None:
            sub = ctx.sub()
            _compare(sub, old, partial)
            ctx.diffs.extend(sub.diffs)
            ctx.add(
                "PROPERTY_REMOVED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL"
                if sub.compatible
                else "PROPERTY_REMOVED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL"
            )
        elif old.kind == "false":
            ctx.add("PROPERTY_WITH_FALSE_REMOVED_FROM_CLOSED_CONTENT_MODEL")
        else:
            ctx.add("PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL")
        return
    if old is None:
        required = key in update.required
        with_default = _target(new).default is not _MISSING
        if _open(original):
            if new.is_empty:
                ctx.add("PROPERTY_WITH_EMPTY_SCHEMA_ADDED_TO_OPEN_CONTENT_MODEL")
            elif required:
                ctx.add(
                    "REQUIRED_PROPERTY_WITH_DEFAULT_ADDED_TO_OPEN_CONTENT_MODEL"
                    if with_default
                    else "REQUIRED_PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL"
                )
            else:
                ctx.add("OPTIONAL_PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL")
            return
        partial = _partial(original, key)
        if partial is not None:
            sub = ctx.sub()
            _compare(sub, partial, new)
            ctx.diffs.extend(sub.diffs)
            ctx.add(
                "PROPERTY_ADDED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL"
                if sub.compatible
                else "PROPERTY_ADDED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL"
            )
        if required:
            ctx.add(
                "REQUIRED_PROPERTY_WITH_DEFAULT_ADDED_TO_UNOPEN_CONTENT_MODEL"
                if with_default
                else "REQUIRED_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL"
            )
        else:
            ctx.add("OPTIONAL_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL")
        return
    _compare(ctx, old, new)


def _array(ctx: _Context, original: Node, update: Node) -> None:
    with ctx.enter("items"):
        _compare(ctx, original.child, update.child)
    olds, news = original.item_list or [], update.item_list or []
    shared = min(len(olds), len(news))
    for index in range(shared):
        with ctx.enter(f"items/{index}"):
            _compare(ctx, olds[index], news[index])
    for index in range(shared, len(olds)):
        with ctx.enter(f"items/{index}"):
            _item_removed(ctx, olds[index], update)
    for index in range(shared, len(news)):
        with ctx.enter(f"items/{index}"):
            _item_added(ctx, original, news[index])
    with ctx.enter("additionalItems"):
        if original.permits_extra != update.permits_extra:
            ctx.add(
                "ADDITIONAL_ITEMS_REMOVED" if original.permits_extra else "ADDITIONAL_ITEMS_ADDED"
            )
        elif original.extra is None and update.extra is not None:
            ctx.add("ADDITIONAL_ITEMS_NARROWED")
        elif update.extra is None and original.extra is not None:
            ctx.add("ADDITIONAL_ITEMS_EXTENDED")
        else:
            _compare(ctx, original.extra, update.extra)
    o, u = original.attrs, update.attrs
    _bounds(ctx, "maxItems", "MAX_ITEMS", o["maxItems"], u["maxItems"])
    _bounds(ctx, "minItems", "MIN_ITEMS", o["minItems"], u["minItems"])
    if o["uniqueItems"] != u["uniqueItems"]:
        ctx.add("UNIQUE_ITEMS_REMOVED" if o["uniqueItems"] else "UNIQUE_ITEMS_ADDED", "uniqueItems")


def _item_removed(ctx: _Context, old: Node, update: Node) -> None:
    if update.permits_extra and update.extra is None:
        ctx.add("ITEM_REMOVED_FROM_OPEN_CONTENT_MODEL")
    elif update.extra is not None:
        sub = ctx.sub()
        _compare(sub, old, update.extra)
        ctx.diffs.extend(sub.diffs)
        ctx.add(
            "ITEM_REMOVED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL"
            if sub.compatible
            else "ITEM_REMOVED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL"
        )
    elif old.kind == "false":
        ctx.add("ITEM_WITH_FALSE_REMOVED_FROM_CLOSED_CONTENT_MODEL")
    else:
        ctx.add("ITEM_REMOVED_FROM_CLOSED_CONTENT_MODEL")


def _item_added(ctx: _Context, original: Node, new: Node) -> None:
    if original.permits_extra and original.extra is None:
        ctx.add(
            "ITEM_WITH_EMPTY_SCHEMA_ADDED_TO_OPEN_CONTENT_MODEL"
            if new.is_empty
            else "ITEM_ADDED_TO_OPEN_CONTENT_MODEL"
        )
    elif original.extra is not None:
        sub = ctx.sub()
        _compare(sub, original.extra, new)
        ctx.diffs.extend(sub.diffs)
        ctx.add(
            "ITEM_ADDED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL"
            if sub.compatible
            else "ITEM_ADDED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL"
        )
    else:
        ctx.add("ITEM_ADDED_TO_CLOSED_CONTENT_MODEL")


_BY_KIND: Final[dict[str, Any]] = {
    "string": _string,
    "number": _number,
    "enum": _enum,
    "const": _const,
    "not": _not,
    "combined": _combined,
    "object": _object,
    "array": _array,
}


def differences(original: Any, update: Any) -> list[Difference]:
    """Every Difference Confluent's SchemaDiff.compare(original, update) finds (compatible ones
    too); ``original`` and ``update`` are parsed `JsonSchema`s (writer, reader)."""
    ctx = _Context()
    _compare(ctx, original.model, update.model)
    return ctx.diffs


def _fragment(node: Any) -> str:
    text = json.dumps(node, separators=(",", ":"))
    return text if len(text) <= 200 else text[:197] + "..."


def _at(tree: Any, path: str) -> Any:
    node = tree
    for step in path.removeprefix("#/").split("/"):
        if not step:
            continue
        if isinstance(node, dict) and step in node:
            node = node[step]
        elif isinstance(node, list) and step.isdigit() and int(step) < len(node):
            node = node[int(step)]
        else:
            return None
    return node


def check_pair(reader: Any, writer: Any) -> list[Incompatibility]:
    """Every reason ``reader`` cannot read what ``writer`` wrote: the Differences of
    SchemaDiff.compare(writer, reader) outside COMPATIBLE_CHANGES_STRICT."""
    try:
        found = differences(writer, reader)
    except _Unresolved as exc:
        return [
            Incompatibility(
                rule="UNRESOLVED_REFERENCE",
                path="#/",
                message=f"a $ref cannot be resolved: {exc}",
                reader_fragment="",
                writer_fragment="",
            )
        ]
    result = []
    for diff in found:
        if diff.type in COMPATIBLE_CHANGES:
            continue
        reader_part = _fragment(_at(reader.tree, diff.path))
        writer_part = _fragment(_at(writer.tree, diff.path))
        result.append(
            Incompatibility(
                rule=diff.type,
                path=diff.path,
                message=(
                    f"at '{diff.path}': {diff.type} (reader: {reader_part}, writer: {writer_part})"
                ),
                reader_fragment=reader_part,
                writer_fragment=writer_part,
                detail=f'{{errorType:"{diff.type}", jsonPath:"{diff.path}"}}',
            )
        )
    return result
