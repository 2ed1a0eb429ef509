"""The embedded Kafka (librdkafka's mock cluster in its own process) works for other processes.

Started exactly as `mesh up` starts it, then used from this test process: an idempotent
producer with keys and headers, a consumer group that commits, a second member of the group
that resumes after the commit, and a clean exit on SIGTERM.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer
from support.kafka import consume, unique_topic

MODULE = "mesh_runner.embedded_kafka"
START_TIMEOUT_S = 30


@dataclass
class Embedded:
    proc: subprocess.Popen[bytes]
    bootstrap: str
    bootstrap_file: Path
    log: Path


@pytest.fixture
def embedded_kafka(tmp_path: Path) -> Iterator[Embedded]:
    bootstrap_file = tmp_path / "run" / "kafka.bootstrap"
    log = tmp_path / "embedded-kafka.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", MODULE, "--bootstrap-file", str(bootstrap_file)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not bootstrap_file.exists():
            if proc.poll() is not None:
                pytest.fail(f"embedded kafka exited ({proc.returncode}):\n{log.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no bootstrap file after {START_TIMEOUT_S}s:\n{log.read_text()}")
            time.sleep(0.05)  # poll interval within the deadline loop
        yield Embedded(proc, bootstrap_file.read_text().strip(), bootstrap_file, log)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _consumer(bootstrap: str, group: str) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            # KIP-848 groups: on the mock cluster a classic-protocol group that loses a member
            # only rebalances after that member's session timeout (45 s by default), even after
            # a clean close; the new protocol hands partitions over at once.
            "group.protocol": "consumer",
        }
    )


def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            errors.append(err)

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    for key, value in records:
        # A repeated name ("hop") must come back as two entries, in order.
        headers: list[tuple[str, str | bytes | None]] = [
            ("ce_type", b"shop.orders.v1.OrderPlaced"),
            ("ce_id", value),
            ("hop", b"a"),
            ("hop", b"b"),
        ]
        producer.produce(topic, key=key, value=value, headers=headers, on_delivery=on_delivery)
    assert producer.flush(30) == 0
    assert errors == []


def _partitions(bootstrap: str, topic: str) -> list[int]:
    producer = Producer({"bootstrap.servers": bootstrap})
    return sorted(producer.list_topics(topic, timeout=10).topics[topic].partitions)


def test_publishes_a_loopback_address(embedded_kafka: Embedded) -> None:
    host, _, port = embedded_kafka.bootstrap.rpartition(":")
    assert host == "127.0.0.1"
    with socket.create_connection((host, int(port)), timeout=5):
        pass
    first = json.loads(embedded_kafka.log.read_text().splitlines()[0])
    assert first["bootstrap"] == embedded_kafka.bootstrap
    assert first["level"] == "INFO"


def test_other_processes_produce_and_consume_with_groups_and_headers(
    embedded_kafka: Embedded,
) -> None:
    bootstrap, topic, group = embedded_kafka.bootstrap, unique_topic("embedded"), "orders-view"
    first_batch = [(f"order-{i % 4}".encode(), f"first-{i}".encode()) for i in range(40)]
    _produce(bootstrap, topic, first_batch)  # auto-creates the topic
    partitions = _partitions(bootstrap, topic)

    consumer = _consumer(bootstrap, group)
    consumer.subscribe([topic])
    try:
        received = consume(consumer, len(first_batch), until_eof=partitions)
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()

    assert sorted((m.key(), m.value()) for m in received) == sorted(first_batch)
    for msg in received:
        assert msg.headers() == [
            ("ce_type", b"shop.orders.v1.OrderPlaced"),
            ("ce_id", msg.value()),
            ("hop", b"a"),
            ("hop", b"b"),
        ]
    seqs_by_key: dict[bytes | str | None, list[int]] = {}
    for msg in received:
        value = msg.value()
        assert value is not None
        seqs_by_key.setdefault(msg.key(), []).append(int(value.rsplit(b"-", 1)[1]))
    assert all(seqs == sorted(seqs) for seqs in seqs_by_key.values()), "per-key order broken"

    # A new member of the same group starts after the committed offsets: only new records.
    second_batch = [(b"order-9", f"second-{i}".encode()) for i in range(10)]
    _produce(bootstrap, topic, second_batch)
    consumer = _consumer(bootstrap, group)
    consumer.subscribe([topic])
    try:
        resumed = consume(consumer, len(second_batch), until_eof=partitions)
    finally:
        consumer.close()
    assert [(m.key(), m.value()) for m in resumed] == second_batch


def test_sigterm_removes_the_bootstrap_file_and_exits_zero(embedded_kafka: Embedded) -> None:
    host, _, port = embedded_kafka.bootstrap.rpartition(":")
    embedded_kafka.proc.send_signal(signal.SIGTERM)
    assert embedded_kafka.proc.wait(timeout=15) == 0
    assert not embedded_kafka.bootstrap_file.exists()
    with pytest.raises(OSError), socket.create_connection((host, int(port)), timeout=2):
        pass
    last = json.loads(embedded_kafka.log.read_text().splitlines()[-1])
    assert "SIGTERM" in last["msg"]
