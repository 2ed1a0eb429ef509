"""Contract checks over the tree: generated code is fresh, dependencies point inward."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SERVICES = sorted(p.parent for p in (REPO / "services").glob("*/pyproject.toml"))
SERVICE_PACKAGES = {p.name for p in SERVICES}

# What each layer of a service may not import (beyond other services, which nothing may).
FORBIDDEN = {
    "domain": (
        "grpc",
        "shop",
        "google",
        "confluent_kafka",
        "fastavro",
        "sqlite3",
        "meshkit.server",
        ".app",
        ".adapters",
        ".entrypoints",
    ),
    "app": (
        "grpc",
        "shop",
        "google",
        "confluent_kafka",
        "sqlite3",
        "meshkit.server",
        ".adapters",
        ".entrypoints",
    ),
}


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, absolute names."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def violates(module: str, rule: str, package: str) -> bool:
    if rule.startswith("."):
        return module == package + rule or module.startswith(package + rule + ".")
    return module == rule or module.startswith(rule + ".")


def test_every_service_is_found() -> None:
    assert "inventory" in SERVICE_PACKAGES


@pytest.mark.parametrize("service", SERVICES, ids=lambda p: p.name)
def test_layers_depend_inward_and_services_never_import_each_other(service: Path) -> None:
    package = service.name
    source = service / "src" / package
    problems = []
    for path in sorted(source.rglob("*.py")):
        layer = path.relative_to(source).parts[0]
        for module in imported_modules(path):
            top = module.split(".")[0]
            if top in SERVICE_PACKAGES and top != package:
                problems.append(f"{path.relative_to(REPO)} imports another service: {module}")
            for rule in FORBIDDEN.get(layer, ()):
                if violates(module, rule, package):
                    problems.append(f"{path.relative_to(REPO)} ({layer}) imports {module}")
    assert not problems, "\n".join(problems)


def test_the_layering_check_catches_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "model.py"
    bad.write_text("import grpc\nfrom shop.inventory.v1 import inventory_pb2\n")
    found = imported_modules(bad)
    assert any(violates(m, "grpc", "x") for m in found)
    assert any(violates(m, "shop", "x") for m in found)


def test_gen_is_up_to_date_with_proto() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_gen_check_detects_a_stale_tree(tmp_path: Path) -> None:
    # Copy the checker next to a proto/ tree with one extra message and the committed gen/.
    for name in ("proto", "gen"):
        subprocess.run(["cp", "-r", str(REPO / name), str(tmp_path / name)], check=True)
    (tmp_path / "scripts").mkdir()
    subprocess.run(["cp", str(REPO / "scripts" / "gen.py"), str(tmp_path / "scripts")], check=True)
    common = tmp_path / "proto" / "shop" / "common" / "v1" / "common.proto"
    common.write_text(common.read_text() + "\n// Added.\nmessage Extra {}\n")
    result = subprocess.run(
        [sys.executable, str(tmp_path / "scripts" / "gen.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "gen/shop/common/v1/common_pb2.py" in result.stderr


EVENT_SCHEMAS = sorted((REPO / "proto").rglob("*.avsc"))


def test_event_schemas_exist() -> None:
    assert EVENT_SCHEMAS, "no .avsc under proto/"


@pytest.mark.parametrize("path", EVENT_SCHEMAS, ids=lambda p: p.name)
def test_event_schema_follows_the_conventions(path: Path) -> None:
    import json
    import re

    from schema_registry.avro import parse_schema

    text = path.read_text()
    schema = parse_schema(text)  # valid Avro, defaults included
    data = json.loads(text)
    package = ".".join(path.parent.parent.relative_to(REPO / "proto").parts)
    assert data["namespace"] == package, "namespace must be the proto package of its directory"
    snake = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", data["name"]).lower()
    assert path.name == f"{snake}.avsc", "one event per file, named after its record"
    assert schema.name == f"{package}.{data['name']}"
    assert (path.parent / "topic.json").is_file(), "the topic mapping register-all reads"

    def undocumented(node: object, where: str) -> list[str]:
        missing: list[str] = []
        if isinstance(node, dict):
            if node.get("type") == "record":
                if not node.get("doc"):
                    missing.append(f"{where} record {node.get('name')}")
                for field in node.get("fields", []):
                    if not field.get("doc"):
                        missing.append(f"{where}/{field['name']}")
                    missing += undocumented(field["type"], f"{where}/{field['name']}")
            for key in ("items", "values"):
                if key in node:
                    missing += undocumented(node[key], where)
        elif isinstance(node, list):
            for branch in node:
                missing += undocumented(branch, where)
        return missing

    assert undocumented(data, "") == [], "every record and field needs a doc"
