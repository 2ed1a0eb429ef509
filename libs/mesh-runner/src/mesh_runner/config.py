"""The local mesh's declaration (mesh.toml) and where its runtime state lives (.mesh/).

Standard library only: mesh_runner.local_kafka imports find_root, and scripts/kafka runs that
before .venv exists (tests/unit/runner/test_local_kafka.py runs it without site-packages).
"""

from __future__ import annotations

import os
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

DEFAULT_REGISTRY_PORT = 8081
KAFKA = "kafka"


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


def load_mesh(root: Path | None = None) -> Mesh:
    """Read mesh.toml from ``root`` (default: found from the working directory)."""
    root = root or find_root()
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
    return Mesh(root, tuple(components))


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
