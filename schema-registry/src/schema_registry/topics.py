"""Finding event schemas and their subjects for `schema-registry register-all DIR`.

Topic mapping: a directory holding `.avsc` files has a `topic.json`, `{"topic": "<topic>"}`,
naming the Kafka topic those events go to (e.g. `proto/shop/inventory/v1/avro/topic.json` with
`{"topic": "inventory.events.v1"}`). A `topic.json` also covers sub-directories that have none
of their own; the nearest one wins. Each schema's subject follows TopicRecordNameStrategy:
`<topic>-<record full name>`, so several event types share a topic, each evolving on its own.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

TOPIC_FILE: Final = "topic.json"


class MappingError(Exception):
    """A schema file whose topic or name can't be determined; the message says how to fix it."""


@dataclass(frozen=True)
class EventSchema:
    """One `.avsc` file with the subject it registers under."""

    path: Path
    topic: str
    full_name: str
    text: str

    @property
    def subject(self) -> str:
        """`<topic>-<record full name>` (TopicRecordNameStrategy)."""
        return f"{self.topic}-{self.full_name}"


def _topic_for(directory: Path, root: Path, cache: dict[Path, str | None]) -> str | None:
    if directory in cache:
        return cache[directory]
    mapping = directory / TOPIC_FILE
    topic: str | None
    if mapping.is_file():
        try:
            data = json.loads(mapping.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise MappingError(f"{mapping}: not readable JSON: {exc}") from None
        value = data.get("topic") if isinstance(data, dict) else None
        if not isinstance(value, str) or not value.strip():
            raise MappingError(f'{mapping}: expected {{"topic": "<kafka topic>"}}')
        topic = value.strip()
    elif directory in (root, directory.parent):  # reached DIR or the filesystem root
        topic = None
    else:
        topic = _topic_for(directory.parent, root, cache)
    cache[directory] = topic
    return topic


def full_name(text: str, where: Path) -> str:
    """The full name of the record (or other named type) a schema file defines."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise MappingError(f"{where}: not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise MappingError(f"{where}: the top-level schema must be a named type (a record)")
    name: str = data["name"]
    namespace = data.get("namespace")
    if "." in name or not isinstance(namespace, str) or not namespace:
        return name
    return f"{namespace}.{name}"


def discover(root: Path) -> tuple[list[EventSchema], list[tuple[Path, str]]]:
    """Every `.avsc` under `root` (sorted), and the files that could not be mapped, with why."""
    found: list[EventSchema] = []
    problems: list[tuple[Path, str]] = []
    cache: dict[Path, str | None] = {}
    root = root.resolve()
    for path in sorted(root.rglob("*.avsc")):
        try:
            topic = _topic_for(path.parent, root, cache)
            if topic is None:
                raise MappingError(
                    f"no {TOPIC_FILE} in {path.parent} or above it (up to {root}); add one with "
                    '{"topic": "<kafka topic>"}'
                )
            text = path.read_text(encoding="utf-8")
            found.append(EventSchema(path, topic, full_name(text, path), text))
        except MappingError as exc:
            problems.append((path, str(exc)))
    return found, problems


# ------------------------------------------------------------------------ every contract type
#: schemaType by file: events, gRPC contracts, the config service's namespace schemas.
AVRO: Final = "AVRO"
PROTOBUF: Final = "PROTOBUF"
JSON: Final = "JSON"
CONFIG_DIR: Final = "config"
CONFIG_SUFFIX: Final = ".schema.json"
#: Subject prefix of a config namespace's schema: the control service keys schemas by namespace
#: alone (two files claiming one is refused there too), so the namespace is the identity.
CONFIG_SUBJECT_PREFIX: Final = "config."
#: Imports the registry resolves itself (protoc's bundled well-known types): never references.
WELL_KNOWN_PREFIX: Final = "google/protobuf/"

_IMPORT = re.compile(r'^\s*import\s+(?:public\s+|weak\s+)?"([^"]+)"\s*;', re.MULTILINE)
_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.DOTALL)
_MODULE_PATH = re.compile(r"""^\s*-\s*(?:path:\s*)?["']?([^"'\s#]+)["']?\s*(?:#.*)?$""")


@dataclass(frozen=True)
class Contract:
    """One file `register-all` registers: its subject, schemaType and text. `imports` are the
    subjects of the contracts it references (a .proto's imports other than google/protobuf/*,
    which are their import paths), in the order the file names them; each comes earlier in the
    list `discover_contracts` returns."""

    path: Path
    subject: str
    schema_type: str
    text: str
    imports: tuple[str, ...] = ()


def include_roots(root: Path) -> list[Path]:
    """Where .proto import paths start: the module paths of `root/buf.yaml` (buf v2 `modules:`)
    or `root/buf.work.yaml` (`directories:`), else `root` alone. proto/'s buf.yaml lists `.` and
    `vendor`, so `vendor/google/api/http.proto` is imported (and registered) as
    `google/api/http.proto`, as protoc and buf see it."""
    roots: list[Path] = []
    for name, key in (("buf.yaml", "modules"), ("buf.work.yaml", "directories")):
        config = root / name
        if not config.is_file():
            continue
        inside = False
        for line in config.read_text(encoding="utf-8").splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if not line[0].isspace() and not line.startswith("-"):
                inside = line.split(":", 1)[0].strip() == key
                continue
            found = _MODULE_PATH.match(line) if inside else None
            if found and (line.lstrip().startswith("- path:") or key == "directories"):
                roots.append((root / found.group(1)).resolve())
    return roots or [root]


def import_path(path: Path, roots: Sequence[Path]) -> str:
    """`path`'s name in an import statement: relative to the deepest include root holding it."""
    best = max((r for r in roots if r == path or r in path.parents), key=lambda r: len(r.parts))
    return path.relative_to(best).as_posix()


def proto_imports(text: str) -> list[str]:
    """The import paths a .proto names, in order (comments skipped)."""
    return _IMPORT.findall(_COMMENT.sub("", text))


def _protos(root: Path) -> tuple[list[Contract], list[tuple[Path, str]]]:
    """Every .proto under `root` as PROTOBUF contracts, each after the files it imports."""
    roots = include_roots(root)
    files: dict[str, tuple[Path, str, list[str]]] = {}
    problems: list[tuple[Path, str]] = []
    for path in sorted(root.rglob("*.proto")):
        name = import_path(path, roots)
        if name in files:
            problems.append((path, f"{files[name][0]} has the same import path {name}"))
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            problems.append((path, f"cannot read it: {exc.strerror}"))
            continue
        deps = [i for i in proto_imports(text) if not i.startswith(WELL_KNOWN_PREFIX)]
        files[name] = (path, text, deps)
    ordered: list[Contract] = []
    state: dict[str, str] = {}  # name -> "visiting", or why it cannot be registered ("": it can)

    def visit(name: str, chain: tuple[str, ...]) -> str:
        """ "" when `name` and its imports can be registered, else why not."""
        if state.get(name) == "visiting":
            return "import cycle: " + " -> ".join((*chain, name))
        if name in state:
            return state[name]
        state[name] = "visiting"
        path, text, deps = files[name]
        why = ""
        for dep in deps:
            if dep not in files:
                why = f"imports {dep}, which is under none of {', '.join(map(str, roots))}"
            else:
                failed = visit(dep, (*chain, name))
                if failed.startswith("import cycle"):
                    why = failed
                elif failed:
                    why = f"imports {dep}, which cannot be registered"
            if why:
                break
        state[name] = why
        if why:
            problems.append((path, why))
        else:
            ordered.append(Contract(path, name, PROTOBUF, text, tuple(deps)))
        return why

    for name in sorted(files):
        if name not in state:
            visit(name, ())
    return ordered, problems


def _config_schemas(root: Path) -> tuple[list[Contract], list[tuple[Path, str]]]:
    """Every `**/config/<namespace>.schema.json` as a JSON contract `config.<namespace>`."""
    found: dict[str, Contract] = {}
    problems: list[tuple[Path, str]] = []
    for path in sorted(root.rglob(f"{CONFIG_DIR}/*{CONFIG_SUFFIX}")):
        subject = CONFIG_SUBJECT_PREFIX + path.name[: -len(CONFIG_SUFFIX)]
        if subject in found:
            problems.append((path, f"{found[subject].path} claims the same namespace"))
            continue
        try:
            found[subject] = Contract(path, subject, JSON, path.read_text(encoding="utf-8"))
        except OSError as exc:
            problems.append((path, f"cannot read it: {exc.strerror}"))
    return list(found.values()), problems


def discover_contracts(root: Path) -> tuple[list[Contract], list[tuple[Path, str]]]:
    """Every contract under `root` in registration order (events, then .proto files each after
    its imports, then config schemas), and the files that cannot be registered, with why."""
    root = root.resolve()
    events, problems = discover(root)
    contracts = [Contract(e.path, e.subject, AVRO, e.text) for e in events]
    for part in (_protos, _config_schemas):
        more, why = part(root)
        contracts += more
        problems += why
    return contracts, problems
