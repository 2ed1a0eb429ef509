"""An embedded stand-in Kafka for `mesh up` when no broker is configured.

    python -m mesh_runner.embedded_kafka --bootstrap-file PATH

Hosts librdkafka's built-in mock cluster (confluent-kafka's `test.mock.num.brokers`) in this
process and publishes its address, "127.0.0.1:<port>", by writing it atomically to PATH once the
broker answers. Other processes then use it as bootstrap.servers like any broker: produce (also
idempotent, acks=all, and transactional), keys and headers, consumer groups with committed
offsets (tests/integration/test_embedded_kafka.py checks this).

What it is not: a real broker.
- Everything lives in memory and vanishes on exit.
- The port is chosen by the kernel: librdkafka binds each mock listener to 127.0.0.1:0 and has
  no setting to pin it, hence the bootstrap file.
- Topics come from auto-creation only, always with 4 partitions: the mock metadata names no
  usable controller, so AdminClient.create_topics times out ("waiting for controller").
- Classic-protocol consumer groups rebalance only after a departed member's session timeout
  (45 s by default), even after a clean close(); `group.protocol=consumer` (KIP-848) hands
  partitions over at once, and real Kafka 4.x supports it too.
For a real broker use `mesh up --kafka local` (mesh_runner.local_kafka) or scripts/kafka.

Runs until SIGTERM or SIGINT, then removes PATH and exits 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path

from confluent_kafka import KafkaException, Producer, libversion

from meshkit.logs import configure_logging

log = logging.getLogger("mesh_runner.embedded_kafka")

STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
# How long the hosting client may take to see its own mock broker in metadata.
DISCOVERY_TIMEOUT_S = 10.0
# Upper bound on how long librdkafka log lines wait before this process forwards them.
LOG_POLL_INTERVAL_S = 1.0


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so a reader sees either no file or the whole content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600; the file is an address other processes read, not a secret.
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def start_mock_cluster(brokers: int = 1) -> tuple[Producer, str]:
    """Create the mock cluster; return its hosting client and its bootstrap.servers string.

    The cluster lives exactly as long as the returned client: keep a reference to it.
    """
    host = Producer(
        {
            "test.mock.num.brokers": brokers,
            # Replaced by the mock cluster's own address; librdkafka only wants it set.
            "bootstrap.servers": "",
            # Route librdkafka's own log lines through our JSON logging (served by poll()),
            # and drop its level-5 "mock cluster enabled" notice: we log the address ourselves.
            "logger": logging.getLogger("librdkafka"),
            "log_level": 4,
        }
    )
    try:
        metadata = host.list_topics(timeout=DISCOVERY_TIMEOUT_S)
    except KafkaException as exc:
        raise RuntimeError(f"the mock cluster did not answer: {exc}") from exc
    addresses = [f"{b.host}:{b.port}" for _, b in sorted(metadata.brokers.items())]
    if len(addresses) != brokers:
        raise RuntimeError(f"expected {brokers} mock broker(s) in metadata, got {addresses}")
    return host, ",".join(addresses)


def wait_for_stop_signal(host: Producer) -> signal.Signals:
    """Block until SIGTERM/SIGINT (already masked by the caller), serving log callbacks."""
    while True:
        info = signal.sigtimedwait(STOP_SIGNALS, LOG_POLL_INTERVAL_S)
        host.poll(0)
        if info is not None:
            return signal.Signals(info.si_signo)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m mesh_runner.embedded_kafka``."""
    parser = argparse.ArgumentParser(
        prog="python -m mesh_runner.embedded_kafka",
        description="Host librdkafka's in-memory mock Kafka cluster on 127.0.0.1 (random port).",
    )
    parser.add_argument(
        "--bootstrap-file",
        type=Path,
        required=True,
        help="where to write 'host:port' once the broker answers (removed on exit)",
    )
    args = parser.parse_args(argv)
    configure_logging("embedded-kafka")
    bootstrap_file: Path = args.bootstrap_file.resolve()

    # Mask the stop signals before librdkafka starts its threads (they inherit the mask), so
    # the signals stay pending for sigtimedwait below instead of hitting a default handler.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        host, bootstrap = start_mock_cluster()
    except RuntimeError as exc:
        log.error("embedded kafka failed to start: %s", exc)
        return 1
    try:
        write_atomically(bootstrap_file, bootstrap + "\n")
        log.info(
            "embedded kafka ready on %s",
            bootstrap,
            extra={
                "bootstrap": bootstrap,
                "bootstrap_file": str(bootstrap_file),
                "pid": os.getpid(),
                "librdkafka": libversion()[0],
            },
        )
        received = wait_for_stop_signal(host)
        log.info("embedded kafka stopping on %s", received.name)
    finally:
        bootstrap_file.unlink(missing_ok=True)
    # Destroying the hosting client tears the mock cluster down; connected clients see a
    # disconnect, which is what a broker going away looks like to them anyway.
    del host
    return 0


if __name__ == "__main__":
    sys.exit(main())
