"""Finding event schemas and their subjects for `schema-registry register-all DIR`.

Topic mapping: a directory holding `.avsc` files has a `topic.json`, `{"topic": "<topic>"}`,
naming the Kafka topic those events go to (e.g. `proto/shop/inventory/v1/avro/topic.json` with
`{"topic": "inventory.events.v1"}`). A `topic.json` also covers sub-directories that have none
of their own; the nearest one wins. Each schema's subject follows TopicRecordNameStrategy:
`<topic>-<record full name>`, so several event types share a topic, each evolving on its own.
"""

from __future__ import annotations

import json
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
