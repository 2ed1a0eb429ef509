"""Money as integer nanos of one currency: no floating point anywhere.

The wire shape (``shop.common.v1.Money``: units, nanos, currency_code) arrives as ``RawMoney``,
unchecked; ``validate_money`` turns it into ``Money`` or names every bad field. Stored and
compared as one integer (``units * 1e9 + nanos``), so equality and arithmetic are exact.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from meshkit.errors import Violations

NANOS_PER_UNIT = 1_000_000_000
MAX_NANOS = NANOS_PER_UNIT - 1

# The currencies the simulated processor settles, with their ISO 4217 minor-unit exponent
# (JPY has no minor unit, the others cents/öre/øre/grosz/haléř). A processor cannot charge a
# fraction of the smallest coin, so amounts must be whole minor units.
CURRENCIES: dict[str, int] = {
    "AUD": 2,
    "CAD": 2,
    "CHF": 2,
    "CZK": 2,
    "DKK": 2,
    "EUR": 2,
    "GBP": 2,
    "JPY": 0,
    "NOK": 2,
    "PLN": 2,
    "SEK": 2,
    "USD": 2,
}

# A simulated processor's ceiling; it also keeps units * 1e9 far inside SQLite's int64.
MAX_UNITS = 1_000_000_000

_CURRENCY_CODE = re.compile(r"[A-Z]{3}")


@dataclass(frozen=True)
class RawMoney:
    """An amount exactly as the request carried it, not validated yet."""

    units: int
    nanos: int
    currency_code: str


@dataclass(frozen=True, order=True)
class Money:
    """An exact amount: ``total_nanos`` billionths of one unit of ``currency_code``."""

    total_nanos: int
    currency_code: str

    @classmethod
    def of(cls, units: int, nanos: int, currency_code: str) -> Money:
        """The amount ``units`` + ``nanos``/1e9 (same sign, as google.type.Money has it)."""
        return cls(units * NANOS_PER_UNIT + nanos, currency_code)

    @property
    def units(self) -> int:
        """Whole units, truncated toward zero (the sign of the amount)."""
        sign = -1 if self.total_nanos < 0 else 1
        return sign * (abs(self.total_nanos) // NANOS_PER_UNIT)

    @property
    def nanos(self) -> int:
        """Billionths beyond ``units``, with the sign of the amount."""
        sign = -1 if self.total_nanos < 0 else 1
        return sign * (abs(self.total_nanos) % NANOS_PER_UNIT)

    def __str__(self) -> str:
        sign = "-" if self.total_nanos < 0 else ""
        whole, frac = divmod(abs(self.total_nanos), NANOS_PER_UNIT)
        digits = CURRENCIES.get(self.currency_code, 9)
        shown = f"{frac:09d}"[:digits] if digits else ""
        return f"{self.currency_code} {sign}{whole}{'.' + shown if shown else ''}"


def validate_money(violations: Violations, raw: RawMoney | None, field: str) -> Money | None:
    """The positive amount ``raw`` as Money, or None after recording every bad subfield."""
    if raw is None:
        violations.add(field, "is required")
        return None
    ok = True
    code = raw.currency_code
    if not _CURRENCY_CODE.fullmatch(code):
        violations.add(
            f"{field}.currency_code",
            f"must be an ISO 4217 code of three upper-case letters, got {code!r}",
        )
        ok = False
    elif code not in CURRENCIES:
        violations.add(
            f"{field}.currency_code",
            f"unsupported currency {code!r}; supported: {', '.join(sorted(CURRENCIES))}",
        )
        ok = False
    if not -MAX_NANOS <= raw.nanos <= MAX_NANOS:
        violations.add(f"{field}.nanos", f"must be between {-MAX_NANOS} and {MAX_NANOS}")
        ok = False
    elif (raw.units > 0 and raw.nanos < 0) or (raw.units < 0 and raw.nanos > 0):
        violations.add(f"{field}.nanos", "must have the same sign as units")
        ok = False
    if raw.units > MAX_UNITS:
        violations.add(f"{field}.units", f"must be at most {MAX_UNITS}")
        ok = False
    if not ok:
        return None
    money = Money.of(raw.units, raw.nanos, code)
    if money.total_nanos <= 0:
        violations.add(field, "must be positive")
        return None
    step = 10 ** (9 - CURRENCIES[code])
    if money.total_nanos % step:
        smallest = Money(step, code)
        violations.add(
            f"{field}.nanos",
            f"{code} amounts must be whole multiples of its smallest unit ({smallest})",
        )
        return None
    return money
