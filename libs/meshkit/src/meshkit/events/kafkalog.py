"""librdkafka's own log lines go through Python logging, not straight to stderr.

Left alone, every confluent-kafka client prints librdkafka's internal lines to the process's
stderr as ``%4|1712345678.123|GETPID|rdkafka#producer-1| ...``: plain text in the middle of a
service's JSON log, and noise on a benchmark's terminal. With ``logger`` in its config, a client
hands them to that Python logger instead (confluent-kafka maps librdkafka's syslog levels to
logging's, and delivers the lines from the client's ``poll``/``flush``/``consume`` calls), so a
service logs them as JSON lines like any other (``"logger": "librdkafka"``).

The logger has a NullHandler, as a library's logger should: a process that configured logging
(every service: meshkit.logs) gets the lines through the root handler; one that did not (a
benchmark, a script) does not get them printed by logging's last-resort handler.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

#: The Python logger every meshkit Kafka client logs librdkafka's lines to.
LOGGER_NAME = "librdkafka"
LOGGER = logging.getLogger(LOGGER_NAME)
LOGGER.addHandler(logging.NullHandler())


def with_python_logging(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` for a confluent-kafka Producer, Consumer or AdminClient, logging through
    LOGGER unless it names a ``logger`` of its own."""
    return {"logger": LOGGER, **config}
