"""The event types a service knows: its .avsc contracts, their topics and registry subjects."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastavro import parse_schema
from fastavro.schema import SchemaParseException

from meshkit.errors import MeshError

TOPIC_FILE = "topic.json"


class CatalogError(MeshError):
    """An event contract could not be loaded; the message names the file and what is wrong."""

    status = "FAILED_PRECONDITION"


class SchemaRegistrationError(MeshError):
    """Some event schemas are not registered (or not compatible) in the registry.

    ``problems`` maps each bad subject to why; the message names every one of them, so a service
    that refuses to start says exactly which `register-all` run it is missing.
    """

    status = "FAILED_PRECONDITION"

    def __init__(self, problems: Mapping[str, str]) -> None:
        self.problems = dict(problems)
        lines = "; ".join(f"{subject}: {why}" for subject, why in sorted(self.problems.items()))
        super().__init__(f"event schemas not usable with the registry: {lines}")


@dataclass(frozen=True)
class EventType:
    """One event contract: an Avro record, the topic it is published to, its registry subject."""

    full_name: str
    topic: str
    schema_text: str
    path: Path | None = None
    parsed: Any = field(default=None, compare=False, repr=False)

    @property
    def subject(self) -> str:
        """``<topic>-<record full name>`` (TopicRecordNameStrategy)."""
        return f"{self.topic}-{self.full_name}"

    @classmethod
    def from_text(cls, text: str, topic: str, path: Path | None = None) -> EventType:
        """Parse an .avsc text; raises CatalogError naming ``path`` when it is not a record."""
        where = str(path) if path else "<schema>"
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise CatalogError(f"{where}: not valid JSON: {exc}") from None
        if not isinstance(raw, dict) or raw.get("type") != "record":
            raise CatalogError(f"{where}: an event schema must be an Avro record")
        try:
            parsed = parse_schema(raw)
        except (SchemaParseException, ValueError, TypeError, KeyError) as exc:
            raise CatalogError(f"{where}: not a valid Avro schema: {exc}") from None
        name = parsed["name"] if isinstance(parsed, dict) else ""
        return cls(str(name), topic, text, path, parsed)


class EventCatalog:
    """The event types of a service, by Avro full name (== CloudEvents ``ce_type``).

    Immutable once built; safe to share between threads.
    """

    def __init__(
        self,
        types: Iterable[EventType],
        topic_configs: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self._types: dict[str, EventType] = {}
        self._configs = {t: dict(c) for t, c in (topic_configs or {}).items()}
        for event_type in types:
            if event_type.full_name in self._types:
                other = self._types[event_type.full_name]
                raise CatalogError(
                    f"{event_type.path}: {event_type.full_name} is defined twice"
                    f" (also in {other.path})"
                )
            self._types[event_type.full_name] = event_type

    @classmethod
    def load(cls, *directories: str | Path) -> EventCatalog:
        """Every ``.avsc`` under ``directories``; the topic comes from the nearest ``topic.json``
        (``{"topic": "..."}``) in the schema's directory or above it, up to the given directory,
        exactly as ``schema-registry register-all`` maps them. The topic's Kafka config, when
        the service creates it, comes from the same file's optional ``"config"`` object
        (``{"retention.ms": "-1"}``: names and values as strings, as Kafka's topic configs).

        Raises CatalogError naming the offending file.
        """
        types: list[EventType] = []
        configs: dict[str, tuple[dict[str, str], Path]] = {}
        for directory in directories:
            root = Path(directory)
            if not root.is_dir():
                raise CatalogError(f"{root}: not a directory")
            for path in sorted(root.rglob("*.avsc")):
                mapping = _topic_for(path.parent, root)
                if mapping is None:
                    raise CatalogError(
                        f"{path}: no {TOPIC_FILE} in its directory or above it (up to {root})"
                    )
                topic, config, source = mapping
                seen = configs.setdefault(topic, (config, source))
                if seen[0] != config:
                    raise CatalogError(f"{source}: topic {topic!r} has another config in {seen[1]}")
                types.append(EventType.from_text(path.read_text(encoding="utf-8"), topic, path))
        return cls(types, {topic: config for topic, (config, _) in configs.items()})

    @classmethod
    def from_package(cls, package: str) -> EventCatalog:
        """The event contracts the installed contracts package ships for ``package`` (e.g.
        ``shop.inventory.v1``: its ``avro/`` directory, copied from proto/ by `make gen`), so a
        service finds its schemas wherever it is installed."""
        return cls.from_packages(package)

    @classmethod
    def from_packages(cls, *packages: str) -> EventCatalog:
        """``from_package`` of several packages as one catalog (a service's own events and the
        audit records every service writes, ``mesh.audit.v1``)."""
        from importlib import resources

        return cls.load(*(Path(str(resources.files(p) / "avro")) for p in packages))

    def get(self, full_name: str) -> EventType:
        """The type named ``full_name``; KeyError when the catalog does not have it."""
        return self._types[full_name]

    def __contains__(self, full_name: object) -> bool:
        return full_name in self._types

    def __iter__(self) -> Iterator[EventType]:
        return iter(self._types.values())

    def __len__(self) -> int:
        return len(self._types)

    @property
    def topics(self) -> frozenset[str]:
        """Every topic the catalog's events go to."""
        return frozenset(t.topic for t in self._types.values())

    @property
    def topic_configs(self) -> dict[str, dict[str, str]]:
        """Every topic with the Kafka config its ``topic.json`` asks for (``{}``: the broker's
        defaults); what ``ensure_topics`` creates a missing topic with."""
        return {topic: dict(self._configs.get(topic, {})) for topic in sorted(self.topics)}

    def verify(self, registry: Any, *, readers: bool = False) -> dict[str, int]:
        """Check every schema against the registry; returns subject -> schema id.

        ``registry`` is a URL or a ``SchemaRegistryClient``. Services never auto-register: a
        producer's schema must be registered as-is (by ``schema-registry register-all``). With
        ``readers=True`` (a consumer's own reader schemas) a schema that is not registered itself
        passes when the registry says it can read every registered version of its subject.

        Raises SchemaRegistrationError naming every bad subject at once. Reads only; idempotent.
        """
        from confluent_kafka.schema_registry import Schema
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        client = _client(registry)
        ids: dict[str, int] = {}
        problems: dict[str, str] = {}
        for event_type in self:
            schema = Schema(event_type.schema_text, "AVRO")
            try:
                found = client.lookup_schema(event_type.subject, schema)
                ids[event_type.subject] = int(found.schema_id)
                continue
            except SchemaRegistryError as exc:
                if exc.http_status_code != 404:
                    problems[event_type.subject] = f"registry error: {exc}"
                    continue
                missing_subject = exc.error_code == 40401
            except Exception as exc:  # noqa: BLE001 - any transport failure is reported per subject
                problems[event_type.subject] = f"registry unreachable: {exc}"
                continue
            if missing_subject:
                problems[event_type.subject] = "not registered (run `schema-registry register-all`)"
            elif not readers:
                problems[event_type.subject] = (
                    "this schema is not a registered version of the subject"
                    " (changed without registering, or incompatible)"
                )
            elif not client.test_compatibility_all_versions(event_type.subject, schema):
                problems[event_type.subject] = "cannot read every registered version"
        if problems:
            raise SchemaRegistrationError(problems)
        return ids


def _client(registry: Any) -> Any:
    from meshkit.events._registry import registry_client

    if isinstance(registry, str):
        return registry_client(registry)  # one URL or several, comma separated
    return registry


def _topic_for(directory: Path, root: Path) -> tuple[str, dict[str, str], Path] | None:
    """The nearest topic.json's topic and config, and the file's path."""
    current = directory
    while True:
        mapping = current / TOPIC_FILE
        if mapping.is_file():
            try:
                data = json.loads(mapping.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise CatalogError(f"{mapping}: not readable JSON: {exc}") from None
            topic = data.get("topic") if isinstance(data, dict) else None
            if not isinstance(topic, str) or not topic.strip():
                raise CatalogError(f'{mapping}: expected {{"topic": "<kafka topic>"}}')
            config = data.get("config", {})
            if not isinstance(config, dict) or not all(
                isinstance(k, str) and k and isinstance(v, str) for k, v in config.items()
            ):
                raise CatalogError(
                    f'{mapping}: "config" must map Kafka topic config names to string values,'
                    ' e.g. {"retention.ms": "-1"}'
                )
            return topic.strip(), config, mapping
        if current in (root, current.parent):
            return None
        current = current.parent
