"""The requests the use cases act on, their validation, and their idempotency fingerprints.

Validation collects every bad field (meshkit ``Violations``) under the path the gRPC contract uses
(``address.city``, ``items[0].quantity``), so a caller fixes everything in one round trip.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from meshkit.address import Address, validate_address
from meshkit.errors import Violations
from shipping.domain.model import Item

MAX_ID = 128
MAX_ITEMS = 100  # items of one shipment (an order has at most as many lines)
MAX_QUANTITY = 2**31 - 1  # quantities travel as int32


@dataclass(frozen=True)
class CreateShipment:
    """Book a shipment of ``items`` for ``order_id`` to ``address`` (None when not sent)."""

    idempotency_key: str
    order_id: str
    address: Address | None
    items: tuple[Item, ...]

    def validate(self) -> None:
        """Raise InvalidArgument naming every bad field."""
        violations = Violations()
        validate_id(violations, self.idempotency_key, "idempotency_key")
        validate_id(violations, self.order_id, "order_id")
        validate_destination(violations, self.address, "address")
        validate_items(violations, self.items, "items")
        violations.raise_if_any()

    def fingerprint(self) -> str:
        """What makes two requests "the same" for idempotency: every field but the key."""
        address = None if self.address is None else self.address.to_record()
        return _digest(
            {
                "op": "CreateShipment",
                "order_id": self.order_id,
                "address": address,
                "items": [[item.sku, item.quantity] for item in self.items],
            }
        )


@dataclass(frozen=True)
class CancelShipment:
    """Cancel shipment ``shipment_id``."""

    idempotency_key: str
    shipment_id: str

    def validate(self) -> None:
        """Raise InvalidArgument naming every bad field."""
        violations = Violations()
        validate_id(violations, self.idempotency_key, "idempotency_key")
        validate_id(violations, self.shipment_id, "shipment_id")
        violations.raise_if_any()

    def fingerprint(self) -> str:
        """What makes two requests "the same" for idempotency: every field but the key."""
        return _digest({"op": "CancelShipment", "shipment_id": self.shipment_id})


def validate_id(violations: Violations, value: str, field: str) -> None:
    """An id or key: non-empty, no surrounding whitespace, at most 128 characters."""
    if violations.check(value != "", field, "must not be empty"):
        violations.check(value == value.strip(), field, "must not start or end with whitespace")
        violations.check(len(value) <= MAX_ID, field, f"must be at most {MAX_ID} characters")


def validate_destination(violations: Violations, address: Address | None, field: str) -> None:
    """meshkit's address rules (Google's per-country data: a postal code only where the country
    has one, in its shape; the city where its addresses have one; every field capped)."""
    validate_address(violations, address, field)


def validate_items(violations: Violations, items: tuple[Item, ...], prefix: str) -> None:
    """One to MAX_ITEMS items; each with a SKU and a positive quantity."""
    violations.check(len(items) > 0, prefix, "must have at least one item")
    violations.check(len(items) <= MAX_ITEMS, prefix, f"must have at most {MAX_ITEMS} items")
    for index, item in enumerate(items):
        sku_field = f"{prefix}[{index}].sku"
        if violations.check(item.sku.strip() != "", sku_field, "must not be empty"):
            violations.check(len(item.sku) <= MAX_ID, sku_field, f"must be at most {MAX_ID} chars")
        violations.check(
            0 < item.quantity <= MAX_QUANTITY, f"{prefix}[{index}].quantity", "must be positive"
        )


def _digest(canonical: object) -> str:
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()
