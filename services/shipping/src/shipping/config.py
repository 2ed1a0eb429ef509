"""Shipping's settings: SHIPPING_* variables, plus the mesh-wide Kafka and registry ones."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path

from meshkit.settings import EventSettings, ServerSettings, SettingsError, load_settings

PREFIX = "SHIPPING"


@dataclasses.dataclass(frozen=True)
class Settings(ServerSettings, EventSettings):
    """Everything shipping reads from its environment (``python -m shipping --help``)."""

    port: int = dataclasses.field(
        default=50054, metadata={"help": "port to listen on", "min": 0, "max": 65535}
    )
    db_path: Path = dataclasses.field(
        default=Path(".mesh/data/shipping.db"), metadata={"help": "SQLite database file"}
    )
    # A setting, not a constant: which destinations our carriers serve is a business decision
    # that changes without a release. AQ (Antarctica) is the one no carrier we book with reaches.
    unserved_countries: str = dataclasses.field(
        default="AQ",
        metadata={
            "help": "comma-separated ISO 3166-1 alpha-2 codes refused as DESTINATION_NOT_SERVED"
        },
    )

    def __post_init__(self) -> None:
        bad = [c for c in self.unserved_country_codes if not re.fullmatch(r"[A-Z]{2}", c)]
        if bad:
            raise SettingsError(
                f"{PREFIX}_UNSERVED_COUNTRIES: expected two upper-case letters per code, got"
                f" {', '.join(repr(c) for c in bad)}"
            )

    @property
    def unserved_country_codes(self) -> frozenset[str]:
        """``unserved_countries`` as a set of codes (empty entries ignored)."""
        return frozenset(c.strip() for c in self.unserved_countries.split(",") if c.strip())

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Settings from ``env``; SettingsError names the bad key."""
        return load_settings(cls, PREFIX, env)
