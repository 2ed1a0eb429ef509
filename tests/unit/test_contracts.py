"""Contract checks over the tree: generated code is fresh, dependencies point inward."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SERVICES = sorted(p.parent for p in (REPO / "services").glob("*/pyproject.toml"))
SERVICE_PACKAGES = {p.name for p in SERVICES}
MESHKIT = REPO / "libs" / "meshkit"
MESH_RUNNER = REPO / "libs" / "mesh-runner"

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
    # Entry points translate wire <-> commands and call use cases; the composition root
    # (bootstrap) hands them what they need, so they never reach into adapters themselves.
    "entrypoints": (".adapters",),
}

# What the runtime library may not import: the runner built on it, and generated contracts
# (services bring their own; meshkit stays contract-agnostic).
MESHKIT_FORBIDDEN = ("mesh_runner", "mesh", "shop")
MESHKIT_FORBIDDEN_DEPENDENCIES = ("meshkit-contracts", "mesh-runner")


def imported_modules(path: Path, package: str = "") -> set[str]:
    """Every module a file imports, absolute names; relative imports are resolved against
    ``package`` (the file's own package, e.g. ``orders.entrypoints``) when it is given."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level > 0 and package:
            parts = package.split(".")
            base = ".".join(parts[: len(parts) - node.level + 1])
            if node.module:
                names.add(f"{base}.{node.module}")
            else:
                names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def package_of(path: Path, src: Path) -> str:
    """The dotted package a module file under ``src`` belongs to."""
    return ".".join(path.parent.relative_to(src).parts)


def violates(module: str, rule: str, package: str) -> bool:
    if rule.startswith("."):
        return module == package + rule or module.startswith(package + rule + ".")
    return module == rule or module.startswith(rule + ".")


def test_every_service_is_found() -> None:
    assert "inventory" in SERVICE_PACKAGES


def layer_problems(service: Path, root: Path, others: set[str]) -> list[str]:
    """What in ``service`` (services/<name>) breaks a FORBIDDEN rule or imports one of
    ``others`` (the other services)."""
    package = service.name
    src = service / "src"
    problems = []
    for path in sorted((src / package).rglob("*.py")):
        layer = path.relative_to(src / package).parts[0]
        where = path.relative_to(root).as_posix()
        for module in sorted(imported_modules(path, package_of(path, src))):
            top = module.split(".")[0]
            if top in others and top != package:
                problems.append(f"{where} imports another service: {module}")
            for rule in FORBIDDEN.get(layer, ()):
                if violates(module, rule, package):
                    problems.append(f"{where} ({layer}) imports {module}")
    return problems


@pytest.mark.parametrize("service", SERVICES, ids=lambda p: p.name)
def test_layers_depend_inward_and_services_never_import_each_other(service: Path) -> None:
    problems = layer_problems(service, REPO, SERVICE_PACKAGES)
    assert not problems, "\n".join(problems)


def test_the_layering_check_catches_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "model.py"
    bad.write_text("import grpc\nfrom shop.inventory.v1 import inventory_pb2\n")
    found = imported_modules(bad)
    assert any(violates(m, "grpc", "x") for m in found)
    assert any(violates(m, "shop", "x") for m in found)


def test_the_layering_check_catches_an_entrypoint_importing_adapters(tmp_path: Path) -> None:
    service = tmp_path / "services" / "demo"
    entrypoints = service / "src" / "demo" / "entrypoints"
    entrypoints.mkdir(parents=True)
    (entrypoints / "grpc_api.py").write_text(
        "from demo.app import handlers\nfrom demo.adapters.sqlite import Store\n"
    )
    (entrypoints / "events.py").write_text("from ..adapters import kafka\n")
    problems = layer_problems(service, tmp_path, {"demo"})
    assert problems == [
        "services/demo/src/demo/entrypoints/events.py (entrypoints) imports demo.adapters",
        "services/demo/src/demo/entrypoints/grpc_api.py (entrypoints) imports demo.adapters.sqlite",
    ]


# -- meshkit, the runtime, and mesh-runner, the developer runner built on it ------------------


def meshkit_import_problems(src: Path) -> list[str]:
    """Imports under ``src`` (meshkit's source root) of the runner or of generated contracts."""
    problems = []
    for path in sorted(src.rglob("*.py")):
        for module in sorted(imported_modules(path, package_of(path, src))):
            if any(violates(module, rule, "") for rule in MESHKIT_FORBIDDEN):
                problems.append(f"{path.relative_to(src).as_posix()} imports {module}")
    return problems


def forbidden_dependencies(pyproject: Path) -> list[str]:
    """The MESHKIT_FORBIDDEN_DEPENDENCIES a pyproject.toml lists (any section, any spelling)."""
    project = tomllib.loads(pyproject.read_text()).get("project", {})
    requirements = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    found = []
    for requirement in requirements:
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
        name = re.sub(r"[-_.]+", "-", match.group(1)).lower() if match else ""
        if name in MESHKIT_FORBIDDEN_DEPENDENCIES:
            found.append(name)
    return found


def test_meshkit_imports_neither_the_runner_nor_contracts() -> None:
    problems = meshkit_import_problems(MESHKIT / "src")
    assert not problems, "\n".join(problems)


def test_meshkit_depends_neither_on_the_runner_nor_on_contracts() -> None:
    assert forbidden_dependencies(MESHKIT / "pyproject.toml") == []


def test_the_meshkit_check_catches_runner_and_contract_imports(tmp_path: Path) -> None:
    package = tmp_path / "meshkit"
    package.mkdir()
    (package / "ok.py").write_text("import meshkit.server\nfrom meshkit import errors\n")
    (package / "bad.py").write_text(
        "from mesh_runner.cli import main\n"
        "import mesh.sagas.v1.sagas_pb2\n"
        "def lazy():\n    from shop.orders.v1 import orders_pb2\n"
    )
    assert meshkit_import_problems(tmp_path) == [
        "meshkit/bad.py imports mesh.sagas.v1.sagas_pb2",
        "meshkit/bad.py imports mesh_runner.cli",
        "meshkit/bad.py imports shop.orders.v1",
    ]
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        '[project]\nname = "meshkit"\ndependencies = ["grpcio==1", "Meshkit_Contracts"]\n'
        '[project.optional-dependencies]\ndev = ["mesh.runner>=0.1"]\n'
    )
    assert forbidden_dependencies(pyproject) == ["meshkit-contracts", "mesh-runner"]


# Calls that start a program: a string or path mentioning scripts/ in their arguments means the
# runner depends on a checkout's scripts/ directory, which an installed runner does not have.
PROCESS_CALLS = {
    "run",
    "Popen",
    "call",
    "check_call",
    "check_output",
    "spawn",  # mesh_runner.processes.spawn
    "system",
    "execv",
    "execve",
    "execvp",
    "execvpe",
    "create_subprocess_exec",
    "create_subprocess_shell",
}


def _mentions(node: ast.AST, tainted: set[str]) -> bool:
    return any(
        (isinstance(n, ast.Constant) and isinstance(n.value, str) and "scripts" in n.value)
        or (isinstance(n, ast.Name) and n.id in tainted)
        for n in ast.walk(node)
    )


def script_calls(src: Path) -> list[str]:
    """Process-starting calls under ``src`` whose arguments mention "scripts", directly or
    through a local name assigned from such an expression."""
    problems = []
    for path in sorted(src.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        scopes = [tree, *(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef))]
        for scope in scopes:
            assignments = [n for n in ast.walk(scope) if isinstance(n, ast.Assign | ast.AnnAssign)]
            tainted: set[str] = set()
            while True:  # names assigned from "scripts" paths, or from such names
                more = {
                    target.id
                    for a in assignments
                    if a.value is not None and _mentions(a.value, tainted)
                    for target in (a.targets if isinstance(a, ast.Assign) else [a.target])
                    if isinstance(target, ast.Name)
                } - tainted
                if not more:
                    break
                tainted |= more
            for call in (n for n in ast.walk(scope) if isinstance(n, ast.Call)):
                func = call.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                arguments = [*call.args, *(k.value for k in call.keywords)]
                if name in PROCESS_CALLS and any(_mentions(a, tainted) for a in arguments):
                    problems.append(f"{path.relative_to(src).as_posix()}:{call.lineno} {name}()")
    return sorted(set(problems))


def test_the_runner_runs_no_script_of_the_checkout() -> None:
    problems = script_calls(MESH_RUNNER / "src")
    assert not problems, "\n".join(problems)


def test_the_script_check_catches_a_runner_that_shells_out_to_scripts(tmp_path: Path) -> None:
    (tmp_path / "kafka.py").write_text(
        "import subprocess, sys\n"
        "def start(root):\n"
        "    script = root / 'scripts' / 'kafka'\n"
        "    command = [str(script), 'start']\n"
        "    subprocess.run(command, check=False)\n"
        "def stop(root):\n"
        "    subprocess.run([str(root / 'scripts' / 'kafka'), 'stop'], check=False)\n"
        "def fine(root):\n"
        "    subprocess.run([sys.executable, '-m', 'mesh_runner.local_kafka', 'stop'])\n"
    )
    assert script_calls(tmp_path) == ["kafka.py:5 run()", "kafka.py:7 run()"]


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


# How a channel is made by hand; the kit's meshkit.client.connect is the one way for a service.
RAW_CHANNELS = {"insecure_channel", "secure_channel", "intercept_channel"}


def raw_channels(src: Path) -> list[str]:
    """Every place under ``src`` that makes a grpc channel itself (``grpc.insecure_channel`` and
    the like, sync or aio), as ``file:line name()``."""
    problems = []
    for path in sorted(src.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
            func = call.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in RAW_CHANNELS:
                problems.append(f"{path.relative_to(src).as_posix()}:{call.lineno} {name}()")
    return problems


@pytest.mark.parametrize("service", SERVICES, ids=lambda p: p.name)
def test_services_call_peers_only_through_kit_channels(service: Path) -> None:
    """No call of a service is unbounded: its channels are the kit's, which give every call a
    deadline (the caller's, else the mesh default, cut to the request's budget), a breaker and a
    bulkhead (tests/unit/meshkit/test_client_resilience.py shows them working)."""
    problems = raw_channels(service / "src")
    assert not problems, "use ctx.connect(peer) (meshkit.client):\n" + "\n".join(problems)


def test_the_raw_channel_check_catches_one(tmp_path: Path) -> None:
    (tmp_path / "adapter.py").write_text(
        "import grpc\nfrom grpc import aio\n"
        "def peer():\n"
        "    return grpc.insecure_channel('127.0.0.1:50052')\n"
        "def later():\n"
        "    return aio.secure_channel('x:1', None)\n"
    )
    assert raw_channels(tmp_path) == [
        "adapter.py:4 insecure_channel()",
        "adapter.py:6 secure_channel()",
    ]
