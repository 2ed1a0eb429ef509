"""The shipping use cases: each runs in one unit of work (one transaction)."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable, Collection

from meshkit import timestamps
from meshkit.address import Address
from meshkit.errors import AlreadyExists, NotFound, Violations
from meshkit.ports import IdempotentResult
from shipping.app.ports import ServiceLevels, UnitOfWork
from shipping.domain.commands import CancelShipment, CreateShipment, validate_id
from shipping.domain.events import ShipmentCancelled, ShipmentCreated
from shipping.domain.model import ServiceLevel, Shipment, ShipmentStatus, ensure_serviceable

UNSERVED_COUNTRIES: frozenset[str] = frozenset({"AQ"})
"""Destinations refused by default: no carrier we book with delivers to Antarctica. Overridden by
the SHIPPING_UNSERVED_COUNTRIES setting."""

# A tracking number clash is a 1 in 10**9 event per pair; a handful of fresh ids is plenty.
_MAX_ID_ATTEMPTS = 8


def utc_now_ms() -> datetime.datetime:
    """Now in UTC, truncated to milliseconds: the precision of the events' ``occurred_at``, so
    the API, the database and the events all carry the very same instant."""
    now = timestamps.now()
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def new_shipment_id() -> str:
    """A fresh random shipment id (UUID4)."""
    return str(uuid.uuid4())


class StandardOnly:
    """ServiceLevels without a flag: every shipment is STANDARD (tests, tools)."""

    def level_for(self, *, order_id: str, customer_id: str, address: Address) -> ServiceLevel:
        """STANDARD."""
        return ServiceLevel.STANDARD


class Shipping:
    """Books, cancels and reads shipments.

    Thread safety: safe to share; every call opens its own unit of work. Idempotency: every
    mutating call carries an idempotency key, stored in the same transaction as its effect. A
    replay with the same key and the same request returns the first result and changes nothing
    (no second shipment, no second event), also after a crash; the same key with a different
    request raises AlreadyExists. Calls that fail store nothing, so their replay is re-evaluated.
    The service level of a new shipment is asked of ``service_levels`` once, when it is booked;
    a replay answers the level it was booked with, whatever the flag says now.
    """

    def __init__(
        self,
        unit_of_work: Callable[[], UnitOfWork],
        *,
        unserved_countries: Collection[str] = UNSERVED_COUNTRIES,
        clock: Callable[[], datetime.datetime] = utc_now_ms,
        new_id: Callable[[], str] = new_shipment_id,
        service_levels: ServiceLevels | None = None,
    ) -> None:
        self._uow = unit_of_work
        self._levels = service_levels or StandardOnly()
        self._unserved = frozenset(unserved_countries)
        self._clock = clock
        self._new_id = new_id

    def create(self, command: CreateShipment, *, customer_id: str = "") -> Shipment:
        """Book a shipment. InvalidArgument naming every bad field; FailedPrecondition
        (DESTINATION_NOT_SERVED) for a country we do not ship to; AlreadyExists for a reused key.
        ``customer_id``: whom the caller books it for (the flag's unit), "" when unknown."""
        command.validate()
        assert command.address is not None  # validate() refuses a missing address
        fingerprint = command.fingerprint()
        with self._uow() as uow:
            replayed = _replay(uow, command.idempotency_key, "CreateShipment", fingerprint)
            if replayed is not None:
                return replayed
            # After the replay check: a booked shipment stays booked for its key even if the
            # destination is withdrawn later.
            ensure_serviceable(command.address, self._unserved)
            now = self._clock()
            level = self._levels.level_for(
                order_id=command.order_id, customer_id=customer_id, address=command.address
            )
            shipment = self._book(uow, command, now, level)
            uow.shipments.add(shipment)
            uow.idempotency.add(
                IdempotentResult(command.idempotency_key, "CreateShipment", fingerprint, shipment)
            )
            uow.publish(ShipmentCreated(shipment, now))
        return shipment

    def cancel(self, command: CancelShipment) -> Shipment:
        """Cancel a booked shipment; cancelling a cancelled one returns it unchanged. NotFound
        for an unknown shipment; AlreadyExists for a reused key."""
        command.validate()
        fingerprint = command.fingerprint()
        with self._uow() as uow:
            replayed = _replay(uow, command.idempotency_key, "CancelShipment", fingerprint)
            if replayed is not None:
                return replayed
            shipment = _existing(uow, command.shipment_id)
            if shipment.status is ShipmentStatus.BOOKED:
                now = self._clock()
                shipment = shipment.cancelled(now)
                uow.shipments.save(shipment)
                uow.publish(ShipmentCancelled(shipment, now))
            uow.idempotency.add(
                IdempotentResult(command.idempotency_key, "CancelShipment", fingerprint, shipment)
            )
        return shipment

    def get(self, shipment_id: str) -> Shipment:
        """The shipment as it stands now; NotFound when unknown."""
        violations = Violations()
        validate_id(violations, shipment_id, "shipment_id")
        violations.raise_if_any()
        with self._uow() as uow:
            return _existing(uow, shipment_id)

    def _book(
        self, uow: UnitOfWork, command: CreateShipment, now: datetime.datetime, level: ServiceLevel
    ) -> Shipment:
        assert command.address is not None
        for _ in range(_MAX_ID_ATTEMPTS):
            shipment = Shipment.book(
                self._new_id(),
                command.order_id,
                command.address,
                command.items,
                now,
                service_level=level,
            )
            taken = uow.shipments.tracking_number_taken(shipment.tracking_number)
            if not taken and uow.shipments.get(shipment.shipment_id) is None:
                return shipment
        raise RuntimeError(f"no free shipment id after {_MAX_ID_ATTEMPTS} attempts")


def _replay(uow: UnitOfWork, key: str, operation: str, fingerprint: str) -> Shipment | None:
    """The first result stored under ``key``, or None when the key is new."""
    record = uow.idempotency.get(key)
    if record is None:
        return None
    if record.operation != operation or record.fingerprint != fingerprint:
        same_call = record.operation == operation
        raise AlreadyExists(
            f"idempotency key {key!r} was already used for a different"
            f" {operation if same_call else record.operation} request",
            reason="IDEMPOTENCY_KEY_REUSED",
            metadata={"idempotency_key": key, "first_operation": record.operation},
        )
    return record.result


def _existing(uow: UnitOfWork, shipment_id: str) -> Shipment:
    shipment = uow.shipments.get(shipment_id)
    if shipment is None:
        raise NotFound(
            f"unknown shipment {shipment_id!r}",
            reason="SHIPMENT_NOT_FOUND",
            metadata={"shipment_id": shipment_id},
        )
    return shipment
