"""librdkafka's lines reach Python logging (meshkit.events.kafkalog), never the raw stderr.

A producer of a closed port logs connection errors: built the way meshkit builds its clients,
they arrive at the ``librdkafka`` logger and no ``%3|``-style line is written to fd 2; built
plainly, the same client does write them there (the control: capfd would see them).
"""

from __future__ import annotations

import logging
import re
import socket
import time
from typing import Any

import pytest
from confluent_kafka import Producer

from meshkit.events import TopicCreationError, ensure_topics
from meshkit.events.kafkalog import LOGGER_NAME, with_python_logging

RAW_LINE = re.compile(r"%[0-7]\|")


def _closed_bootstrap() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"  # nothing listens once it closes


def _refused_producer(config: dict[str, Any]) -> Producer:
    """A producer of a closed port that has tried to connect (and logged that it failed)."""
    producer = Producer(
        {
            "bootstrap.servers": _closed_bootstrap(),
            "reconnect.backoff.ms": 50,
            "message.timeout.ms": 1500,
            **config,
        }
    )
    producer.produce("t", b"x")
    return producer


def test_a_meshkit_producer_logs_through_python_logging(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER_NAME)
    producer = _refused_producer(with_python_logging({}))
    deadline = time.monotonic() + 10
    while not any(r.name == LOGGER_NAME for r in caplog.records):
        assert time.monotonic() < deadline, "librdkafka logged nothing through Python logging"
        producer.poll(0.1)  # serves the queued log lines to the logger
    producer.flush(3)
    lines = [r for r in caplog.records if r.name == LOGGER_NAME]
    assert any(r.levelno >= logging.WARNING for r in lines), [r.getMessage() for r in lines]
    assert any("Connection refused" in r.getMessage() for r in lines)
    assert not RAW_LINE.search(capfd.readouterr().err)


def test_a_plain_producer_writes_raw_lines_to_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    """The control: without a logger the same client writes ``%3|...`` to fd 2."""
    producer = _refused_producer({})
    deadline = time.monotonic() + 10
    err = ""
    while not RAW_LINE.search(err):
        assert time.monotonic() < deadline, err
        producer.poll(0.1)
        err += capfd.readouterr().err
    producer.flush(3)


def test_ensure_topics_of_a_closed_port_writes_no_raw_line(
    capfd: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(TopicCreationError):
        ensure_topics(_closed_bootstrap(), ["t"], timeout_s=1.5)
    assert not RAW_LINE.search(capfd.readouterr().err)
