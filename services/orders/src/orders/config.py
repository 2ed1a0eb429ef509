"""Orders's settings: ORDERS_* variables, plus the mesh-wide Kafka and registry ones."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from meshkit.settings import EventSettings, ServerSettings, load_settings

PREFIX = "ORDERS"


@dataclasses.dataclass(frozen=True)
class Settings(ServerSettings, EventSettings):
    """Everything orders reads from its environment (``python -m orders --help``)."""

    port: int = dataclasses.field(
        default=50051, metadata={"help": "port to listen on", "min": 0, "max": 65535}
    )
    db_path: Path = dataclasses.field(
        default=Path(".mesh/data/orders.db"), metadata={"help": "SQLite database file"}
    )
    inventory_target: str = dataclasses.field(
        default="127.0.0.1:50052", metadata={"help": "inventory's gRPC address (host:port)"}
    )
    payments_target: str = dataclasses.field(
        default="127.0.0.1:50053", metadata={"help": "payments' gRPC address (host:port)"}
    )
    shipping_target: str = dataclasses.field(
        default="127.0.0.1:50054", metadata={"help": "shipping's gRPC address (host:port)"}
    )
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
    stuck_after_s: float = dataclasses.field(
        default=60.0, metadata={"help": "a saga in flight for longer is shown stuck", "min": 1.0}
    )
    saga_parallelism: int = dataclasses.field(
        default=8, metadata={"help": "sagas advanced at once", "min": 1, "max": 256}
    )
    snapshot_every: int = dataclasses.field(
        default=5, metadata={"help": "snapshot an order every N events", "min": 1}
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Settings from ``env``; SettingsError names the bad key."""
        return load_settings(cls, PREFIX, env)
