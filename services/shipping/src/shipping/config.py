"""Shipping's own setting, SHIPPING_UNSERVED_COUNTRIES; the kit's ServiceSettings has the rest."""

from __future__ import annotations

import dataclasses
import re

from meshkit.settings import ServiceSettings, SettingsError


@dataclasses.dataclass(frozen=True)
class Settings(ServiceSettings):
    """Everything shipping reads from its environment (``python -m shipping --help``)."""

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
                "SHIPPING_UNSERVED_COUNTRIES: expected two upper-case letters per code, got"
                f" {', '.join(repr(c) for c in bad)}"
            )

    @property
    def unserved_country_codes(self) -> frozenset[str]:
        """``unserved_countries`` as a set of codes (empty entries ignored)."""
        return frozenset(c.strip() for c in self.unserved_countries.split(",") if c.strip())
