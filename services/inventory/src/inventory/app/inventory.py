"""The inventory use cases: each runs in one unit of work (one transaction)."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence

from inventory.app.ports import UnitOfWork
from inventory.domain.events import (
    ReservationCommitted,
    ReservationReleased,
    StockReserved,
    StockSet,
)
from inventory.domain.model import (
    Line,
    Reservation,
    StockItem,
    validate_reservation,
    validate_reservation_id,
    validate_set_stock,
    validate_sku,
)
from meshkit import timestamps
from meshkit.audit import AuditEntry
from meshkit.errors import NotFound, Violations


class Inventory:
    """Stock levels and reservations.

    Thread safety: safe to share; every call opens its own unit of work. Idempotency: reserve,
    release and commit replay to the same result for the same reservation id.
    """

    def __init__(
        self,
        unit_of_work: Callable[[], UnitOfWork],
        clock: Callable[[], datetime.datetime] = timestamps.now,
    ) -> None:
        self._uow = unit_of_work
        self._clock = clock

    def set_stock(self, sku: str, quantity: int) -> StockItem:
        """Set the on-hand quantity of ``sku`` (creating it); returns the item after the change."""
        validate_set_stock(sku, quantity)
        with self._uow() as uow:
            before = uow.stock.get(sku)
            item = before or StockItem(sku, 0)
            previous = item.on_hand
            item.set_on_hand(quantity)
            uow.stock.save(item)
            now = self._clock()
            uow.publish(StockSet(item.sku, item.on_hand, item.available, item.reserved, now))
            # Who changed the stock, from what to what: an audit record in the same transaction.
            uow.publish(
                AuditEntry(
                    "inventory.stock.set",
                    resource_type="Sku",
                    resource_id=item.sku,
                    details={
                        "on_hand_before": str(previous if before else 0),
                        "on_hand": str(item.on_hand),
                        "new_sku": str(before is None).lower(),
                    },
                    occurred_at=now,
                )
            )
        return item

    def get_stock(self, sku: str) -> StockItem:
        """The stock of ``sku``; NotFound when unknown."""
        violations = Violations()
        validate_sku(violations, sku)
        violations.raise_if_any()
        with self._uow() as uow:
            item = uow.stock.get(sku)
        if item is None:
            raise NotFound(f"unknown SKU {sku!r}", reason="SKU_NOT_FOUND", metadata={"sku": sku})
        return item

    def reserve(self, reservation_id: str, lines: Sequence[Line]) -> Reservation:
        """Hold every line or none; a replay of the same id and lines returns the reservation."""
        validate_reservation(reservation_id, lines)
        with self._uow() as uow:
            existing = uow.reservations.get(reservation_id)
            if existing is not None:
                existing.ensure_replay_of(lines)
                return existing
            stock = uow.stock.get_many(line.sku for line in lines)
            reservation = Reservation.place(reservation_id, lines, stock)
            for item in stock.values():
                uow.stock.save(item)
            uow.reservations.add(reservation)
            uow.publish(StockReserved(reservation_id, reservation.lines, self._clock()))
        return reservation

    def release(self, reservation_id: str) -> Reservation:
        """Return the reservation's units to available stock (idempotent).

        An unknown id is recorded as released (holding nothing, publishing nothing): a reserve
        still in flight under that id, overtaken by this release, is then refused instead of
        holding stock that nothing would ever release.
        """
        return self._transition(
            reservation_id, Reservation.release, ReservationReleased, unknown_is_released=True
        )

    def commit(self, reservation_id: str) -> Reservation:
        """Remove the reservation's units from stock for good (idempotent)."""
        return self._transition(reservation_id, Reservation.commit, ReservationCommitted)

    def _transition(
        self,
        reservation_id: str,
        change: Callable[[Reservation, dict[str, StockItem]], None],
        event: type[ReservationReleased | ReservationCommitted],
        *,
        unknown_is_released: bool = False,
    ) -> Reservation:
        violations = Violations()
        validate_reservation_id(violations, reservation_id)
        violations.raise_if_any()
        with self._uow() as uow:
            reservation = uow.reservations.get(reservation_id)
            if reservation is None and unknown_is_released:
                reservation = Reservation.released_unplaced(reservation_id)
                uow.reservations.add(reservation)
                return reservation
            if reservation is None:
                raise NotFound(
                    f"unknown reservation {reservation_id!r}",
                    reason="RESERVATION_NOT_FOUND",
                    metadata={"reservation_id": reservation_id},
                )
            before = reservation.status
            stock = uow.stock.get_many(line.sku for line in reservation.lines)
            change(reservation, stock)
            if reservation.status is not before:
                for item in stock.values():
                    uow.stock.save(item)
                uow.reservations.save(reservation)
                uow.publish(event(reservation_id, reservation.lines, self._clock()))
        return reservation
