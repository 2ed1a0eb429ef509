"""The outbox relay: publishes pending outbox rows to Kafka, in id order, at least once.

Run it inside a service (``OutboxRelay(db, bootstrap).run_forever(stop)`` on a thread) or as its
own process::

    python -m meshkit.events.relay --db PATH --bootstrap HOST:PORT [--batch N]

How it keeps each key's order when Kafka fails part of a send (librdkafka's INTRODUCTION.md,
"Idempotent Producer"): the producer is idempotent (``acks=all``, at most 5 requests in flight,
which librdkafka caps it to anyway), so its retries never duplicate or reorder a partition's
records. Two things can still let a later record of a partition through while an earlier one
failed, after which re-sending the earlier one would put it behind the later: a record timing
out (librdkafka drops it, bumps the epoch and goes on: "1, 4, 5"), and a batch failing for good
(the broker refused it; the producer resets its sequence and goes on with the next batches).
So ``message.timeout.ms`` is 0 (records never time out; a pass waits ``delivery_timeout_s`` for
reports and later passes go on waiting, without sending the rows again), and
``enable.gapless.guarantee`` is on: a failed batch stops the producer (a fatal error) instead of
letting anything after it through. The relay then starts a new producer and sends the failed
rows again, in id order; rows the broker refused are sent one at a time to find the one it
refuses for itself, which is parked.

A parked row is one Kafka can never take (too large, an invalid record): its ``error`` column
says why, it stays out of ``lag()``, ``parked()`` lists it, an ERROR log line names it, and the
rows after it go on. Consumers see a gap in that key's events instead of the key (and with it
the whole outbox) stalling for ever. After fixing the cause (e.g. the topic's max.message.bytes)
``UPDATE meshkit_outbox SET error = NULL WHERE id = ...`` sends it again, after the later ones.

Replicas: several processes of a service share its database, and each runs a relay. Only one
publishes at a time: the holder of the outbox's lease (``meshkit.events._lease``: a row in the
same database, taken with a conditional write, renewed while the relay works, given up on
close). The others stand by, reading the lease about once a second, and take over when it is
released, when it expires (``lease_s`` after its holder's last renewal: a holder that hangs or
is killed on another host), or at once when its holder was a process of this host that is gone
(kill -9). A pass never sends unless at least two thirds of the lease are left, and never waits
past the last third, so a holder that loses the lease has stopped sending before anyone else
can start. Records a stalled holder had handed to Kafka before it lost the lease may still land
afterwards: duplicates of rows the next holder sends again (at least once; consumers drop
them by ``ce_id``), never a loss.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from confluent_kafka import KafkaError, KafkaException, Producer
from opentelemetry import trace

from meshkit import telemetry
from meshkit.db import Database
from meshkit.events import kafkalog
from meshkit.events._lease import Holder, Lease
from meshkit.events._outbox import MAX_MESSAGE_BYTES
from meshkit.events._topics import TopicCreationError, ensure_topics

log = logging.getLogger("meshkit.events.relay")

DEFAULT_BATCH = 500
DEFAULT_DELIVERY_TIMEOUT_S = 10.0
DEFAULT_MAX_IN_FLIGHT = 10_000
TOPIC_RETRY_S = 30.0
PRUNE_EVERY_S = 60.0
# A pass that heard back about some rows stops waiting after this long without another report:
# the rest wait on something else (an unavailable partition), and other rows can go meanwhile.
QUIET_S = 0.1
# One relay publishes a database's outbox at a time: the holder of this lease (module doc).
LEASE_NAME = "outbox-relay"
DEFAULT_LEASE_S = 5.0
# How often a standby relay reads the lease, at most (a released lease is taken this fast).
STANDBY_POLL_S = 1.0

__all__ = ["DEFAULT_LEASE_S", "Holder", "Lease", "OutboxRelay", "ParkedRow", "main"]

RECORD_ERRORS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError._INVALID_ARG,
        KafkaError._BAD_MSG,
    }
)
"""Errors about a record itself: sending the same bytes again can never succeed. Raised by
``produce()`` they are the row's own; reported by the broker they may be a batch neighbour's, so
the rows of that batch are sent again one at a time first."""

# Under kafkalog's logger (its NullHandler: nothing on the stderr of a process that did not
# configure logging, a benchmark's), as every other meshkit client's lines are.
_librdkafka_log = kafkalog.LOGGER.getChild("relay")


class _ChosenOnPurpose(logging.Filter):
    """Drops librdkafka's warning that ``enable.gapless.guarantee`` is experimental: it is set on
    purpose (see the module docstring), and would otherwise be logged at every start."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "enable.gapless.guarantee is experimental" not in record.getMessage()


_librdkafka_log.addFilter(_ChosenOnPurpose())


class ParkedRow(NamedTuple):
    """An outbox row Kafka can never take, kept with the reason (``OutboxRelay.parked``)."""

    id: int
    topic: str
    key: str
    ce_id: str
    ce_type: str
    error: str
    created_at: float


class _Row(NamedTuple):
    id: int
    topic: str
    key: str
    value: bytes
    headers: str


class OutboxRelay:
    """Moves committed outbox rows to Kafka with an idempotent producer (acks=all).

    Guarantees: every committed row reaches Kafka at least once, even if this process is killed at
    any point (a row is marked published only after the broker acknowledged it, so a crash between
    the two re-sends it; consumers dedupe by ``ce_id``). Rows of one key keep their order: they
    are sent in id order through one producer to one partition, and a row whose send failed is
    sent again before anything after it of its partition can be written (module docstring).
    One row Kafka can never take is parked, not retried for ever; one unavailable partition holds
    back only its own rows (up to ``max_in_flight`` rows wait on the producer at once).

    Tracing (when meshkit.telemetry is on): a PRODUCER span ``send {topic}`` per row, child of the
    trace context stored in the row when it was appended (so it joins the request that wrote it),
    ended when the broker acknowledges the record (or the send fails); the record carries that
    span's ``traceparent``, so consumers become its children.

    Storage: on construction it adds the ``error`` column to an outbox table created before that
    column existed (one ALTER, under the write lock), so no service needs a migration for it.

    Replicas: relays of one database in several processes (or threads) publish one at a time,
    the holder of the outbox's lease (module doc); ``standby`` is True while another holds it.
    ``lease_s=None`` publishes without a lease (for a database nothing else relays).

    Thread safety: one relay per thread, driven by that thread (``run_once`` is not
    reentrant); ``lag()`` and ``parked()`` may be called from any thread.
    """

    def __init__(
        self,
        db: Database,
        bootstrap: str,
        *,
        batch_size: int = DEFAULT_BATCH,
        delivery_timeout_s: float = DEFAULT_DELIVERY_TIMEOUT_S,
        retention_s: float = 3600.0,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        producer_config: Mapping[str, Any] | None = None,
        topics: Iterable[str] | Mapping[str, Mapping[str, str]] = (),
        create_topics: bool = True,
        lease_s: float | None = DEFAULT_LEASE_S,
    ) -> None:
        """``delivery_timeout_s``: how long one pass waits for the broker's acknowledgements
        (records themselves never time out); ``retention_s``: how long published rows are kept
        (pruned every minute, or every ``retention_s`` when shorter); ``max_in_flight``: rows
        sent and not yet acknowledged, at most; ``producer_config`` overrides the producer's
        settings (change ``message.max.bytes`` only together with the Outbox's
        ``max_message_bytes``); ``lease_s``: how long the outbox's lease lasts without renewal,
        i.e. how soon a standby relay takes over from one that hangs or dies on another host
        (None: no lease)."""
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
        self._prune_every_s = min(PRUNE_EVERY_S, retention_s)
        self._max_in_flight = max_in_flight
        self._config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "max.in.flight.requests.per.connection": 5,
            "enable.gapless.guarantee": True,
            "message.timeout.ms": 0,
            "message.max.bytes": MAX_MESSAGE_BYTES,
            "linger.ms": 5,
            "client.id": "meshkit-outbox-relay",
            "error_cb": self._on_error,
            "logger": _librdkafka_log,
            **(producer_config or {}),
        }
        _add_error_column(db)
        self._lease = Lease(db, LEASE_NAME, duration_s=lease_s) if lease_s else None
        self._term = 0  # the lease term this relay's sending state belongs to
        # True while another relay holds the lease (this one sends nothing).
        self.standby = False
        self._producer = Producer(self._config)
        # Rows sent by this producer and not reported on yet, in id order, with when they went.
        self._in_flight: dict[int, tuple[_Row, float]] = {}
        self._reports: list[tuple[int, KafkaError | None]] = []
        self._spans: dict[int, trace.Span] = {}
        self._span_fixed: dict[str, dict[str, Any]] = {}
        # Rows above this id have not been sent by this producer (since the last re-send).
        self._sent_up_to = 0
        # Rows whose send failed, to be sent again (in id order) once nothing of their keys is in
        # flight; nothing new is sent meanwhile.
        self._failed: dict[int, tuple[_Row, str]] = {}
        # Rows up to this id go one at a time: the broker refused a batch they were in.
        self._one_by_one_up_to = 0
        self._alone: int | None = None  # the row of the last send, when it went by itself
        self._parks: list[tuple[_Row, str]] = []
        self._trouble: str | None = None
        self._fatal: KafkaError | None = None
        self._outage_since: float | None = None
        self._waiting_logged = False
        self._last_prune = 0.0
        # True while the last run_once published nothing and left rows unsent or unconfirmed
        # (run_forever backs off).
        self.failing = False

    def _on_error(self, error: KafkaError) -> None:
        # Called from poll/flush on this relay's thread. Transport errors while the broker is
        # down repeat every few seconds; the outage is logged once by run_once instead.
        if error.fatal():
            self._fatal = error
        else:
            log.debug("kafka producer: %s", error)

    def run_once(self) -> int:
        """Send what may be sent, wait up to ``delivery_timeout_s`` for the broker's reports, and
        record them; returns how many rows were marked published.

        Sends up to ``batch_size`` rows not sent yet (none while an earlier failure is being
        resolved, and one at a time where the broker refused a batch), marks each acknowledged
        row published, parks each row Kafka can never take, and keeps the rest for later passes:
        rows still in flight are not sent again while this producer holds them.
        """
        self._trouble = None
        if not self._hold_lease():
            self.failing = False
            return 0
        published = 0
        if self._fatal is not None:
            published += self._replace_producer()
        self._send()
        self._wait()
        published += self._settle()
        self._resend_failed_when_clear()
        self._prune()
        self._note_progress(published)
        return published

    # --- the lease -------------------------------------------------------------------------

    @property
    def lease(self) -> Lease | None:
        """The outbox's lease as this relay holds it (None: it runs without one)."""
        return self._lease

    def _hold_lease(self) -> bool:
        """True when this relay may send now: it holds the lease with more than two thirds of
        it left, renewing (or taking) it when less is; False, standing by, while another
        holds it. A relay that finds another took the lease over stands down first."""
        lease = self._lease
        if lease is None:
            return True
        if lease.held_for() > lease.duration_s * 2 / 3:
            return True
        if lease.acquire():
            if lease.term != self._term:
                self._start_term(lease.term)
            self.standby = False
            return True
        if not self.standby:
            holder = lease.holder()
            if self._term:
                log.warning(
                    "outbox relay: the lease on %s is %s's now; standing by",
                    self._db.path,
                    holder.owner if holder else "?",
                )
            else:
                log.info(
                    "outbox relay: %s holds the lease on %s; standing by",
                    holder.owner if holder else "another relay",
                    self._db.path,
                )
            self._stand_down()
        self.standby = True
        return False

    def _start_term(self, term: int) -> None:
        """A new term of holding the lease: whatever this relay did before may have been
        redone by another, so start over from the first unpublished row."""
        if self._in_flight or self._failed or self._sent_up_to:
            self._stand_down()
        self._term = term

    def _stand_down(self) -> None:
        """Stop publishing: record the reports the producer has, drop what it still holds (the
        lease's next holder sends those rows again) and forget where sending was."""
        if self._in_flight:
            self._serve(0.2, flush=True)
            self._settle()
            self._producer.purge()
            self._serve(0, flush=True)
            self._reports.clear()
            self._end_unreported_spans()
            self._producer = Producer(self._config)  # no sequence state of the dropped records
        self._in_flight.clear()
        self._failed.clear()
        self._sent_up_to = 0
        self._one_by_one_up_to = 0
        self._fatal = None

    def _standby_wait(self) -> float:
        """How long a standby relay waits before trying the lease again: until it expires,
        at most STANDBY_POLL_S (a release is seen that soon)."""
        holder = self._lease.holder() if self._lease is not None else None
        if holder is None:
            return 0.0
        return min(STANDBY_POLL_S, max(0.0, holder.expires_at - time.time()))

    # --- sending ---------------------------------------------------------------------------

    def _may_send(self) -> bool:
        """True while more than a third of the lease is left (always, without a lease): checked
        before every row, so a relay frozen mid-pass (SIGSTOP, a VM pause) sends nothing more
        once it wakes past its lease."""
        return self._lease is None or self._lease.held_for() > self._lease.duration_s / 3

    def _send(self) -> None:
        if self._failed:
            return  # failed rows first: nothing may overtake them
        one_by_one = self._sent_up_to < self._one_by_one_up_to
        if one_by_one and self._in_flight:
            return
        room = 1 if one_by_one else min(self._batch, self._max_in_flight - len(self._in_flight))
        if room <= 0:
            return
        # Rows above _sent_up_to still in flight (after a re-send went back) come up again.
        skipped = sum(1 for row_id in self._in_flight if row_id > self._sent_up_to)
        with self._db.snapshot() as conn:
            rows = [
                _Row(int(r[0]), r[1], r[2], bytes(r[3]), r[4])
                for r in conn.execute(
                    "SELECT id, topic, key, value, headers FROM meshkit_outbox"
                    " WHERE published_at IS NULL AND error IS NULL AND id > ?"
                    " ORDER BY id LIMIT ?",
                    (self._sent_up_to, room + skipped),
                )
            ]
        alone = not self._in_flight
        sent: list[int] = []
        for row in rows:
            if len(sent) >= room or not self._may_send():
                break
            if row.id in self._in_flight:
                continue
            if not self._produce(row):
                break
            sent.append(row.id)
        if sent:
            self._alone = sent[0] if alone and len(sent) == 1 else None

    def _produce(self, row: _Row) -> bool:
        """Hand ``row`` to the producer; False when the producer cannot take it now (the row and
        those after it wait for the next pass)."""
        try:
            pairs: list[tuple[str, str]] = json.loads(row.headers)
            if telemetry.enabled():
                pairs = self._start_send_span(row.id, row.topic, row.key, pairs)
            headers: list[tuple[str, str | bytes | None]] = [
                (name, value.encode()) for name, value in pairs
            ]
            while True:
                try:
                    self._producer.produce(
                        row.topic,
                        value=row.value,
                        key=row.key.encode(),
                        headers=headers,
                        on_delivery=self._reporter(row.id),
                    )
                    break
                except BufferError:
                    # Local queue full (huge batches): serve delivery reports to make room.
                    self._serve(0.1)
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            self._end_span(row.id, error)
            if error.code() in RECORD_ERRORS:  # refused before it was queued: its own fault
                self._parks.append((row, _describe(error)))
                self._sent_up_to = row.id
                return True
            if error.fatal():
                self._fatal = error
            self._trouble = self._trouble or _describe(error)
            return False
        except (ValueError, TypeError, UnicodeError) as exc:  # a malformed row: never sendable
            self._end_span(row.id, None)
            self._parks.append((row, f"malformed outbox row: {exc}"))
            self._sent_up_to = row.id
            return True
        self._in_flight[row.id] = (row, time.monotonic())
        self._sent_up_to = row.id
        return True

    def _reporter(self, row_id: int) -> Any:
        def report(error: KafkaError | None, msg: Any) -> None:
            self._reports.append((row_id, error))
            span = self._spans.pop(row_id, None)
            if span is not None:
                _end_send_span(span, error, msg)

        return report

    def _wait(self) -> None:
        """Serve delivery reports until nothing is in flight, ``delivery_timeout_s`` passed, or
        ``QUIET_S`` passed without a report after some came (the rest wait on something else)."""
        wait_s = self._delivery_timeout_s
        if self._lease is not None:  # done while a third of the lease is left (module doc)
            wait_s = min(wait_s, self._lease.held_for() - self._lease.duration_s / 3)
        deadline = time.monotonic() + wait_s
        heard = False
        while self._in_flight and len(self._reports) < len(self._in_flight):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            before = len(self._reports)
            self._serve(min(QUIET_S, remaining))
            if len(self._reports) > before:
                heard = True
            elif heard:
                return

    def _serve(self, timeout_s: float, *, flush: bool = False) -> int:
        """``poll`` (or ``flush``) the producer: serves delivery reports and errors. A fatal
        error comes out of it as an exception (confluent-kafka 2.x), not through error_cb;
        it is recorded and the producer replaced on the next pass."""
        try:
            if flush:
                return self._producer.flush(timeout_s)
            return self._producer.poll(timeout_s)
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.fatal():
                self._fatal = error
            else:
                log.debug("kafka producer: %s", error)
            return 0

    # --- recording what happened ------------------------------------------------------------

    def _settle(self) -> int:
        """Record the reports served so far: mark the delivered rows, park the refused ones,
        keep the failed ones for ``_resend_failed_when_clear``."""
        reports, self._reports = self._reports, []
        delivered: list[_Row] = []
        for row_id, error in reports:
            entry = self._in_flight.pop(row_id, None)
            if entry is None:
                continue  # a report about a row sent by a producer since replaced
            row = entry[0]
            if error is None:
                delivered.append(row)
            elif error.code() in RECORD_ERRORS and self._alone == row_id:
                self._parks.append((row, _describe(error)))  # refused by itself: its own fault
            else:
                if error.code() in RECORD_ERRORS:  # maybe a batch neighbour's fault: isolate
                    self._one_by_one_up_to = max(self._one_by_one_up_to, row_id)
                self._failed[row_id] = (row, _describe(error))
                self._trouble = self._trouble or _describe(error)
        self._park_overtaken(delivered)
        parks, self._parks = self._parks, []
        if delivered or parks:
            now = time.time()
            # Not synced: a mark lost to a power failure only sends its row again (at least
            # once; consumers drop the duplicate), and the fsync would hold the write lock that
            # the service's commands wait on. The next durable commit syncs it anyway.
            with self._db.transaction(durable=False) as conn:
                conn.executemany(
                    "UPDATE meshkit_outbox SET published_at = ? WHERE id = ?",
                    [(now, row.id) for row in delivered],
                )
                conn.executemany(
                    "UPDATE meshkit_outbox SET error = ? WHERE id = ? AND published_at IS NULL",
                    [(why, row.id) for row, why in parks],
                )
        for row, why in parks:
            _log_parked(row, why)
        return len(delivered)

    def _park_overtaken(self, delivered: list[_Row]) -> None:
        """A failed row with a later row of its key already on Kafka cannot be sent again in
        order; park it rather than reorder the key. (The producer's settings keep this from
        happening; this holds even if some error slips past them.)"""
        if not self._failed or not delivered:
            return
        latest: dict[tuple[str, str], int] = {}
        for row in delivered:
            key = (row.topic, row.key)
            latest[key] = max(latest.get(key, 0), row.id)
        for row_id, (row, error) in sorted(self._failed.items()):
            later = latest.get((row.topic, row.key))
            if later is not None and later > row_id:
                del self._failed[row_id]
                self._parks.append(
                    (
                        row,
                        f"not sent again: row {later} of its key was published after it failed"
                        f" ({error}), so sending it now would reorder the key",
                    )
                )

    def _resend_failed_when_clear(self) -> None:
        """Once no row of a failed row's key is in flight (so nothing sent earlier can still
        overtake it), send the failed rows again, from the first, in id order."""
        if not self._failed:
            return
        busy = {(row.topic, row.key) for row, _ in self._in_flight.values()}
        if any((row.topic, row.key) in busy for row, _ in self._failed.values()):
            return
        self._sent_up_to = min(self._sent_up_to, min(self._failed) - 1)
        self._failed.clear()

    def _replace_producer(self) -> int:
        """After a fatal error (e.g. a failed batch, with the gap-less guarantee): collect what
        the old producer reports, start a new one, and send again what it did not deliver."""
        log.warning("kafka producer fatal error (%s); starting a new producer", self._fatal)
        self._trouble = _describe(self._fatal) if self._fatal else None
        deadline = time.monotonic() + 1.0  # a failed producer reports what it held at once
        while len(self._reports) < len(self._in_flight) and time.monotonic() < deadline:
            self._serve(0.1)
        published = self._settle()
        for row_id, (row, _) in self._in_flight.items():
            self._failed[row_id] = (row, "unconfirmed when the producer failed")
        self._in_flight.clear()
        self._producer.purge()
        self._end_unreported_spans()
        self._producer = Producer(self._config)
        self._fatal = None
        self._resend_failed_when_clear()
        return published

    def _note_progress(self, published: int) -> None:
        """Set ``failing`` and log an outage once when it starts and once when it ends; warn once
        when rows wait on the broker longer than ``delivery_timeout_s`` while others go."""
        stuck = bool(self._in_flight or self._failed or self._trouble)
        self.failing = published == 0 and stuck
        if self.failing:
            if self._outage_since is None:
                self._outage_since = time.monotonic()
                log.warning(
                    "outbox relay cannot publish (%s); retrying with backoff",
                    self._trouble or f"{len(self._in_flight)} deliveries unconfirmed",
                )
        elif published and self._outage_since is not None:
            log.warning(
                "outbox relay publishing again after %.1fs",
                time.monotonic() - self._outage_since,
            )
            self._outage_since = None
        if not self._in_flight:
            self._waiting_logged = False
            return
        oldest = min(sent for _, sent in self._in_flight.values())
        waited = time.monotonic() - oldest
        if not self._waiting_logged and waited > self._delivery_timeout_s:
            self._waiting_logged = True
            topics = sorted({row.topic for row, _ in self._in_flight.values()})
            log.warning(
                "outbox relay: %d rows wait for the broker's acknowledgement (oldest %.0fs;"
                " topics %s); the producer retries them, other rows go on",
                len(self._in_flight),
                waited,
                ", ".join(topics),
            )

    # --- tracing ---------------------------------------------------------------------------

    def _start_send_span(
        self, row_id: int, topic: str, key: str, pairs: list[tuple[str, str]]
    ) -> list[tuple[str, str]]:
        """Start the row's PRODUCER span; the headers with its traceparent instead of the row's."""
        found = dict(pairs)
        producer = telemetry.parse_traceparent(
            found.get(telemetry.TRACEPARENT), found.get(telemetry.TRACESTATE)
        )
        fast = telemetry.fast_spans()
        fixed = self._span_fixed.get(topic)
        if fixed is None:
            fixed = {
                "messaging.system": "kafka",
                "messaging.operation.name": "send",
                "messaging.operation.type": "send",
                "messaging.destination.name": topic,
                "messaging.client.id": str(self._config.get("client.id", "")),
            }
            self._span_fixed[topic] = fixed = fast.attributes(fixed) if fast else fixed
        attributes = dict(fixed)
        if key:
            attributes["messaging.kafka.message.key"] = key
        if found.get("ce_id"):
            attributes["messaging.message.id"] = found["ce_id"]
        span: trace.Span
        if fast is not None:
            # The span fast path (meshkit.spans): the SDK's span for a fraction of its cost per
            # row (profiled in issue 11: the relay's spans were ~12% of orders' CPU).
            span = fast.start(f"send {topic}", producer, trace.SpanKind.PRODUCER, attributes)
        else:
            span = telemetry.tracer().start_span(
                f"send {topic}",
                telemetry.context_from(producer),
                kind=trace.SpanKind.PRODUCER,
                attributes=attributes,
            )
        self._spans[row_id] = span
        kept = [(k, v) for k, v in pairs if k not in (telemetry.TRACEPARENT, telemetry.TRACESTATE)]
        return kept + telemetry.trace_headers(span.get_span_context())

    def _end_span(self, row_id: int, error: KafkaError | None) -> None:
        span = self._spans.pop(row_id, None)
        if span is not None:
            if error is None:
                span.set_status(trace.Status(trace.StatusCode.ERROR, "not sent"))
                span.end()
            else:
                _end_send_span(span, error, None)

    def _end_unreported_spans(self) -> None:
        # Rows whose delivery report will never come (the producer was replaced or closed).
        for span in self._spans.values():
            span.set_attribute("error.type", "timeout")
            span.set_status(trace.Status(trace.StatusCode.ERROR, "no delivery report"))
            span.end()
        self._spans.clear()

    # --- housekeeping ----------------------------------------------------------------------

    def _prune(self) -> None:
        """Delete rows published more than ``retention_s`` ago; runs on its own schedule, in
        busy passes too (a relay that always has work must not keep every row for ever)."""
        now = time.time()
        if now - self._last_prune < self._prune_every_s:
            return
        self._last_prune = now
        with self._db.transaction(durable=False) as conn:  # lost, a later prune redoes it
            conn.execute(
                "DELETE FROM meshkit_outbox WHERE published_at IS NOT NULL AND published_at < ?",
                (now - self._retention_s,),
            )

    def lag(self) -> tuple[int, float | None]:
        """``(pending rows, age in seconds of the oldest pending row or None)``; any thread.
        Parked rows are not pending (see ``parked``)."""
        with self._db.snapshot() as conn:
            row = conn.execute(
                "SELECT count(*), min(created_at) FROM meshkit_outbox"
                " WHERE published_at IS NULL AND error IS NULL"
            ).fetchone()
        count, oldest = int(row[0]), row[1]
        return count, (max(0.0, time.time() - float(oldest)) if oldest is not None else None)

    def parked(self) -> list[ParkedRow]:
        """The rows Kafka can never take, oldest first, each with why; any thread."""
        with self._db.snapshot() as conn:
            rows = conn.execute(
                "SELECT id, topic, key, headers, error, created_at FROM meshkit_outbox"
                " WHERE published_at IS NULL AND error IS NOT NULL ORDER BY id"
            ).fetchall()
        parked = []
        for row in rows:
            found = _header_values(row["headers"])
            parked.append(
                ParkedRow(
                    id=int(row["id"]),
                    topic=row["topic"],
                    key=row["key"],
                    ce_id=found.get("ce_id", ""),
                    ce_type=found.get("ce_type", ""),
                    error=row["error"],
                    created_at=float(row["created_at"]),
                )
            )
        return parked

    def run_forever(
        self, stop: threading.Event, *, idle_s: float = 0.02, max_backoff_s: float = 5.0
    ) -> None:
        """Loop ``run_once`` until ``stop`` is set: straight on while there is work; after an
        empty pass, until this process commits a transaction or ``idle_s`` passed; exponential
        backoff (up to ``max_backoff_s``) while failing.
        Raises if the database gets closed under it (its owner forgot to set ``stop``)."""
        backoff = idle_s
        next_topic_try = 0.0
        while not stop.is_set():
            due = self._missing_topics and time.monotonic() >= next_topic_try
            if due and not self.create_topics():
                next_topic_try = time.monotonic() + TOPIC_RETRY_S
            seen = self._db.commits()
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
            if self.standby:
                stop.wait(self._standby_wait())
                continue
            if published == 0:
                # Woken by a commit of this process (a command that may have appended events),
                # else polls: writers in other processes are seen within ``idle_s``.
                self._db.wait_for_commit(seen, idle_s)

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
        """Wait briefly for in-flight deliveries and record them; rows not confirmed stay
        pending (a later relay sends them again)."""
        self._serve(1.0, flush=True)
        if not self._db.closed:
            self._settle()
        self._producer.purge()
        self._serve(0, flush=True)
        self._end_unreported_spans()
        if self._lease is not None and not self._db.closed:
            self._lease.release()  # a standby relay takes over at its next look


def _add_error_column(db: Database) -> None:
    """Give an outbox table made by an OUTBOX_MIGRATION older than its ``error`` column that
    column. Checked and altered in one write transaction, so concurrent relays add it once."""
    with db.transaction() as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(meshkit_outbox)")}
        if columns and "error" not in columns:
            conn.execute("ALTER TABLE meshkit_outbox ADD COLUMN error TEXT")


def _describe(error: KafkaError) -> str:
    return f"{error.name()}: {error.str()}"


def _header_values(headers: str) -> dict[str, str]:
    try:
        return {str(k): str(v) for k, v in json.loads(headers)}
    except (ValueError, TypeError):
        return {}


def _log_parked(row: _Row, error: str) -> None:
    found = _header_values(row.headers)
    log.error(
        "outbox relay: PARKED event %s (ce_id %s, key %s, topic %s, outbox row %d, %d bytes):"
        " Kafka can never take it: %s. It stays in meshkit_outbox with this error; the events"
        " after it are published, so consumers miss this one",
        found.get("ce_type", "?"),
        found.get("ce_id", "?"),
        row.key,
        row.topic,
        row.id,
        len(row.value),
        error,
        extra={"topic": row.topic, "outbox_row": row.id},
    )


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
    parser.add_argument(
        "--lease-s",
        type=float,
        default=DEFAULT_LEASE_S,
        help="how long the outbox's lease lasts unrenewed (one relay publishes at a time)",
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    configure_logging("outbox-relay", args.log_level)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    db = Database(args.db)
    relay = OutboxRelay(db, args.bootstrap, batch_size=args.batch, lease_s=args.lease_s)
    log.info("outbox relay started for %s -> %s", args.db, args.bootstrap)
    try:
        relay.run_forever(stop)
    finally:
        relay.close()
        db.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
