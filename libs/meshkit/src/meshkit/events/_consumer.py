"""The consumer loop: decode, handle once (inbox dedup in the handler's transaction), commit the
offset last; dead-letter what cannot be decoded or handled."""

from __future__ import annotations

import datetime
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from opentelemetry import context as otel_context
from opentelemetry import trace

from meshkit import telemetry
from meshkit.db import Database
from meshkit.errors import Aborted, Unavailable
from meshkit.events import _headers as ce
from meshkit.events._catalog import EventCatalog, _client
from meshkit.events._dlq import dead_letter_headers, dlq_topic

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
"""Append this to the consuming service's own migrations."""


class TransientError(Exception):
    """Raise from a handler when retrying later may succeed (a dependency is down).

    meshkit's ``Unavailable`` and ``Aborted`` and SQLite's ``OperationalError`` (database locked)
    count as transient too. Anything else is a poison record: it goes to the dead-letter topic.
    """


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


class EventConsumer:
    """Consumes ``topics`` as ``group`` and applies each event exactly once to ``db``.

    Per record: decode (writer schema by id from the registry, the catalog's schema as reader);
    then in ONE ``db.transaction()``: skip if the inbox has ``(group, ce_id)``, else call the
    handler for ``ce_type`` with the event and the open connection and write the inbox mark; only
    after that transaction commits is the Kafka offset committed. A redelivered record is a no-op,
    so a crash anywhere costs a redelivery, never a double effect. Events of a type without a
    handler are marked and skipped. Transient errors (``TRANSIENT``) are retried with backoff up
    to ``max_attempts``; a record that still fails, or cannot be decoded, goes to
    ``<topic>.dlq`` (acknowledged before its offset is committed) and the loop carries on.

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
        batch_size: int = 100,
        max_attempts: int = 5,
        retry_backoff_s: float = 0.1,
        consumer_config: Mapping[str, Any] | None = None,
    ) -> None:
        from confluent_kafka.schema_registry import topic_record_subject_name_strategy
        from confluent_kafka.schema_registry.avro import AvroDeserializer

        self._db = db
        self.group = group
        self._handlers = dict(handlers or {})
        self._batch = batch_size
        self._max_attempts = max_attempts
        self._retry_backoff_s = retry_backoff_s
        self._wake = threading.Event()
        registry_client = _client(registry)
        conf = {"subject.name.strategy": topic_record_subject_name_strategy}
        readers = {t.full_name: t.schema_text for t in (catalog or ())}
        self._deserializers = {
            name: AvroDeserializer(registry_client, readers.get(name), conf=conf)
            for name in self._handlers
        }
        config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "group.protocol": "classic",
            "partition.assignment.strategy": "cooperative-sticky",
            "session.timeout.ms": 10_000,
            "isolation.level": "read_committed",
            **({"group.instance.id": instance_id} if instance_id else {}),
            **(consumer_config or {}),
        }
        self._consumer = Consumer(config)
        self._dlq = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 0,
                "message.timeout.ms": 10_000,
            }
        )
        self._pending: dict[tuple[str, int], int] = {}
        self._consumer.subscribe(list(topics), on_revoke=self._on_revoke, on_lost=self._on_lost)

    # -- rebalance -----------------------------------------------------------------------------

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Runs inside consume() on our thread: commit what we settled on these partitions before
        # another member takes them, so it does not redo (harmless, but slow) our work.
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        self._commit(only=revoked)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._pending.pop((tp.topic, tp.partition), None)

    def _commit(self, only: set[tuple[str, int]] | None = None) -> None:
        chosen = {k: v for k, v in self._pending.items() if only is None or k in only}
        if not chosen:
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in chosen.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # The inbox makes the redelivery this causes a no-op; try again next time.
            log.warning("offset commit failed (%s); will retry", exc)
            return
        for key, offset in chosen.items():
            if self._pending.get(key) == offset:
                del self._pending[key]

    # -- the loop --------------------------------------------------------------------------------

    def run_once(self, timeout: float = 1.0) -> int:
        """Consume up to one batch (waiting at most ``timeout`` s for the first record), settle
        each record (handled, skipped, duplicate or dead-lettered), then commit their offsets.
        Returns the number of records settled.

        Raises Unavailable when a dead letter cannot be written; the unsettled records are
        re-read next time (the consumer seeks back to them).
        """
        # consume(N, timeout) waits until N records arrived or the timeout passed, which holds a
        # trickle of events back for up to `timeout`: wait for the first record only, then take
        # what is already fetched.
        first = self._consumer.poll(timeout)
        messages = (
            [first, *self._consumer.consume(num_messages=self._batch - 1, timeout=0)]
            if first is not None and self._batch > 1
            else [first]
            if first is not None
            else []
        )
        settled = 0
        index = 0
        try:
            for index, msg in enumerate(messages):  # noqa: B007 - read in `finally`
                error = msg.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        log.warning("kafka consumer: %s", error)
                    continue
                self._settle(msg)
                self._pending[(msg.topic() or "", msg.partition() or 0)] = (msg.offset() or 0) + 1
                settled += 1
            index = len(messages)
        finally:
            if index < len(messages):
                self._rewind(messages[index:])
            self._commit()
        return settled

    def _rewind(self, unsettled: Sequence[Message]) -> None:
        first: dict[tuple[str, int], int] = {}
        for msg in unsettled:
            if msg.error() is None:
                first.setdefault((msg.topic() or "", msg.partition() or 0), msg.offset() or 0)
        for (topic, partition), offset in first.items():
            try:
                self._consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:  # partition revoked meanwhile: its new owner reads it
                log.debug("seek %s[%d] failed: %s", topic, partition, exc)

    def _settle(self, msg: Message) -> None:
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
        except Exception as exc:  # noqa: BLE001 - any decode failure makes a dead letter
            self._dead_letter(msg, exc)
            return
        attempt = 1
        while True:
            try:
                self._apply(msg, event, handler)
                return
            except TRANSIENT as exc:
                if attempt >= self._max_attempts:
                    self._dead_letter(msg, exc)
                    return
                delay = self._retry_backoff_s * 2 ** (attempt - 1)
                log.warning(
                    "transient error handling %s %s (attempt %d of %d, retry in %.2fs): %s",
                    event_type,
                    event_id,
                    attempt,
                    self._max_attempts,
                    delay,
                    exc,
                )
                attempt += 1
                self._wake.wait(delay)
            except Exception as exc:  # noqa: BLE001 - a handler bug: park the record, move on
                self._dead_letter(msg, exc)
                return

    def _apply(self, msg: Message, event: Event, handler: Handler) -> None:
        # CONSUMER span: a child of the producer's context (single-message processing), linked
        # to it as well, so backends that follow links find it either way; link-only (a new
        # trace) with MESH_TRACE_CONSUMER_PARENT=link (see meshkit.telemetry).
        producer = telemetry.parse_traceparent(
            event.headers.get(ce.TRACEPARENT), event.headers.get(ce.TRACESTATE)
        )
        links = [trace.Link(producer)] if producer is not None else []
        parent = (
            otel_context.Context()
            if telemetry.consumer_link_only()
            else telemetry.context_from(producer)
        )
        with (
            telemetry.tracer().start_as_current_span(
                f"process {event.topic}",
                context=parent,
                kind=trace.SpanKind.CONSUMER,
                links=links if telemetry.enabled() else (),
                attributes={
                    "messaging.system": "kafka",
                    "messaging.operation.name": "process",
                    "messaging.operation.type": "process",
                    "messaging.destination.name": event.topic,
                    "messaging.destination.partition.id": str(event.partition),
                    "messaging.kafka.offset": event.offset,
                    "messaging.consumer.group.name": self.group,
                    "messaging.message.id": event.id,
                },
            ),
            self._db.transaction() as conn,
        ):
            seen = conn.execute(
                "SELECT 1 FROM meshkit_inbox WHERE consumer_group = ? AND event_id = ?",
                (self.group, event.id),
            ).fetchone()
            if seen:
                log.debug("duplicate %s %s; already handled", event.type, event.id)
                return
            handler(event, conn)
            self._mark(conn, msg, event.id, event.type, "handled")

    def _mark(
        self, conn: sqlite3.Connection, msg: Message, event_id: str, event_type: str, outcome: str
    ) -> None:
        conn.execute(
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

    def _decode(
        self, msg: Message, headers: dict[str, str], event_id: str, event_type: str
    ) -> Event:
        from confluent_kafka.serialization import MessageField, SerializationContext

        topic = msg.topic() or ""
        data = self._deserializers[event_type](
            msg.value(), SerializationContext(topic, MessageField.VALUE, msg.headers())
        )
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

    def _dead_letter(self, msg: Message, error: BaseException) -> None:
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
            # Not acknowledged: do not commit past it; run_once rewinds to this record.
            raise Unavailable(f"dead-letter topic {dlq_topic(topic)}: {outcome or 'no report'}")

    def run_forever(
        self, stop: threading.Event, *, poll_s: float = 0.5, max_backoff_s: float = 5.0
    ) -> None:
        """Loop ``run_once`` until ``stop`` is set, backing off while it raises; raises itself
        once the database is closed (its owner forgot to set ``stop``)."""
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
        self._wake.set()
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
