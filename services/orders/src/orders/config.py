"""Orders's settings, read from ORDERS_* environment variables."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from meshkit.settings import ServerSettings, load_settings

PREFIX = "ORDERS"


@dataclasses.dataclass(frozen=True)
class Settings(ServerSettings):
    """Everything orders reads from its environment (``python -m orders --help``)."""

    port: int = dataclasses.field(
        default=50051, metadata={"help": "port to listen on", "min": 0, "max": 65535}
    )
    db_path: Path = dataclasses.field(
        default=Path(".mesh/data/orders.db"), metadata={"help": "SQLite database file"}
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Settings from ``env``; SettingsError names the bad key."""
        return load_settings(cls, PREFIX, env)
