"""Stock items and reservations, and the rules that bind them.

Invariants (checked here, and again by the database's CHECK constraints):
``0 <= reserved <= on_hand``; ``available = on_hand - reserved``. A reservation holds every one
of its lines or none; releasing returns its units to available stock, committing removes them
from stock for good. Release and commit are idempotent; crossing from one to the other is not
allowed.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from meshkit.errors import (
    LISTED,
    AlreadyExists,
    FailedPrecondition,
    NotFound,
    PreconditionViolation,
    Violations,
    listed,
    quoted,
)

MAX_QUANTITY = 2**31 - 1  # quantities travel as int32
MAX_LINES = 100  # lines of one reservation (an order has at most as many)
MAX_ID = 128  # characters of a SKU or a reservation id


@dataclass
class StockItem:
    """The stock of one SKU."""

    sku: str
    on_hand: int
    reserved: int = 0

    @property
    def available(self) -> int:
        """Units on hand and not held by a reservation."""
        return self.on_hand - self.reserved

    def set_on_hand(self, quantity: int) -> None:
        """Set the units on hand; they may not drop below what is reserved."""
        if quantity < self.reserved:
            raise FailedPrecondition(
                f"cannot set stock of {self.sku!r} to {quantity}:"
                f" {self.reserved} units are reserved",
                violations=[
                    PreconditionViolation(
                        "STOCK", self.sku, f"quantity {quantity} < reserved {self.reserved}"
                    )
                ],
                reason="STOCK_RESERVED",
            )
        self.on_hand = quantity


@dataclass(frozen=True)
class Line:
    """A SKU and a number of units."""

    sku: str
    quantity: int


class ReservationStatus(enum.Enum):
    """Where a reservation stands."""

    RESERVED = "RESERVED"
    RELEASED = "RELEASED"
    COMMITTED = "COMMITTED"


@dataclass
class Reservation:
    """Units of one or more SKUs held for one caller-chosen id (the saga uses the order id)."""

    reservation_id: str
    lines: tuple[Line, ...]
    status: ReservationStatus = ReservationStatus.RESERVED

    @classmethod
    def place(
        cls, reservation_id: str, lines: Sequence[Line], stock: Mapping[str, StockItem]
    ) -> Reservation:
        """Hold every line against ``stock`` (mutating it), or raise and hold nothing.

        Raises NotFound naming every unknown SKU, FailedPrecondition naming every short one.
        """
        merged = merge_lines(lines)
        # A refusal names a few SKUs and counts the rest: all of a long request's would make a
        # status too large to reach the caller.
        missing = [line.sku for line in merged if line.sku not in stock]
        if missing:
            raise NotFound(
                f"unknown SKU {listed(missing)}",
                reason="SKU_NOT_FOUND",
                metadata={"skus": ",".join(missing[:LISTED])},
            )
        short = [line for line in merged if stock[line.sku].available < line.quantity]
        if short:
            shown = ", ".join(
                f"{quoted(line.sku)} (wanted {line.quantity}, available"
                f" {stock[line.sku].available})"
                for line in short[:LISTED]
            )
            more = f" and {len(short) - LISTED} more" if len(short) > LISTED else ""
            raise FailedPrecondition(
                f"not enough stock for {shown}{more}",
                violations=[
                    PreconditionViolation(
                        "STOCK",
                        line.sku,
                        f"wanted {line.quantity}, available {stock[line.sku].available}",
                    )
                    for line in short
                ],
                reason="INSUFFICIENT_STOCK",
            )
        for line in merged:
            stock[line.sku].reserved += line.quantity
        return cls(reservation_id, merged)

    @classmethod
    def released_unplaced(cls, reservation_id: str) -> Reservation:
        """The record of a release that came before its reserve (a saga's compensation that
        overtook a reserve still in flight): it holds nothing, and refuses that reserve later."""
        return cls(reservation_id, (), ReservationStatus.RELEASED)

    @property
    def never_placed(self) -> bool:
        """True for a ``released_unplaced`` record."""
        return not self.lines

    def matches(self, lines: Sequence[Line]) -> bool:
        """True when ``lines`` ask for exactly what this reservation holds (a replay)."""
        return merge_lines(lines) == self.lines

    def ensure_replay_of(self, lines: Sequence[Line]) -> None:
        """Raise AlreadyExists when the id is reused for different lines, FailedPrecondition
        when the id was released before any reserve under it (that reserve is too late)."""
        if self.never_placed:
            raise FailedPrecondition(
                f"reservation {self.reservation_id!r} was released before it was placed"
                " (its order was cancelled); nothing is reserved",
                reason="RESERVATION_RELEASED",
            )
        if not self.matches(lines):
            raise AlreadyExists(
                f"reservation {self.reservation_id!r} exists with other lines",
                reason="RESERVATION_ID_REUSED",
            )

    def release(self, stock: Mapping[str, StockItem]) -> None:
        """Give the held units back to available stock. A second release does nothing."""
        if self.status is ReservationStatus.RELEASED:
            return
        self._require_reserved("release")
        for line in self.lines:
            stock[line.sku].reserved -= line.quantity
        self.status = ReservationStatus.RELEASED

    def commit(self, stock: Mapping[str, StockItem]) -> None:
        """Remove the held units from stock for good. A second commit does nothing."""
        if self.status is ReservationStatus.COMMITTED:
            return
        self._require_reserved("commit")
        for line in self.lines:
            item = stock[line.sku]
            item.reserved -= line.quantity
            item.on_hand -= line.quantity
        self.status = ReservationStatus.COMMITTED

    def _require_reserved(self, action: str) -> None:
        if self.status is not ReservationStatus.RESERVED:
            raise FailedPrecondition(
                f"cannot {action} reservation {self.reservation_id!r}: it is "
                f"{self.status.value.lower()}",
                reason=f"RESERVATION_{self.status.value}",
            )


def merge_lines(lines: Iterable[Line]) -> tuple[Line, ...]:
    """One line per SKU (quantities added up), sorted by SKU: the canonical form of a request."""
    totals: dict[str, int] = {}
    for line in lines:
        totals[line.sku] = totals.get(line.sku, 0) + line.quantity
    return tuple(Line(sku, quantity) for sku, quantity in sorted(totals.items()))


def validate_sku(violations: Violations, sku: str, field: str = "sku") -> None:
    """A SKU is a non-empty string without surrounding whitespace, at most 128 characters."""
    if violations.check(sku != "", field, "must not be empty"):
        violations.check(sku == sku.strip(), field, "must not start or end with whitespace")
        violations.check(len(sku) <= MAX_ID, field, f"must be at most {MAX_ID} characters")


def validate_set_stock(sku: str, quantity: int) -> None:
    """Raise InvalidArgument naming every bad field of a SetStock request."""
    violations = Violations()
    validate_sku(violations, sku)
    violations.check(quantity >= 0, "quantity", "must be zero or more")
    violations.raise_if_any()


def validate_reservation(reservation_id: str, lines: Sequence[Line]) -> None:
    """Raise InvalidArgument naming every bad field of a ReserveStock request."""
    violations = Violations()
    validate_reservation_id(violations, reservation_id)
    violations.check(len(lines) > 0, "lines", "must have at least one line")
    violations.check(len(lines) <= MAX_LINES, "lines", f"must have at most {MAX_LINES} lines")
    for index, line in enumerate(lines):
        validate_sku(violations, line.sku, f"lines[{index}].sku")
        violations.check(line.quantity > 0, f"lines[{index}].quantity", "must be positive")
    if not violations.items:
        too_big = [line.sku for line in merge_lines(lines) if line.quantity > MAX_QUANTITY]
        for sku in too_big:
            violations.add("lines", f"total quantity of {sku!r} exceeds {MAX_QUANTITY}")
    violations.raise_if_any()


def validate_reservation_id(violations: Violations, reservation_id: str) -> None:
    """A reservation id is a non-empty string of at most 128 characters."""
    if violations.check(reservation_id != "", "reservation_id", "must not be empty"):
        violations.check(
            len(reservation_id) <= MAX_ID, "reservation_id", f"must be at most {MAX_ID} characters"
        )
