"""The namespaces' JSON Schemas shipped as contracts: ``proto/<package path>/config/
<namespace>.schema.json``, copied by ``make gen`` into the installed contracts packages
(``mesh``, ``shop``), where they are read with ``importlib.resources`` wherever the packages
are installed (a checkout, a wheel, a container)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from importlib import resources
from importlib.resources.abc import Traversable

from control.app.config import BundledSchema

CONTRACT_PACKAGES = ("mesh", "shop")
SCHEMA_SUFFIX = ".schema.json"
CONFIG_DIR = "config"


def bundled_schemas(packages: Sequence[str] = CONTRACT_PACKAGES) -> list[BundledSchema]:
    """Every ``**/config/<namespace>.schema.json`` in ``packages``, by namespace. ValueError
    when two files claim one namespace (which one would win is not for a start-up to guess)."""
    found: dict[str, BundledSchema] = {}
    for package in packages:
        root = resources.files(package)
        for path, file in _schema_files(root, package):
            namespace = file.name[: -len(SCHEMA_SUFFIX)]
            schema = BundledSchema(namespace, file.read_text(encoding="utf-8"), path)
            if namespace in found:
                raise ValueError(
                    f"two contracts claim the config namespace {namespace!r}:"
                    f" {found[namespace].origin} and {path}"
                )
            found[namespace] = schema
    return [found[name] for name in sorted(found)]


def _schema_files(directory: Traversable, path: str) -> Iterator[tuple[str, Traversable]]:
    for child in sorted(directory.iterdir(), key=lambda c: c.name):
        where = f"{path}/{child.name}"
        if child.is_dir():
            if child.name != "__pycache__":
                yield from _schema_files(child, where)
        elif directory.name == CONFIG_DIR and child.name.endswith(SCHEMA_SUFFIX):
            yield where, child
