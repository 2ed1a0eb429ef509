"""The config service's use cases: store, read, roll back and watch versioned documents, each
checked against its namespace's JSON Schema; register schemas; keep the clients' ACK/NACK
reports.

Every write is one transaction, committed (durably) before the caller hears of it, and only
then published to the watch streams (``ChangeFeed``), so a watcher never sees a version that
could still roll back. Versions are checked against the schema inside the transaction that
stores them, so a schema registered concurrently cannot let a document through that fails it.
Every change (SetConfig, Rollback, SetSchema) is recorded in the audit trail after its commit.
"""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from control.app.feed import ChangeFeed
from control.app.ports import ConfigStore, StoreTransaction
from control.domain.model import (
    MAX_CLIENT,
    MAX_ERROR,
    MAX_REASON,
    ClientReport,
    ConfigVersion,
    NamespaceSchema,
    NamespaceSummary,
    check_namespace,
    check_size,
    clip,
    parse_object,
)
from control.domain.schema import Schema
from meshkit import timestamps
from meshkit.audit import Actor, AuditEntry
from meshkit.errors import (
    Aborted,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
    Violations,
    quoted,
)

log = logging.getLogger("control.config")

Clock = Callable[[], datetime.datetime]

DEFAULT_PAGE = 50
MAX_PAGE = 1000
WATCH_BATCH = 16
"""Versions a watch stream reads from the store at a time (each up to 1 MiB)."""
WATCH_BACKSTOP_S = 10.0
"""A waiting stream looks at its ``active`` this often even if nothing woke it: a backstop for
a cancellation grpcio did not report."""
REPORT_RETENTION = datetime.timedelta(days=7)
"""Reports older than this are forgotten (a client reports on every version it receives, so a
live one is never this old; a process restarted under a new pid leaves its old name behind)."""
SCHEMA_CACHE = 64
"""Compiled schemas kept, by text (compiling flagd's takes milliseconds; a set takes one)."""


@dataclass(frozen=True)
class BundledSchema:
    """A namespace's schema shipped in a contracts package: its text and where it came from."""

    namespace: str
    text: str
    origin: str


@dataclass(frozen=True)
class WatchEvent:
    """One message of a watch: a version, and whether it is a snapshot (start or reset)."""

    config: ConfigVersion
    snapshot: bool


class ConfigUseCases:
    """The ConfigService's behaviour. Thread safety: safe to share; every call opens its own
    transaction or snapshot."""

    def __init__(
        self,
        transaction: StoreTransaction,
        snapshot: StoreTransaction,
        feed: ChangeFeed,
        *,
        audit: Callable[[AuditEntry], None] = lambda entry: None,
        clock: Clock = timestamps.now,
        checks: Mapping[str, Callable[[Mapping[str, object]], object]] | None = None,
    ) -> None:
        """``checks``: beyond its JSON Schema, a namespace's document must pass this function
        (a ValueError saying ``path: why`` refuses it): the very parse its clients run, so a
        document every client would NACK (experiment weights that do not add up to 1, a flag
        whose default is not one of its variants) is refused here, naming the field."""
        self._checks = dict(checks or {})
        self._transaction = transaction
        self._snapshot = snapshot
        self.feed = feed
        self._audit = audit
        self._clock = clock
        self._schemas: dict[str, Schema] = {}
        self._schemas_lock = threading.Lock()

    # ------------------------------------------------------------------------------ documents

    def get(self, namespace: str, version: int = 0) -> ConfigVersion:
        """Version ``version`` of the namespace (0: the current one); NotFound when there is
        none."""
        violations = Violations()
        check_namespace(violations, namespace)
        violations.check(version >= 0, "version", "must not be negative")
        violations.raise_if_any()
        with self._snapshot() as store:
            found = store.version(namespace, version) if version else store.current(namespace)
            current = store.current(namespace) if found is None and version else None
        if found is not None:
            return found
        if version:
            raise _no_version(namespace, version, current)
        raise NotFound(
            f"namespace {quoted(namespace)} has no document yet",
            reason="CONFIG_NOT_FOUND",
            metadata={"namespace": namespace},
        )

    def set(
        self,
        namespace: str,
        document: str,
        *,
        author: str,
        reason: str = "",
        expected_version: int | None = None,
    ) -> ConfigVersion:
        """Store ``document`` as the namespace's next version. InvalidArgument names the field
        that fails the namespace's schema (or what is wrong with the JSON); Aborted when
        ``expected_version`` is given and is not the current version."""
        violations = Violations()
        check_namespace(violations, namespace)
        check_size(violations, document, "document")
        _check_reason(violations, reason)
        if expected_version is not None:
            violations.check(expected_version >= 0, "expected_version", "must not be negative")
        violations.raise_if_any()
        parsed = parse_object(document, "document")
        with self._transaction() as store:
            current = store.current(namespace)
            now = current.version if current is not None else 0
            if expected_version is not None and expected_version != now:
                raise Aborted(
                    f"namespace {quoted(namespace)} is at version {now}, not {expected_version}:"
                    " it changed since it was read; read it again and retry",
                    reason="CONFIG_VERSION_MISMATCH",
                    metadata={"namespace": namespace, "current_version": str(now)},
                )
            self._check_document(store, namespace, parsed)
            stored = ConfigVersion(
                namespace, now + 1, document, author, reason, self._clock(), rollback_of=0
            )
            store.append(stored)
        self._published(stored, "config.set")
        return stored

    def rollback(
        self, namespace: str, to_version: int, *, author: str, reason: str = ""
    ) -> ConfigVersion:
        """Store the document of ``to_version`` again, as the next version (history is never
        rewritten). NotFound for an unknown version; InvalidArgument when that document fails
        the namespace's current schema."""
        violations = Violations()
        check_namespace(violations, namespace)
        violations.check(to_version >= 1, "to_version", "must be a version: 1 or more")
        _check_reason(violations, reason)
        violations.raise_if_any()
        with self._transaction() as store:
            target = store.version(namespace, to_version)
            current = store.current(namespace)
            if target is None or current is None:
                raise _no_version(namespace, to_version, current)
            # Checked against the schema as it is now: it may have changed since.
            self._check_document(store, namespace, parse_object(target.document, "document"))
            stored = ConfigVersion(
                namespace,
                current.version + 1,
                target.document,
                author,
                reason,
                self._clock(),
                rollback_of=to_version,
            )
            store.append(stored)
        self._published(stored, "config.rollback")
        return stored

    def history(
        self, namespace: str, page_size: int = 0, before_version: int = 0
    ) -> list[ConfigVersion]:
        """Up to ``page_size`` versions (0: DEFAULT_PAGE; at most MAX_PAGE) below
        ``before_version`` (0: from the newest), newest first."""
        violations = Violations()
        check_namespace(violations, namespace)
        violations.check(page_size >= 0, "page_size", "must not be negative")
        violations.check(before_version >= 0, "before_version", "must not be negative")
        violations.raise_if_any()
        limit = DEFAULT_PAGE if page_size == 0 else min(page_size, MAX_PAGE)
        with self._snapshot() as store:
            return list(store.history(namespace, before_version, limit))

    def namespaces(self) -> list[NamespaceSummary]:
        """Every namespace with a schema or a document, by name."""
        with self._snapshot() as store:
            return list(store.namespaces())

    # -------------------------------------------------------------------------------- schemas

    def set_schema(self, namespace: str, schema: str, *, author: str) -> NamespaceSchema:
        """Register ``schema`` for the namespace. InvalidArgument when it is not a valid JSON
        Schema; FailedPrecondition naming the field when the current document does not satisfy
        it. The same schema again (whatever its whitespace) changes nothing."""
        registered, _ = self._set_schema(namespace, schema, author)
        return registered

    def _set_schema(
        self, namespace: str, schema: str, author: str, actor: Actor | None = None
    ) -> tuple[NamespaceSchema, bool]:
        violations = Violations()
        check_namespace(violations, namespace)
        violations.raise_if_any()
        compiled = Schema(schema)
        with self._transaction() as store:
            existing = store.schema(namespace)
            if existing is not None and compiled.same_as(existing.schema):
                return existing, False
            current = store.current(namespace)
            if current is not None:
                problems = compiled.violations(parse_object(current.document, "document"))
                if problems:
                    shown = "; ".join(f"{p.field}: {p.description}" for p in problems[:3])
                    raise FailedPrecondition(
                        f"the current document of {quoted(namespace)} (version"
                        f" {current.version}) does not satisfy this schema: {shown}; change"
                        " the document first",
                        violations=[
                            PreconditionViolation("SCHEMA", p.field, p.description)
                            for p in problems
                        ],
                        reason="DOCUMENT_FAILS_SCHEMA",
                        metadata={"namespace": namespace, "version": str(current.version)},
                    )
            registered = NamespaceSchema(namespace, schema, author, self._clock())
            store.set_schema(registered)
        self._remember(compiled)
        log.info("control: schema of %s registered by %s", namespace, author)
        self._record(
            AuditEntry(
                "config.schema.set",
                resource_type="ConfigNamespace",
                resource_id=namespace,
                details={"replaced": str(existing is not None).lower()},
                actor=actor,
            )
        )
        return registered, True

    def get_schema(self, namespace: str) -> NamespaceSchema:
        """The namespace's schema; NotFound when none is registered."""
        violations = Violations()
        check_namespace(violations, namespace)
        violations.raise_if_any()
        with self._snapshot() as store:
            found = store.schema(namespace)
        if found is None:
            raise NotFound(
                f"namespace {quoted(namespace)} has no schema registered",
                reason="SCHEMA_NOT_FOUND",
                metadata={"namespace": namespace},
            )
        return found

    def register_bundled(self, schemas: Sequence[BundledSchema], author: str = "control") -> int:
        """Register each shipped schema that is absent or different, as ``author``; returns
        how many changed. One that cannot be registered (the current document fails it, or it
        is not a valid schema) is logged and skipped: the namespace keeps its schema, and the
        service still starts."""
        changed = 0
        actor = Actor(subject=author, service=author)
        for bundled in schemas:
            try:
                _, did = self._set_schema(bundled.namespace, bundled.text, author, actor)
            except (InvalidArgument, FailedPrecondition) as exc:
                log.warning(
                    "control: the schema of %s shipped in %s is NOT registered: %s",
                    bundled.namespace,
                    bundled.origin,
                    exc.message,
                )
                continue
            if did:
                changed += 1
                log.info(
                    "control: schema of %s registered from %s", bundled.namespace, bundled.origin
                )
        return changed

    # -------------------------------------------------------------------------------- clients

    def report(
        self,
        namespace: str,
        client: str,
        version: int,
        *,
        accepted: bool,
        error: str = "",
        running_version: int = 0,
    ) -> ClientReport:
        """Store a client's ACK (``accepted``) or NACK of ``version``, replacing its previous
        report on the namespace."""
        violations = Violations()
        check_namespace(violations, namespace)
        _check_client(violations, client, required=True)
        violations.check(version >= 0, "version", "must not be negative")
        violations.check(running_version >= 0, "running_version", "must not be negative")
        violations.raise_if_any()
        now = self._clock()
        stored = ClientReport(
            namespace,
            client,
            version,
            accepted,
            clip(error, MAX_ERROR),
            running_version,
            now,
        )
        with self._transaction() as store:
            store.report(stored)
            store.prune_reports(now - REPORT_RETENTION)
        if not accepted:
            log.warning(
                "control: %s rejected %s version %d and runs version %d: %s",
                client,
                namespace,
                version,
                running_version,
                stored.error,
            )
        return stored

    def client_status(self, namespace: str) -> list[ClientReport]:
        """The latest report of each client on the namespace, by client."""
        violations = Violations()
        check_namespace(violations, namespace)
        violations.raise_if_any()
        with self._snapshot() as store:
            return list(store.reports(namespace))

    # ---------------------------------------------------------------------------------- watch

    def watch(
        self,
        namespace: str,
        since_version: int = 0,
        *,
        client: str = "",
        active: Callable[[], bool] = lambda: True,
    ) -> WatchStream:
        """A watch of the namespace from ``since_version`` (see WatchStream); InvalidArgument
        for a bad namespace or a negative version, raised now."""
        violations = Violations()
        check_namespace(violations, namespace)
        violations.check(since_version >= 0, "since_version", "must not be negative")
        _check_client(violations, client, required=False)
        violations.raise_if_any()
        return WatchStream(self._snapshot, self.feed, namespace, since_version, client, active)

    # -------------------------------------------------------------------------------- helpers

    def _check_document(
        self,
        store: ConfigStore,
        namespace: str,
        document: Mapping[str, object],
    ) -> None:
        registered = store.schema(namespace)
        if registered is not None:
            problems = self._compiled(registered.schema).violations(document)
            if problems:
                raise InvalidArgument(violations=problems, reason="DOCUMENT_FAILS_SCHEMA")
        check = self._checks.get(namespace)
        if check is None:
            return
        try:
            check(document)
        except ValueError as exc:
            path, sep, why = str(exc).partition(": ")
            field, description = (path, why) if sep and " " not in path else ("document", str(exc))
            raise InvalidArgument(
                violations=[FieldViolation(field, description)], reason="DOCUMENT_REFUSED"
            ) from None

    def _compiled(self, text: str) -> Schema:
        with self._schemas_lock:
            found = self._schemas.get(text)
        if found is None:
            found = Schema(text)
            self._remember(found)
        return found

    def _remember(self, schema: Schema) -> None:
        with self._schemas_lock:
            if len(self._schemas) >= SCHEMA_CACHE:
                self._schemas.pop(next(iter(self._schemas)))
            self._schemas[schema.text] = schema

    def _published(self, stored: ConfigVersion, action: str) -> None:
        """After the commit: wake the watchers, log, audit."""
        self.feed.published(stored.namespace, stored.version)
        log.info(
            "control: %s version %d stored by %s%s: %s",
            stored.namespace,
            stored.version,
            stored.author,
            f" (rollback of {stored.rollback_of})" if stored.rollback_of else "",
            stored.reason or "no reason given",
        )
        details = {"version": str(stored.version), "reason": clip(stored.reason, 200)}
        if stored.rollback_of:
            details["rollback_of"] = str(stored.rollback_of)
        self._record(
            AuditEntry(
                action,
                resource_type="ConfigNamespace",
                resource_id=stored.namespace,
                details=details,
            )
        )

    def _record(self, entry: AuditEntry) -> None:
        # The change is committed already: a failure to record it must not make the caller
        # believe it failed (a retried SetConfig would store a second version).
        try:
            self._audit(entry)
        except Exception:
            log.exception(
                "control: the audit record of %s on %s was not written (the change is stored)",
                entry.action,
                entry.resource_id,
            )


class WatchStream:
    """One watch of a namespace, iterated on the thread that serves it.

    It yields first what the watcher has not seen: with ``since_version`` 0, a snapshot of the
    current version (version 0 with an empty document when there is none); with N > 0, every
    version after N, in order; with N above the current version (the store was replaced), a
    snapshot, which the watcher takes as a reset. Then every version as it is stored, in order,
    none skipped and none twice. It ends when ``cancel`` is called (the caller left), when
    ``active()`` turns false, or when the feed closes (the service stops).
    """

    def __init__(  # noqa: PLR0917 - built by ConfigUseCases.watch only
        self,
        snapshot: StoreTransaction,
        feed: ChangeFeed,
        namespace: str,
        since_version: int,
        client: str,
        active: Callable[[], bool],
    ) -> None:
        self.namespace = namespace
        self.since_version = since_version
        self.client = client or "an unnamed client"
        self._snapshot = snapshot
        self._feed = feed
        self._active = active
        self._cancelled = False

    def cancel(self) -> None:
        """End the stream (from any thread; grpcio calls it when the RPC terminates)."""
        self._cancelled = True
        self._feed.wake(self.namespace)

    def _done(self) -> bool:
        return self._cancelled or self._feed.closed or not self._active()

    def __iter__(self) -> Iterator[WatchEvent]:
        namespace = self.namespace
        log.info(
            "control: %s watches %s from version %d", self.client, namespace, self.since_version
        )
        sent = 0
        try:
            with self._snapshot() as store:
                current = store.current(namespace)
            now = current.version if current is not None else 0
            last = self.since_version
            if last == 0 or last > now:
                yield WatchEvent(current or ConfigVersion.none_yet(namespace), snapshot=True)
                sent += 1
                last = now
            while not self._done():
                with self._snapshot() as store:
                    batch = list(store.after(namespace, last, WATCH_BATCH))
                for stored in batch:
                    yield WatchEvent(stored, snapshot=False)
                    sent += 1
                    last = stored.version
                if len(batch) < WATCH_BATCH:
                    self._feed.wait(namespace, last, WATCH_BACKSTOP_S, self._done)
        finally:
            log.info(
                "control: %s stopped watching %s after %d messages", self.client, namespace, sent
            )


def _no_version(namespace: str, version: int, current: ConfigVersion | None) -> NotFound:
    now = current.version if current is not None else 0
    return NotFound(
        f"namespace {quoted(namespace)} has no version {version} (its current version is {now})",
        reason="CONFIG_VERSION_NOT_FOUND",
        metadata={"namespace": namespace, "version": str(version)},
    )


def _check_reason(violations: Violations, reason: str) -> None:
    violations.check(
        len(reason) <= MAX_REASON, "reason", f"must be at most {MAX_REASON} characters"
    )


def _check_client(violations: Violations, client: str, *, required: bool) -> None:
    if required:
        violations.check(client.strip() != "", "client", "is required")
    violations.check(
        len(client) <= MAX_CLIENT, "client", f"must be at most {MAX_CLIENT} characters"
    )
