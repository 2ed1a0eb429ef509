"""Shipping's settings, read from SHIPPING_* environment variables."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from meshkit.settings import ServerSettings, load_settings

PREFIX = "SHIPPING"


@dataclasses.dataclass(frozen=True)
class Settings(ServerSettings):
    """Everything shipping reads from its environment (``python -m shipping --help``)."""

    port: int = dataclasses.field(
        default=50054, metadata={"help": "port to listen on", "min": 0, "max": 65535}
    )
    db_path: Path = dataclasses.field(
        default=Path(".mesh/data/shipping.db"), metadata={"help": "SQLite database file"}
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Settings from ``env``; SettingsError names the bad key."""
        return load_settings(cls, PREFIX, env)
