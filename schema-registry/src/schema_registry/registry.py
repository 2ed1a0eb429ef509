"""The registry's rules, written once against `storage.Transaction`: Confluent's semantics.

Identity: an id names content (type, normalised schema, references, metadata, ruleSet), so the
same schema under two subjects gets one id and registering twice is idempotent. Versions: the
next is max(all versions, soft-deleted included) + 1. Deletes: soft first, then permanent; both
refused while another schema references the version. Compatibility is checked against live
versions only, inside the write transaction that appends the version, so two racing registers
can't both pass against a state neither will see.

Methods return JSON-ready values (the HTTP edge renders them) and raise `RegistryError`.

Audit (when built with an `AuditLog`, as `serve` builds it): every write that changes something
appends its `AuditRecorded` to the storage's outbox in the write's own transaction, naming the
`Origin` the caller passes (`schema_registry.audit`); `record_alone` writes the records of writes
that changed nothing (refused ones).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from schema_registry import errors, providers
from schema_registry.audit import ANONYMOUS, AUDIT_SUBJECT, SYSTEM, AuditLog, Origin
from schema_registry.compatibility import COMPATIBILITY_LEVELS, Incompatibility, check_compatibility
from schema_registry.errors import ErrorCode, InvalidSchema, RegistryError
from schema_registry.providers import PROVIDERS, SchemaProvider, provider_of
from schema_registry.storage import (
    GLOBAL,
    Reference,
    Storage,
    StoredSchema,
    SubjectVersion,
    Transaction,
)

DEFAULT_COMPATIBILITY: Final = "BACKWARD"
DEFAULT_MODE: Final = "READWRITE"
MODES: Final = ("READWRITE", "READONLY", "READONLY_OVERRIDE", "IMPORT")
SUPPORTED_TYPES: Final = tuple(PROVIDERS)
#: Types Confluent knows that this registry does not check yet (42201 says so plainly).
KNOWN_TYPES: Final = ("AVRO", "JSON", "PROTOBUF")
LATEST: Final = -1
_MAX_VERSION: Final = 2**31 - 1
#: The longest chain of references a new schema may make (one referencing nothing is 0 deep, one
#: referencing that 1, ...). Confluent has no explicit limit: its Java resolves references
#: recursively and overflows its stack a few hundred deep. Canonical form and the compatibility
#: checker here recurse through referenced types too, two frames or more a level, within
#: Python's 1,000; real schemas use a handful of levels, so 64 is a wide margin that keeps a
#: plain chain to about an eighth of the stack.
MAX_REFERENCE_DEPTH: Final = 64
#: Confluent's effective limit: a schema is one Kafka record in its _schemas topic, and the
#: producer's max.request.size defaults to 1 MiB (a bigger one answers 42209 on registration).
DEFAULT_MAX_SCHEMA_SIZE: Final = 1024 * 1024
_CONTROL_CHARS: Final = re.compile(r"[\x00-\x1f\x7f]")
#: The config keys Confluent stores besides the level; others are kept too, never rejected.
_LEVEL_KEYS: Final = ("compatibility", "compatibilityLevel")

# Audit actions (what was done) of the writes; a refused write's is audit.WRITE_ACTION.
REGISTER: Final = "schemas.register"
DELETE_SUBJECT: Final = "schemas.subject.delete"
DELETE_VERSION: Final = "schemas.version.delete"
SET_CONFIG: Final = "schemas.config.set"
DELETE_CONFIG: Final = "schemas.config.delete"
SET_MODE: Final = "schemas.mode.set"
DELETE_MODE: Final = "schemas.mode.delete"


def audit_resource(subject: str | None) -> tuple[str, str]:
    """(resource_type, resource_id) of an audit record: the subject, or the registry as a whole
    for the global config and mode."""
    return ("Subject", subject) if subject is not None else ("Registry", "global")


_VERSION_TEXT: Final = re.compile(r"[+-]?[0-9]{1,19}")  # longer: out of range anyway


def parse_version(text: str) -> int:
    """`latest`, `-1` or 1..2^31-1, as Confluent's VersionId reads it; else 42202. Only ASCII
    digits (an optional sign first): Python's int() would also read `1_0` as 10, an
    Arabic-Indic digit one as 1 and ` 1 ` as 1, giving one version many names."""
    if text.lower() == "latest":
        return LATEST
    if not _VERSION_TEXT.fullmatch(text):
        raise errors.invalid_version(text)
    number = int(text)
    if number == LATEST or 1 <= number <= _MAX_VERSION:
        return number
    raise errors.invalid_version(text)


def check_subject_name(subject: str) -> None:
    """42208 for names Confluent refuses: empty, control characters, the global marker."""
    if not subject or _CONTROL_CHARS.search(subject) or subject == ":.__GLOBAL:":
        raise RegistryError(
            ErrorCode.INVALID_SUBJECT, f"The specified subject '{subject}' is not valid."
        )


def format_incompatibility(item: Incompatibility) -> str:
    """One entry of Confluent's `messages`, in its Difference rendering (clients grep these)."""
    return (
        f"{{errorType:'{item.rule}', description:'{item.message}', additionalInfo:'{item.path}'}}"
    )


def incompatibility_json(item: Incompatibility) -> dict[str, Any]:
    """The machine-readable form we add next to Confluent's `messages`."""
    return {
        "rule": item.rule,
        "path": item.path,
        "direction": item.direction,
        "message": item.message,
        "reader": item.reader_fragment,
        "writer": item.writer_fragment,
    }


@dataclass(frozen=True)
class SchemaRequest:
    """A RegisterSchemaRequest body, validated; unknown fields are ignored, never rejected."""

    schema: str
    schema_type: str
    references: tuple[Reference, ...]
    metadata: Any
    rule_set: Any
    id: int | None
    version: int | None

    @classmethod
    def from_json(cls, body: Any, *, max_size: int | None = None) -> SchemaRequest:
        """Validate the shape; 42201 for what Confluent calls an invalid schema request.
        With ``max_size`` (registration), a schema text of more UTF-8 bytes is 42209."""
        if not isinstance(body, Mapping):
            raise errors.invalid_schema("the request body must be a JSON object")
        schema = body.get("schema")
        if not isinstance(schema, str) or not schema.strip():
            raise errors.invalid_schema("Empty schema")
        if max_size is not None and len(schema) > max_size // 4:  # else it fits: <= 4 B a char
            # The text as sent, before any parse: the limit is also what this worker will read.
            size = len(schema.encode("utf-8", "surrogatepass"))
            if size > max_size:
                raise RegistryError(
                    ErrorCode.SCHEMA_TOO_LARGE,
                    "Register operation failed because schema is too large: the schema text is "
                    f"{size} bytes, over the {max_size} this registry accepts",
                )
        schema_type = body.get("schemaType") or "AVRO"
        if not isinstance(schema_type, str):
            raise errors.invalid_schema("schemaType must be a string")
        schema_type = schema_type.upper()
        if schema_type not in KNOWN_TYPES:
            raise errors.invalid_schema(
                f"unknown schemaType '{schema_type}'; expected one of {', '.join(KNOWN_TYPES)}"
            )
        if schema_type not in SUPPORTED_TYPES:
            raise RegistryError(
                ErrorCode.INVALID_SCHEMA,
                f"Invalid schema: schemaType {schema_type} is not supported by this registry yet; "
                f"it stores and checks {', '.join(SUPPORTED_TYPES)} schemas only",
            )
        return cls(
            schema=schema,
            schema_type=schema_type,
            references=_references(body.get("references")),
            metadata=body.get("metadata"),
            rule_set=body.get("ruleSet"),
            id=_optional_int(body, "id"),
            version=_optional_int(body, "version"),
        )


def _optional_int(body: Mapping[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value <= 0):
        # Confluent clients send id=-1/version=0 to mean "unset".
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value > _MAX_VERSION:
        raise errors.invalid_schema(f"{key} must be an integer within 32 bits")
    return value


def _references(value: Any) -> tuple[Reference, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise errors.invalid_schema("references must be a list")
    found: list[Reference] = []
    for item in value:
        if not isinstance(item, Mapping):
            raise errors.invalid_schema("each reference must be an object")
        name, subject, version = item.get("name"), item.get("subject"), item.get("version")
        if not isinstance(name, str) or not name or not isinstance(subject, str) or not subject:
            raise errors.invalid_schema("a reference needs a name and a subject")
        if isinstance(version, str) or type(version) is int:  # 2^70 reached SQLite: a 500
            version = parse_version(str(version))
        if not isinstance(version, int) or isinstance(version, bool):
            raise errors.invalid_schema(f"reference {name}: version must be an integer")
        found.append(Reference(name, subject, version))
    return tuple(found)


log = logging.getLogger(__name__)

#: Which rule computed the stored fingerprints (kept in the storage's meta under
#: FINGERPRINT_FORMAT_KEY); a registry opening storage with another recomputes them.
FINGERPRINT_FORMAT: Final = "canonical-string/1"
FINGERPRINT_FORMAT_KEY: Final = "fingerprint_format"


def _fingerprint(
    schema_type: str, text: str, references: Sequence[Reference], metadata: Any, rule_set: Any
) -> str:
    """Identity of content, as Confluent's MD5 over (canonical string, references, metadata,
    ruleSet): `text` is the canonical string, so two spellings of one Avro schema are one id;
    docs, defaults, aliases and custom properties still make another."""
    identity = [schema_type, text, [r.to_json() for r in references], metadata, rule_set]
    dump = json.dumps(identity, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(dump.encode()).hexdigest()


def _normalized_references(refs: Sequence[Reference]) -> tuple[Reference, ...]:
    """AvroSchema.normalize(): references sorted (SchemaReference.compareTo: subject, then
    version; stable) and each once."""
    return tuple(
        sorted(
            dict.fromkeys(refs),
            key=lambda r: (r.subject.encode("utf-16-be", "surrogatepass"), r.version),
        )
    )


@dataclass(frozen=True)
class _Content:
    """A request's schema made ready to compare and store: parsed, its canonical string, its
    fingerprint, its references with versions fixed, and its metadata and ruleSet."""

    parsed: Any
    text: str
    fingerprint: str
    references: tuple[Reference, ...]
    metadata: Any
    rule_set: Any


class Registry:
    """Confluent Schema Registry semantics over a `Storage`. Thread-safe as its storage is.

    Keeps a cache of parsed schemas by id: an id's content never changes, so the cache never
    needs invalidating. With ``audit``, writes are audited (module docstring).
    """

    def __init__(
        self,
        storage: Storage,
        *,
        default_compatibility: str = DEFAULT_COMPATIBILITY,
        audit: AuditLog | None = None,
        max_schema_size: int = DEFAULT_MAX_SCHEMA_SIZE,
    ):
        """``max_schema_size``: UTF-8 bytes of schema text a registration may carry (42209)."""
        if max_schema_size < 1:
            raise ValueError(f"max_schema_size must be at least 1 byte, not {max_schema_size}")
        self.storage = storage
        self.default_compatibility = default_compatibility
        self.audit = audit
        self.max_schema_size = max_schema_size
        self._parsed: dict[int, Any] = {}
        # id -> its schema fully resolved and normalized: what Confluent's `equivalent` compares.
        self._equivalence: dict[int, str] = {}
        self._audit_fingerprint = ""
        if audit is not None:
            avro = PROVIDERS["AVRO"]
            text = avro.canonical(avro.parse(audit.schema_text, (), new=True), ())
            self._audit_fingerprint = _fingerprint("AVRO", text, (), None, None)
        self.migrate_fingerprints()

    # ------------------------------------------------------------------ audit
    def _record(
        self,
        tx: Transaction,
        origin: Origin,
        action: str,
        subject: str | None,
        details: Mapping[str, Any],
    ) -> None:
        """Append the record of a change in its transaction (nothing without an AuditLog)."""
        if self.audit is None:
            return
        resource_type, resource_id = audit_resource(subject)
        tx.add_outbox(
            self.audit.row(
                self._audit_schema_id(tx),
                origin,
                action,
                resource_type=resource_type,
                resource_id=resource_id,
                details=details,
            )
        )

    def _audit_schema_id(self, tx: Transaction) -> int:
        """The id of the AuditRecorded schema here, registering it when absent (or when every
        version of it was deleted, so consumers could not resolve the id any more)."""
        assert self.audit is not None
        schema_id = tx.schema_id_by_fingerprint(self._audit_fingerprint)
        if schema_id is not None and tx.usages(schema_id):
            return schema_id
        req = SchemaRequest.from_json({"schema": self.audit.schema_text})
        try:
            # Not subject to the mode: the registry's own records must be writable whenever a
            # change is (a mode change out of READONLY is audited too).
            registered = self._register_in(
                tx, AUDIT_SUBJECT, req, SYSTEM, check_mode=False, normalize=None
            )
        except RegistryError as exc:
            raise RegistryError(
                ErrorCode.STORE_ERROR,
                f"Cannot write the audit record: the registry's AuditRecorded schema cannot be "
                f"registered under {AUDIT_SUBJECT}: {exc.message}",
            ) from exc
        return int(registered["id"])

    # ------------------------------------------------------------------ migration
    def migrate_fingerprints(self) -> int:
        """Recompute the stored fingerprints if another rule computed them (the storage's meta
        says which: FINGERPRINT_FORMAT). Rows written before fingerprints were taken over the
        canonical string have fingerprints of their JSON, so re-registering such a schema (in
        either spelling) would not find it and would mint a second id. The stored text stays as
        it is. Content stored twice under the old rule (two spellings, two ids) keeps both ids:
        the older one gets the fingerprint, the other one a unique marker, and is still found
        under its subjects as an equivalent version. Once per storage, in one write
        transaction (any process may be first); the constructor calls it. Returns the number
        of fingerprints changed."""
        with self.storage.read() as tx:
            if tx.meta(FINGERPRINT_FORMAT_KEY) == FINGERPRINT_FORMAT:
                return 0
        with self.storage.write() as tx:
            if tx.meta(FINGERPRINT_FORMAT_KEY) == FINGERPRINT_FORMAT:  # another process did
                return 0
            rows = list(tx.all_schemas())
            wanted: dict[int, str] = {}
            owner: dict[str, int] = {}
            for row in rows:
                fingerprint = self._current_fingerprint(tx, row)
                if fingerprint in owner:
                    log.warning(
                        "schema %d is the same content as schema %d: %d keeps the fingerprint",
                        row.id,
                        owner[fingerprint],
                        owner[fingerprint],
                    )
                    fingerprint = f"{fingerprint}:same-as:{owner[fingerprint]}:{row.id}"
                owner.setdefault(fingerprint, row.id)
                wanted[row.id] = fingerprint
            moved = [row for row in rows if row.fingerprint != wanted[row.id]]
            # Out of the way first: a new fingerprint may be another row's old one (UNIQUE).
            for row in moved:
                tx.set_fingerprint(row.id, f"migrating:{row.id}")
            for row in moved:
                tx.set_fingerprint(row.id, wanted[row.id])
            tx.set_meta(FINGERPRINT_FORMAT_KEY, FINGERPRINT_FORMAT)
        if moved:
            log.info(
                "recomputed %d of %d schema fingerprints (%s)",
                len(moved),
                len(rows),
                FINGERPRINT_FORMAT,
            )
        return len(moved)

    def _current_fingerprint(self, tx: Transaction, row: StoredSchema) -> str:
        """A stored schema's fingerprint by today's rule; its old one when it cannot be
        computed (not Avro, or no longer parsed: nothing to gain from guessing)."""
        if row.schema_type not in PROVIDERS:
            return row.fingerprint
        try:
            ref_ids = []
            for ref in row.references:
                target = tx.version(ref.subject, ref.version)
                if target is None:
                    raise errors.invalid_schema(f"reference '{ref.name}' is gone")
                ref_ids.append(target.schema_id)
            refs = [self._parse_stored(tx, i) for i in ref_ids]
            text = PROVIDERS[row.schema_type].canonical(self._parse_stored(tx, row.id), refs)
        except (InvalidSchema, RegistryError) as exc:
            log.warning("schema %d keeps its fingerprint: %s", row.id, exc)
            return row.fingerprint
        return _fingerprint(row.schema_type, text, row.references, row.metadata, row.rule_set)

    def ensure_audit_schema(self) -> int | None:
        """Register the AuditRecorded schema if absent; its id (None without an AuditLog).
        ``serve`` calls it at start, so the registry's ids do not shift at its first write."""
        if self.audit is None:
            return None
        with self.storage.write() as tx:
            return self._audit_schema_id(tx)

    def record_alone(
        self,
        origin: Origin,
        action: str,
        *,
        outcome: str,
        subject: str | None,
        reason: str,
        details: Mapping[str, Any],
    ) -> None:
        """Write the record of a write that changed nothing (refused: DENIED or FAILURE) in a
        transaction of its own, leaving cached reads valid. Nothing without an AuditLog."""
        if self.audit is None:
            return
        with self.storage.read() as tx:
            schema_id = tx.schema_id_by_fingerprint(self._audit_fingerprint)
            if schema_id is not None and not tx.usages(schema_id):
                schema_id = None
        if schema_id is None:
            with self.storage.write() as tx:
                schema_id = self._audit_schema_id(tx)
        resource_type, resource_id = audit_resource(subject)
        self.storage.append_outbox(
            self.audit.row(
                schema_id,
                origin,
                action,
                outcome=outcome,
                resource_type=resource_type,
                resource_id=resource_id,
                reason=reason,
                details=details,
            )
        )

    # ------------------------------------------------------------------ helpers
    def _level(self, tx: Transaction, subject: str) -> str:
        for key in (subject, GLOBAL):
            config = tx.config(key)
            if config and config.get("compatibilityLevel"):
                return str(config["compatibilityLevel"])
        return self.default_compatibility

    def _mode(self, tx: Transaction, subject: str) -> str:
        return tx.mode(subject) or tx.mode(GLOBAL) or DEFAULT_MODE

    def _check_writable(self, tx: Transaction, subject: str) -> str:
        mode = self._mode(tx, subject)
        if mode in ("READONLY", "READONLY_OVERRIDE"):
            raise errors.not_permitted(f"Subject {subject} is in read-only mode")
        return mode

    def _parse_stored(self, tx: Transaction, schema_id: int) -> Any:
        """A stored schema, parsed with its references (cached by id). Depth-first with a
        stack of our own: recursing per reference overflowed Python's stack on chains ~490 deep,
        and only for the links the cache did not hold. No depth limit here: what was stored
        stays readable (`_resolve` keeps new chains within MAX_REFERENCE_DEPTH)."""
        parsed = self._parsed.get(schema_id)
        if parsed is not None:
            return parsed
        rows: dict[int, tuple[StoredSchema, list[int]]] = {}
        open_ids: set[int] = set()  # expanded, waiting for their references
        stack = [(schema_id, False)]
        while stack:
            current, expanded = stack.pop()
            if current in self._parsed:
                continue
            if expanded:
                stored, ref_ids = rows[current]
                # Stored schemas were validated when registered; re-read them leniently, as
                # Confluent does, so a stricter parser never locks a subject.
                refs = [self._parsed[i] for i in ref_ids]
                provider = _provider(stored.schema_type)
                names = [r.name for r in stored.references]
                self._parsed[current] = provider.parse(stored.text, refs, new=False, names=names)
                open_ids.discard(current)
                continue
            if current in open_ids:  # only storage written by hand can loop
                raise errors.invalid_schema(f"schema {current} references itself")
            found = tx.schema(current)
            if found is None:
                raise errors.schema_not_found(current)
            rows[current] = found, [self._find_reference(tx, r).schema_id for r in found.references]
            open_ids.add(current)
            stack.append((current, True))
            stack.extend((i, False) for i in reversed(rows[current][1]))
        return self._parsed[schema_id]

    def _resolve(self, tx: Transaction, ref: Reference) -> SubjectVersion:
        """The version a new schema's reference names; 42201 when it does not exist, or when
        the new schema would be more than MAX_REFERENCE_DEPTH references deep. The depth is
        read from storage, never from the cache, so the verdict does not depend on it."""
        target = self._find_reference(tx, ref)
        depth, where = self._reference_depth(tx, target)
        if depth >= MAX_REFERENCE_DEPTH:
            # The walk stops a level past the limit: deeper than that, the depth is a bound.
            deep = f"{depth + 1}" if depth == MAX_REFERENCE_DEPTH else f"more than {depth}"
            raise errors.invalid_schema(
                f"reference '{ref.name}' (subject '{target.subject}' version {target.version}) "
                f"makes a chain of references {deep} deep, over the {MAX_REFERENCE_DEPTH} "
                f"allowed: subject '{where.subject}' version {where.version} is "
                f"{MAX_REFERENCE_DEPTH + 1} references down"
            )
        return target

    @staticmethod
    def _reference_depth(tx: Transaction, top: SubjectVersion) -> tuple[int, SubjectVersion]:
        """How many references deep `top`'s schema is (0: it references nothing), counted up
        to MAX_REFERENCE_DEPTH + 1 (the walk stops there), and a version at level
        MAX_REFERENCE_DEPTH if there is one (else `top`). Level by level, each level's distinct
        schemas once, so a wide graph of shared references costs its size, not its paths."""
        level: dict[int, SubjectVersion] = {top.schema_id: top}
        depth = 0
        where = top
        while depth <= MAX_REFERENCE_DEPTH:
            below: dict[int, SubjectVersion] = {}
            for schema_id in level:
                stored = tx.schema(schema_id)
                for ref in stored.references if stored is not None else ():
                    found = Registry._find_reference(tx, ref)
                    below.setdefault(found.schema_id, found)
            if not below:
                break
            depth += 1
            level = below
            if depth == MAX_REFERENCE_DEPTH:
                where = next(iter(below.values()))
        return depth, where

    @staticmethod
    def _find_reference(tx: Transaction, ref: Reference) -> SubjectVersion:
        if ref.version == LATEST:
            live = tx.versions(ref.subject, include_deleted=False)
            if live:
                return live[-1]
        else:
            found = tx.version(ref.subject, ref.version)
            if found is not None:
                return found
        raise errors.invalid_schema(
            f"reference '{ref.name}' names version {ref.version} of subject '{ref.subject}', "
            "which does not exist"
        )

    def _parse_request(self, tx: Transaction, req: SchemaRequest, *, normalize: bool) -> _Content:
        """Parse with references resolved, then canonicalise as Confluent's canonicalizeSchema
        does: with `normalize`, the normalized schema (and references sorted, each once); the
        canonical string of that is the text stored and fingerprinted."""
        parsed, ref_schemas, refs = self._parsed_request(tx, req, normalize=normalize)
        text = _provider(req.schema_type).canonical(parsed, ref_schemas)
        fingerprint = _fingerprint(req.schema_type, text, refs, req.metadata, req.rule_set)
        return _Content(parsed, text, fingerprint, refs, req.metadata, req.rule_set)

    def _parsed_request(
        self, tx: Transaction, req: SchemaRequest, *, normalize: bool
    ) -> tuple[Any, tuple[Any, ...], tuple[Reference, ...]]:
        """The request's schema parsed (normalized first with `normalize`), the schemas its
        references name, and its references with versions fixed. A compatibility check needs
        no more: its canonical string and fingerprint are a fifth of a huge schema's check,
        and single calls into C (json.dumps of megabytes) that hold the GIL from the reads."""
        resolved = [self._resolve(tx, r) for r in req.references]
        refs = tuple(
            Reference(r.name, r.subject, v.version)
            for r, v in zip(req.references, resolved, strict=True)
        )
        provider = _provider(req.schema_type)
        try:
            ref_schemas = tuple(self._parse_stored(tx, v.schema_id) for v in resolved)
            for ref, ref_schema in zip(refs, ref_schemas, strict=True):
                if not provider.owns(ref_schema):
                    raise InvalidSchema(
                        f"Invalid schema: reference '{ref.name}' ({ref.subject} version "
                        f"{ref.version}) is a {provider_of(ref_schema).schema_type} schema; "
                        f"a {provider.schema_type} schema can only reference its own type"
                    )
            names = [r.name for r in refs]
            parsed = provider.parse(req.schema, ref_schemas, new=True, names=names)
            if normalize:
                normalized = provider.normalized(parsed, ref_schemas)
                parsed = provider.parse(normalized, ref_schemas, new=False, names=names)
                refs = _normalized_references(refs)
        except InvalidSchema as exc:
            raise RegistryError(ErrorCode.INVALID_SCHEMA, str(exc)) from None
        return parsed, ref_schemas, refs

    def _normalize(self, tx: Transaction, subject: str, requested: bool) -> bool:
        """Whether to normalize: the query flag, else the `normalize` of the subject's config
        or, without one there, the global config's (Confluent's getConfigInScope). Never in
        IMPORT mode: an import stores schemas as the source has them."""
        if self._mode(tx, subject) == "IMPORT":
            return False
        if requested:
            return True
        for key in (subject, GLOBAL):
            config = tx.config(key)
            if config is not None and config.get("normalize") is not None:
                return _true(config["normalize"])
        return False

    def _equivalence_of(self, tx: Transaction, schema_id: int) -> str:
        key = self._equivalence.get(schema_id)
        if key is None:
            parsed = self._parse_stored(tx, schema_id)
            key = provider_of(parsed).normalized(parsed, ())
            self._equivalence[schema_id] = key
        return key

    def _equivalent_version(
        self, tx: Transaction, content: _Content, versions: Sequence[SubjectVersion]
    ) -> SubjectVersion | None:
        """The newest of `versions` whose schema Confluent's `canLookup` takes for this one
        (after the fingerprint missed): the same schema once references are resolved, with
        properties and aliases in any order, and the same references (or the request inlines
        the referenced types and names none), metadata and ruleSet. This finds a version sent
        with its references written out, and rows fingerprinted by an older rule."""
        wanted: str | None = None
        provider = provider_of(content.parsed)
        for sv in reversed(versions):
            stored = tx.schema(sv.schema_id)
            if stored is None or stored.schema_type != provider.schema_type:
                continue
            if content.references and stored.references != content.references:
                continue
            if (stored.metadata, stored.rule_set) != (content.metadata, content.rule_set):
                continue
            if wanted is None:
                wanted = provider.normalized(content.parsed, ())
            try:
                if self._equivalence_of(tx, sv.schema_id) == wanted:
                    return sv
            except (InvalidSchema, RegistryError):
                continue  # a stored schema that no longer parses matches nothing
        return None

    def _formatted(self, tx: Transaction, stored: StoredSchema, format: str) -> str:
        """The schema's text in a `format` its provider knows (Avro's `resolved`: referenced
        types written out where first used); else as stored (its canonical string), which is
        what Confluent answers for a format it does not know for a type."""
        wanted = format.strip().lower()
        if wanted and stored.schema_type in PROVIDERS:
            parsed = self._parse_stored(tx, stored.id)
            text = PROVIDERS[stored.schema_type].formatted(parsed, wanted)
            if text is not None:
                return text
        return stored.text

    def _version_json(
        self, tx: Transaction, sv: SubjectVersion, format: str = ""
    ) -> dict[str, Any]:
        stored = tx.schema(sv.schema_id)
        if stored is None:  # pragma: no cover - versions always point at stored schemas
            raise RegistryError(ErrorCode.STORE_ERROR, f"schema {sv.schema_id} is missing")
        out: dict[str, Any] = {"subject": sv.subject, "version": sv.version, "id": sv.schema_id}
        out.update(stored.extras())
        out["schema"] = self._formatted(tx, stored, format)
        if sv.deleted:
            out["deleted"] = True
        return out

    def _existing_subject(
        self, tx: Transaction, subject: str, *, include_deleted: bool
    ) -> list[SubjectVersion]:
        versions = tx.versions(subject, include_deleted=include_deleted)
        if not versions:
            raise errors.subject_not_found(subject)
        return versions

    def _find_version(
        self, tx: Transaction, subject: str, version: int, *, include_deleted: bool
    ) -> SubjectVersion:
        versions = self._existing_subject(tx, subject, include_deleted=include_deleted)
        if version == LATEST:
            return versions[-1]
        found = tx.version(subject, version)
        if found is None or (found.deleted and not include_deleted):
            raise errors.version_not_found(version)
        return found

    # ------------------------------------------------------------------ subjects & versions
    def list_subjects(self, prefix: str, *, deleted: bool, deleted_only: bool) -> list[str]:
        """GET /subjects."""
        with self.storage.read() as tx:
            if deleted_only:
                live = set(tx.subjects(include_deleted=False))
                names = [s for s in tx.subjects(include_deleted=True) if s not in live]
            else:
                names = tx.subjects(include_deleted=deleted)
        if prefix and prefix != ":*:":
            names = [s for s in names if s.startswith(prefix)]
        return names

    def list_versions(
        self, subject: str, *, deleted: bool, deleted_only: bool, deleted_as_negative: bool
    ) -> list[int]:
        """GET /subjects/{s}/versions."""
        with self.storage.read() as tx:
            versions = self._existing_subject(tx, subject, include_deleted=deleted or deleted_only)
        if deleted_only:
            versions = [v for v in versions if v.deleted]
        if deleted_as_negative:
            return [-v.version if v.deleted else v.version for v in versions]
        return [v.version for v in versions]

    def get_version(
        self, subject: str, version: str, *, deleted: bool, format: str = ""
    ) -> dict[str, Any]:
        """GET /subjects/{s}/versions/{v} (and its /schema), in a `format` (`_formatted`)."""
        number = parse_version(version)
        with self.storage.read() as tx:
            sv = self._find_version(tx, subject, number, include_deleted=deleted)
            return self._version_json(tx, sv, format)

    def referenced_by(self, subject: str, version: str, *, deleted: bool) -> list[int]:
        """GET /subjects/{s}/versions/{v}/referencedby: ids of schemas referencing it."""
        number = parse_version(version)
        with self.storage.read() as tx:
            sv = self._find_version(tx, subject, number, include_deleted=True)
            users = tx.referrers(subject, sv.version)
        return sorted({u.schema_id for u in users if deleted or not u.deleted})

    def latest_with_metadata(
        self, subject: str, wanted: Mapping[str, str], *, deleted: bool
    ) -> dict[str, Any]:
        """GET /subjects/{s}/metadata: the latest version whose metadata properties match."""
        with self.storage.read() as tx:
            for sv in reversed(self._existing_subject(tx, subject, include_deleted=deleted)):
                stored = tx.schema(sv.schema_id)
                metadata = stored.metadata if stored else None
                props = metadata.get("properties") if isinstance(metadata, dict) else None
                props = props if isinstance(props, dict) else {}
                if all(props.get(k) == v for k, v in wanted.items()):
                    return self._version_json(tx, sv)
        raise errors.schema_not_found()

    def lookup(
        self, subject: str, body: Any, *, deleted: bool, normalize: bool = False
    ) -> dict[str, Any]:
        """POST /subjects/{s}: the version of this subject holding this schema, found as
        Confluent's lookUpSchemaUnderSubject finds it: by the canonical (or, with `normalize`
        or config `normalize`, the normalized) schema's fingerprint, else the newest version
        holding an equivalent schema (`_equivalent_version`)."""
        req = SchemaRequest.from_json(body)
        with self.storage.read() as tx:
            versions = self._existing_subject(tx, subject, include_deleted=deleted)
            content = self._parse_request(
                tx, req, normalize=self._normalize(tx, subject, normalize)
            )
            schema_id = tx.schema_id_by_fingerprint(content.fingerprint)
            matches = [v for v in versions if v.schema_id == schema_id]
            found = matches[-1] if matches else self._equivalent_version(tx, content, versions)
            if found is None:
                raise errors.schema_not_found()
            return self._version_json(tx, found)

    def register(
        self, subject: str, body: Any, *, origin: Origin = ANONYMOUS, normalize: bool = False
    ) -> dict[str, Any]:
        """POST /subjects/{s}/versions: idempotent; checks compatibility unless IMPORT mode.
        The schema is stored as its canonical string (normalized first with `normalize` or
        config `normalize`, outside IMPORT mode), which is what GET /schemas/ids answers."""
        check_subject_name(subject)
        req = SchemaRequest.from_json(body, max_size=self.max_schema_size)
        with self.storage.write() as tx:
            return self._register_in(tx, subject, req, origin, normalize=normalize)

    def _register_in(
        self,
        tx: Transaction,
        subject: str,
        req: SchemaRequest,
        origin: Origin,
        *,
        check_mode: bool = True,
        normalize: bool | None = False,
    ) -> dict[str, Any]:
        """Register in `tx`. `normalize`: the request's flag (the config may still say yes);
        None: never (the registry's own AuditRecorded schema, found by a fixed fingerprint)."""
        mode = self._check_writable(tx, subject) if check_mode else DEFAULT_MODE
        if (req.id is not None or req.version is not None) and mode != "IMPORT":
            raise errors.not_permitted(
                f"Subject {subject} is not in import mode: a schema id or version can only be "
                "chosen in IMPORT mode"
            )
        if req.id is None and mode == "IMPORT":
            # An import keeps the source's ids: a registration without one would be given a
            # fresh id here that the source may already use (Confluent refuses it alike).
            raise errors.not_permitted(
                f"Subject {subject} is not in read-write mode: in IMPORT mode a registration"
                " must carry the schema's id"
            )
        normalize = normalize is not None and self._normalize(tx, subject, normalize)
        content = self._parse_request(tx, req, normalize=normalize)
        existing_id = tx.schema_id_by_fingerprint(content.fingerprint)
        if req.id is not None:
            self._check_import_id(tx, req.id, existing_id, content.fingerprint)
        live = tx.versions(subject, include_deleted=False)
        if existing_id is not None:
            for sv in reversed(live):
                if sv.schema_id == existing_id:
                    return self._version_json(tx, sv)
        if req.id is None:
            # Confluent's registerOrForward looks the schema up first: an equivalent live
            # version (references inlined, an older fingerprint) is this registration.
            equivalent = self._equivalent_version(tx, content, live)
            if equivalent is not None:
                return self._version_json(tx, equivalent)
        if mode != "IMPORT":
            level = self._level(tx, subject)
            problems = check_compatibility(
                level,
                content.parsed,
                [self._parse_stored(tx, v.schema_id) for v in live],
                providers.check_pair,
            )
            if problems:
                raise _incompatible(subject, level, problems)
        schema_id = existing_id or req.id or tx.max_schema_id() + 1
        if existing_id is None:
            tx.add_schema(
                StoredSchema(
                    id=schema_id,
                    fingerprint=content.fingerprint,
                    schema_type=req.schema_type,
                    text=content.text,
                    references=content.references,
                    metadata=req.metadata,
                    rule_set=req.rule_set,
                )
            )
            # Not put in self._parsed here: until the transaction commits the id is not this
            # content's for sure (a rollback frees it for other content).
        version = req.version or tx.max_version(subject) + 1
        if tx.version(subject, version) is not None:
            raise errors.not_permitted(
                f"Overwrite of version {version} of subject {subject} is not permitted"
            )
        sv = SubjectVersion(subject, version, schema_id)
        tx.add_version(sv)
        self._record(tx, origin, REGISTER, subject, {"version": version, "id": schema_id})
        return self._version_json(tx, sv)

    @staticmethod
    def _check_import_id(
        tx: Transaction, wanted: int, existing_id: int | None, fingerprint: str
    ) -> None:
        if existing_id is not None and existing_id != wanted:
            raise RegistryError(
                ErrorCode.ID_DOES_NOT_MATCH,
                f"Schema already registered with id {existing_id} instead of input id {wanted}",
            )
        holder = tx.schema(wanted)
        if holder is not None and holder.fingerprint != fingerprint:
            raise RegistryError(
                ErrorCode.ID_DOES_NOT_MATCH,
                f"Overwrite new schema with id {wanted} is not permitted: the id is taken by "
                "another schema",
            )

    def delete_version(
        self, subject: str, version: str, *, permanent: bool, origin: Origin = ANONYMOUS
    ) -> int:
        """DELETE /subjects/{s}/versions/{v}: soft first, then permanent."""
        number = parse_version(version)
        with self.storage.write() as tx:
            self._check_writable(tx, subject)
            everything = self._existing_subject(tx, subject, include_deleted=True)
            if number == LATEST:
                live = [v for v in everything if not v.deleted]
                if live:
                    sv = live[-1]
                elif permanent:
                    sv = everything[-1]
                else:
                    raise errors.version_not_found(version)
            else:
                found = tx.version(subject, number)
                if found is None:
                    raise errors.version_not_found(number)
                sv = found
            if permanent and not sv.deleted:
                raise RegistryError(
                    ErrorCode.VERSION_NOT_SOFT_DELETED,
                    f"Subject '{subject}' Version {sv.version} was not deleted first before being "
                    "permanently deleted",
                )
            if not permanent and sv.deleted:
                raise RegistryError(
                    ErrorCode.VERSION_SOFT_DELETED,
                    f"Subject '{subject}' Version {sv.version} was soft deleted. Set "
                    "permanent=true to delete permanently",
                )
            if tx.referrers(subject, sv.version):
                raise errors.reference_exists(subject, sv.version)
            if permanent:
                tx.remove_version(subject, sv.version)
                if not tx.versions(subject, include_deleted=True):
                    tx.delete_config(subject)
                    tx.delete_mode(subject)
            else:
                tx.set_deleted(subject, sv.version)
            details = {"version": sv.version, "id": sv.schema_id, "permanent": _flag(permanent)}
            self._record(tx, origin, DELETE_VERSION, subject, details)
            return sv.version

    def delete_subject(
        self, subject: str, *, permanent: bool, origin: Origin = ANONYMOUS
    ) -> list[int]:
        """DELETE /subjects/{s}: soft-deletes live versions, or hard-deletes soft-deleted ones."""
        with self.storage.write() as tx:
            self._check_writable(tx, subject)
            everything = self._existing_subject(tx, subject, include_deleted=True)
            live = [v for v in everything if not v.deleted]
            if permanent and live:
                raise RegistryError(
                    ErrorCode.SUBJECT_NOT_SOFT_DELETED,
                    f"Subject '{subject}' was not deleted first before being permanently deleted",
                )
            if not permanent and not live:
                raise RegistryError(
                    ErrorCode.SUBJECT_SOFT_DELETED,
                    f"Subject '{subject}' was soft deleted. Set permanent=true to delete "
                    "permanently",
                )
            targets = everything if permanent else live
            for sv in targets:
                users = [u for u in tx.referrers(subject, sv.version) if u.subject != subject]
                if users:
                    raise errors.reference_exists(subject, sv.version)
            for sv in targets:
                if permanent:
                    tx.remove_version(subject, sv.version)
                else:
                    tx.set_deleted(subject, sv.version)
            if permanent:
                tx.delete_config(subject)
                tx.delete_mode(subject)
            versions = [sv.version for sv in targets]
            details = {
                "versions": ",".join(str(v) for v in versions),
                "permanent": _flag(permanent),
            }
            self._record(tx, origin, DELETE_SUBJECT, subject, details)
            return versions

    # ------------------------------------------------------------------ schemas by id
    def get_schema(
        self, schema_id: int, *, fetch_max_id: bool = False, format: str = ""
    ) -> dict[str, Any]:
        """GET /schemas/ids/{id} (`subject` is only a hint: ids are global here). The schema
        as stored (its canonical string), or with `format=resolved` with the referenced types
        written out where first used; other formats are the stored text, as Confluent answers
        formats it does not know for a type."""
        with self.storage.read() as tx:
            stored = self._schema_in_use(tx, schema_id)
            out: dict[str, Any] = {"schema": self._formatted(tx, stored, format)}
            out.update(stored.extras())
            if fetch_max_id:
                out["maxId"] = tx.max_schema_id()
            return out

    def get_schema_text(self, schema_id: int, *, format: str = "") -> str:
        """GET /schemas/ids/{id}/schema, in a `format` (`_formatted`)."""
        with self.storage.read() as tx:
            return self._formatted(tx, self._schema_in_use(tx, schema_id), format)

    def schema_usages(self, schema_id: int, *, deleted: bool) -> list[SubjectVersion]:
        """The versions using an id, for /schemas/ids/{id}/subjects and /versions."""
        with self.storage.read() as tx:
            self._schema_in_use(tx, schema_id)
            return [u for u in tx.usages(schema_id) if deleted or not u.deleted]

    @staticmethod
    def _schema_in_use(tx: Transaction, schema_id: int) -> StoredSchema:
        # An id whose every version was hard-deleted is gone for clients, as in Confluent; the
        # row stays so the id is never given to other content.
        stored = tx.schema(schema_id)
        if stored is None or not tx.usages(schema_id):
            raise errors.schema_not_found(schema_id)
        return stored

    def list_schemas(
        self, prefix: str, *, deleted: bool, latest_only: bool
    ) -> list[dict[str, Any]]:
        """GET /schemas: every (live) version, optionally only each subject's latest."""
        with self.storage.read() as tx:
            chosen: list[SubjectVersion] = []
            for sv in tx.all_versions():
                if (sv.deleted and not deleted) or not sv.subject.startswith(prefix):
                    continue
                if latest_only and chosen and chosen[-1].subject == sv.subject:
                    chosen[-1] = sv
                else:
                    chosen.append(sv)
            return [self._version_json(tx, sv) for sv in chosen]

    # ------------------------------------------------------------------ compatibility
    def test_compatibility(
        self,
        subject: str,
        version: str | None,
        body: Any,
        *,
        verbose: bool,
        normalize: bool = False,
    ) -> dict[str, Any]:
        """POST /compatibility/subjects/{s}/versions[/{v}]; the schema is normalized first
        with `normalize` or config `normalize`, as a registration would be."""
        number = None if version is None else parse_version(version)
        req = SchemaRequest.from_json(body)
        with self.storage.read() as tx:
            level = self._level(tx, subject)
            live = tx.versions(subject, include_deleted=False)
            if number is None:
                targets = live
            elif number == LATEST:
                # Nothing to compare with is compatible (Confluent; Karapace#479 got it wrong).
                # Only `latest` may be missing: a numbered version must exist (40402), even in
                # an unknown subject or one whose versions are all soft-deleted.
                targets = live[-1:]
            else:
                found = tx.version(subject, number)
                if found is None or found.deleted:
                    raise errors.version_not_found(number)
                targets = [found]
            try:
                parsed = self._parsed_request(
                    tx, req, normalize=self._normalize(tx, subject, normalize)
                )[0]
            except RegistryError as exc:
                if verbose and exc.code is ErrorCode.INVALID_SCHEMA:
                    return {"is_compatible": False, "messages": [exc.message]}
                raise
            existing = [self._parse_stored(tx, v.schema_id) for v in targets]
        problems = check_compatibility(level, parsed, existing, providers.check_pair)
        result: dict[str, Any] = {"is_compatible": not problems}
        if verbose:
            messages = [format_incompatibility(p) for p in problems]
            if problems:
                messages.append(f"{{validateFields: 'false', compatibility: '{level}'}}")
            result["messages"] = messages
            result["incompatibilities"] = [incompatibility_json(p) for p in problems]
        return result

    # ------------------------------------------------------------------ config
    def get_config(self, subject: str | None, *, default_to_global: bool) -> dict[str, Any]:
        """GET /config[/{s}]: the response key is `compatibilityLevel`."""
        with self.storage.read() as tx:
            if subject is not None:
                config = tx.config(subject)
                if config is not None:
                    if "compatibilityLevel" not in config and default_to_global:
                        config["compatibilityLevel"] = self._level(tx, GLOBAL)
                    return config
                if not default_to_global:
                    raise RegistryError(
                        ErrorCode.SUBJECT_COMPATIBILITY_NOT_CONFIGURED,
                        f"Subject '{subject}' does not have subject-level compatibility configured",
                    )
            config = tx.config(GLOBAL) or {}
            config.setdefault("compatibilityLevel", self.default_compatibility)
            return config

    def set_config(
        self, subject: str | None, body: Any, *, origin: Origin = ANONYMOUS
    ) -> dict[str, Any]:
        """PUT /config[/{s}]: request key `compatibility` (ckp's set_config sends the other)."""
        if not isinstance(body, Mapping):
            raise _invalid_level()
        level = next((body[k] for k in _LEVEL_KEYS if body.get(k) is not None), None)
        if level is not None:
            if not isinstance(level, str) or level.upper() not in COMPATIBILITY_LEVELS:
                raise _invalid_level()
            level = level.upper()
        if subject is not None:
            check_subject_name(subject)
        key = GLOBAL if subject is None else subject
        extras = {k: v for k, v in body.items() if k not in _LEVEL_KEYS}
        _check_config_types(extras)
        with self.storage.write() as tx:
            config = tx.config(key) or {}
            config.update(extras)
            if level is not None:
                config["compatibilityLevel"] = level
            tx.set_config(key, config)
            details = {"compatibility": level or ""}
            if extras:
                details["fields"] = ",".join(sorted(extras))
            self._record(tx, origin, SET_CONFIG, subject, details)
        echo = dict(extras)
        if level is not None:
            echo["compatibility"] = level
        return echo

    def delete_config(self, subject: str | None, *, origin: Origin = ANONYMOUS) -> dict[str, Any]:
        """DELETE /config[/{s}]: returns the config that was removed. A subject without a
        subject-level config is 40401, whether or not it has versions, as Confluent answers
        (its deleteSubjectConfig throws subjectNotFound when there is no config to delete)."""
        key = GLOBAL if subject is None else subject
        with self.storage.write() as tx:
            old = tx.config(key)
            if subject is not None and old is None:
                raise errors.subject_not_found(subject)
            tx.delete_config(key)
            was = (old or {}).get("compatibilityLevel", "")
            self._record(tx, origin, DELETE_CONFIG, subject, {"compatibility": was})
        old = old or {}
        if subject is None:
            old.setdefault("compatibilityLevel", self.default_compatibility)
        return old

    # ------------------------------------------------------------------ mode
    def get_mode(self, subject: str | None, *, default_to_global: bool) -> dict[str, Any]:
        """GET /mode[/{s}]."""
        with self.storage.read() as tx:
            if subject is not None:
                mode = tx.mode(subject)
                if mode is not None:
                    return {"mode": mode}
                if not default_to_global:
                    raise RegistryError(
                        ErrorCode.SUBJECT_MODE_NOT_CONFIGURED,
                        f"Subject '{subject}' does not have subject-level mode configured",
                    )
            return {"mode": tx.mode(GLOBAL) or DEFAULT_MODE}

    def set_mode(
        self, subject: str | None, body: Any, *, force: bool, origin: Origin = ANONYMOUS
    ) -> dict[str, Any]:
        """PUT /mode[/{s}]: IMPORT needs an empty registry (or subject) unless `force`."""
        mode = body.get("mode") if isinstance(body, Mapping) else None
        if not isinstance(mode, str) or mode.upper() not in MODES:
            raise RegistryError(
                ErrorCode.INVALID_MODE,
                f"Invalid mode. Valid values are {', '.join(MODES)}",
            )
        mode = mode.upper()
        if subject is not None:
            check_subject_name(subject)
        with self.storage.write() as tx:
            if mode == "IMPORT" and not force:
                occupied = (
                    tx.subjects(include_deleted=True)
                    if subject is None
                    else tx.versions(subject, include_deleted=True)
                )
                if occupied:
                    raise errors.not_permitted(
                        "Cannot import since found existing subjects; use force=true to import "
                        "into a non-empty registry"
                    )
            tx.set_mode(GLOBAL if subject is None else subject, mode)
            self._record(tx, origin, SET_MODE, subject, {"mode": mode, "force": _flag(force)})
        return {"mode": mode}

    def delete_mode(
        self, subject: str | None, *, recursive: bool, origin: Origin = ANONYMOUS
    ) -> dict[str, Any]:
        """DELETE /mode[/{s}]: back to the global (or default) mode; returns the old one."""
        with self.storage.write() as tx:
            if subject is None:
                old = tx.mode(GLOBAL) or DEFAULT_MODE
                tx.delete_mode(GLOBAL)
                details = {"mode": old, "recursive": _flag(recursive)}
                if recursive:
                    names = tx.mode_subjects()
                    for name in names:
                        tx.delete_mode(name)
                    details["subjects"] = ",".join(names)
                self._record(tx, origin, DELETE_MODE, None, details)
                return {"mode": old}
            found = tx.mode(subject)
            if found is None:  # 40401, as Confluent's deleteSubjectMode answers
                raise errors.subject_not_found(subject)
            tx.delete_mode(subject)
            self._record(tx, origin, DELETE_MODE, subject, {"mode": found})
            return {"mode": found}


# ConfigUpdateRequest's typed fields besides the level: what Jackson binds each to. A value of
# another type was stored and echoed back ("normalize": -68995037, found by the fuzz); then
# `normalize` in a config read it as true.
_CONFIG_FIELD_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "normalize": (bool,),
    "validateFields": (bool,),
    "validateRules": (bool,),
    "alias": (str,),
    "compatibilityGroup": (str,),
    "defaultMetadata": (dict,),
    "overrideMetadata": (dict,),
    "defaultRuleSet": (dict,),
    "overrideRuleSet": (dict,),
}


def _check_config_types(fields: Mapping[str, Any]) -> None:
    """400 for a config field of the wrong JSON type (null means unset and is allowed)."""
    for name, value in fields.items():
        wanted = _CONFIG_FIELD_TYPES.get(name)
        if wanted is None or value is None:
            continue
        if not isinstance(value, wanted) or (bool not in wanted and isinstance(value, bool)):
            kind = {bool: "a boolean", str: "a string", dict: "an object"}[wanted[0]]
            raise RegistryError(
                ErrorCode.BAD_REQUEST, f"Config field {name} must be {kind}, not {value!r:.60}"
            )


def _provider(schema_type: str) -> SchemaProvider:
    """The provider of a schema type this registry stores (42201 for another: only storage
    written by another registry can hold one)."""
    provider = PROVIDERS.get(schema_type)
    if provider is None:
        raise errors.invalid_schema(f"schemaType {schema_type} is not supported by this registry")
    return provider


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _true(value: Any) -> bool:
    """A config boolean as Jackson reads one into a Boolean: true, or the string "true"."""
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def _invalid_level() -> RegistryError:
    return RegistryError(
        ErrorCode.INVALID_COMPATIBILITY_LEVEL,
        "Invalid compatibility level. Valid values are none, backward, forward, full, "
        "backward_transitive, forward_transitive, and full_transitive",
    )


def _incompatible(subject: str, level: str, problems: Sequence[Incompatibility]) -> RegistryError:
    details = [format_incompatibility(p) for p in problems]
    details.append(f"{{validateFields: 'false', compatibility: '{level}'}}")
    return RegistryError(
        ErrorCode.INCOMPATIBLE_SCHEMA,
        f'Schema being registered is incompatible with an earlier schema for subject "{subject}", '
        f"details: [{', '.join(details)}]",
    )
