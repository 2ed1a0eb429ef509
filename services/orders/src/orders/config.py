"""Orders' own settings (ORDERS_*): the saga's deadlines and pace, snapshots, request ids.

Where it listens, its database, Kafka and the registry are every service's (ServiceSettings);
its peers are found by name (meshkit.addresses).
"""

from __future__ import annotations

import dataclasses

from meshkit.settings import ServiceSettings


@dataclasses.dataclass(frozen=True)
class Settings(ServiceSettings):
    """Everything orders reads from its environment (``python -m orders --help``)."""

    step_timeout_s: float = dataclasses.field(
        default=15.0,
        metadata={
            "help": "a saga step still failing transiently after this long compensates",
            "min": 0.1,
        },
    )
    call_timeout_s: float = dataclasses.field(
        default=3.0, metadata={"help": "deadline of one participant call", "min": 0.05}
    )
    park_limit_s: float = dataclasses.field(
        default=600.0,
        metadata={
            "help": "a saga younger than this parks (waits, spending no attempt) while a"
            " participant's circuit breaker is open; an older one, before its pivot, takes the"
            " open breaker as a failure and compensates, so stock is not held for ever",
            "min": 0.0,
        },
    )
    stuck_after_s: float = dataclasses.field(
        default=60.0, metadata={"help": "a saga in flight for longer is shown stuck", "min": 1.0}
    )
    saga_parallelism: int = dataclasses.field(
        default=32,
        metadata={"help": "sagas in flight at once (a thread each)", "min": 1, "max": 256},
    )
    payment_token_key: str = dataclasses.field(
        default="",
        metadata={
            "help": "AES-256-GCM key sealing payment tokens at rest while a saga needs them"
            " (base64url, 32 bytes); default: a key made beside the database (development)"
        },
    )
    snapshot_every: int = dataclasses.field(
        default=5, metadata={"help": "snapshot an order every N events", "min": 1}
    )
    request_retention_s: float = dataclasses.field(
        default=86_400.0,
        metadata={
            "help": "how long a PlaceOrder request_id is remembered; a replay after that"
            " places a new order",
            "min": 60.0,
        },
    )
