"""The outbox relay: publishes pending outbox rows to Kafka, in id order, at least once.

Run it inside a service (``OutboxRelay(db, bootstrap).run_forever(stop)`` on a thread) or as its
own process::

    python -m meshkit.events.relay --db PATH --bootstrap HOST:PORT [--batch N]
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaError, Producer
from opentelemetry import trace

from meshkit import telemetry
from meshkit.db import Database
from meshkit.events._topics import TopicCreationError, ensure_topics

log = logging.getLogger("meshkit.events.relay")

DEFAULT_BATCH = 500
DEFAULT_DELIVERY_TIMEOUT_S = 10.0
TOPIC_RETRY_S = 30.0


class OutboxRelay:
    """Moves committed outbox rows to Kafka with an idempotent producer (acks=all).

    Guarantees: every committed row reaches Kafka at least once, even if this process is killed at
    any point (a row is marked published only after the broker acknowledged it, so a crash between
    the two re-sends it; consumers dedupe by ``ce_id``). Rows of one key keep their order: they
    are sent in id order through one producer to one partition.

    Tracing (when meshkit.telemetry is on): a PRODUCER span ``send {topic}`` per row, child of the
    trace context stored in the row when it was appended (so it joins the request that wrote it),
    ended when the broker acknowledges the record (or the send fails); the record carries that
    span's ``traceparent``, so consumers become its children.

    Thread safety: one relay per database, driven by one thread (``run_once`` is not reentrant);
    ``lag()`` may be called from any thread. Runs several relays over one database only at the
    cost of duplicates, never of loss.
    """

    def __init__(
        self,
        db: Database,
        bootstrap: str,
        *,
        batch_size: int = DEFAULT_BATCH,
        delivery_timeout_s: float = DEFAULT_DELIVERY_TIMEOUT_S,
        retention_s: float = 3600.0,
        producer_config: Mapping[str, Any] | None = None,
        topics: Iterable[str] | Mapping[str, Mapping[str, str]] = (),
        create_topics: bool = True,
    ) -> None:
        self._db = db
        # The service's topics (with the config topic.json gives each, when ``topics`` maps
        # them: EventCatalog.topic_configs), created when missing before the first send; see
        # run_forever.
        configs = (
            {t: dict(c) for t, c in topics.items()}
            if isinstance(topics, Mapping)
            else {t: {} for t in topics}
        )
        self._missing_topics: dict[str, dict[str, str]] = configs if create_topics else {}
        self._batch = batch_size
        self._delivery_timeout_s = delivery_timeout_s
        self._retention_s = retention_s
        self._config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            # Bounded, so a run_once during a broker outage returns (and the loop backs off)
            # instead of holding a batch forever; unsent rows just stay pending.
            "message.timeout.ms": int(delivery_timeout_s * 1000),
            "linger.ms": 5,
            "client.id": "meshkit-outbox-relay",
            "error_cb": self._on_error,
            **(producer_config or {}),
        }
        self._producer = Producer(self._config)
        self._results: dict[int, KafkaError | None] = {}
        self._spans: dict[int, trace.Span] = {}
        self._fatal: KafkaError | None = None
        self._outage_since: float | None = None
        self._last_prune = 0.0
        # True while the last run_once left rows it could not publish (run_forever backs off).
        self.failing = False

    def _on_error(self, error: KafkaError) -> None:
        # Called from poll/flush on this relay's thread. Transport errors while the broker is
        # down repeat every few seconds; the outage is logged once by run_once instead.
        if error.fatal():
            self._fatal = error
        else:
            log.debug("kafka producer: %s", error)

    def run_once(self) -> int:
        """Publish up to one batch of pending rows; returns how many were marked published.

        Sends the batch, waits for every delivery report (at most ``delivery_timeout_s``), then
        marks published the longest prefix (in id order) whose rows were all acknowledged.
        """
        if self._fatal is not None:
            self._recreate_producer()
        with self._db.snapshot() as conn:
            rows = conn.execute(
                "SELECT id, topic, key, value, headers FROM meshkit_outbox"
                " WHERE published_at IS NULL ORDER BY id LIMIT ?",
                (self._batch,),
            ).fetchall()
        if not rows:
            self.failing = False
            self._prune()
            return 0
        self._results = {}
        for row in rows:
            self._produce(row)
        remaining = self._producer.flush(self._delivery_timeout_s + 5.0)
        self._end_unreported_spans()
        delivered = 0
        for row in rows:
            if row["id"] not in self._results or self._results[row["id"]] is not None:
                break
            delivered += 1
        # Only the delivered prefix is marked. A later row may have been acknowledged while an
        # earlier one failed (another partition); it is re-sent next time and consumers dedupe
        # it. Per-key order survives: the idempotent producer writes each partition's messages in
        # queue order (the broker refuses out-of-sequence batches, so a retry cannot overtake),
        # and after a failure we resume from the first failed row, in id order again.
        if delivered:
            last_id = rows[delivered - 1]["id"]
            with self._db.transaction() as conn:
                # No pending row below last_id can exist outside this batch: we selected the
                # lowest pending ids, and rows committed later get higher ids (single writer).
                conn.execute(
                    "UPDATE meshkit_outbox SET published_at = ?"
                    " WHERE id <= ? AND published_at IS NULL",
                    (time.time(), last_id),
                )
        self.failing = delivered < len(rows)
        if self.failing:
            failed = next(
                (
                    self._results.get(r["id"])
                    for r in rows[delivered:]
                    if self._results.get(r["id"])
                ),
                None,
            )
            if self._outage_since is None:
                self._outage_since = time.monotonic()
                log.warning(
                    "outbox relay cannot publish (%s); %d of %d rows sent, retrying with backoff",
                    failed or f"{remaining} deliveries unconfirmed",
                    delivered,
                    len(rows),
                )
        elif self._outage_since is not None:
            log.warning(
                "outbox relay publishing again after %.1fs",
                time.monotonic() - self._outage_since,
            )
            self._outage_since = None
        return delivered

    def _produce(self, row: Any) -> None:
        row_id = int(row["id"])

        def report(error: KafkaError | None, msg: Any) -> None:
            self._results[row_id] = error
            span = self._spans.pop(row_id, None)
            if span is not None:
                _end_send_span(span, error, msg)

        pairs: list[tuple[str, str]] = json.loads(row["headers"])
        if telemetry.enabled():
            pairs = self._start_send_span(row_id, row["topic"], row["key"], pairs)
        headers: list[tuple[str, str | bytes | None]] = [
            (name, value.encode()) for name, value in pairs
        ]
        while True:
            try:
                self._producer.produce(
                    row["topic"],
                    value=row["value"],
                    key=row["key"].encode(),
                    headers=headers,
                    on_delivery=report,
                )
                return
            except BufferError:
                # Local queue full (huge batches): serve delivery reports to make room.
                self._producer.poll(0.1)

    def _start_send_span(
        self, row_id: int, topic: str, key: str, pairs: list[tuple[str, str]]
    ) -> list[tuple[str, str]]:
        """Start the row's PRODUCER span; the headers with its traceparent instead of the row's."""
        found = dict(pairs)
        parent = telemetry.context_from(
            telemetry.parse_traceparent(
                found.get(telemetry.TRACEPARENT), found.get(telemetry.TRACESTATE)
            )
        )
        attributes: dict[str, str] = {
            "messaging.system": "kafka",
            "messaging.operation.name": "send",
            "messaging.operation.type": "send",
            "messaging.destination.name": topic,
            "messaging.client.id": str(self._config.get("client.id", "")),
        }
        if key:
            attributes["messaging.kafka.message.key"] = key
        if found.get("ce_id"):
            attributes["messaging.message.id"] = found["ce_id"]
        span = telemetry.tracer().start_span(
            f"send {topic}", parent, kind=trace.SpanKind.PRODUCER, attributes=attributes
        )
        self._spans[row_id] = span
        kept = [(k, v) for k, v in pairs if k not in (telemetry.TRACEPARENT, telemetry.TRACESTATE)]
        return kept + telemetry.trace_headers(span.get_span_context())

    def _end_unreported_spans(self) -> None:
        # Rows whose delivery report never came within the flush timeout.
        for span in self._spans.values():
            span.set_attribute("error.type", "timeout")
            span.set_status(trace.Status(trace.StatusCode.ERROR, "no delivery report"))
            span.end()
        self._spans.clear()

    def _recreate_producer(self) -> None:
        log.warning("kafka producer fatal error (%s); starting a new producer", self._fatal)
        self._producer.flush(0)
        self._producer = Producer(self._config)
        self._fatal = None

    def _prune(self) -> None:
        now = time.time()
        if now - self._last_prune < 60.0:
            return
        self._last_prune = now
        with self._db.transaction() as conn:
            conn.execute(
                "DELETE FROM meshkit_outbox WHERE published_at IS NOT NULL AND published_at < ?",
                (now - self._retention_s,),
            )

    def lag(self) -> tuple[int, float | None]:
        """``(pending rows, age in seconds of the oldest pending row or None)``; any thread."""
        with self._db.snapshot() as conn:
            row = conn.execute(
                "SELECT count(*), min(created_at) FROM meshkit_outbox WHERE published_at IS NULL"
            ).fetchone()
        count, oldest = int(row[0]), row[1]
        return count, (max(0.0, time.time() - float(oldest)) if oldest is not None else None)

    def run_forever(
        self, stop: threading.Event, *, idle_s: float = 0.02, max_backoff_s: float = 5.0
    ) -> None:
        """Loop ``run_once`` until ``stop`` is set: straight on while there is work, ``idle_s``
        between empty polls, exponential backoff (up to ``max_backoff_s``) while failing.
        Raises if the database gets closed under it (its owner forgot to set ``stop``)."""
        backoff = idle_s
        next_topic_try = 0.0
        while not stop.is_set():
            due = self._missing_topics and time.monotonic() >= next_topic_try
            if due and not self.create_topics():
                next_topic_try = time.monotonic() + TOPIC_RETRY_S
            try:
                published = self.run_once()
            except Exception:
                if self._db.closed:  # the owner shut down without stopping us: nothing to retry
                    raise
                log.exception("outbox relay: unexpected error; backing off")
                self.failing = True
                published = 0
            if self.failing:
                stop.wait(backoff)
                backoff = min(max_backoff_s, backoff * 2)
                continue
            backoff = idle_s
            if published == 0:
                stop.wait(idle_s)

    def create_topics(self) -> bool:
        """Create the relay's topics that the cluster lacks; True once none is missing.

        ``run_forever`` calls it before sending and, while it fails, again every
        ``TOPIC_RETRY_S`` (sending goes on meanwhile: a broker that auto-creates topics still
        gets the records). A failure is a warning naming the topic and the broker's reason.
        """
        try:
            ensure_topics(self._config["bootstrap.servers"], self._missing_topics)
        except TopicCreationError as exc:
            log.warning("outbox relay: %s; retrying in %.0fs", exc, TOPIC_RETRY_S)
            return False
        self._missing_topics = {}
        return True

    def close(self) -> None:
        """Wait briefly for in-flight deliveries; rows not confirmed stay pending."""
        self._producer.flush(1.0)


def _end_send_span(span: trace.Span, error: KafkaError | None, msg: Any) -> None:
    if error is not None:
        span.set_attribute("error.type", error.name())
        span.set_status(trace.Status(trace.StatusCode.ERROR, error.str()))
    elif msg is not None:
        span.set_attribute("messaging.destination.partition.id", str(msg.partition()))
        span.set_attribute("messaging.kafka.offset", int(msg.offset()))
    span.end()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m meshkit.events.relay``: relay one database's outbox until SIGTERM/SIGINT."""
    from meshkit.logs import configure_logging

    parser = argparse.ArgumentParser(prog="python -m meshkit.events.relay", description=__doc__)
    parser.add_argument("--db", required=True, help="the service's SQLite file")
    parser.add_argument("--bootstrap", required=True, help="Kafka bootstrap.servers")
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="rows per batch")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    configure_logging("outbox-relay", args.log_level)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    db = Database(args.db)
    relay = OutboxRelay(db, args.bootstrap, batch_size=args.batch)
    log.info("outbox relay started for %s -> %s", args.db, args.bootstrap)
    try:
        relay.run_forever(stop)
    finally:
        relay.close()
        db.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
