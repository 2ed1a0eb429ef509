"""Order views' settings: ORDER_VIEWS_* variables, plus the mesh-wide Kafka and registry ones."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from meshkit.settings import EventSettings, ServerSettings, load_settings

PREFIX = "ORDER_VIEWS"


@dataclasses.dataclass(frozen=True)
class Settings(ServerSettings, EventSettings):
    """Everything order_views reads from its environment (``python -m order_views --help``)."""

    port: int = dataclasses.field(
        default=50055, metadata={"help": "port to listen on", "min": 0, "max": 65535}
    )
    db_path: Path = dataclasses.field(
        default=Path(".mesh/data/order_views.db"),
        metadata={
            "help": "SQLite catalog of the read model's copies; each copy is a file beside it"
            " (<stem>.g<N>.db)"
        },
    )
    rebuild_timeout_s: float = dataclasses.field(
        default=600.0,
        metadata={"help": "a rebuild not caught up after this long is abandoned", "min": 1.0},
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Settings from ``env``; SettingsError names the bad key."""
        return load_settings(cls, PREFIX, env)
