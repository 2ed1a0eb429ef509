"""In-memory storage: for tests and throwaway registries; one process only, gone on exit.

Its outbox is a list nobody publishes (no relay reads process memory): `pending_outbox()` shows
what a SQLite-backed registry would have sent.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from schema_registry.storage.base import (
    OutboxRow,
    Storage,
    StoredSchema,
    SubjectVersion,
    Transaction,
)


class _State:
    """The indexed tables: every registry lookup is a dict hit."""

    def __init__(self) -> None:
        self.schemas: dict[int, StoredSchema] = {}
        self.max_id = 0
        self.by_fingerprint: dict[str, int] = {}
        self.subjects: dict[str, dict[int, SubjectVersion]] = {}
        self.by_schema_id: dict[int, set[tuple[str, int]]] = {}
        # (referenced subject, version) -> schema ids referencing it
        self.referenced: dict[tuple[str, int], set[int]] = {}
        self.configs: dict[str, dict[str, Any]] = {}
        self.modes: dict[str, str] = {}
        self.meta: dict[str, str] = {}
        self.outbox: list[OutboxRow] = []


class _MemoryTransaction(Transaction):
    def __init__(self, state: _State, *, writable: bool) -> None:
        self._s = state
        self._writable = writable
        # Inverse operations, replayed newest first on rollback.
        self.undo: list[Callable[[], None]] = []

    def _check_writable(self) -> None:
        if not self._writable:
            raise RuntimeError("write attempted in a read transaction")

    def schema(self, schema_id: int) -> StoredSchema | None:
        return self._s.schemas.get(schema_id)

    def schema_id_by_fingerprint(self, fingerprint: str) -> int | None:
        return self._s.by_fingerprint.get(fingerprint)

    def max_schema_id(self) -> int:
        return self._s.max_id

    def add_schema(self, schema: StoredSchema) -> None:
        self._check_writable()
        s = self._s
        if schema.id in s.schemas or schema.fingerprint in s.by_fingerprint:
            raise ValueError(f"schema {schema.id} already stored")
        old_max = s.max_id
        s.schemas[schema.id] = schema
        s.max_id = max(old_max, schema.id)
        s.by_fingerprint[schema.fingerprint] = schema.id
        for ref in schema.references:
            s.referenced.setdefault((ref.subject, ref.version), set()).add(schema.id)

        def undo() -> None:
            del s.schemas[schema.id]
            s.max_id = old_max
            del s.by_fingerprint[schema.fingerprint]
            for ref in schema.references:
                s.referenced[(ref.subject, ref.version)].discard(schema.id)

        self.undo.append(undo)

    def all_schemas(self) -> Iterator[StoredSchema]:
        return iter([self._s.schemas[i] for i in sorted(self._s.schemas)])

    def set_fingerprint(self, schema_id: int, fingerprint: str) -> None:
        self._check_writable()
        s = self._s
        old = s.schemas[schema_id]
        if old.fingerprint == fingerprint:
            return
        if fingerprint in s.by_fingerprint:
            raise ValueError(f"fingerprint of schema {schema_id} is already another schema's")
        s.schemas[schema_id] = dataclasses.replace(old, fingerprint=fingerprint)
        del s.by_fingerprint[old.fingerprint]
        s.by_fingerprint[fingerprint] = schema_id

        def undo() -> None:
            s.schemas[schema_id] = old
            del s.by_fingerprint[fingerprint]
            s.by_fingerprint[old.fingerprint] = schema_id

        self.undo.append(undo)

    def meta(self, key: str) -> str | None:
        return self._s.meta.get(key)

    def set_meta(self, key: str, value: str) -> None:
        self._set(self._s.meta, key, value)

    def versions(self, subject: str, *, include_deleted: bool) -> list[SubjectVersion]:
        found = self._s.subjects.get(subject, {})
        return [v for _, v in sorted(found.items()) if include_deleted or not v.deleted]

    def version(self, subject: str, version: int) -> SubjectVersion | None:
        return self._s.subjects.get(subject, {}).get(version)

    def max_version(self, subject: str) -> int:
        return max(self._s.subjects.get(subject, {}), default=0)

    def add_version(self, version: SubjectVersion) -> None:
        self._check_writable()
        s = self._s
        versions = s.subjects.setdefault(version.subject, {})
        if version.version in versions:
            raise ValueError(f"{version.subject} version {version.version} already stored")
        versions[version.version] = version
        key = (version.subject, version.version)
        s.by_schema_id.setdefault(version.schema_id, set()).add(key)

        def undo() -> None:
            del s.subjects[version.subject][version.version]
            if not s.subjects[version.subject]:
                del s.subjects[version.subject]
            s.by_schema_id[version.schema_id].discard(key)

        self.undo.append(undo)

    def _replace(self, subject: str, number: int, new: SubjectVersion | None) -> None:
        s = self._s
        old = s.subjects[subject][number]
        if new is None:
            del s.subjects[subject][number]
            if not s.subjects[subject]:
                del s.subjects[subject]
            s.by_schema_id[old.schema_id].discard((subject, number))
        else:
            s.subjects[subject][number] = new

        def undo() -> None:
            s.subjects.setdefault(subject, {})[number] = old
            s.by_schema_id.setdefault(old.schema_id, set()).add((subject, number))

        self.undo.append(undo)

    def set_deleted(self, subject: str, version: int) -> None:
        self._check_writable()
        old = self._s.subjects[subject][version]
        self._replace(subject, version, SubjectVersion(subject, version, old.schema_id, True))

    def remove_version(self, subject: str, version: int) -> None:
        self._check_writable()
        self._replace(subject, version, None)

    def subjects(self, *, include_deleted: bool) -> list[str]:
        return sorted(
            name
            for name, versions in self._s.subjects.items()
            if include_deleted or any(not v.deleted for v in versions.values())
        )

    def usages(self, schema_id: int) -> list[SubjectVersion]:
        keys = sorted(self._s.by_schema_id.get(schema_id, ()))
        return [self._s.subjects[subject][number] for subject, number in keys]

    def referrers(self, subject: str, version: int) -> list[SubjectVersion]:
        found: list[SubjectVersion] = []
        for schema_id in self._s.referenced.get((subject, version), ()):
            found.extend(self.usages(schema_id))
        return sorted(found, key=lambda v: (v.subject, v.version))

    def all_versions(self) -> Iterator[SubjectVersion]:
        for subject in sorted(self._s.subjects):
            yield from self.versions(subject, include_deleted=True)

    def config(self, subject: str) -> dict[str, Any] | None:
        found = self._s.configs.get(subject)
        return copy.deepcopy(found) if found is not None else None

    def _set(self, table: dict[str, Any], key: str, value: Any) -> None:
        self._check_writable()
        missing = key not in table
        old = table.get(key)
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value

        def undo() -> None:
            if missing:
                table.pop(key, None)
            else:
                table[key] = old

        self.undo.append(undo)

    def set_config(self, subject: str, config: dict[str, Any]) -> None:
        self._set(self._s.configs, subject, copy.deepcopy(config))

    def delete_config(self, subject: str) -> None:
        self._set(self._s.configs, subject, None)

    def mode(self, subject: str) -> str | None:
        return self._s.modes.get(subject)

    def set_mode(self, subject: str, mode: str) -> None:
        self._set(self._s.modes, subject, mode)

    def delete_mode(self, subject: str) -> None:
        self._set(self._s.modes, subject, None)

    def mode_subjects(self) -> list[str]:
        return sorted(name for name in self._s.modes if name)

    def add_outbox(self, row: OutboxRow) -> None:
        self._check_writable()
        outbox = self._s.outbox
        outbox.append(row)
        self.undo.append(lambda: outbox.remove(row))


class MemoryStorage(Storage):
    """Dicts behind one lock; a failed write transaction is undone step by step."""

    shared_across_processes = False

    def __init__(self) -> None:
        self._state = _State()
        self._lock = threading.RLock()
        self._counter = 0

    @contextmanager
    def read(self) -> Iterator[Transaction]:
        with self._lock:
            yield _MemoryTransaction(self._state, writable=False)

    @contextmanager
    def write(self) -> Iterator[Transaction]:
        with self._lock:
            tx = _MemoryTransaction(self._state, writable=True)
            try:
                yield tx
            except BaseException:
                for undo in reversed(tx.undo):
                    undo()
                raise
            if tx.undo:
                self._counter += 1

    def change_counter(self) -> int:
        return self._counter

    def append_outbox(self, row: OutboxRow) -> None:
        with self._lock:
            self._state.outbox.append(row)

    def pending_outbox(self) -> list[OutboxRow]:
        with self._lock:
            return list(self._state.outbox)
