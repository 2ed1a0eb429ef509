"""Audit's own settings (AUDIT_*): checkpoint pace, the signing key, retention.

Where it listens, its database, Kafka and the registry are every service's (ServiceSettings).
"""

from __future__ import annotations

import dataclasses

from meshkit.settings import ServiceSettings


@dataclasses.dataclass(frozen=True)
class Settings(ServiceSettings):
    """Everything audit reads from its environment (``python -m audit --help``)."""

    checkpoint_every: int = dataclasses.field(
        default=100,
        metadata={"help": "sign a checkpoint once this many entries are unsigned", "min": 1},
    )
    checkpoint_seconds: float = dataclasses.field(
        default=10.0,
        metadata={
            "help": "or once the oldest unsigned entry has waited this long (seconds),"
            " whichever comes first",
            "min": 0.01,
        },
    )
    signing_key: str = dataclasses.field(
        default="",
        metadata={
            "help": "Ed25519 private key signing checkpoints: PEM (PKCS#8), or a path to one;"
            " default: a key made beside the database (development)"
        },
    )
    consumer_group: str = dataclasses.field(
        default="audit",
        metadata={
            "help": "the Kafka consumer group reading audit.events.v1: one trail per group (two"
            " meshes on one broker each need their own, or they split the records)",
        },
    )
    retention_days: int = dataclasses.field(
        default=0,
        metadata={
            "help": "prune entries older than this many days, through a checkpoint that stays"
            " as the anchor; 0 keeps them forever",
            "min": 0,
        },
    )
