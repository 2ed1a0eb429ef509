# ruff: noqa: E501  (the templates below hold generated lines; `mesh new` formats what it writes)
"""``mesh new service NAME``: scaffold a service that works the moment it is made.

It writes, for ``loyalty`` (package ``shop.loyalty.v1``, resource ``Loyalty``):

- proto/shop/loyalty/v1/loyalty.proto: ``LoyaltyService`` with ``CreateLoyalty`` and ``GetLoyalty``,
  each declaring the permission it needs (``loyalty.create``; ``loyalty.read`` on the
  ``loyalty_id`` resource), as every RPC of the mesh must (meshkit.authz denies one that does not);
- proto/shop/loyalty/v1/avro/loyalty_created.avsc and topic.json (``loyalty.events.v1``);
- services/loyalty/: the standard layout (domain, app, adapters, entrypoints), built on the kit,
  and its ``policy.cedar`` granting those permissions (admins create, any signed-in user reads);
- tests/unit/loyalty/ (the use cases, and the RPCs in-process with test tokens) and
  tests/e2e/test_loyalty_service.py (over the running mesh, with tokens identity mints);
- its component in mesh.toml (the next free port), its block in docker-compose.yml, and its
  entries in the uv workspace (pyproject.toml; uv.lock when uv is at hand).

It refuses, before writing anything, a name that is not a lower-case Python identifier, one that
exists (a service, a component, a proto package), and a port that mesh.toml or a running process
already uses. Nothing here is imported by a service at run time.
"""

from __future__ import annotations

import argparse
import keyword
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from string import Template

from mesh_runner.processes import port_open

_NAME = re.compile(r"[a-z][a-z0-9_]*")
_PACKAGE = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*\.v[0-9]+")
_RESOURCE = re.compile(r"[A-Z][A-Za-z0-9]*")


class ScaffoldError(ValueError):
    """The service cannot be made as asked; nothing was written. The message says why."""


def camel(name: str) -> str:
    """``gift_cards`` -> ``GiftCards``."""
    return "".join(part.capitalize() for part in name.split("_"))


def snake(name: str) -> str:
    """``GiftCard`` -> ``gift_card``."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


@dataclass(frozen=True)
class Plan:
    """Everything ``mesh new service`` will write, decided before anything is written."""

    root: Path
    name: str
    package: str
    resource: str
    port: int

    @property
    def values(self) -> dict[str, str]:
        """The template placeholders."""
        res = snake(self.resource)
        return {
            "name": self.name,
            "Name": camel(self.name),
            "NAME": self.name.upper(),
            "dash": self.name.replace("_", "-"),
            "package": self.package,
            "Resource": self.resource,
            "res": res,
            "RES": res.upper(),
            "port": str(self.port),
            "topic": f"{self.name}.events.v1",
            "proto_path": "/".join(self.package.split(".")),
            "go_package": go_package(self.package),
            "service": f"{self.package}.{camel(self.name)}Service",
        }

    def files(self) -> dict[Path, str]:
        """Path (relative to the root) -> content of every new file."""
        v = self.values
        proto_dir = Path("proto", *self.package.split("."))
        src = Path("services", self.name, "src", self.name)
        layout = {
            proto_dir / f"{self.name}.proto": PROTO,
            proto_dir / "avro" / "topic.json": TOPIC_JSON,
            proto_dir / "avro" / f"{v['res']}_created.avsc": AVSC,
            Path("services", self.name, "pyproject.toml"): PYPROJECT,
            src / "__init__.py": INIT,
            src / "__main__.py": MAIN,
            src / "bootstrap.py": BOOTSTRAP,
            src / "policy.cedar": POLICY,
            src / "domain" / "__init__.py": '"""$Name\'s domain: pure Python, no I/O."""\n',
            src / "domain" / "model.py": MODEL,
            src / "domain" / "events.py": EVENTS,
            src / "app" / "__init__.py": '"""$Name\'s use cases and the ports they need."""\n',
            src / "app" / "ports.py": PORTS,
            src / "app" / f"{self.name}.py": USE_CASES,
            src / "adapters" / "__init__.py": '"""$Name\'s adapters: SQLite storage, events."""\n',
            src / "adapters" / "sqlite.py": SQLITE,
            src / "adapters" / "events.py": EVENT_MAP,
            src / "entrypoints" / "__init__.py": '"""$Name\'s entrypoints: the gRPC servicer."""\n',
            src / "entrypoints" / "grpc_api.py": SERVICER,
            Path("tests", "unit", self.name, f"test_{self.name}.py"): UNIT_TEST,
            Path("tests", "e2e", f"test_{self.name}_service.py"): E2E_TEST,
        }
        return {path: Template(text).substitute(v) for path, text in layout.items()}


def plan(
    root: Path, name: str, package: str | None, resource: str | None, port: int | None
) -> Plan:
    """Check the request against the checkout; ScaffoldError says what is wrong."""
    if not _NAME.fullmatch(name) or keyword.iskeyword(name) or not name.isidentifier():
        raise ScaffoldError(
            f"{name!r} is not a valid service name: use a lower-case Python identifier"
            " (letters, digits and _; starting with a letter), e.g. loyalty or gift_cards"
        )
    package = package or f"shop.{name}.v1"
    if not _PACKAGE.fullmatch(package):
        raise ScaffoldError(
            f"--package {package!r}: expected a versioned proto package like shop.{name}.v1"
        )
    resource = resource or camel(name)
    if not _RESOURCE.fullmatch(resource):
        raise ScaffoldError(f"--resource {resource!r}: expected an UpperCamelCase message name")
    components = _components(root)
    taken = {
        f"services/{name}": (root / "services" / name).exists(),
        f"component {name!r} in mesh.toml": name in components,
        f"proto package {package}": (root / "proto" / Path(*package.split("."))).exists(),
        f"gen package {package}": (root / "gen" / Path(*package.split("."))).exists(),
    }
    clashes = [what for what, exists in taken.items() if exists]
    if clashes:
        raise ScaffoldError(f"{name!r} exists already: {', '.join(clashes)}")
    used = set(components.values())
    if port is None:
        services = _grpc_ports(root)
        if not services:
            raise ScaffoldError("mesh.toml has no gRPC service to number after: pass --port")
        port = max(services) + 1
        while port in used or port_open("127.0.0.1", port):
            port += 1
    elif port in used:
        owner = next(n for n, p in components.items() if p == port)
        raise ScaffoldError(f"port {port} is {owner!r}'s in mesh.toml")
    elif port_open("127.0.0.1", port):
        raise ScaffoldError(f"port {port} is in use by a running process")
    result = Plan(root, name, package, resource, port)
    existing = [str(p) for p in result.files() if (root / p).exists()]
    if existing:
        raise ScaffoldError(f"would overwrite {', '.join(existing)}")
    return result


def _components(root: Path) -> dict[str, int]:
    data = tomllib.loads((root / "mesh.toml").read_text())
    return {str(c["name"]): int(c["port"]) for c in data.get("component", [])}


def _grpc_ports(root: Path) -> list[int]:
    """The ports of mesh.toml's gRPC services (the range a new service's port continues)."""
    data = tomllib.loads((root / "mesh.toml").read_text())
    return [int(c["port"]) for c in data.get("component", []) if c.get("health") == "grpc"]


def write(scaffold: Plan, say: object = print) -> list[Path]:
    """Write the files and the entries; returns the new files."""
    root, v = scaffold.root, scaffold.values
    written = []
    for relative, content in scaffold.files().items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        written.append(relative)
    _append(root / "mesh.toml", Template(MESH_TOML).substitute(v))
    _add_compose_block(root / "docker-compose.yml", Template(COMPOSE).substitute(v), v["dash"])
    _add_to_workspace(root / "pyproject.toml", scaffold.name)
    _format(root, [root / p for p in written if p.suffix == ".py"])
    _lock(root, say)
    return written


def _format(root: Path, paths: list[Path]) -> None:
    """Sort imports and format the new code with the project's ruff, as `make lint` wants it
    (names of any length make lines of any length)."""
    ruff = Path(sys.executable).parent / "ruff"
    if not ruff.exists() or not paths:
        return
    files = [str(p) for p in paths]
    subprocess.run(
        [str(ruff), "check", "--quiet", "--fix", "--select", "I", *files], cwd=root, check=False
    )
    subprocess.run([str(ruff), "format", "--quiet", *files], cwd=root, check=False)


def _append(path: Path, block: str) -> None:
    text = path.read_text()
    path.write_text(text.rstrip("\n") + "\n\n" + block)


def _add_compose_block(path: Path, block: str, dash: str) -> None:
    """Insert the service's block at the end of ``services:`` (before the top-level ``volumes:``)
    and its data volume at the end of ``volumes:``."""
    if not path.exists():
        return
    text = path.read_text()
    marker = "\nvolumes:\n"
    at = text.find(marker)
    if at < 0:
        text = text.rstrip("\n") + "\n\n" + block + marker
    else:
        text = text[:at].rstrip("\n") + "\n\n" + block + text[at:]
    path.write_text(text.rstrip("\n") + f"\n  {dash}-data:\n")


def _add_to_workspace(path: Path, name: str) -> None:
    """The service as a dependency of the workspace, a workspace source, a mypy root and a
    first-party package for isort."""
    text = path.read_text()
    text = re.sub(
        r'(dependencies = \[\n(?:    "[^"\n]+",\n)+)',
        lambda m: m.group(1) + f'    "{name}",\n',
        text,
        count=1,
    )
    text = re.sub(
        r"(\[tool\.uv\.sources\]\n(?:.+\n)+?)(\n|\Z)",
        lambda m: m.group(1) + f"{name} = {{ workspace = true }}\n" + m.group(2),
        text,
        count=1,
    )
    # One-line lists in [tool.mypy] and ruff's isort: the new entry goes at the end of each.
    for pattern, entry in (
        (r'^(mypy_path = ".*)"$', f':services/{name}/src"'),
        (r"^(files = \[.*)\]$", f', "services/{name}/src"]'),
        (r"^(known-first-party = \[.*)\]$", f', "{name}"]'),
    ):
        found = re.search(pattern, text, flags=re.M)
        if found:
            text = text[: found.end(1)] + entry + text[found.end() :]
    path.write_text(text)


def _lock(root: Path, say: object) -> None:
    """Refresh uv.lock for the new workspace member (``make setup`` installs it)."""
    uv = root / ".cache" / "uv-venv" / "bin" / "uv"
    binary = str(uv) if uv.exists() else shutil.which("uv")
    if binary is None:
        if callable(say):
            say("uv not found: run `make setup` to lock and install the new service")
        return
    result = subprocess.run(
        [binary, "lock", "--quiet"],
        cwd=root,
        check=False,
        env={
            **os.environ,
            "UV_CACHE_DIR": str(root / ".cache" / "uv"),
            "UV_PYTHON_DOWNLOADS": "never",
        },
    )
    if result.returncode != 0 and callable(say):
        say("`uv lock` failed (see above): run `make setup` once the workspace is fixed")


def go_package(package: str) -> str:
    """The contract's Go package, by the rule every proto follows (docs/clients.md): the import
    path is the generated module plus the file's directory, the name its last two parts with
    underscores dropped (``shop.order_views.v1`` -> ``.../shop/order_views/v1;orderviewsv1``)."""
    parts = package.split(".")
    return f"{GO_MODULE}/{'/'.join(parts)};{''.join(parts[-2:]).replace('_', '')}"


# ------------------------------------------------------------------------------------ templates

# The Go module buf.gen.go.yaml generates (proto/buf.gen.go.yaml, docs/clients.md).
GO_MODULE = "github.com/meshkit/meshkit/gen/go"

PROTO = """\
syntax = "proto3";

// $Name: $Resource resources, created and read over gRPC; each creation is published as a
// ${Resource}Created event on $topic.
package $package;

import "google/protobuf/timestamp.proto";
import "mesh/api/v1/access.proto";

option go_package = "$go_package";

// Creates and reads $Resource resources. Each RPC declares the permission it needs; the
// service's policy.cedar decides who has it.
service ${Name}Service {
  // Creates a $Resource. INVALID_ARGUMENT names every bad field. Not retried by clients'
  // transports (no idempotency_level): a replay would create a second one. Give the request a
  // request_id the service deduplicates on, and it may say IDEMPOTENT.
  rpc Create${Resource}(Create${Resource}Request) returns (Create${Resource}Response) {
    option (mesh.api.v1.access) = {permission: "$name.create"};
  }
  // Reads a $Resource. NOT_FOUND for an unknown ${res}_id.
  rpc Get${Resource}(Get${Resource}Request) returns (Get${Resource}Response) {
    option idempotency_level = NO_SIDE_EFFECTS;
    option (mesh.api.v1.access) = {permission: "$name.read", resource: "${res}_id"};
  }
}

// A $Resource as the service keeps it.
message $Resource {
  // The id the service gave it on creation.
  string ${res}_id = 1;
  // A name for people; 1 to 200 characters.
  string display_name = 2;
  // When it was created.
  google.protobuf.Timestamp create_time = 3;
}

// Asks to create a $Resource.
message Create${Resource}Request {
  // A name for people; 1 to 200 characters.
  string display_name = 1;
}

// The $Resource created.
message Create${Resource}Response {
  // The new $Resource.
  $Resource ${res} = 1;
}

// Asks for one $Resource.
message Get${Resource}Request {
  // The id CreateResource returned; at most 64 characters.
  string ${res}_id = 1;
}

// The $Resource asked for.
message Get${Resource}Response {
  // The $Resource.
  $Resource ${res} = 1;
}
"""

TOPIC_JSON = '{"topic": "$topic"}\n'

AVSC = """\
{
  "type": "record",
  "name": "${Resource}Created",
  "namespace": "$package",
  "doc": "A $Resource was created (Create$Resource). Key: the ${res}_id.",
  "fields": [
    {"name": "${res}_id", "type": "string", "doc": "The new $Resource's id."},
    {"name": "display_name", "type": "string", "doc": "Its name for people."},
    {"name": "occurred_at", "type": {"type": "long", "logicalType": "timestamp-millis"}, "doc": "When it was created."}
  ]
}
"""

PYPROJECT = """\
[project]
name = "$name"
version = "0.1.0"
description = "The $name service: $Resource resources ($package)"
requires-python = ">=3.11"
dependencies = [
    "meshkit",
    "meshkit-contracts",
]

[tool.uv.sources]
meshkit = { workspace = true }
meshkit-contracts = { workspace = true }

[build-system]
requires = ["hatchling==1.33.0"]
build-backend = "hatchling.build"

[tool.hatch.build.targets.wheel]
packages = ["src/$name"]
"""

INIT = '"""$Name: $Resource resources ($package)."""\n'

MAIN = '''\
"""``python -m $name``: run the $name service (``--help`` lists its settings)."""

import sys

from $name.bootstrap import SERVICE

if __name__ == "__main__":
    sys.exit(SERVICE.main())
'''

BOOTSTRAP = '''\
"""The composition root: $name's use cases and servicer, on the service kit.

Who may call which RPC is not decided here. Each RPC declares the permission it needs in
proto/$proto_path/$name.proto;
policy.cedar beside this file grants it, and the kit checks both before every RPC.
"""

from __future__ import annotations

from $name.adapters.events import EVENTS
from $name.adapters.sqlite import MIGRATIONS, SqliteUnitOfWork
from $name.app.$name import ${Name}UseCases
from $name.entrypoints.grpc_api import ${Name}Servicer
from meshkit.server import ServiceBinding
from meshkit.service import Service, ServiceContext, binding
from meshkit.settings import ServiceSettings
from ${package} import ${name}_pb2_grpc


def build(ctx: ServiceContext[ServiceSettings]) -> list[ServiceBinding]:
    """$Name's servicer over its use cases, each call one unit of work on ``ctx.db``."""
    use_cases = ${Name}UseCases(lambda: SqliteUnitOfWork(ctx.db, ctx.events))
    return [binding(${Name}Servicer(use_cases), ${name}_pb2_grpc.add_${Name}ServiceServicer_to_server)]


SERVICE = Service[ServiceSettings]("$name", build, migrations=MIGRATIONS, events=EVENTS)
'''

POLICY = """\
// Who may do what in $name. meshkit.authz asks this policy before every RPC runs. Each RPC
// declares the permission it needs (option (mesh.api.v1.access)) in
// proto/$proto_path/$name.proto, and a rule here grants it. Cedar denies by default: a
// permission no rule grants is refused to everyone with PERMISSION_DENIED naming it (and an
// audit record). A call with no token at all is UNAUTHENTICATED before any rule is asked.
//
// The entities (see meshkit.authz): User::"<sub>" in Role::"<role>" for each role of its token
// (customer, support, admin, auditor); Service::"<client id>" for a service calling as itself;
// the resource: a $Resource for Get$Resource (by its ${res}_id), the Request for
// Create$Resource, with an `owner` that is the caller when the caller owns it.
//
// To change who may do what, edit the rules below and restart the service. For example:
// - support creates too:
//     permit (principal in Role::"support", action == Action::"$name.create", resource);
// - only staff read: in "users-read", `principal is User` becomes `principal`, with
//     when { principal in [Role::"support", Role::"admin"] }
// - a user reads only their own: tell the kit who owns one (in bootstrap.py,
//   ctx.authz.owners["${res}_id"] = authz.by_id(id -> owner's subject)), and add
//     when { resource.owner == principal }
// - a service reads as itself:
//     permit (principal == Service::"orders", action == Action::"$name.read", resource);
// A new RPC declares its own permission in the proto and gets a rule here
// (tests/unit/test_permissions.py fails on a permission no policy grants).

// Admins create $Resource resources.
@id("admins-create")
permit (principal in Role::"admin", action == Action::"$name.create", resource);

// Any signed-in user reads them: a user's token, whatever its roles (a service is not a user).
@id("users-read")
permit (principal is User, action == Action::"$name.read", resource);
"""

MODEL = '''\
"""The $Resource aggregate and its rules. Pure: no I/O, no grpc, no generated code."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from meshkit.errors import Violations

MAX_DISPLAY_NAME = 200
MAX_ID = 64


@dataclass(frozen=True)
class $Resource:
    """A $Resource: its id, its name for people, when it was created."""

    ${res}_id: str
    display_name: str
    created_at: datetime.datetime


def validate_display_name(violations: Violations, display_name: str) -> None:
    """A display name is 1 to MAX_DISPLAY_NAME characters, not only blanks."""
    violations.check(display_name.strip() != "", "display_name", "is required")
    violations.check(
        len(display_name) <= MAX_DISPLAY_NAME,
        "display_name",
        f"must be at most {MAX_DISPLAY_NAME} characters",
    )


def validate_id(violations: Violations, ${res}_id: str) -> None:
    """An id is 1 to MAX_ID characters."""
    violations.check(${res}_id != "", "${res}_id", "is required")
    violations.check(len(${res}_id) <= MAX_ID, "${res}_id", f"must be at most {MAX_ID} characters")
'''

EVENTS = '''\
"""What happened in $name, as facts other contexts may react to (past tense, immutable)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass


@dataclass(frozen=True)
class ${Resource}Created:
    """A $Resource was created."""

    ${res}_id: str
    display_name: str
    occurred_at: datetime.datetime


${Name}Event = ${Resource}Created
'''

PORTS = '''\
"""What the use cases need from the outside world, as Protocols (adapters implement them)."""

from __future__ import annotations

from typing import Protocol

from $name.domain.events import ${Name}Event
from $name.domain.model import $Resource
from meshkit.ports import UnitOfWorkPort


class ${Resource}Repository(Protocol):
    """${Resource} resources of the current unit of work."""

    def get(self, ${res}_id: str) -> $Resource | None:
        """The $Resource, or None."""

    def add(self, ${res}: $Resource) -> None:
        """Store a new $Resource."""


class UnitOfWork(UnitOfWorkPort[${Name}Event], Protocol):
    """One transaction over ${Resource} resources; ``publish`` its events (meshkit's port)."""

    @property
    def repository(self) -> ${Resource}Repository:
        """${Resource} resources, inside this transaction."""
'''

USE_CASES = '''\
"""$Name's use cases: each runs in one unit of work (one transaction)."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable

from $name.app.ports import UnitOfWork
from $name.domain.events import ${Resource}Created
from $name.domain.model import $Resource, validate_display_name, validate_id
from meshkit import timestamps
from meshkit.errors import NotFound, Violations, quoted


class ${Name}UseCases:
    """Creates and reads ${Resource} resources. Thread safety: safe to share; every call opens its own
    unit of work."""

    def __init__(
        self,
        unit_of_work: Callable[[], UnitOfWork],
        clock: Callable[[], datetime.datetime] = timestamps.now,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self._uow = unit_of_work
        self._clock = clock
        self._new_id = new_id

    def create(self, display_name: str) -> $Resource:
        """A new $Resource; its ${Resource}Created event commits with it."""
        violations = Violations()
        validate_display_name(violations, display_name)
        violations.raise_if_any()
        ${res} = $Resource(self._new_id(), display_name.strip(), self._clock())
        with self._uow() as uow:
            uow.repository.add(${res})
            uow.publish(${Resource}Created(${res}.${res}_id, ${res}.display_name, ${res}.created_at))
        return ${res}

    def get(self, ${res}_id: str) -> $Resource:
        """The $Resource ``${res}_id``; NotFound when there is none."""
        violations = Violations()
        validate_id(violations, ${res}_id)
        violations.raise_if_any()
        with self._uow() as uow:
            ${res} = uow.repository.get(${res}_id)
        if ${res} is None:
            raise NotFound(
                f"unknown ${res} {quoted(${res}_id)}",
                reason="${RES}_NOT_FOUND",
                metadata={"${res}_id": ${res}_id},
            )
        return ${res}
'''

SQLITE = '''\
"""SQLite storage for $name: its ${Resource} resources and its outbox, in one database file."""

from __future__ import annotations

import sqlite3

from $name.domain.model import $Resource
from meshkit import timestamps
from meshkit.db import UnitOfWork
from meshkit.events import OUTBOX_MIGRATION

MIGRATIONS = (
    """
    CREATE TABLE ${res} (
        ${res}_id TEXT PRIMARY KEY,
        display_name TEXT NOT NULL,
        created_at_micros INTEGER NOT NULL
    );
    """,
    OUTBOX_MIGRATION,
)


class Sqlite${Resource}Repository:
    """${Resource}Repository over one open transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def get(self, ${res}_id: str) -> $Resource | None:
        """The $Resource, or None."""
        row = self._conn.execute(
            "SELECT ${res}_id, display_name, created_at_micros FROM ${res} WHERE ${res}_id = ?",
            (${res}_id,),
        ).fetchone()
        if row is None:
            return None
        return $Resource(row[0], row[1], timestamps.from_micros(row[2]))

    def add(self, ${res}: $Resource) -> None:
        """Store a new $Resource."""
        self._conn.execute(
            "INSERT INTO ${res} (${res}_id, display_name, created_at_micros) VALUES (?, ?, ?)",
            (${res}.${res}_id, ${res}.display_name, timestamps.to_micros(${res}.created_at)),
        )


class SqliteUnitOfWork(UnitOfWork):
    """$Name's unit of work: its ${Resource} resources and their events in one SQLite transaction."""

    repository: Sqlite${Resource}Repository

    def bind(self, conn: sqlite3.Connection) -> None:
        """Repositories over the transaction's connection."""
        self.repository = Sqlite${Resource}Repository(conn)
'''

EVENT_MAP = '''\
"""$Name's events on the wire: each domain event and its Avro record on $topic."""

from __future__ import annotations

from $name.domain.events import ${Name}Event, ${Resource}Created
from meshkit.events import EventMap

EVENTS: EventMap[${Name}Event] = EventMap("$package")
"""Keyed by the aggregate: the ${res}_id."""
EVENTS.add(${Resource}Created, key=lambda e: e.${res}_id)
'''

SERVICER = '''\
"""The ${Name}Service servicer: translates wire messages to use-case calls and back, nothing else.

Errors are not caught here: meshkit's edge maps them to gRPC statuses once.
"""

from __future__ import annotations

import grpc

from $name.app.$name import ${Name}UseCases
from $name.domain.model import $Resource
from meshkit import timestamps
from ${package} import ${name}_pb2 as pb
from ${package} import ${name}_pb2_grpc as pb_grpc


class ${Name}Servicer(pb_grpc.${Name}ServiceServicer):
    """$service over the $Name use cases. Stateless."""

    def __init__(self, use_cases: ${Name}UseCases) -> None:
        self._use_cases = use_cases

    def Create${Resource}(
        self, request: pb.Create${Resource}Request, context: grpc.ServicerContext
    ) -> pb.Create${Resource}Response:
        """See the contract in proto/$proto_path/$name.proto."""
        return pb.Create${Resource}Response(${res}=_wire(self._use_cases.create(request.display_name)))

    def Get${Resource}(
        self, request: pb.Get${Resource}Request, context: grpc.ServicerContext
    ) -> pb.Get${Resource}Response:
        """See the contract in proto/$proto_path/$name.proto."""
        return pb.Get${Resource}Response(${res}=_wire(self._use_cases.get(request.${res}_id)))


def _wire(${res}: $Resource) -> pb.$Resource:
    return pb.$Resource(
        ${res}_id=${res}.${res}_id,
        display_name=${res}.display_name,
        create_time=timestamps.to_timestamp(${res}.created_at),
    )
'''

UNIT_TEST = '''\
"""$Name's use cases on SQLite, through their public interface; and its RPCs
in-process, behind the permission check the mesh runs (the permissions its contract
declares, its own policy.cedar), called with tokens of a test issuer (support.tokens)."""

from __future__ import annotations

import datetime
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import fastavro
import grpc
import pytest
from support.tokens import AUDIENCE, ISSUER, TEST_ISSUER, authorized

from $name.adapters.events import EVENTS
from $name.adapters.sqlite import MIGRATIONS, SqliteUnitOfWork
from $name.app.$name import ${Name}UseCases
from $name.domain.events import ${Resource}Created
from $name.entrypoints.grpc_api import ${Name}Servicer
from meshkit import Database, InvalidArgument, NotFound, authz
from meshkit.server import create_server
from meshkit.service import binding
from meshkit.settings import ServerSettings
from meshkit.tokens import TokenVerifier
from ${package} import ${name}_pb2 as pb
from ${package} import ${name}_pb2_grpc as pb_grpc

REPO = Path(__file__).resolve().parents[3]
SCHEMA = REPO / "proto/$proto_path/avro/${res}_created.avsc"
NOW = datetime.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=datetime.UTC)


class RecordingSink:
    """Writes each published event into the unit's own transaction, as the outbox does."""

    def publish(self, conn: sqlite3.Connection, event: object, *, event_id: str | None = None) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS published (record TEXT NOT NULL)")
        record = EVENTS.to_record(event)  # type: ignore[arg-type]
        conn.execute("INSERT INTO published VALUES (?)", (json.dumps(record, default=str),))


@pytest.fixture
def db(tmp_path: Path) -> Database:
    return Database(tmp_path / "$name.db", MIGRATIONS)


def use_cases(db: Database) -> ${Name}UseCases:
    return ${Name}UseCases(lambda: SqliteUnitOfWork(db, RecordingSink()), clock=lambda: NOW)


def published(db: Database) -> list[dict[str, str]]:
    with db.snapshot() as conn:
        return [json.loads(row[0]) for row in conn.execute("SELECT record FROM published")]


def test_create_then_get_returns_the_same_${res}(db: Database) -> None:
    created = use_cases(db).create("  First  ")
    assert created.display_name == "First"
    assert use_cases(db).get(created.${res}_id) == created


def test_create_publishes_its_event_in_the_same_transaction(db: Database) -> None:
    created = use_cases(db).create("First")
    assert published(db) == [
        {"${res}_id": created.${res}_id, "display_name": "First", "occurred_at": str(NOW)}
    ]


def test_bad_input_names_the_field_and_stores_nothing(db: Database) -> None:
    with pytest.raises(InvalidArgument) as raised:
        use_cases(db).create(" " * 3)
    assert [v.field for v in raised.value.violations] == ["display_name"]
    with pytest.raises(InvalidArgument):
        use_cases(db).create("x" * 201)
    with db.snapshot() as conn:
        assert conn.execute("SELECT COUNT(*) FROM ${res}").fetchone()[0] == 0


def test_an_unknown_id_is_not_found(db: Database) -> None:
    with pytest.raises(NotFound, match="unknown ${res}"):
        use_cases(db).get("nope")


def test_the_event_matches_its_avro_contract() -> None:
    schema = fastavro.parse_schema(json.loads(SCHEMA.read_text()))
    event = ${Resource}Created("id-1", "First", NOW)
    assert EVENTS.type_of(event) == "$package.${Resource}Created"
    assert EVENTS.key_of(event) == "id-1"
    assert fastavro.validate(EVENTS.to_record(event), schema, raise_errors=True)


@pytest.fixture
def channel(db: Database) -> Iterator[grpc.Channel]:
    """A channel to $name, served in-process by the kit's server,
    with the permission check `mesh up` runs (tokens of the test issuer)."""
    authorizer = authz.Authorizer(
        "$name",
        TokenVerifier(TEST_ISSUER.jwks_path.as_uri(), issuer=ISSUER, audience=AUDIENCE),
        authz.Policy.from_package("$name"),
    )
    servicer = binding(${Name}Servicer(use_cases(db)), pb_grpc.add_${Name}ServiceServicer_to_server)
    server = create_server("$name", ServerSettings(port=0), [servicer], authorizer=authorizer)
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as opened:
        yield opened
    server.stop(0)


def test_admins_create_and_signed_in_users_read(channel: grpc.Channel) -> None:
    admin = pb_grpc.${Name}ServiceStub(authorized(channel, "admin"))
    request = pb.Create${Resource}Request(display_name="First")
    created = admin.Create${Resource}(request, timeout=10).${res}
    customer = pb_grpc.${Name}ServiceStub(authorized(channel, "customer", "c-1"))
    got = customer.Get${Resource}(pb.Get${Resource}Request(${res}_id=created.${res}_id), timeout=10)
    assert got.${res} == created


def test_a_customer_may_not_create_and_the_denial_names_the_permission(
    channel: grpc.Channel,
) -> None:
    customer = pb_grpc.${Name}ServiceStub(authorized(channel, "customer", "c-1"))
    with pytest.raises(grpc.RpcError) as raised:
        customer.Create${Resource}(pb.Create${Resource}Request(display_name="Mine"), timeout=10)
    assert raised.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "$name.create" in raised.value.details()


def test_a_call_without_a_token_is_unauthenticated(channel: grpc.Channel) -> None:
    anonymous = pb_grpc.${Name}ServiceStub(channel)
    with pytest.raises(grpc.RpcError) as raised:
        anonymous.Get${Resource}(pb.Get${Resource}Request(${res}_id="any"), timeout=10)
    assert raised.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "authorization: Bearer" in raised.value.details()
'''

E2E_TEST = '''\
"""$name in the running mesh: the real grpcurl, with access tokens identity mints (what `mesh
token` prints), creates and reads a $Resource, is refused without the permission or without a
token, and the $Resource's event reaches Kafka through the outbox, as framed Avro with
CloudEvents headers and the caller's trace."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer
from support.kafka import consume
from support.mesh import Grpcurl

from mesh_runner.token import mint
from meshkit.addresses import address_of

SERVICE = "$service"
TOPIC = "$topic"

pytestmark = pytest.mark.kafka


def bearer(root: Path, role: str) -> list[str]:
    """grpcurl's header carrying a token of ``role`` from the mesh's identity."""
    return ["-H", f"authorization: Bearer {mint(root, role)}"]


def test_create_and_get_with_tokens_over_grpcurl_and_the_event_reaches_kafka(
    running_mesh: Path, kafka_bootstrap: str, grpcurl: Grpcurl
) -> None:
    target = address_of("$name", {"MESH_ROOT": str(running_mesh)})
    admin, customer = bearer(running_mesh, "admin"), bearer(running_mesh, "customer")
    trace_id = uuid.uuid4().hex
    created = grpcurl.run(
        *admin,
        "-H",
        f"traceparent: 00-{trace_id}-{uuid.uuid4().hex[:16]}-01",
        "-d",
        '{"display_name": "first"}',
        target,
        f"{SERVICE}/Create${Resource}",
    )
    assert created.returncode == 0, created.stderr
    ${res} = json.loads(created.stdout)["${res}"]
    ${res}_id = ${res}["${res}_id"]
    got = grpcurl.run(*customer, target, f"{SERVICE}/Get${Resource}", data={"${res}_id": ${res}_id})
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["${res}"] == ${res}
    missing = grpcurl.run(*customer, target, f"{SERVICE}/Get${Resource}", data={"${res}_id": "nope"})
    assert "NotFound" in missing.stderr

    # policy.cedar: admins create, so a customer is refused, naming the permission; and a call
    # with no token is refused before any policy is asked.
    refused = grpcurl.run(*customer, target, f"{SERVICE}/Create${Resource}", data={"display_name": "x"})
    assert "PermissionDenied" in refused.stderr and "$name.create" in refused.stderr
    anonymous = grpcurl.run(target, f"{SERVICE}/Get${Resource}", data={"${res}_id": ${res}_id})
    assert "Unauthenticated" in anonymous.stderr

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([TOPIC])
    try:
        ours = []
        while not ours:
            for msg in consume(consumer, 1, timeout=30):
                headers = {k: (v or b"").decode() for k, v in msg.headers() or []}
                if headers.get("ce_subject") == ${res}_id:
                    ours.append(headers)
    finally:
        consumer.close()
    assert ours[0]["ce_type"] == "$package.${Resource}Created"
    assert ours[0]["ce_source"] == "/meshkit/$name"
    assert ours[0]["traceparent"].split("-")[1] == trace_id
'''

MESH_TOML = """\
[[component]]
name = "$name"
command = ["python", "-m", "$name"]
port = $port
health = "grpc"
"""

COMPOSE = """\
  $name:
    <<: *python-service
    command: ["python", "-m", "$name"]
    environment:
      <<: *mesh-env
      OTEL_SERVICE_NAME: $name
      ${NAME}_HOST: 0.0.0.0
      ${NAME}_PORT: "$port"
      ${NAME}_DB_PATH: /data/$name.db
    ports:
      - "127.0.0.1:$port:$port"
    volumes:
      - $dash-data:/data
"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``new service NAME`` to the ``mesh`` parser."""
    new = sub.add_parser(
        "new",
        help="scaffold something new in the checkout (`mesh new service NAME`)",
        description="Scaffold something new in the checkout.",
    )
    kinds = new.add_subparsers(dest="kind", required=True, metavar="KIND")
    service = kinds.add_parser(
        "service",
        help="a service that works the moment it is made (proto, event, code, tests, config)",
        description="Scaffold services/NAME on the service kit: a proto with one resource's"
        " Create/Get RPCs (permissions NAME.create and NAME.read) and one event (.avsc +"
        " topic.json), the standard layout, a policy.cedar granting those permissions (admins"
        " create, signed-in users read), a unit and an e2e test, its mesh.toml component (the next free port), its docker-compose block and"
        " its uv workspace entries. Then: `make gen`, `mesh up -d`. Refuses, writing nothing, a"
        " name that exists or is not a Python identifier, or a port in use.",
    )
    service.add_argument("name", help="the service's name: a lower-case Python identifier")
    service.add_argument(
        "--package", help="the proto package of its contracts (default: shop.NAME.v1)"
    )
    service.add_argument(
        "--resource", help="the resource its RPCs create and read (default: Name in CamelCase)"
    )
    service.add_argument("--port", type=int, help="its gRPC port (default: the next free one)")


def run(args: argparse.Namespace, root: Path) -> int:
    """``mesh new service``: plan, then write; exit 2 (and nothing written) when refused."""
    try:
        scaffold = plan(root, args.name, args.package, args.resource, args.port)
    except ScaffoldError as exc:
        print(f"mesh new service: {exc}", file=sys.stderr)
        return 2
    written = write(scaffold)
    v = scaffold.values
    print(f"created {v['name']} ({v['package']}) on port {scaffold.port}:")
    for path in written:
        print(f"  {path}")
    print("  + mesh.toml, docker-compose.yml, pyproject.toml, uv.lock entries")
    print("next:\n  make gen          # stubs for the new proto, and install the service")
    print("  mesh up -d        # start the mesh with it")
    print(
        '  grpcurl -plaintext -H "authorization: Bearer $(mesh token --role admin)"'
        f' -d \'{{"display_name": "first"}}\' 127.0.0.1:{scaffold.port}'
        f" {v['service']}/Create{v['Resource']}"
    )
    print(
        f"who may call what: the permissions in proto/{v['proto_path']}/{v['name']}.proto,"
        f" granted by services/{v['name']}/src/{v['name']}/policy.cedar"
    )
    return 0
