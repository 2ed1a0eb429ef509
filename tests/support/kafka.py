"""The test suite's own real Kafka broker (`scripts/kafka --test`), and helpers to talk to it.

`kafka_bootstrap` (session scope) makes sure the test broker answers on 127.0.0.1:19092: it
reuses a running one, or starts one with `scripts/kafka --test start` and then also stops it at
session end. Its data lives in <checkout>/.cache/test-kafka and its controller on 19093, so the
tests never touch the developer's broker (`mesh up --kafka local`, `scripts/kafka`: 9092, data in
.mesh/kafka), whose registry ids their records would not match. To keep it warm across runs,
start it yourself (`scripts/kafka --test start`); `scripts/kafka --test stop` stops it.
Tests isolate themselves with unique topic names (`kafka_topic`, `unique_topic`) rather than
by restarting the broker, which costs seconds per start.
"""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Message

from mesh_runner.local_kafka import Paths, suite_broker_port

REPO = Path(__file__).resolve().parents[2]
KAFKA_SCRIPT = REPO / "scripts" / "kafka"
# scripts/kafka's own command line for the test broker: `[*TEST_KAFKA, "status"]`.
TEST_KAFKA = (str(KAFKA_SCRIPT), "--test")
# $MESH_TEST_KAFKA_PORT picks another test broker (make test gives each tier its own).
TEST_BOOTSTRAP = f"127.0.0.1:{suite_broker_port()}"
TEST_DATA_DIR = Paths.for_tests(REPO).data
# A cold start fetches ~45 MB of jars with mvn before the broker boots; leave room for that.
START_TIMEOUT_S = 600


def _broker_running() -> bool:
    status = subprocess.run([*TEST_KAFKA, "status"], capture_output=True, check=False)
    return status.returncode == 0


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """bootstrap.servers of the test suite's real Kafka broker; stopped afterwards only if
    started here."""
    started_here = not _broker_running()
    if started_here:
        result = subprocess.run(
            [*TEST_KAFKA, "start"],
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S,
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(
                f"scripts/kafka --test start failed (exit {result.returncode}):\n"
                f"{result.stdout}{result.stderr}",
                pytrace=False,
            )
    try:
        yield TEST_BOOTSTRAP
    finally:
        if started_here:
            subprocess.run([*TEST_KAFKA, "stop"], capture_output=True, check=False)


def unique_topic(prefix: str = "test") -> str:
    """A topic name no other test (or earlier run against the same broker) has used."""
    # Kafka topic names allow [a-zA-Z0-9._-] and at most 249 characters.
    clean = re.sub(r"[^a-zA-Z0-9._-]+", "-", prefix).strip("-.")[:200] or "test"
    return f"{clean}.{uuid.uuid4().hex[:10]}"


@pytest.fixture
def kafka_topic(request: pytest.FixtureRequest) -> str:
    """A unique topic name derived from the requesting test's name."""
    return unique_topic(f"test.{request.node.name}")


def consume(
    consumer: Consumer,
    count: int,
    timeout: float = 30.0,
    *,
    until_eof: Iterable[int] = (),
) -> list[Message]:
    """Poll until `count` records arrived (and every partition in `until_eof` hit its end).

    Needs `enable.partition.eof=True` on the consumer when `until_eof` is given; reading up to
    the end of each partition is how a test proves there are no extra records after the
    expected ones, without waiting an arbitrary time for duplicates that never come.
    Fails the test when the deadline passes first or the consumer reports an error. A topic
    the broker does not know yet is not an error here: tests often subscribe before a relay's
    first produce auto-creates the topic, and librdkafka picks it up within about a second.
    """
    at_end: dict[int, bool] = dict.fromkeys(until_eof, False)
    records: list[Message] = []
    deadline = time.monotonic() + timeout
    missing_topic = ""
    while len(records) < count or not all(at_end.values()):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            behind = sorted(p for p, done in at_end.items() if not done)
            detail = f"; partitions {behind} never reached their end" if behind else ""
            detail += f"; {missing_topic}" if missing_topic else ""
            pytest.fail(
                f"got {len(records)} of {count} records in {timeout:.0f}s{detail}",
                pytrace=False,
            )
        msg = consumer.poll(min(remaining, 0.5))
        if msg is None:
            continue
        partition = msg.partition() or 0
        error = msg.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                # librdkafka reports EOF once per catch-up, so remember it per partition.
                if partition in at_end:
                    at_end[partition] = True
                continue
            if error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                missing_topic = str(error)
                continue
            pytest.fail(f"consumer error: {error}", pytrace=False)
        if partition in at_end:
            at_end[partition] = False
        records.append(msg)
    return records
