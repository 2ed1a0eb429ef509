"""The local mesh's declaration (mesh.toml) and where its runtime state lives (.mesh/).

A second mesh runs beside the first from the same checkout with a port offset N (`mesh
--port-offset N ...`, or $MESH_PORT_OFFSET): ``load_mesh`` then gives the mesh rooted at
``<root>/.mesh/offset-N/`` (``offset_root``), a shadow of the checkout: every top-level entry
linked back except .mesh/ and .git/, and a mesh.toml whose every declared port (``port``,
``http_port``, and the same numbers inside strings: URLs, ``--port`` arguments) is N higher.
Everything keyed on the root follows without knowing about offsets: state (.mesh/ under the
shadow), the services' relative database paths (their working directory is the root), and
their peers' ports (``MESH_CONFIG`` is the shadow's mesh.toml, which meshkit.addresses reads).

Standard library only: mesh_runner.local_kafka imports find_root, and scripts/kafka runs that
before .venv exists (tests/unit/runner/test_local_kafka.py runs it without site-packages).
"""

from __future__ import annotations

import json
import os
import re
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

DEFAULT_REGISTRY_PORT = 8081
KAFKA = "kafka"
PORT_OFFSET_ENV = "MESH_PORT_OFFSET"
# In a shadow root (offset_root): the offset its mesh.toml already carries, so it is not added
# twice when the shadow itself is loaded.
OFFSET_MARKER = ".port-offset"
# Room above the highest declared port: `mesh up --replicas` puts replica k on port + 1000 * k.
REPLICA_HEADROOM = 3000


class ConfigError(ValueError):
    """mesh.toml is missing or malformed; the message says where."""


@dataclass(frozen=True)
class Component:
    """One process of the local mesh."""

    name: str
    command: tuple[str, ...]
    port: int
    health: Literal["grpc", "http"]
    env: dict[str, str] = field(default_factory=dict)
    after_start: tuple[tuple[str, ...], ...] = ()
    # Not started when any of these variables is set in `mesh up`'s environment (the local
    # trace receiver steps aside when the user exports spans elsewhere, e.g. to Jaeger).
    unless_env: tuple[str, ...] = ()
    # Exports this component's own spans (gets OTEL_SERVICE_NAME and the OTLP endpoint).
    traced: bool = True
    # A second, HTTP listener beside the gRPC port (identity's OAuth endpoints); the service
    # finds it through meshkit.addresses, and `mesh up` checks it is free too.
    http_port: int | None = None

    def skipped(self, environ: Mapping[str, str]) -> str | None:
        """The variable that makes `mesh up` skip this component, or None."""
        return next((name for name in self.unless_env if environ.get(name)), None)


@dataclass(frozen=True)
class Mesh:
    """The checkout's mesh: its root, components in start order, and runtime directories."""

    root: Path
    components: tuple[Component, ...]
    # What every declared port was moved by (`mesh --port-offset N`); root is then the shadow.
    port_offset: int = 0

    @property
    def state_dir(self) -> Path:
        """.mesh/ under the root: everything `mesh up` writes at run time."""
        return self.root / ".mesh"

    @property
    def run_dir(self) -> Path:
        """Pid files and the Kafka record."""
        return self.state_dir / "run"

    @property
    def log_dir(self) -> Path:
        """One log file per component."""
        return self.state_dir / "logs"

    def component(self, name: str) -> Component:
        """The component called ``name``; ConfigError when there is none."""
        for component in self.components:
            if component.name == name:
                return component
        known = ", ".join([KAFKA, *(c.name for c in self.components)])
        raise ConfigError(f"no component {name!r} in the mesh; known: {known}")


def find_root(start: Path | None = None) -> Path:
    """The nearest directory at or above ``start`` (default: cwd, or $MESH_ROOT) with mesh.toml."""
    if start is None and os.environ.get("MESH_ROOT"):
        start = Path(os.environ["MESH_ROOT"])
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "mesh.toml").is_file():
            return candidate
    raise ConfigError(f"no mesh.toml in {here} or above: run mesh inside a meshkit checkout")


def resolve_command(argv: tuple[str, ...]) -> list[str]:
    """``python`` -> this interpreter; other bare names -> this venv's bin/ if they are there."""
    head, *rest = argv
    if head == "python":
        return [sys.executable, *rest]
    candidate = Path(sys.executable).parent / head
    if "/" not in head and candidate.exists():
        return [str(candidate), *rest]
    return [head, *rest]


def port_offset_from_env(environ: Mapping[str, str] | None = None) -> int:
    """$MESH_PORT_OFFSET as a number (0 when unset); ConfigError when it is not one."""
    raw = (os.environ if environ is None else environ).get(PORT_OFFSET_ENV, "").strip()
    if not raw:
        return 0
    if not raw.isdigit():
        raise ConfigError(f"${PORT_OFFSET_ENV} must be a whole number of ports, not {raw!r}")
    return int(raw)


def offset_root(root: Path, offset: int) -> Path:
    """The shadow root of the mesh moved by ``offset`` (see the module doc), made or refreshed
    now: ``<root>/.mesh/offset-N`` with mesh.toml moved and every other top-level entry of
    ``root`` linked. Idempotent; ConfigError when a moved port would not be a TCP port."""
    if offset < 0:
        raise ConfigError(f"a port offset is a whole number of ports >= 0, not {offset}")
    source = root / "mesh.toml"
    try:
        data = tomllib.loads(source.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{source}: {exc}") from None
    raws = [raw for raw in data.get("component", []) if isinstance(raw, dict)]
    declared = {int(raw[key]) for raw in raws for key in ("port", "http_port") if key in raw}
    if declared and max(declared) + offset + REPLICA_HEADROOM > 65535:
        raise ConfigError(
            f"--port-offset {offset} moves port {max(declared)} past 65535 (leave"
            f" {REPLICA_HEADROOM} above it for replicas): use an offset below"
            f" {65535 - REPLICA_HEADROOM - max(declared) + 1}"
        )
    shadow = root / ".mesh" / f"offset-{offset}"
    shadow.mkdir(parents=True, exist_ok=True)
    # Kafka's jars and the tools live in .cache/: one per checkout, even before the first fetch.
    (root / ".cache").mkdir(exist_ok=True)
    for entry in root.iterdir():
        link = shadow / entry.name
        if entry.name in (".mesh", ".git", "mesh.toml") or link.is_symlink() or link.exists():
            continue
        link.symlink_to(entry.resolve())
    moved = "\n".join(
        [
            f"# Written by `mesh --port-offset {offset}` from {source}: every port + {offset}.",
            "# Edit that file, not this one: it is rewritten whenever the moved mesh is loaded.",
            "",
            *(_component_toml(_moved(raw, declared, offset)) for raw in raws),
        ]
    )
    target = shadow / "mesh.toml"
    if not target.exists() or target.read_text() != moved:
        target.write_text(moved)
    (shadow / OFFSET_MARKER).write_text(f"{offset}\n")
    return shadow


def _moved(value: Any, declared: set[int], offset: int) -> Any:
    """``value`` with every declared port, as a number or as a whole number inside a string,
    ``offset`` higher; other numbers stay."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value + offset if value in declared else value
    if isinstance(value, str):
        return re.sub(
            r"\b\d+\b", lambda m: str(int(m[0]) + offset) if int(m[0]) in declared else m[0], value
        )
    if isinstance(value, list):
        return [_moved(v, declared, offset) for v in value]
    if isinstance(value, dict):
        return {k: _moved(v, declared, offset) for k, v in value.items()}
    return value


def _component_toml(raw: dict[str, Any]) -> str:
    """One ``[[component]]`` table; its values are strings, numbers, booleans, lists and
    inline tables (what mesh.toml holds), written as TOML through their JSON spelling."""
    lines = ["[[component]]"]
    lines += [f"{key} = {_toml_value(value)}" for key, value in raw.items()]
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        pairs = (f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + ", ".join(pairs) + " }"
    raise ConfigError(f"mesh.toml: cannot move a value of type {type(value).__name__}: {value!r}")


def load_mesh(root: Path | None = None, port_offset: int | None = None) -> Mesh:
    """Read mesh.toml from ``root`` (default: found from the working directory), moved by
    ``port_offset`` (default: $MESH_PORT_OFFSET; see the module doc) when that is not 0."""
    root = root or find_root()
    offset = port_offset_from_env() if port_offset is None else port_offset
    marker = root / OFFSET_MARKER
    if marker.is_file():  # already a shadow: its mesh.toml carries its offset
        offset = int(marker.read_text().strip() or 0)
    elif offset:
        root = offset_root(root, offset)
    path = root / "mesh.toml"
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    components = []
    for index, raw in enumerate(data.get("component", [])):
        components.append(_component(path, index, raw))
    names = [c.name for c in components]
    if len(set(names)) != len(names) or KAFKA in names:
        raise ConfigError(f"{path}: component names must be unique and not {KAFKA!r}")
    return Mesh(root, tuple(components), port_offset=offset)


def _component(path: Path, index: int, raw: dict[str, Any]) -> Component:
    where = f"{path}: component #{index + 1}"
    try:
        health = raw["health"]
        if health not in ("grpc", "http"):
            raise ConfigError(f"{where}: health must be 'grpc' or 'http', not {health!r}")
        return Component(
            name=str(raw["name"]),
            command=tuple(str(a) for a in raw["command"]),
            port=int(raw["port"]),
            health=health,
            env={str(k): str(v) for k, v in raw.get("env", {}).items()},
            after_start=tuple(tuple(str(a) for a in cmd) for cmd in raw.get("after_start", [])),
            unless_env=tuple(str(name) for name in raw.get("unless_env", [])),
            traced=bool(raw.get("traced", True)),
            http_port=int(raw["http_port"]) if "http_port" in raw else None,
        )
    except KeyError as exc:
        raise ConfigError(f"{where}: missing key {exc.args[0]!r}") from None
