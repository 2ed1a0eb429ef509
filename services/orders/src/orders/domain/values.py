"""Value objects of an order. Immutable and pure.

Money and addresses are the mesh's own (``meshkit.money.Money``, ``meshkit.address.Address``):
one shape and one set of rules for every service.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshkit.money import Money


@dataclass(frozen=True)
class OrderLine:
    """``quantity`` units of ``sku`` at ``unit_price`` each."""

    sku: str
    quantity: int
    unit_price: Money

    @property
    def total(self) -> Money:
        """``unit_price`` x ``quantity``, exact."""
        return self.unit_price * self.quantity
