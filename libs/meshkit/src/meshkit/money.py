"""Money: an exact amount of one ISO 4217 currency, the one shape every service uses.

An amount is one integer of billionths (nanos) of the currency's unit, so equality, sums and
products are exact; the wire and Avro shape (``currency_code``, ``units``, ``nanos``, as
google.type.Money has it) is derived from it. Each currency's minor units (USD 2, JPY 0, KWD 3)
come from the ``iso4217`` package (ISO's own published table), never from a hand-kept list.

Pure: no I/O, no grpc and no generated code, so a domain layer may use it. ``to_wire`` builds any
message class with those three fields; ``from_wire`` reads any object that has them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import iso4217

from meshkit.errors import Violations, quoted

NANOS_PER_UNIT = 1_000_000_000
MAX_NANOS = NANOS_PER_UNIT - 1
# Large enough for any real price; the units of a sum of many such amounts stay far inside int64,
# as Avro's long and SQLite's INTEGER are. Not its nanos (10**12 units are 10**21 nanos): an amount
# kept as int64 nanos needs a ceiling of its own (orders caps an order's total, payments an
# authorization).
MAX_UNITS = 1_000_000_000_000
_CODE = re.compile(r"[A-Z]{3}")

_W = TypeVar("_W")


class WireMoney(Protocol):
    """Anything shaped like shop.common.v1.Money / google.type.Money (a message, a record or a
    ``Money``): read-only, so a frozen dataclass qualifies too."""

    @property
    def currency_code(self) -> str: ...
    @property
    def units(self) -> int: ...
    @property
    def nanos(self) -> int: ...


def minor_units(currency_code: str) -> int | None:
    """The ISO 4217 exponent of ``currency_code`` (2 for USD, 0 for JPY, 3 for KWD); None for a
    code ISO does not list, or one with no minor unit defined (e.g. XAU, gold)."""
    try:
        exponent = iso4217.Currency(currency_code).exponent
    except ValueError:
        return None
    return exponent if isinstance(exponent, int) else None


def is_currency(currency_code: str) -> bool:
    """True for a current ISO 4217 code with defined minor units (one a price can be in)."""
    return bool(_CODE.fullmatch(currency_code)) and minor_units(currency_code) is not None


@dataclass(frozen=True, order=True)
class Money:
    """``total_nanos`` billionths of one unit of ``currency_code``. Immutable; build it with
    ``Money.of(currency_code, units, nanos)`` or from a validated request (``validate_money``)."""

    currency_code: str
    total_nanos: int

    @classmethod
    def of(cls, currency_code: str, units: int, nanos: int = 0) -> Money:
        """``units`` + ``nanos``/1e9 of ``currency_code`` (both with the amount's sign)."""
        return cls(currency_code, units * NANOS_PER_UNIT + nanos)

    @classmethod
    def zero(cls, currency_code: str) -> Money:
        """Nothing, in ``currency_code``."""
        return cls(currency_code, 0)

    @property
    def units(self) -> int:
        """Whole units, truncated toward zero (with the amount's sign)."""
        sign = -1 if self.total_nanos < 0 else 1
        return sign * (abs(self.total_nanos) // NANOS_PER_UNIT)

    @property
    def nanos(self) -> int:
        """Billionths beyond ``units``, with the amount's sign."""
        sign = -1 if self.total_nanos < 0 else 1
        return sign * (abs(self.total_nanos) % NANOS_PER_UNIT)

    @property
    def minor_units(self) -> int | None:
        """The currency's ISO 4217 exponent (None for a code ISO does not list)."""
        return minor_units(self.currency_code)

    def __add__(self, other: Money) -> Money:
        if other.currency_code != self.currency_code:
            raise ValueError(f"cannot add {other.currency_code} to {self.currency_code}")
        return Money(self.currency_code, self.total_nanos + other.total_nanos)

    def __mul__(self, factor: int) -> Money:
        return Money(self.currency_code, self.total_nanos * factor)

    __rmul__ = __mul__

    def __str__(self) -> str:
        """``USD 12.50``, ``JPY 1200``, ``KWD 1.250``: as many decimals as the currency has."""
        sign = "-" if self.total_nanos < 0 else ""
        whole, fraction = divmod(abs(self.total_nanos), NANOS_PER_UNIT)
        digits = self.minor_units
        # An unknown exponent shows every digit there is.
        shown = f"{fraction:09d}".rstrip("0") if digits is None else f"{fraction:09d}"[:digits]
        return f"{self.currency_code} {sign}{whole}{'.' + shown if shown else ''}"

    def to_record(self) -> dict[str, Any]:
        """The Avro/JSON record: ``{"currency_code", "units", "nanos"}``."""
        return {"currency_code": self.currency_code, "units": self.units, "nanos": self.nanos}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Money:
        """The amount a ``to_record`` record (or any such mapping) describes."""
        return cls.of(
            str(record["currency_code"]), int(record["units"]), int(record.get("nanos", 0))
        )

    def to_wire(self, message_type: type[_W]) -> _W:
        """A ``message_type`` (e.g. ``common_pb2.Money``) carrying this amount."""
        return message_type(  # type: ignore[call-arg]
            currency_code=self.currency_code, units=self.units, nanos=self.nanos
        )

    @classmethod
    def from_wire(cls, message: WireMoney) -> Money:
        """The amount ``message`` carries, unchecked (``validate_money`` checks it)."""
        return cls.of(message.currency_code, int(message.units), int(message.nanos))


def validate_money(
    violations: Violations,
    message: WireMoney | None,
    field: str,
    *,
    positive: bool = True,
    currencies: frozenset[str] | None = None,
) -> Money | None:
    """The amount ``message`` carries as Money, or None after recording every bad subfield of
    ``field`` in ``violations``.

    Checks: a current ISO 4217 code (and one of ``currencies`` when given), nanos within
    ±999,999,999 and of the units' sign, at most ``MAX_UNITS`` units, whole minor units of the
    currency (no 0.5 cent, no fraction of a yen), and above zero when ``positive``.
    """
    if message is None:
        violations.add(field, "is required")
        return None
    ok = True
    code = message.currency_code
    if not _CODE.fullmatch(code):
        violations.add(
            f"{field}.currency_code",
            f"must be an ISO 4217 code of three upper-case letters, got {quoted(code)}",
        )
        ok = False
    elif not is_currency(code):
        violations.add(f"{field}.currency_code", f"{quoted(code)} is not an ISO 4217 currency")
        ok = False
    elif currencies is not None and code not in currencies:
        violations.add(
            f"{field}.currency_code",
            f"unsupported currency {quoted(code)}; supported: {', '.join(sorted(currencies))}",
        )
        ok = False
    units, nanos = int(message.units), int(message.nanos)
    if not -MAX_NANOS <= nanos <= MAX_NANOS:
        violations.add(f"{field}.nanos", f"must be between {-MAX_NANOS} and {MAX_NANOS}")
        ok = False
    elif (units > 0 and nanos < 0) or (units < 0 and nanos > 0):
        violations.add(f"{field}.nanos", "must have the same sign as units")
        ok = False
    if abs(units) > MAX_UNITS:
        violations.add(f"{field}.units", f"must be at most {MAX_UNITS} in absolute value")
        ok = False
    if not ok:
        return None
    money = Money.of(code, units, nanos)
    if positive and money.total_nanos <= 0:
        violations.add(field, "must be positive")
        return None
    exponent = minor_units(code)
    step = 10 ** (9 - exponent) if exponent is not None and exponent <= 9 else 1
    if money.total_nanos % step:
        violations.add(
            f"{field}.nanos",
            f"{code} amounts must be whole multiples of its smallest unit"
            f" ({Money(code, step)}): it has {exponent} decimal(s)",
        )
        return None
    return money
