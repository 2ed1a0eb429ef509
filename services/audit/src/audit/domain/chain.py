"""The hash chain and its signed checkpoints: what makes the audit trail tamper-evident. Pure.

Entries. Entry n holds one ``mesh.audit.v1.AuditRecorded`` record as its *canonical bytes* and::

    entry_hash(n) = SHA-256(prev_hash(n) || canonical(n))
    prev_hash(n)  = entry_hash(n - 1), and 32 zero bytes (GENESIS) for n = 1

so altering, removing, inserting or reordering any entry changes every hash after it (the
model: AWS CloudTrail's log file integrity validation, and Certificate Transparency, RFC 9162).

Canonical bytes (``canonical_bytes``), the exact rule, modelled on RFC 8785 (JCS):

- the record as one JSON object, UTF-8, no insignificant whitespace (``,`` and ``:`` only);
- object members sorted by their names' UTF-16 code units (JCS section 3.2.3; for the ASCII
  field names of the schema that is plain byte order), at every level (the actor, details);
- strings as JSON strings with only what JSON requires escaped: ``"`` and ``\\`` as ``\\"``
  and ``\\\\``, U+0008/09/0A/0C/0D as ``\\b \\t \\n \\f \\r``, other controls below U+0020 as
  ``\\u00xx`` (lower-case hex); everything else, non-ASCII included, as itself in UTF-8;
- integers as decimal without exponent or leading zeros (the record has no floats, which JCS
  would write in ECMAScript's shortest form: they are refused rather than approximated);
- timestamps (Avro ``timestamp-micros``, e.g. ``occurred_at``) as ISO-8601 UTC strings with
  exactly six fractional digits and ``Z``: ``2026-01-02T03:04:05.678000Z``;
- arrays keep their order; ``true``/``false``/``null`` as themselves.

So the same record always gives the same bytes, whatever produced it, and a verifier needs the
stored bytes only (never this code) to recompute the chain.

Checkpoints. Every N entries or T seconds the head of the chain is signed (Ed25519) as a
*statement*, itself canonical JSON (same rule)::

    {"entry_hash": "<hex>", "key_id": "<hex>", "seq": n, "signed_at": "<ISO-8601 UTC>",
     "type": "meshkit.audit.checkpoint.v1"}

``type`` separates these signatures from anything else the key might sign; ``key_id`` is the
first 8 bytes of SHA-256 over the raw public key, in hex (``key_id``), naming the key among
rotated ones. A checkpoint commits to every entry up to ``seq`` (RFC 9162's signed tree head,
CloudTrail's digest file): an attacker who rewrites the chain consistently still cannot make it
end in a signed hash without the private key.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

HASH_BYTES = 32
GENESIS = bytes(HASH_BYTES)
"""prev_hash of the first entry."""
CHECKPOINT_TYPE = "meshkit.audit.checkpoint.v1"
KEY_ID_BYTES = 8


class CanonicalError(ValueError):
    """A record holds a value canonical JSON does not define here (a float, bytes, a naive
    or non-UTC-convertible timestamp, a non-string key): the record is refused, not guessed at."""


def iso_micros(instant: datetime.datetime) -> str:
    """``instant`` as ISO-8601 UTC with six fractional digits and ``Z``. Naive is refused."""
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise CanonicalError(f"timestamp {instant!r} has no time zone")
    utc = instant.astimezone(datetime.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _utf16_key(name: str) -> bytes:
    return name.encode("utf-16-be")


def _canonical_value(value: Any) -> Any:
    """``value`` with dict members in canonical order and timestamps as strings."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, datetime.datetime):
        return iso_micros(value)
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise CanonicalError("object member names must be strings")
        return {k: _canonical_value(value[k]) for k in sorted(value, key=_utf16_key)}
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        return [_canonical_value(v) for v in value]
    raise CanonicalError(f"no canonical JSON for a {type(value).__name__}")


def canonical_bytes(record: Mapping[str, Any]) -> bytes:
    """The canonical bytes of ``record`` (see the module doc); CanonicalError if it holds a
    value the rule does not cover."""
    # json.dumps keeps the insertion order built above (sort_keys would sort by code point, not
    # UTF-16 unit) and, with ensure_ascii=False, escapes exactly what JCS escapes.
    return json.dumps(
        _canonical_value(record), ensure_ascii=False, separators=(",", ":"), allow_nan=False
    ).encode("utf-8")


def entry_hash(prev_hash: bytes, canonical: bytes) -> bytes:
    """SHA-256(prev_hash || canonical)."""
    if len(prev_hash) != HASH_BYTES:
        raise ValueError(f"prev_hash must be {HASH_BYTES} bytes, not {len(prev_hash)}")
    return hashlib.sha256(prev_hash + canonical).digest()


def key_id(raw_public_key: bytes) -> str:
    """The id of a public key: hex of the first 8 bytes of SHA-256 over its raw bytes."""
    return hashlib.sha256(raw_public_key).digest()[:KEY_ID_BYTES].hex()


@dataclass(frozen=True)
class Head:
    """Where the chain ends: the last entry's seq and hash (0 and GENESIS when empty)."""

    seq: int
    entry_hash: bytes


EMPTY = Head(0, GENESIS)


@dataclass(frozen=True)
class ChainEntry:
    """One stored entry: its position, the record's canonical bytes and both hashes.

    ``record`` is the decoded record (for the indexed columns); ``canonical`` is what counts.
    """

    seq: int
    audit_id: str
    canonical: bytes
    prev_hash: bytes
    entry_hash: bytes
    record: Mapping[str, Any]
    recorded_at: datetime.datetime

    @classmethod
    def after(
        cls, head: Head, record: Mapping[str, Any], recorded_at: datetime.datetime
    ) -> ChainEntry:
        """The entry that appends ``record`` after ``head``."""
        audit_id = record.get("audit_id")
        if not isinstance(audit_id, str) or not audit_id:
            raise ValueError("an audit record needs a non-empty audit_id")
        canonical = canonical_bytes(record)
        return cls(
            seq=head.seq + 1,
            audit_id=audit_id,
            canonical=canonical,
            prev_hash=head.entry_hash,
            entry_hash=entry_hash(head.entry_hash, canonical),
            record=record,
            recorded_at=recorded_at,
        )


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement that the chain's entry ``seq`` has hash ``entry_hash``."""

    seq: int
    entry_hash: bytes
    signed_at: datetime.datetime
    key_id: str
    statement: bytes
    signature: bytes


def checkpoint_statement(
    seq: int, head_hash: bytes, signed_at: datetime.datetime, signer_key_id: str
) -> bytes:
    """The canonical statement a checkpoint signs (see the module doc)."""
    return canonical_bytes(
        {
            "entry_hash": head_hash.hex(),
            "key_id": signer_key_id,
            "seq": seq,
            "signed_at": signed_at,
            "type": CHECKPOINT_TYPE,
        }
    )
