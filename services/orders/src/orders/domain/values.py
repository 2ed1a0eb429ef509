"""Value objects of an order: money, addresses, order lines. Immutable and pure."""

from __future__ import annotations

from dataclasses import dataclass

NANOS = 1_000_000_000


@dataclass(frozen=True)
class Money:
    """An amount in one currency as whole ``units`` plus ``nanos`` (same sign), like google.type."""

    currency_code: str
    units: int = 0
    nanos: int = 0

    @property
    def total_nanos(self) -> int:
        """The amount in billionths of a unit."""
        return self.units * NANOS + self.nanos

    @classmethod
    def from_nanos(cls, currency_code: str, amount: int) -> Money:
        """Money of ``amount`` billionths; units and nanos share the sign."""
        sign = -1 if amount < 0 else 1
        units, nanos = divmod(abs(amount), NANOS)
        return cls(currency_code, sign * units, sign * nanos)


@dataclass(frozen=True)
class Address:
    """A postal address; every field but ``line2`` is required."""

    name: str
    line1: str
    city: str
    postal_code: str
    country_code: str
    line2: str = ""


@dataclass(frozen=True)
class OrderLine:
    """``quantity`` units of ``sku`` at ``unit_price`` each."""

    sku: str
    quantity: int
    unit_price: Money
