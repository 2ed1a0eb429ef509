"""Shipments, their items, and the rules that bind them (the address is meshkit's ``Address``).

A shipment is booked (BOOKED, with a tracking number) for one order, to one address, carrying one
or more items, at a service level (STANDARD or EXPRESS, decided once at booking); it can be
cancelled (CANCELLED) before dispatch. Cancelling is idempotent. A
shipment is immutable: a transition returns a new value, so a snapshot handed out (an event, the
stored result of an idempotent call) can never change behind its holder's back.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import hashlib
from collections.abc import Collection
from dataclasses import dataclass

from meshkit.address import Address, country_name
from meshkit.errors import FailedPrecondition, PreconditionViolation

TRACKING_PREFIX = "MK"


@dataclass(frozen=True)
class Item:
    """A SKU and a number of units shipped."""

    sku: str
    quantity: int


class ShipmentStatus(enum.Enum):
    """Where a shipment stands."""

    BOOKED = "BOOKED"
    CANCELLED = "CANCELLED"


class ServiceLevel(enum.Enum):
    """How fast a shipment travels: the carrier service it is booked with."""

    STANDARD = "STANDARD"
    EXPRESS = "EXPRESS"


@dataclass(frozen=True)
class Shipment:
    """One booked shipment of one order. Immutable; transitions return a new Shipment."""

    shipment_id: str
    order_id: str
    address: Address
    items: tuple[Item, ...]
    tracking_number: str
    status: ShipmentStatus
    created_at: datetime.datetime
    updated_at: datetime.datetime
    service_level: ServiceLevel = ServiceLevel.STANDARD

    @classmethod
    def book(
        cls,
        shipment_id: str,
        order_id: str,
        address: Address,
        items: tuple[Item, ...],
        now: datetime.datetime,
        *,
        service_level: ServiceLevel = ServiceLevel.STANDARD,
    ) -> Shipment:
        """A new BOOKED shipment; its tracking number is derived from ``shipment_id``."""
        return cls(
            shipment_id=shipment_id,
            order_id=order_id,
            address=address,
            items=items,
            tracking_number=tracking_number_for(shipment_id),
            status=ShipmentStatus.BOOKED,
            created_at=now,
            updated_at=now,
            service_level=service_level,
        )

    def cancelled(self, now: datetime.datetime) -> Shipment:
        """This shipment CANCELLED; a cancelled one is returned unchanged (idempotent)."""
        if self.status is ShipmentStatus.CANCELLED:
            return self
        return dataclasses.replace(self, status=ShipmentStatus.CANCELLED, updated_at=now)


def tracking_number_for(shipment_id: str) -> str:
    """``MK`` + 9 digits derived from the shipment id + a Luhn check digit (12 characters).

    Derived rather than random so the same shipment always shows the same number (logs, tests,
    support calls); the check digit lets a person's typo be caught before any lookup. Two ids can
    map to the same number (1 in 10**9), so the use case checks for a clash before booking.
    """
    digest = hashlib.sha256(shipment_id.encode()).digest()
    body = f"{int.from_bytes(digest[:8], 'big') % 10**9:09d}"
    return f"{TRACKING_PREFIX}{body}{luhn_check_digit(body)}"


def luhn_check_digit(digits: str) -> int:
    """The Luhn (mod 10) check digit to append to ``digits``."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 0:  # every second digit from the right, starting with the rightmost
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return (10 - total % 10) % 10


def ensure_serviceable(address: Address, unserved: Collection[str]) -> None:
    """Raise FailedPrecondition (reason DESTINATION_NOT_SERVED) for a country we do not ship to.

    Not INVALID_ARGUMENT: the address is valid, we just cannot serve it (today); the saga must not
    retry, and the message is meant to be shown to the customer as is.
    """
    code = address.country_code
    if code not in unserved:
        return
    message = f"we do not ship to {country_name(code)} ({code})"
    raise FailedPrecondition(
        message,
        violations=[PreconditionViolation("DESTINATION", code, message)],
        reason="DESTINATION_NOT_SERVED",
        metadata={"country_code": code},
    )
