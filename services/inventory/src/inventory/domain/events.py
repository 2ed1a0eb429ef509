"""What happened in inventory, as facts other contexts may react to (past tense, immutable)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from inventory.domain.model import Line


@dataclass(frozen=True)
class StockSet:
    """The on-hand quantity of a SKU was set."""

    sku: str
    on_hand: int
    available: int
    reserved: int
    occurred_at: datetime.datetime


@dataclass(frozen=True)
class StockReserved:
    """Stock was held for every line of a reservation."""

    reservation_id: str
    lines: tuple[Line, ...]
    occurred_at: datetime.datetime


@dataclass(frozen=True)
class ReservationReleased:
    """A reservation's units went back to available stock."""

    reservation_id: str
    lines: tuple[Line, ...]
    occurred_at: datetime.datetime


@dataclass(frozen=True)
class ReservationCommitted:
    """A reservation's units left stock for good."""

    reservation_id: str
    lines: tuple[Line, ...]
    occurred_at: datetime.datetime


InventoryEvent = StockSet | StockReserved | ReservationReleased | ReservationCommitted
