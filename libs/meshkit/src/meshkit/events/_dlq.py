"""Dead letters: records a consumer could not decode or handle, kept in ``<topic>.dlq`` with the
original key, bytes and headers plus ``dlq_*`` headers saying why, and replayable."""

from __future__ import annotations

import contextlib
import datetime
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from meshkit.errors import Unavailable
from meshkit.events import _headers as ce
from meshkit.events.kafkalog import with_python_logging

DLQ_SUFFIX = ".dlq"
DLQ_PREFIX = "dlq_"
ERROR = "dlq_error"
ERROR_TYPE = "dlq_error_type"
CONSUMER_GROUP = "dlq_consumer_group"
TOPIC = "dlq_topic"
PARTITION = "dlq_partition"
OFFSET = "dlq_offset"
TIME = "dlq_time"
REPLAY_GROUP = "mesh-dlq-replay"
_MAX_ERROR_LEN = 2000


def dlq_topic(topic: str) -> str:
    """The dead-letter topic of ``topic``."""
    return topic + DLQ_SUFFIX


def dead_letter_headers(
    message: Message, error: BaseException | str, consumer_group: str
) -> ce.HeaderList:
    """The original record's headers plus the ``dlq_*`` headers naming the error and its origin."""
    text = str(error) or type(error).__name__
    kind = type(error).__name__ if isinstance(error, BaseException) else "DecodeError"
    extra = [
        (ERROR, text[:_MAX_ERROR_LEN]),
        (ERROR_TYPE, kind),
        (CONSUMER_GROUP, consumer_group),
        (TOPIC, message.topic() or ""),
        (PARTITION, str(message.partition())),
        (OFFSET, str(message.offset())),
        (TIME, ce.rfc3339(datetime.datetime.now(datetime.UTC))),
    ]
    original = ce.header_pairs(message.headers())
    kept: ce.HeaderList = [(k, v) for k, v in original if not k.startswith(DLQ_PREFIX)]
    return [*kept, *ce.encode(extra)]


@dataclass(frozen=True)
class DeadLetter:
    """One record of a ``.dlq`` topic: where it came from, why it failed, and its original bytes."""

    dlq_partition: int
    dlq_offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    @property
    def header(self) -> dict[str, str]:
        """Headers as text (last one of a name wins)."""
        return ce.header_map(list(self.headers))

    def original_headers(self) -> ce.HeaderList:
        """The headers the record had before it was dead-lettered (``dlq_*`` removed)."""
        return [(k, v) for k, v in self.headers if not k.startswith(DLQ_PREFIX)]

    def summary(self) -> dict[str, Any]:
        """What ``mesh dlq ls`` shows: key, ce_id, ce_type, error, source position, time."""
        h = self.header
        return {
            "key": self.key.decode("utf-8", errors="replace") if self.key is not None else None,
            "ce_id": h.get(ce.ID),
            "ce_type": h.get(ce.TYPE),
            "error": h.get(ERROR),
            "error_type": h.get(ERROR_TYPE),
            "consumer_group": h.get(CONSUMER_GROUP),
            "topic": h.get(TOPIC),
            "partition": _int(h.get(PARTITION)),
            "offset": _int(h.get(OFFSET)),
            "time": h.get(TIME),
            "dlq_partition": self.dlq_partition,
            "dlq_offset": self.dlq_offset,
        }


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def read_dead_letters(
    bootstrap: str, topic: str, *, group: str | None = None, timeout_s: float = 15.0
) -> list[DeadLetter]:
    """Every dead letter of ``topic`` (reading ``<topic>.dlq`` from the beginning, or from
    ``group``'s committed offsets when given), up to the end as of this call. Commits nothing."""
    consumer = _consumer(bootstrap, group or f"mesh-dlq-ls-{uuid.uuid4().hex[:8]}")
    try:
        letters, _ = _read_to_end(
            consumer, dlq_topic(topic), resume=group is not None, timeout_s=timeout_s
        )
        return letters
    finally:
        consumer.close()


def replay_dead_letters(
    bootstrap: str,
    topic: str,
    *,
    group: str = REPLAY_GROUP,
    timeout_s: float = 30.0,
    on_replayed: Callable[[DeadLetter], None] | None = None,
) -> int:
    """Send the dead letters of ``topic`` not replayed yet back to ``topic`` with their original
    key, bytes and headers (``dlq_*`` removed); returns how many.

    Exactly once across repeated replays: the records and the new committed offset of ``group``
    on ``<topic>.dlq`` go in one Kafka transaction, so a replay that dies half-way leaves neither.
    Consumers dedupe by ``ce_id`` regardless, so a replayed event already handled is a no-op.

    Per key, the records go back in the order they were dead-lettered (a key's dead letters share
    one ``.dlq`` partition, read in order; the producer is idempotent): the order a consumer's
    parked key needs, since it applies only the oldest record it waits for.
    """
    consumer = _consumer(bootstrap, group)
    producer: Producer | None = None
    try:
        letters, ends = _read_to_end(consumer, dlq_topic(topic), resume=True, timeout_s=timeout_s)
        if not letters:
            return 0
        producer = Producer(
            with_python_logging(
                {
                    "bootstrap.servers": bootstrap,
                    "transactional.id": f"{group}-{topic}",
                    "enable.idempotence": True,
                    "acks": "all",
                }
            )
        )
        producer.init_transactions(timeout_s)
        producer.begin_transaction()
        for letter in letters:
            producer.produce(
                topic, value=letter.value, key=letter.key, headers=letter.original_headers()
            )
        producer.send_offsets_to_transaction(
            [TopicPartition(dlq_topic(topic), p, end) for p, end in ends.items()],
            consumer.consumer_group_metadata(),
            timeout_s,
        )
        producer.commit_transaction(timeout_s)
        for letter in letters:
            if on_replayed:
                on_replayed(letter)
        return len(letters)
    except KafkaException as exc:
        if producer is not None:
            # If aborting fails too, the broker times the transaction out: nothing is visible.
            with contextlib.suppress(KafkaException):
                producer.abort_transaction(5.0)
        raise Unavailable(f"replaying {dlq_topic(topic)}: {exc}") from exc
    finally:
        consumer.close()


def _consumer(bootstrap: str, group: str) -> Consumer:
    return Consumer(
        with_python_logging(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": True,
                "isolation.level": "read_committed",
            }
        )
    )


def _read_to_end(
    consumer: Consumer, topic: str, *, resume: bool, timeout_s: float
) -> tuple[list[DeadLetter], dict[int, int]]:
    """Records from the start (or the group's committed offsets) to each partition's current
    end; returns them and ``{partition: end offset}`` of the partitions that had any."""
    metadata = consumer.list_topics(topic, timeout=timeout_s)
    found = metadata.topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        return [], {}
    partitions = [TopicPartition(topic, p) for p in sorted(found.partitions)]
    starts = consumer.committed(partitions, timeout=timeout_s) if resume else partitions
    assign: list[TopicPartition] = []
    ends: dict[int, int] = {}
    for tp, start in zip(partitions, starts, strict=True):
        low, high = consumer.get_watermark_offsets(tp, timeout=timeout_s)
        begin = start.offset if resume and start.offset >= 0 else low
        if begin < high:
            assign.append(
                TopicPartition(topic, tp.partition, begin if resume else OFFSET_BEGINNING)
            )
            ends[tp.partition] = high
    if not assign:
        return [], {}
    consumer.assign(assign)
    letters: list[DeadLetter] = []
    positions = {tp.partition: -1 for tp in assign}
    deadline = time.monotonic() + timeout_s
    while any(positions[p] + 1 < ends[p] for p in positions):
        if time.monotonic() > deadline:
            raise Unavailable(f"timed out reading {topic} to its end")
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        error = msg.error()
        if error is not None:
            # EOF before `ends` means transaction markers (or aborted records) fill the gap.
            if error.code() == KafkaError._PARTITION_EOF:
                positions[msg.partition() or 0] = ends[msg.partition() or 0] - 1
            continue
        partition = msg.partition() or 0
        positions[partition] = msg.offset() or 0
        if (msg.offset() or 0) < ends[partition]:
            letters.append(
                DeadLetter(
                    partition,
                    msg.offset() or 0,
                    msg.key(),
                    msg.value(),
                    tuple(ce.header_pairs(msg.headers())),
                )
            )
    return letters, ends
