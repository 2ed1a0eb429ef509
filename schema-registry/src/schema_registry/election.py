"""Which instance of a registry group is the primary, decided by Kafka's group protocol.

Confluent's instances elect their leader through Kafka's group coordinator
(leaderelector/kafka/KafkaGroupLeaderElector.java, a group protocol of its own). With
confluent-kafka the same coordinator is reached through a consumer group: every instance joins
the group named after the registry's transactional.id and subscribes to the `_schemas` topic
itself; that topic has exactly one partition, so exactly one member owns it, and the owner is
the primary. The partition is paused at once (the group member reads nothing; each instance's
store reads the topic on its own). Assignment is cooperative-sticky, so an instance joining (a
restart) does not move the partition: only the owner's leaving or death does, the latter once
its session times out (``session_timeout_ms``, 6 s: the broker's minimum by default).

Each member's client.id is its advertised URL (`serve --advertise-url`), so every instance
finds the primary's URL in the group's description (AdminClient.describe_consumer_groups: the
member whose assignment holds the partition), without a topic or record of its own. A dead
primary stays described until its session times out: forwarding to it fails, and the
forwarder asks again (`refresh`).

On assignment ``on_elected`` runs (the store fences the previous primary and reads to the end:
`KafkaStorage.become_primary`), on revocation or loss ``on_deposed``; both on this module's
thread, which only polls the group (heartbeats run in librdkafka's own thread).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Final

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

log = logging.getLogger(__name__)

#: The broker's group.min.session.timeout.ms default: a dead primary is noticed this late.
SESSION_TIMEOUT_MS: Final = 6000
#: How stale the described primary may be before a reader asks the coordinator again.
_DESCRIBE_MAX_AGE_S: Final = 2.0
_POLL_S: Final = 0.1
_RETRY_ELECTED_S: Final = 1.0


class Election:
    """This instance's membership in its registry group (module docstring). Thread-safe:
    `primary_url`, `refresh` and `wait_changed` may be called from any thread."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        group: str,
        url: str,
        *,
        on_elected: Callable[[], None],
        on_deposed: Callable[[], None],
        session_timeout_ms: int = SESSION_TIMEOUT_MS,
    ) -> None:
        """Join the group and start polling it. ``url`` is what the others forward writes
        to; ``on_elected`` must raise when this instance cannot take over (it is retried)."""
        self.bootstrap = bootstrap
        self.topic = topic
        self.group = group
        self.url = url
        self._on_elected = on_elected
        self._on_deposed = on_deposed
        self._changed = threading.Condition()
        self._owner = False  # the coordinator gave this instance the partition
        self._ready = False  # ... and on_elected returned
        self._primary_url: str | None = None
        self._described_at = 0.0
        self._stop = threading.Event()
        self._admin = AdminClient({"bootstrap.servers": bootstrap})
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "client.id": url,
                "session.timeout.ms": session_timeout_ms,
                # The others learn of a rebalance at their next heartbeat: keep it short.
                "heartbeat.interval.ms": max(200, session_timeout_ms // 10),
                "partition.assignment.strategy": "cooperative-sticky",
                "enable.auto.commit": False,
                "auto.offset.reset": "latest",
            }
        )
        self._consumer.subscribe(
            [topic], on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._revoked
        )
        self._thread = threading.Thread(target=self._run, name=f"election:{group}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ state
    @property
    def is_primary(self) -> bool:
        """Whether this instance owns the partition and has taken over (on_elected returned)."""
        return self._ready

    def primary_url(self) -> str | None:
        """The primary's URL as last described (this instance's own once it took over), None
        while nobody owns the partition. Re-described when older than two seconds."""
        if self._ready:
            return self.url
        if time.monotonic() - self._described_at > _DESCRIBE_MAX_AGE_S:
            self.refresh()
        return self._primary_url

    def refresh(self) -> str | None:
        """Ask the group coordinator who owns the partition now; its URL (None: nobody)."""
        found: str | None = None
        try:
            future = self._admin.describe_consumer_groups([self.group], request_timeout=5)
            description = future[self.group].result(timeout=5)
            for member in description.members:
                assignment = member.assignment.topic_partitions if member.assignment else []
                if any(tp.topic == self.topic and tp.partition == 0 for tp in assignment):
                    found = member.client_id
        except KafkaException as exc:
            log.warning("describing group %s: %s", self.group, exc)
            return self._primary_url
        with self._changed:
            if found != self._primary_url:
                log.info("primary of %s: %s", self.topic, found or "none")
            self._primary_url = found
            self._described_at = time.monotonic()
            self._changed.notify_all()
        return found

    def wait_changed(self, timeout_s: float) -> None:
        """Block until the membership changes (or ``timeout_s`` passes)."""
        with self._changed:
            self._changed.wait(timeout_s)

    def wait_settled(self, timeout_s: float) -> str | None:
        """Wait up to ``timeout_s`` until a primary is known (this one, ready, or another);
        its URL, None when none emerged in time."""
        deadline = time.monotonic() + timeout_s
        while True:
            url = self.url if self._ready else self.refresh()
            if url is not None and (url != self.url or self._ready):
                return url
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.wait_changed(min(remaining, 0.2))

    # ------------------------------------------------------------------ group callbacks
    def _ours(self, partitions: list[TopicPartition]) -> bool:
        return any(tp.topic == self.topic and tp.partition == 0 for tp in partitions)

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._ours(partitions):
            # The member reads nothing: the store has its own reader.
            consumer.pause(partitions)
            with self._changed:
                self._owner = True
            self._take_over()
        self._described_at = 0.0  # a rebalance happened: describe again when asked

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._ours(partitions):
            with self._changed:
                was_ready, self._owner, self._ready = self._ready, False, False
                self._changed.notify_all()
            if was_ready:
                self._on_deposed()
        self._described_at = 0.0

    def _take_over(self) -> None:
        try:
            self._on_elected()
        except Exception:
            log.exception("taking over as primary of %s failed; retrying", self.topic)
            return
        with self._changed:
            self._ready = self._owner
            self._primary_url = self.url
            self._changed.notify_all()

    # ------------------------------------------------------------------ thread
    def _run(self) -> None:
        last_try = 0.0
        while not self._stop.is_set():
            try:
                self._consumer.poll(_POLL_S)
            except KafkaException as exc:
                log.warning("polling group %s: %s", self.group, exc)
            if self._owner and not self._ready:
                now = time.monotonic()
                if now - last_try >= _RETRY_ELECTED_S:
                    last_try = now
                    self._take_over()

    def close(self) -> None:
        """Leave the group (the partition moves to another instance at once) and stop."""
        self._stop.set()
        self._thread.join(timeout=10.0)
        try:
            self._consumer.close()
        except (KafkaException, RuntimeError) as exc:
            log.warning("leaving group %s: %s", self.group, exc)
