"""The storage interface: records, transactions and the change counter every backend provides.

The registry's rules (ids, versions, the delete state machine, modes) live in
`schema_registry.registry` and are written once against `Transaction`; a backend only stores and
finds rows. Every lookup the registry makes is keyed (id, fingerprint, subject+version, referenced
subject+version), so backends index them and nothing scans all schemas.

Every backend also keeps an outbox: audit records (`OutboxRow`) appended in the same transaction
as the change they describe (`Transaction.add_outbox`), or alone for requests that changed
nothing (`Storage.append_outbox`); a relay publishes them to Kafka later (`schema_registry.audit`).
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

#: Key under which the global config and mode are stored; no subject may be empty (42208).
GLOBAL = ""


@dataclass(frozen=True, slots=True)
class Reference:
    """A schema reference: the named type `name` is version `version` of `subject`."""

    name: str
    subject: str
    version: int

    def to_json(self) -> dict[str, Any]:
        """The Confluent JSON shape."""
        return {"name": self.name, "subject": self.subject, "version": self.version}


@dataclass(frozen=True, slots=True)
class StoredSchema:
    """An immutable schema: an id is given to content once and never changes meaning.

    `fingerprint` identifies the content (type, normalised text, references, metadata, ruleSet), so
    the same schema registered under two subjects shares one id.
    """

    id: int
    fingerprint: str
    schema_type: str
    text: str
    references: tuple[Reference, ...] = ()
    metadata: Any = None
    rule_set: Any = None

    def extras(self) -> dict[str, Any]:
        """The optional keys Confluent writes beside a schema only when they are set (Jackson's
        NON_EMPTY), in its order: schemaType (not for AVRO), references, metadata, ruleSet. The
        REST answers and the `_schemas` records carry the same ones."""
        out: dict[str, Any] = {}
        if self.schema_type != "AVRO":
            out["schemaType"] = self.schema_type
        if self.references:
            out["references"] = [r.to_json() for r in self.references]
        if self.metadata is not None:
            out["metadata"] = self.metadata
        if self.rule_set is not None:
            out["ruleSet"] = self.rule_set
        return out


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """A Kafka record waiting in the outbox: topic, key, value bytes (Confluent wire format) and
    text headers (CloudEvents binary mode, traceparent), published in append order."""

    topic: str
    key: str
    value: bytes
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class SubjectVersion:
    """Version `version` of `subject` is schema `schema_id`; soft-deleted when `deleted`."""

    subject: str
    version: int
    schema_id: int
    deleted: bool = False


class Transaction(abc.ABC):
    """One atomic, isolated unit of work; reads see one snapshot, writes commit together.

    Obtained from `Storage.read()` (mutators then raise) or `Storage.write()` (serialised with
    every other writer, in every process sharing the store).
    """

    # schemas -------------------------------------------------------------------------------
    @abc.abstractmethod
    def schema(self, schema_id: int) -> StoredSchema | None:
        """The schema with this id, whether or not any version still uses it."""

    @abc.abstractmethod
    def schema_id_by_fingerprint(self, fingerprint: str) -> int | None:
        """The id given to this content, if any."""

    @abc.abstractmethod
    def max_schema_id(self) -> int:
        """The largest id ever given, 0 when none."""

    @abc.abstractmethod
    def add_schema(self, schema: StoredSchema) -> None:
        """Store new content under a new id."""

    @abc.abstractmethod
    def all_schemas(self) -> Iterator[StoredSchema]:
        """Every stored schema, by id (for migrations; nothing on a request path scans)."""

    @abc.abstractmethod
    def set_fingerprint(self, schema_id: int, fingerprint: str) -> None:
        """Give a stored schema a new fingerprint (unique, as at `add_schema`): a migration's
        work when the rule that computes fingerprints changes. The content stays as it is."""

    # facts about the stored data ----------------------------------------------------------
    @abc.abstractmethod
    def meta(self, key: str) -> str | None:
        """A fact the registry keeps about its own stored data (say, which rule computed the
        fingerprints), None when never set."""

    @abc.abstractmethod
    def set_meta(self, key: str, value: str) -> None:
        """Store such a fact, replacing the previous value."""

    # subject versions ----------------------------------------------------------------------
    @abc.abstractmethod
    def versions(self, subject: str, *, include_deleted: bool) -> list[SubjectVersion]:
        """The subject's versions, ascending; soft-deleted ones only when `include_deleted`."""

    @abc.abstractmethod
    def version(self, subject: str, version: int) -> SubjectVersion | None:
        """One version, soft-deleted or not; None when it never existed or was hard-deleted."""

    @abc.abstractmethod
    def max_version(self, subject: str) -> int:
        """The highest version the subject holds, soft-deleted included; 0 when none."""

    @abc.abstractmethod
    def add_version(self, version: SubjectVersion) -> None:
        """Append a version; (subject, version) must be new."""

    @abc.abstractmethod
    def set_deleted(self, subject: str, version: int) -> None:
        """Soft-delete a version."""

    @abc.abstractmethod
    def remove_version(self, subject: str, version: int) -> None:
        """Hard-delete a version."""

    @abc.abstractmethod
    def subjects(self, *, include_deleted: bool) -> list[str]:
        """Subjects holding a live version (or any version when `include_deleted`), sorted."""

    @abc.abstractmethod
    def usages(self, schema_id: int) -> list[SubjectVersion]:
        """Every version (soft-deleted too) using this schema id, by subject then version."""

    @abc.abstractmethod
    def referrers(self, subject: str, version: int) -> list[SubjectVersion]:
        """Every version (soft-deleted too) whose schema references `subject` `version`."""

    @abc.abstractmethod
    def all_versions(self) -> Iterator[SubjectVersion]:
        """Every version of every subject, by subject then version."""

    # config and mode ----------------------------------------------------------------------
    @abc.abstractmethod
    def config(self, subject: str) -> dict[str, Any] | None:
        """The stored config of a subject (or of `GLOBAL`)."""

    @abc.abstractmethod
    def set_config(self, subject: str, config: dict[str, Any]) -> None:
        """Store a config, replacing the previous one."""

    @abc.abstractmethod
    def delete_config(self, subject: str) -> None:
        """Forget a config (no error when there is none)."""

    @abc.abstractmethod
    def mode(self, subject: str) -> str | None:
        """The stored mode of a subject (or of `GLOBAL`)."""

    @abc.abstractmethod
    def set_mode(self, subject: str, mode: str) -> None:
        """Store a mode."""

    @abc.abstractmethod
    def delete_mode(self, subject: str) -> None:
        """Forget a mode (no error when there is none)."""

    @abc.abstractmethod
    def mode_subjects(self) -> list[str]:
        """Subjects with a subject-level mode."""

    # outbox ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def add_outbox(self, row: OutboxRow) -> None:
        """Append a record to the outbox: it exists exactly when this transaction commits."""


class Storage(abc.ABC):
    """A registry store. Thread-safe; `write()` transactions are serialised across processes."""

    #: Whether several server processes may share this store (the memory store cannot).
    shared_across_processes: bool = False

    @abc.abstractmethod
    def read(self) -> AbstractContextManager[Transaction]:
        """A read-only snapshot."""

    @abc.abstractmethod
    def write(self) -> AbstractContextManager[Transaction]:
        """A write transaction: committed when the block exits normally, else rolled back.

        On commit the change counter moves before the block returns, so any read started after
        that, in any process, sees the write.
        """

    @abc.abstractmethod
    def change_counter(self) -> int:
        """A number that differs after every committed write; cheap enough for every request."""

    @abc.abstractmethod
    def append_outbox(self, row: OutboxRow) -> None:
        """Append one outbox record in a transaction of its own, for a request that changed
        nothing (a refused write). Leaves the change counter alone: no cached read is stale."""

    @abc.abstractmethod
    def pending_outbox(self) -> list[OutboxRow]:
        """The outbox records not published yet, oldest first (for tests and diagnostics)."""

    def close(self) -> None:  # noqa: B027 - a no-op is the right default for in-memory stores
        """Release files and connections."""

    def reopen(self) -> None:  # noqa: B027
        """Drop connections inherited across fork() and open fresh ones."""
