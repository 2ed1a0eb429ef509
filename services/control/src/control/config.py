"""Control's own settings (CONTROL_*) and the defaults of the kit's that it needs otherwise.

Where it listens, its database, Kafka and the registry are every service's (ServiceSettings).
"""

from __future__ import annotations

import dataclasses

from meshkit.settings import ServiceSettings


@dataclasses.dataclass(frozen=True)
class Settings(ServiceSettings):
    """Everything control reads from its environment (``python -m control --help``)."""

    # Every open Watch holds a worker thread for its whole life (grpcio's sync server calls a
    # server-streaming handler on a pool thread), and every service of the mesh keeps a few
    # open: the kit's default of 16 would leave the 17th watcher queued for good.
    max_workers: int = dataclasses.field(
        default=256,
        metadata={
            "help": "RPC worker threads; every open Watch holds one, so this bounds the watchers"
            " served at once (with the unary calls beside them)",
            "min": 1,
            "max": 1024,
        },
    )
    # grpcio gives a handler no sign that a stop has begun: an open Watch ends only when the
    # grace runs out and the server cancels it, so every stop lasts the whole grace. Control's
    # unary calls take milliseconds; a short grace ends the stop soon (watchers reconnect).
    grace_seconds: float = dataclasses.field(
        default=1.0,
        metadata={
            "help": "on SIGTERM, how long in-flight RPCs may finish; open watches are cut at"
            " its end (their clients reconnect and resume)",
            "min": 0.0,
        },
    )
    consumer_group: str = dataclasses.field(
        default="control",
        metadata={
            "help": "the Kafka consumer group reading experiments.events.v1: one analysis per"
            " group (two meshes on one broker each need their own, or they split the events)",
        },
    )
    watch_poll_seconds: float = dataclasses.field(
        default=1.0,
        metadata={
            "help": "how often watches look for versions another process stored in the same"
            " database (a replica); this process's own reach them at once",
            "min": 0.01,
        },
    )
