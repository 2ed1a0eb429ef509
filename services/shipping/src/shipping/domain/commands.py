"""The requests the use cases act on, their validation, and their idempotency fingerprints.

Validation collects every bad field (meshkit ``Violations``) under the path the gRPC contract uses
(``address.city``, ``items[0].quantity``), so a caller fixes everything in one round trip.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from meshkit.errors import Violations
from shipping.domain.countries import COUNTRIES
from shipping.domain.model import Address, Item

MAX_ID = 128
MAX_TEXT = 200
MAX_QUANTITY = 2**31 - 1  # quantities travel as int32

_ALPHA2 = re.compile(r"[A-Z]{2}")
# The generic rule every country's postal code must pass: 2..10 letters, digits, spaces or
# hyphens, starting and ending with a letter or digit. Loose on purpose: it catches junk without
# refusing a real code of a country we have no specific rule for.
_GENERIC_POSTAL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9 -]{0,8}[A-Za-z0-9])?")
# Specific formats where a wrong code is common and the format is stable (checked after the
# generic rule). A country missing here is only held to the generic rule.
POSTAL_FORMATS: Mapping[str, tuple[re.Pattern[str], str]] = {
    code: (re.compile(pattern, re.IGNORECASE), example)
    for code, pattern, example in (
        ("US", r"\d{5}(-\d{4})?", "12345 or 12345-6789"),
        ("DE", r"\d{5}", "10115"),
        ("FR", r"\d{5}", "75001"),
        ("IT", r"\d{5}", "00118"),
        ("ES", r"\d{5}", "28001"),
        ("FI", r"\d{5}", "00100"),
        ("AT", r"\d{4}", "1010"),
        ("BE", r"\d{4}", "1000"),
        ("CH", r"\d{4}", "8001"),
        ("DK", r"\d{4}", "1050"),
        ("NO", r"\d{4}", "0150"),
        ("AU", r"\d{4}", "2000"),
        ("NL", r"\d{4} ?[A-Z]{2}", "1012 AB"),
        ("SE", r"\d{3} ?\d{2}", "114 55"),
        ("PL", r"\d{2}-\d{3}", "00-950"),
        ("PT", r"\d{4}-\d{3}", "1000-001"),
        ("JP", r"\d{3}-?\d{4}", "100-0001"),
        ("IN", r"\d{6}", "110001"),
        ("BR", r"\d{5}-?\d{3}", "01310-100"),
        ("CA", r"[A-Z]\d[A-Z] ?\d[A-Z]\d", "K1A 0B1"),
        ("GB", r"[A-Z]{1,2}\d[A-Z\d]? ?\d[A-Z]{2}", "SW1A 1AA"),
    )
}


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
        if self.address is None:
            violations.add("address", "is required")
        else:
            validate_address(violations, self.address, "address")
        validate_items(violations, self.items, "items")
        violations.raise_if_any()

    def fingerprint(self) -> str:
        """What makes two requests "the same" for idempotency: every field but the key."""
        address = None if self.address is None else _address_fields(self.address)
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


def validate_address(violations: Violations, address: Address, prefix: str) -> None:
    """Every required field present, the country a real ISO 3166-1 alpha-2 code, the postal code
    plausible for that country."""
    for name in ("name", "line1", "city"):
        _validate_text(violations, getattr(address, name), f"{prefix}.{name}", required=True)
    _validate_text(violations, address.line2, f"{prefix}.line2", required=False)
    country_field = f"{prefix}.country_code"
    country_ok = False
    if violations.check(address.country_code != "", country_field, "must not be empty"):
        if not _ALPHA2.fullmatch(address.country_code):
            violations.add(
                country_field,
                f"must be an ISO 3166-1 alpha-2 code (two upper-case letters, e.g. DE),"
                f" got {address.country_code!r}",
            )
        elif address.country_code not in COUNTRIES:
            violations.add(
                country_field, f"{address.country_code!r} is not an ISO 3166-1 alpha-2 country"
            )
        else:
            country_ok = True
    postal_field = f"{prefix}.postal_code"
    postal = address.postal_code
    if not violations.check(postal.strip() != "", postal_field, "must not be empty"):
        return
    if not _GENERIC_POSTAL.fullmatch(postal):
        violations.add(
            postal_field,
            "must be 2 to 10 letters, digits, spaces or hyphens, starting and ending with a"
            f" letter or digit, got {postal!r}",
        )
    elif country_ok and address.country_code in POSTAL_FORMATS:
        pattern, example = POSTAL_FORMATS[address.country_code]
        violations.check(
            pattern.fullmatch(postal) is not None,
            postal_field,
            f"{postal!r} is not a postal code of {address.country_code} (e.g. {example})",
        )


def validate_items(violations: Violations, items: tuple[Item, ...], prefix: str) -> None:
    """At least one item; each with a SKU and a positive quantity."""
    violations.check(len(items) > 0, prefix, "must have at least one item")
    for index, item in enumerate(items):
        sku_field = f"{prefix}[{index}].sku"
        if violations.check(item.sku.strip() != "", sku_field, "must not be empty"):
            violations.check(len(item.sku) <= MAX_ID, sku_field, f"must be at most {MAX_ID} chars")
        violations.check(
            0 < item.quantity <= MAX_QUANTITY, f"{prefix}[{index}].quantity", "must be positive"
        )


def _validate_text(violations: Violations, value: str, field: str, *, required: bool) -> None:
    if required and not violations.check(value.strip() != "", field, "must not be empty"):
        return
    violations.check(len(value) <= MAX_TEXT, field, f"must be at most {MAX_TEXT} characters")


def _address_fields(address: Address) -> dict[str, str]:
    return {
        "name": address.name,
        "line1": address.line1,
        "line2": address.line2,
        "city": address.city,
        "postal_code": address.postal_code,
        "country_code": address.country_code,
    }


def _digest(canonical: object) -> str:
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()
