"""The consumer loop: decode, handle once (inbox dedup in the handler's transaction), commit the
offset last; dead-letter what cannot be decoded or handled, without ever reordering a key.

What is transient and what is bad data (the rule the loop lives by):

- A failure that says nothing about the record is transient: the schema registry cannot be
  reached, times out, or answers anything but "not found" (5xx, 429, 401...); a handler raises
  one of ``TRANSIENT``; the dead-letter topic does not acknowledge; the database is locked. The
  record is NOT dead-lettered and its offset NOT committed: its partition is rewound to it and
  paused, and retried with exponential backoff (``retry_backoff_s`` doubling up to
  ``max_retry_backoff_s``), without bound unless ``give_up_after_s`` is set (which then applies
  to handler errors only; a registry outage is never a reason to dead-letter). Other partitions
  carry on, ``poll`` keeps the group membership alive, and ``run_forever`` stays stoppable.
- Bad data goes to ``<topic>.dlq``: no ``ce_id``; no Confluent framing (bad magic byte); a
  schema id the registry answers 404 (``404xx``) for; bytes that do not match the writer schema
  or cannot be read with the reader schema; a handler raising anything not transient.

Per-key order survives dead letters: a dead-lettered record PARKS its key (the Kafka key, the
aggregate id) for this consumer group and topic, in ``meshkit_parked`` in the consumer's own
database. Later records of a parked key are not applied; they are dead-lettered behind it (error
type ``KeyParked``, naming the record they wait for), so ``mesh dlq replay`` sends the key's
records back in their original order. A parked record is applied only when it is the oldest
parked record of its key, and applying it releases it; the key is unparked once every one of
its dead letters has been applied. Records of other keys, including on the same partition, carry
on. A record that can never be applied keeps its key parked: later events of that aggregate wait
in the dead-letter topic, rather than building state that skipped one. Keyless records and
records without ``ce_id`` park nothing (they carry no aggregate order).

Batches: a consumed batch (up to ``batch_size`` records) is applied in ONE transaction, each
record in a savepoint (inbox check, parked-key check, handler, inbox mark), so the batch costs one
commit (one fsync) instead of one per record. Records are decoded before the transaction begins.
A record that cannot go that way -- no ``ce_id``, undecodable, its handler raises, its key is
parked -- ends the batch there: its savepoint is rolled back, the records before it commit, and
it is settled alone by the one-at-a-time path (which retries its handler in a transaction of its
own, then holds or dead-letters it as above); the batch goes on after it. Offsets are committed
after the transaction that applied them, asynchronously (a failed commit is retried with the
next), at most every ``commit_every_s`` (0.2 s; rebalances and ``close`` commit at once): a crash
redelivers what was applied since, and the inbox makes that a no-op.

Rebalances: only records of partitions this member still owns are handled, and only their
offsets committed. A record fetched before its partition was revoked is dropped unhandled; its
new owner reads it from the committed offset.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import io
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from fastavro import parse_schema, schemaless_reader
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

from meshkit import telemetry
from meshkit.db import Database
from meshkit.errors import Aborted, Unavailable
from meshkit.events import _headers as ce
from meshkit.events._catalog import EventCatalog
from meshkit.events._dlq import dead_letter_headers, dlq_topic
from meshkit.events._topics import auto_create_topics, ensure_topics
from meshkit.events.kafkalog import with_python_logging
from meshkit.spans import RpcSpans

log = logging.getLogger("meshkit.events.consumer")

INBOX_MIGRATION = """
CREATE TABLE meshkit_inbox (
    consumer_group TEXT NOT NULL,
    event_id       TEXT NOT NULL,    -- ce_id
    event_type     TEXT NOT NULL,
    topic          TEXT NOT NULL,
    partition      INTEGER NOT NULL,
    "offset"       INTEGER NOT NULL,
    outcome        TEXT NOT NULL,    -- handled | skipped (no handler for the type)
    processed_at   REAL NOT NULL,
    PRIMARY KEY (consumer_group, event_id)
) WITHOUT ROWID;
"""
"""Append this to the consuming service's own migrations. (The consumer creates its other table,
``meshkit_parked``, itself: the dead-lettered records each key waits behind.)"""

_PARKED_TABLE = """
CREATE TABLE IF NOT EXISTS meshkit_parked (
    n              INTEGER PRIMARY KEY,  -- order of the key's dead letters
    consumer_group TEXT NOT NULL,
    topic          TEXT NOT NULL,
    key            BLOB NOT NULL,        -- the Kafka key (aggregate id)
    event_id       TEXT NOT NULL,        -- ce_id of a dead-lettered record of that key
    reason         TEXT NOT NULL,
    parked_at      REAL NOT NULL,
    UNIQUE (consumer_group, topic, key, event_id)
)
"""

# Confluent wire format: magic byte 0x00, then a 4-byte big-endian schema id, then the body.
_FRAMING = 5
# The loop commits offsets at most this often: a commit is a request to the group coordinator,
# and a trickle of events made one per record (profiled in issue 11: broker CPU per order). A
# crash redelivers at most this much more, which the inbox makes a no-op.
COMMIT_EVERY_S = 0.2
# Records consumed and applied per transaction, at most (module docstring, "Batches").
DEFAULT_BATCH = 500
# How long one registry request may take by default: past it the registry counts as down.
REGISTRY_TIMEOUT_S = 5.0


class TransientError(Exception):
    """Raise from a handler when retrying later may succeed (a dependency is down).

    meshkit's ``Unavailable`` and ``Aborted`` and SQLite's ``OperationalError`` (database locked)
    count as transient too. The record is retried in place, its partition paused meanwhile, until
    it succeeds (or ``give_up_after_s``). Anything else is a poison record: it goes to the
    dead-letter topic and parks its key.
    """


class RegistryUnavailable(TransientError):
    """The schema registry could not answer about a record's schema (refused, timed out, or an
    error that is not "not found"): a fact about the registry, not the record; retried."""


TRANSIENT: tuple[type[BaseException], ...] = (
    TransientError,
    Unavailable,
    Aborted,
    sqlite3.OperationalError,
)


@dataclass(frozen=True)
class Event:
    """A decoded event as a handler sees it: CloudEvents attributes, the Avro record (read with
    the consumer's reader schema when it has one), and where it came from."""

    id: str
    type: str
    source: str
    subject: str
    time: datetime.datetime | None
    data: dict[str, Any]
    topic: str
    partition: int
    offset: int
    key: str | None
    headers: Mapping[str, str] = field(repr=False)
    traceparent: str | None = None


Handler = Callable[[Event, sqlite3.Connection], None]
"""Applies one event inside the consumer's open transaction; raise to roll it back."""


class _DecodeError(Exception):
    pass


class KeyParked(Exception):
    """The record's key waits behind an earlier dead letter (``waits_for``, its ce_id)."""

    def __init__(self, key: bytes, waits_for: str) -> None:
        self.waits_for = waits_for
        text = key.decode("utf-8", errors="replace")
        super().__init__(f"key {text!r} is parked behind dead letter {waits_for}")


@dataclass
class _Held:
    """A record that failed transiently, kept in hand and retried at ``retry_at``; its partition
    is paused meanwhile (and rewound to it), so nothing after it is fetched or applied."""

    msg: Message
    since: float
    attempts: int = 0
    retry_at: float = 0.0


@dataclass(frozen=True)
class _Prepared:
    """A record decoded ahead of its batch's transaction: ``handler`` None means no handler
    for its type (it is marked skipped)."""

    event_id: str
    event_type: str
    event: Event | None
    handler: Handler | None


class _GuardedRegistry:
    """The registry client as the deserializers see it: any failure of a registry call except
    its answer "not found" (HTTP 404 with a registry error code 404xx) becomes
    ``RegistryUnavailable``, so a registry outage is never mistaken for an undecodable record."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args: Any, **kwargs: Any) -> Any:
            from confluent_kafka.schema_registry.error import SchemaRegistryError

            try:
                return attr(*args, **kwargs)
            except SchemaRegistryError as exc:
                if exc.http_status_code == 404 and 40400 <= exc.error_code <= 40499:
                    raise  # the registry answered: this record names a schema it does not have
                raise RegistryUnavailable(f"schema registry: {exc}") from exc
            except Exception as exc:
                raise RegistryUnavailable(f"schema registry: {type(exc).__name__}: {exc}") from exc

        return call


def _registry_client(registry: Any, timeout_s: float) -> Any:
    from meshkit.events._registry import registry_client

    if isinstance(registry, str):
        # No retries inside the client: the loop retries per partition, stoppable, with backoff.
        # Several URLs: the next is tried at once; the one that answered is asked first after.
        return registry_client(registry, {"timeout": timeout_s, "max.retries": 0})
    return registry


class EventConsumer:
    """Consumes ``topics`` as ``group`` and applies each event exactly once, in per-key order,
    to ``db``.

    Per record: decode (writer schema by id from the registry, the catalog's schema as reader);
    then, in the batch's ``db.transaction()`` (a savepoint per record): skip if the inbox has
    ``(group, ce_id)``, else call the handler for ``ce_type`` with the event and the open
    connection and write the inbox mark; only after that transaction commits are the Kafka
    offsets committed. A handler therefore shares its transaction with the batch's other
    records: it must do all its work through ``conn`` (a raise rolls back its own savepoint).
    A redelivered record is a no-op, so a crash anywhere costs a redelivery, never a double
    effect. Events of a type without a
    handler are marked and skipped.

    Transient failures (registry unreachable, ``TRANSIENT`` from the handler) hold the record's
    partition at that record and retry it with backoff: nothing is dead-lettered or committed
    past it, and no later record of its partition is applied first. Bad data and handler bugs go
    to ``<topic>.dlq`` (acknowledged before the offset is committed) and park the record's key:
    later records of that key follow it into the dead-letter topic until a replay applies them
    in order; other keys carry on. See the module docstring for the exact rules.

    Group protocol: classic (not KIP-848 ``consumer``): on Kafka 4.3 a classic rejoin takes ~0.1 s
    against ~5 s for a second KIP-848 member, and ``instance_id`` (static membership) lets a
    restarted process take its partitions back without waiting for ``session.timeout.ms``.

    Thread safety: drive one consumer from one thread. Handlers run on that thread.
    """

    def __init__(
        self,
        db: Database,
        *,
        bootstrap: str,
        group: str,
        topics: Sequence[str],
        registry: Any,
        handlers: Mapping[str, Handler] | None = None,
        catalog: EventCatalog | None = None,
        instance_id: str | None = None,
        batch_size: int = DEFAULT_BATCH,
        retry_backoff_s: float = 0.1,
        max_retry_backoff_s: float = 5.0,
        give_up_after_s: float | None = None,
        registry_timeout_s: float = REGISTRY_TIMEOUT_S,
        consumer_config: Mapping[str, Any] | None = None,
        commit_every_s: float = COMMIT_EVERY_S,
        create_topics: bool = True,
    ) -> None:
        """``commit_every_s``: the loop commits settled offsets at most this often (rebalances and
        ``close`` commit at once). ``create_topics``: create the topics read that do not exist yet
        before subscribing (with their topic.json config). ``give_up_after_s``: None (the default)
        retries a transient handler error until it succeeds; a number dead-letters (and parks the
        key of) a record whose handler still fails transiently that long after its first failure in
        this process. Registry outages are retried without bound either way. ``registry`` is a URL
        (requests time out after ``registry_timeout_s``) or a SchemaRegistryClient (used as it is
        configured)."""
        from confluent_kafka.schema_registry import topic_record_subject_name_strategy
        from confluent_kafka.schema_registry.avro import AvroDeserializer

        self._db = db
        self.group = group
        self._handlers = dict(handlers or {})
        self._batch = batch_size
        self._commit_every_s = commit_every_s
        self._next_commit = 0.0
        self._retry_backoff_s = retry_backoff_s
        self._max_retry_backoff_s = max_retry_backoff_s
        self._give_up_after_s = give_up_after_s
        registry_client = _GuardedRegistry(_registry_client(registry, registry_timeout_s))
        self._registry = registry_client
        conf = {"subject.name.strategy": topic_record_subject_name_strategy}
        readers = {t.full_name: t.schema_text for t in (catalog or ())}
        self._reader_schemas = {t.full_name: t.parsed for t in (catalog or ())}
        # (event type, writer schema id) -> (writer, reader) parsed schemas, once the
        # deserializer has decoded one record of that pair (see _decode).
        self._known: dict[tuple[str, int], tuple[Any, Any]] = {}
        self._deserializers = {
            name: AvroDeserializer(registry_client, readers.get(name), conf=conf)
            for name in self._handlers
        }
        with db.transaction() as conn:
            conn.execute(_PARKED_TABLE)
        config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "group.protocol": "classic",
            "partition.assignment.strategy": "cooperative-sticky",
            "session.timeout.ms": 10_000,
            # A subscribed topic created after the subscription is found within 10 s, not at
            # librdkafka's default refresh (5 minutes).
            "topic.metadata.refresh.interval.ms": 10_000,
            "isolation.level": "read_committed",
            "on_commit": self._on_commit,
            **({"group.instance.id": instance_id} if instance_id else {}),
            **(consumer_config or {}),
        }
        self._consumer = Consumer(with_python_logging(config))
        self._dlq = Producer(
            with_python_logging(
                {
                    "bootstrap.servers": bootstrap,
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 0,
                    "message.timeout.ms": 10_000,
                }
            )
        )
        self._pending: dict[tuple[str, int], int] = {}
        self._none_parked = False  # True inside a batch that started with no parked key
        self._span_fixed: dict[str, dict[str, AttributeValue]] = {}
        self._committed: dict[tuple[str, int], int] = {}
        self._assigned: set[tuple[str, int]] = set()
        self._held: dict[tuple[str, int], _Held] = {}
        # A consumer subscribed to a topic that does not exist yet only finds it at its next
        # metadata refresh (and logs UNKNOWN_TOPIC_OR_PART until then), so a reader started
        # before its producers' first event would sit unassigned: create what is missing first,
        # with the config the contracts' topic.json asks for (the producers' own); where the
        # broker cannot create topics on request (the embedded mock cluster: no controller,
        # create_topics=False), have it auto-create them, as the producers' first send would.
        configs = catalog.topic_configs if catalog is not None else {}
        try:
            if create_topics:
                ensure_topics(bootstrap, {t: configs.get(t, {}) for t in topics})
            else:
                auto_create_topics(bootstrap, topics)
        except Exception as exc:  # noqa: BLE001 - the broker may create them; say so, go on
            log.warning(
                "could not create the topics %s before subscribing: %s", sorted(topics), exc
            )
        self._subscribed_at: float | None = time.monotonic()
        self._consumer.subscribe(
            list(topics),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    # -- rebalance -----------------------------------------------------------------------------
    # The callbacks run inside poll()/consume() on our thread, never while a record is handled.

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._subscribed_at is not None:
            # How long joining took is what a reader's first events wait for: say it once.
            log.info(
                "consumer group %s joined: %d partitions assigned %.1f s after subscribing",
                self.group,
                len(partitions),
                time.monotonic() - self._subscribed_at,
                extra={"group": self.group},
            )
            self._subscribed_at = None
        for tp in partitions:
            self._assigned.add((tp.topic, tp.partition))
            self._held.pop((tp.topic, tp.partition), None)
        # A partition we paused, revoked and got back must not stay paused with nothing to
        # resume it; resuming one that is not paused is a no-op.
        try:
            consumer.resume(partitions)
        except KafkaException as exc:
            log.debug("resume on assign: %s", exc)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Commit what we settled on these partitions before another member takes them, so it
        # does not redo (harmless, but slow) our work; then forget them: records of theirs still
        # in hand are dropped unhandled and no later commit of ours covers them.
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        self._commit(only=revoked)
        self._forget(revoked)
        try:
            consumer.resume(partitions)
        except KafkaException as exc:
            log.debug("resume on revoke: %s", exc)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._forget({(tp.topic, tp.partition) for tp in partitions})

    def _forget(self, partitions: set[tuple[str, int]]) -> None:
        for key in partitions:
            self._assigned.discard(key)
            self._pending.pop(key, None)
            self._committed.pop(key, None)
            self._held.pop(key, None)

    def _commit(
        self, only: set[tuple[str, int]] | None = None, *, asynchronous: bool = False
    ) -> None:
        """Commit the settled offsets (of ``only`` those partitions). The loop commits
        asynchronously (a broker round trip per batch would cap a trickle of events); a failure
        is reported to ``_on_commit``, which puts the offset back to be committed again.
        Rebalances and ``close`` commit synchronously."""
        chosen = {
            k: v
            for k, v in self._pending.items()
            if (only is None or k in only) and k in self._assigned
        }
        if not chosen:
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in chosen.items()]
        try:
            if asynchronous:
                self._consumer.commit(offsets=offsets, asynchronous=True)
            else:
                self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # The inbox makes the redelivery this causes a no-op; try again next time.
            log.warning("offset commit failed (%s); will retry", exc)
            return
        for key, offset in chosen.items():
            if self._pending.get(key) == offset:
                del self._pending[key]

    def _on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        # Called from poll/consume on our thread for asynchronous commits. A failed offset is
        # committed again with the next batch, unless a later one is already waiting or done.
        for tp in partitions:
            key = (tp.topic, tp.partition)
            failed = error is not None or tp.error is not None
            if not failed:
                self._committed[key] = max(self._committed.get(key, -1), tp.offset)
                continue
            log.warning("offset commit of %s[%d] failed (%s); will retry", *key, error or tp.error)
            later = key in self._pending or tp.offset <= self._committed.get(key, -1)
            if key in self._assigned and not later:
                self._pending[key] = tp.offset

    # -- the loop --------------------------------------------------------------------------------

    def run_once(self, timeout: float = 1.0) -> int:
        """Retry the held records that are due, then consume up to one batch (waiting at most
        ``timeout`` s for the first record, less when a held record is due sooner), apply the
        batch (module docstring, "Batches"), and commit the offsets of the settled records.
        Returns the number of records settled.

        Raises when settling fails in an unexpected way; the unsettled records are re-read next
        time (the consumer seeks back to them).
        """
        settled = 0
        messages: list[Message] = []
        index = 0
        try:
            settled = self._retry_due()
            # consume(N, timeout) waits until N records arrived or the timeout passed, which
            # holds a trickle of events back for up to `timeout`: wait for the first record
            # only, then take what is already fetched.
            first = self._consumer.poll(0.0 if settled else self._wait(timeout))
            if first is not None:
                messages.append(first)
                if self._batch > 1:
                    messages += self._consumer.consume(num_messages=self._batch - 1, timeout=0)
            prepared = [self._prepare(msg) for msg in messages]
            while index < len(messages):
                index, done = self._settle_from(messages, prepared, index)
                settled += done
        finally:
            if index < len(messages):
                self._rewind(messages[index:])
            if time.monotonic() >= self._next_commit:
                self._commit(asynchronous=True)
                self._next_commit = time.monotonic() + self._commit_every_s
        return settled

    def _live(self, msg: Message) -> bool:
        """True when ``msg`` is a record this member should settle now."""
        error = msg.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("kafka consumer: %s", error)
            return False
        tp = (msg.topic() or "", msg.partition() or 0)
        # Not when revoked while in hand, or fetched behind a held record.
        return tp in self._assigned and tp not in self._held

    def _prepare(self, msg: Message) -> _Prepared | None:
        """Decode ``msg`` ahead of the batch's transaction (registry lookups never run under the
        write lock). None: the record takes the one-at-a-time path (no ce_id, cannot be decoded,
        registry unavailable), which dead-letters or holds it."""
        if msg.error() is not None:
            return None
        headers = ce.header_map(msg.headers())
        event_id = headers.get(ce.ID)
        event_type = headers.get(ce.TYPE, "")
        if not event_id:
            return None
        handler = self._handlers.get(event_type)
        if handler is None:
            return _Prepared(event_id, event_type, None, None)
        try:
            event = self._decode(msg, headers, event_id, event_type)
        except Exception:  # noqa: BLE001 - the one-at-a-time path decides what it means
            return None
        return _Prepared(event_id, event_type, event, handler)

    def _settle_from(
        self, messages: Sequence[Message], prepared: Sequence[_Prepared | None], start: int
    ) -> tuple[int, int]:
        """Settle records from ``start`` on: as many as apply cleanly in ONE transaction (a
        savepoint each), then, if one did not, that one alone (``_settle``: dead letter or
        hold). Returns (the index to go on from, records settled)."""
        applied: list[Message] = []
        stop = start
        try:
            with self._db.transaction() as conn, self._parked_known(conn):
                while stop < len(messages):
                    msg, ready = messages[stop], prepared[stop]
                    if not self._live(msg):
                        stop += 1
                        continue
                    if ready is None or not self._apply_in_savepoint(conn, msg, ready):
                        break
                    applied.append(msg)
                    stop += 1
        except TRANSIENT as exc:
            # The batch's own transaction failed (the database is locked, say): nothing of it
            # was applied. Its first record is held (and retried alone, with backoff), as a
            # record failing transiently on its own would be.
            stop = start
            while stop < len(messages) and not self._live(messages[stop]):
                stop += 1
            if stop < len(messages):
                self._hold(messages[stop], exc)
            return stop + 1, 0
        for msg in applied:
            self._pending[(msg.topic() or "", msg.partition() or 0)] = (msg.offset() or 0) + 1
        settled = len(applied)
        if stop >= len(messages):
            return stop, settled
        msg = messages[stop]
        try:
            self._settle(msg)
        except TRANSIENT as exc:
            self._hold(msg, exc)
            return stop + 1, settled
        self._pending[(msg.topic() or "", msg.partition() or 0)] = (msg.offset() or 0) + 1
        return stop + 1, settled + 1

    @contextlib.contextmanager
    def _parked_known(self, conn: sqlite3.Connection) -> Iterator[None]:
        """For one batch's transaction: when the group has no parked key at its start, skip the
        per-record parked-key lookup. Within the transaction keys are only unparked (parking
        happens in a transaction of its own, outside batches), so the answer holds to its end."""
        self._none_parked = (
            conn.execute(
                "SELECT 1 FROM meshkit_parked WHERE consumer_group = ? LIMIT 1", (self.group,)
            ).fetchone()
            is None
        )
        try:
            yield
        finally:
            self._none_parked = False

    def _apply_in_savepoint(self, conn: sqlite3.Connection, msg: Message, ready: _Prepared) -> bool:
        """Apply one prepared record inside the batch's transaction; False (its savepoint
        rolled back, nothing of it kept) when it must take the one-at-a-time path: its handler
        raised, or its key is parked behind an earlier dead letter."""
        conn.execute("SAVEPOINT meshkit_record")
        try:
            if ready.handler is None or ready.event is None:
                log.debug(
                    "no handler for %s (%s); skipping",
                    ready.event_type or "<no ce_type>",
                    ready.event_id,
                )
                self._mark(conn, msg, ready.event_id, ready.event_type, "skipped")
            else:
                self._apply_with(conn, msg, ready.event, ready.handler)
        except Exception:  # noqa: BLE001 - settled again alone, where its error is decided
            # If even the rollback fails, the batch's transaction is lost: raised, it rolls
            # the whole batch back, and the one-at-a-time path starts again from its first.
            conn.execute("ROLLBACK TO meshkit_record")
            conn.execute("RELEASE meshkit_record")
            return False
        conn.execute("RELEASE meshkit_record")
        return True

    def _wait(self, timeout: float) -> float:
        """How long the next poll may wait: ``timeout``, or less when a held record is due."""
        if not self._held:
            return timeout
        due = min(held.retry_at for held in self._held.values())
        return max(0.0, min(timeout, due - time.monotonic()))

    def _retry_due(self) -> int:
        """Retry each held record whose time has come; on success move its partition on past
        it and resume it. Returns how many were settled."""
        settled = 0
        now = time.monotonic()
        for tp, held in list(self._held.items()):
            if held.retry_at > now:
                continue
            try:
                self._settle(held.msg)
            except TRANSIENT as exc:
                self._hold(held.msg, exc)
                continue
            del self._held[tp]
            offset = (held.msg.offset() or 0) + 1
            self._pending[tp] = offset
            settled += 1
            # Resume even when the seek fails: the fetch then redelivers the record (a no-op
            # duplicate) rather than leaving the partition paused for good.
            try:
                self._consumer.seek(TopicPartition(*tp, offset))
            except KafkaException as exc:  # revoked meanwhile: its new owner reads on
                log.debug("seek %s[%d] failed: %s", tp[0], tp[1], exc)
            try:
                self._consumer.resume([TopicPartition(*tp)])
            except KafkaException as exc:
                log.debug("resume %s[%d] failed: %s", tp[0], tp[1], exc)
        return settled

    def _hold(self, msg: Message, error: BaseException) -> None:
        """Keep ``msg`` for a retry with backoff; pause its partition, rewound to it."""
        topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
        now = time.monotonic()
        held = self._held.get((topic, partition))
        first = held is None
        if held is None:
            held = self._held[(topic, partition)] = _Held(msg, since=now)
        held.attempts += 1
        delay = min(self._max_retry_backoff_s, self._retry_backoff_s * 2 ** (held.attempts - 1))
        held.retry_at = now + delay
        log.warning(
            "transient failure at %s[%d]@%d (%s), failing for %.1fs; holding the partition,"
            " attempt %d, retry in %.2fs: %s: %s",
            topic,
            partition,
            offset,
            ce.header_map(msg.headers()).get(ce.ID),
            now - held.since,
            held.attempts,
            delay,
            type(error).__name__,
            error,
        )
        if not first:
            return  # already paused
        # The seek drops what was fetched after the record; nothing more comes while paused.
        # Should either fail, records after it that still arrive are skipped while it is held,
        # and the retry's success seeks past it.
        try:
            self._consumer.seek(TopicPartition(topic, partition, offset))
        except KafkaException as exc:
            log.debug("seek %s[%d] failed: %s", topic, partition, exc)
        try:
            self._consumer.pause([TopicPartition(topic, partition)])
        except KafkaException as exc:
            log.debug("pause %s[%d] failed: %s", topic, partition, exc)

    def _rewind(self, unsettled: Sequence[Message]) -> None:
        first: dict[tuple[str, int], int] = {}
        for msg in unsettled:
            if msg.error() is None:
                first.setdefault((msg.topic() or "", msg.partition() or 0), msg.offset() or 0)
        for (topic, partition), offset in first.items():
            if (topic, partition) in self._held or (topic, partition) not in self._assigned:
                continue  # held: paused at its record already
            try:
                self._consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:  # partition revoked meanwhile: its new owner reads it
                log.debug("seek %s[%d] failed: %s", topic, partition, exc)

    def _settle(self, msg: Message) -> None:
        """Handle, skip or dead-letter ``msg``; raises one of TRANSIENT to retry it later."""
        headers = ce.header_map(msg.headers())
        event_id = headers.get(ce.ID)
        event_type = headers.get(ce.TYPE, "")
        if not event_id:
            self._dead_letter(msg, _DecodeError("no ce_id header: cannot deduplicate"))
            return
        handler = self._handlers.get(event_type)
        if handler is None:
            log.debug("no handler for %s (%s); skipping", event_type or "<no ce_type>", event_id)
            with self._db.transaction() as conn:
                self._mark(conn, msg, event_id, event_type, "skipped")
            return
        try:
            event = self._decode(msg, headers, event_id, event_type)
        except RegistryUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - the record itself is bad: a dead letter
            self._dead_letter(msg, exc, park=event_id)
            return
        try:
            self._apply(msg, event, handler)
        except KeyParked as exc:
            self._dead_letter(msg, exc, park=event_id)
        except TRANSIENT as exc:
            if self._give_up_after_s is None or self._failing_for(msg) < self._give_up_after_s:
                raise
            self._dead_letter(msg, exc, park=event_id)
        except Exception as exc:  # noqa: BLE001 - a handler bug: park the record and its key
            self._dead_letter(msg, exc, park=event_id)

    def _failing_for(self, msg: Message) -> float:
        held = self._held.get((msg.topic() or "", msg.partition() or 0))
        if held is None or held.msg.offset() != msg.offset():
            return 0.0
        return time.monotonic() - held.since

    def _apply(self, msg: Message, event: Event, handler: Handler) -> None:
        """Apply one record in its own transaction (the one-at-a-time path)."""
        with self._db.transaction() as conn:
            self._apply_with(conn, msg, event, handler)

    def _apply_with(
        self, conn: sqlite3.Connection, msg: Message, event: Event, handler: Handler
    ) -> None:
        """Inbox check, parked-key check, handler, inbox mark, in ``conn``'s transaction."""
        # CONSUMER span: a child of the producer's context (single-message processing), linked
        # to it as well, so backends that follow links find it either way; link-only (a new
        # trace) with MESH_TRACE_CONSUMER_PARENT=link (see meshkit.telemetry).
        key = msg.key()
        if not telemetry.enabled():
            self._apply_untraced(conn, msg, event, handler, key)
            return
        producer = telemetry.parse_traceparent(
            event.headers.get(ce.TRACEPARENT), event.headers.get(ce.TRACESTATE)
        )
        link_only = telemetry.consumer_link_only()
        spans = telemetry.fast_spans()
        if spans is None or link_only:
            links = [trace.Link(producer)] if producer is not None else []
            parent = otel_context.Context() if link_only else telemetry.context_from(producer)
            with telemetry.tracer().start_as_current_span(
                f"process {event.topic}",
                context=parent,
                kind=trace.SpanKind.CONSUMER,
                links=links,
                attributes=self._span_attributes(event),
            ):
                self._apply_untraced(conn, msg, event, handler, key)
            return
        # The span fast path (meshkit.spans): the same span, a fraction of the SDK's cost per
        # record (profiled in issue 11: ~40% of order_views' CPU went to CONSUMER spans).
        span = spans.start(
            f"process {event.topic}",
            producer,
            trace.SpanKind.CONSUMER,
            self._span_attributes(event, spans),
        )
        if producer is not None:
            span.add_link(producer)
        with trace.use_span(span, end_on_exit=True):
            self._apply_untraced(conn, msg, event, handler, key)

    def _span_attributes(
        self, event: Event, spans: RpcSpans | None = None
    ) -> dict[str, AttributeValue]:
        """The CONSUMER span's attributes: the topic's fixed ones (cleaned once per topic for
        the fast path) and the record's own."""
        fixed = self._span_fixed.get(event.topic)
        if fixed is None:
            fixed = {
                "messaging.system": "kafka",
                "messaging.operation.name": "process",
                "messaging.operation.type": "process",
                "messaging.destination.name": event.topic,
                "messaging.consumer.group.name": self.group,
            }
            if spans is not None:
                fixed = spans.attributes(fixed)
            self._span_fixed[event.topic] = fixed
        return {
            **fixed,
            "messaging.destination.partition.id": str(event.partition),
            "messaging.kafka.offset": event.offset,
            "messaging.message.id": event.id,
        }

    def _apply_untraced(
        self,
        conn: sqlite3.Connection,
        msg: Message,
        event: Event,
        handler: Handler,
        key: bytes | None,
    ) -> None:
        # The inbox mark first: it is also the duplicate check (nothing inserted: seen before),
        # and a raise below rolls it back with the record's savepoint or transaction.
        first = self._mark(conn, msg, event.id, event.type, "handled")
        head = None if self._none_parked else self._parked_head(conn, event.topic, key)
        if not first:
            log.debug("duplicate %s %s; already handled", event.type, event.id)
            if head is not None:
                self._unpark(conn, event.topic, key, event.id)
            return
        if head is not None and head != event.id:
            assert key is not None
            raise KeyParked(key, head)
        handler(event, conn)
        if head is not None:
            self._unpark(conn, event.topic, key, event.id)

    def _parked_head(self, conn: sqlite3.Connection, topic: str, key: bytes | None) -> str | None:
        """The ce_id of the oldest dead letter ``key`` waits behind, or None when not parked."""
        if key is None:
            return None
        row = conn.execute(
            "SELECT event_id FROM meshkit_parked WHERE consumer_group = ? AND topic = ?"
            " AND key = ? ORDER BY n LIMIT 1",
            (self.group, topic, key),
        ).fetchone()
        return str(row[0]) if row else None

    def _unpark(
        self, conn: sqlite3.Connection, topic: str, key: bytes | None, event_id: str
    ) -> None:
        conn.execute(
            "DELETE FROM meshkit_parked WHERE consumer_group = ? AND topic = ? AND key = ?"
            " AND event_id = ?",
            (self.group, topic, key, event_id),
        )

    def _mark(
        self, conn: sqlite3.Connection, msg: Message, event_id: str, event_type: str, outcome: str
    ) -> bool:
        """Write the inbox mark; False when the event was marked already (a duplicate)."""
        cursor = conn.execute(
            "INSERT OR IGNORE INTO meshkit_inbox (consumer_group, event_id, event_type, topic,"
            ' partition, "offset", outcome, processed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
            (
                self.group,
                event_id,
                event_type,
                msg.topic(),
                msg.partition(),
                msg.offset(),
                outcome,
                time.time(),
            ),
        )
        return cursor.rowcount > 0

    def _decode(
        self, msg: Message, headers: dict[str, str], event_id: str, event_type: str
    ) -> Event:
        from confluent_kafka.serialization import MessageField, SerializationContext

        topic = msg.topic() or ""
        value = msg.value()
        known = None
        if value is not None and len(value) > _FRAMING and value[0] == 0:
            schema_id = int.from_bytes(value[1:_FRAMING], "big")
            known = self._known.get((event_type, schema_id))
        if known is not None and value is not None:
            payload = io.BytesIO(value)
            payload.seek(_FRAMING)
            data = schemaless_reader(payload, known[0], known[1])
        else:
            data = self._deserializers[event_type](
                value, SerializationContext(topic, MessageField.VALUE, msg.headers())
            )
            self._learn(event_type, value)
        if not isinstance(data, dict):
            raise _DecodeError(f"expected an Avro record, got {type(data).__name__}")
        key = msg.key()
        return Event(
            id=event_id,
            type=event_type,
            source=headers.get(ce.SOURCE, ""),
            subject=headers.get(ce.SUBJECT, ""),
            time=_parse_time(headers.get(ce.TIME)),
            data=data,
            topic=topic,
            partition=msg.partition() or 0,
            offset=msg.offset() or 0,
            key=key.decode("utf-8", errors="replace") if key is not None else None,
            headers=headers,
            traceparent=headers.get(ce.TRACEPARENT),
        )

    def _learn(self, event_type: str, value: bytes | None) -> None:
        """After the deserializer decoded a record: keep its writer schema (and the reader
        schema) by schema id, so later records of the pair are read with fastavro directly --
        the same records for a fraction of the cost (profiled in issue 11: the deserializer's
        per-record lookups were half the consumer's CPU)."""
        if value is None or len(value) <= _FRAMING or value[0] != 0:
            return
        schema_id = int.from_bytes(value[1:_FRAMING], "big")
        try:
            # Cached by the registry client: the deserializer has just fetched it.
            writer = parse_schema(json.loads(self._registry.get_schema(schema_id).schema_str))
        except Exception:  # no fast path then; the deserializer keeps working
            log.debug("schema %d: no fast path", schema_id, exc_info=True)
            return
        reader = self._reader_schemas.get(event_type)
        self._known[(event_type, schema_id)] = (writer, writer if reader is None else reader)

    def _dead_letter(self, msg: Message, error: BaseException, *, park: str | None = None) -> None:
        """Write ``msg`` to the dead-letter topic; once acknowledged, park its key behind it when
        ``park`` (its ce_id) is given and it has a key. Raises Unavailable when not acknowledged
        (transient: the record is retried)."""
        topic = msg.topic() or ""
        log.error(
            "dead-lettering %s[%d]@%d (%s): %s: %s",
            topic,
            msg.partition(),
            msg.offset(),
            ce.header_map(msg.headers()).get(ce.ID),
            type(error).__name__,
            error,
        )
        outcome: list[KafkaError | None] = []
        self._dlq.produce(
            dlq_topic(topic),
            value=msg.value(),
            key=msg.key(),
            headers=dead_letter_headers(msg, error, self.group),
            on_delivery=lambda err, _m: outcome.append(err),
        )
        self._dlq.flush(15.0)
        if not outcome or outcome[0] is not None:
            # Not acknowledged: do not commit past it; run_once holds its partition at it.
            raise Unavailable(f"dead-letter topic {dlq_topic(topic)}: {outcome or 'no report'}")
        key = msg.key()
        if park is None or key is None:
            return
        # After the acknowledgement: a crash in between re-reads the record and dead-letters it
        # again (a duplicate dead letter, which the inbox makes a no-op on replay).
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO meshkit_parked (consumer_group, topic, key, event_id,"
                " reason, parked_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    self.group,
                    topic,
                    key,
                    park,
                    f"{type(error).__name__}: {error}"[:500],
                    time.time(),
                ),
            )

    def run_forever(
        self, stop: threading.Event, *, poll_s: float = 0.5, max_backoff_s: float = 5.0
    ) -> None:
        """Loop ``run_once`` until ``stop`` is set, backing off while it raises; raises itself
        once the database is closed (its owner forgot to set ``stop``). A held partition never
        blocks the loop: each pass waits at most ``poll_s``, so ``stop`` is seen within that
        (plus one registry request, at most ``registry_timeout_s``, when the registry hangs)."""
        backoff = 0.1
        while not stop.is_set():
            try:
                self.run_once(poll_s)
                backoff = 0.1
            except Exception:
                if self._db.closed:  # the owner shut down without stopping us: nothing to retry
                    raise
                log.exception("event consumer %s: error; backing off %.1fs", self.group, backoff)
                stop.wait(backoff)
                backoff = min(max_backoff_s, backoff * 2)

    def close(self) -> None:
        """Commit settled offsets and leave the group (a static member stays until it times out)."""
        try:
            self._commit()
        finally:
            self._consumer.close()
            self._dlq.flush(5.0)


def _parse_time(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
