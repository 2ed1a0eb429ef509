"""The chain's rule, pinned: canonical bytes (RFC 8785's model), entry hashes, key ids and the
checkpoint statement, so a verifier written from the module doc alone agrees byte for byte."""

from __future__ import annotations

import datetime
import hashlib
import json

import pytest
from unit.audit.trails import T0, record

from audit.domain.chain import (
    EMPTY,
    GENESIS,
    CanonicalError,
    ChainEntry,
    Head,
    canonical_bytes,
    checkpoint_statement,
    entry_hash,
    iso_micros,
    key_id,
)


def test_canonical_bytes_are_sorted_compact_utf8_with_microsecond_utc_times() -> None:
    got = canonical_bytes(
        {
            "b": "é ✓",
            "a": {"z": [3, 1], "y": True, "x": None},
            "occurred_at": datetime.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=datetime.UTC),
        }
    )
    assert (
        got
        == (
            '{"a":{"x":null,"y":true,"z":[3,1]},"b":"é ✓",'
            '"occurred_at":"2026-01-02T03:04:05.678000Z"}'
        ).encode()
    )


def test_timestamps_in_other_zones_are_written_in_utc_and_naive_ones_are_refused() -> None:
    plus_two = datetime.timezone(datetime.timedelta(hours=2))
    assert iso_micros(datetime.datetime(2026, 1, 2, 5, 0, tzinfo=plus_two)) == (
        "2026-01-02T03:00:00.000000Z"
    )
    with pytest.raises(CanonicalError, match="no time zone"):
        canonical_bytes({"t": datetime.datetime(2026, 1, 2)})


def test_strings_escape_only_what_json_requires() -> None:
    # JCS (RFC 8785 3.2.2.2): short escapes for \b \t \n \f \r, \u00xx for other controls,
    # nothing else escaped: not "/", not non-ASCII.
    got = canonical_bytes({"s": 'q"b\\\b\t\n\f\r\x01\x1f/€'})
    assert got == '{"s":"q\\"b\\\\\\b\\t\\n\\f\\r\\u0001\\u001f/€"}'.encode()


def test_members_are_ordered_by_utf16_code_units_as_jcs_says() -> None:
    # U+FB01 sorts after U+1F600 by code point but before it by UTF-16 unit (0xD83D < 0xFB01).
    got = canonical_bytes({"\ufb01": 1, "\U0001f600": 2, "a": 3})
    assert got.decode() == '{"a":3,"\U0001f600":2,"\ufb01":1}'


def test_values_without_a_canonical_form_are_refused() -> None:
    for bad in (1.5, b"bytes", {1: "non-string key"}, object()):
        with pytest.raises(CanonicalError):
            canonical_bytes({"v": bad})


def test_the_same_record_gives_the_same_bytes_whatever_its_insertion_order() -> None:
    one = record(1)
    other = dict(reversed(list(one.items())))
    assert canonical_bytes(one) == canonical_bytes(other)
    assert json.loads(canonical_bytes(one))["occurred_at"] == "2026-01-02T03:04:06.678901Z"


def test_entries_chain_from_genesis() -> None:
    first = ChainEntry.after(EMPTY, record(1), T0)
    second = ChainEntry.after(Head(first.seq, first.entry_hash), record(2), T0)
    assert (first.seq, first.prev_hash) == (1, GENESIS)
    assert first.entry_hash == hashlib.sha256(bytes(32) + canonical_bytes(record(1))).digest()
    assert (second.seq, second.prev_hash) == (2, first.entry_hash)
    assert second.entry_hash == entry_hash(first.entry_hash, second.canonical)


def test_an_entry_needs_an_audit_id() -> None:
    with pytest.raises(ValueError, match="audit_id"):
        ChainEntry.after(EMPTY, record(1, audit_id=""), T0)


def test_key_ids_are_short_sha256_of_the_raw_key() -> None:
    raw = bytes(range(32))
    assert key_id(raw) == hashlib.sha256(raw).hexdigest()[:16]


def test_the_checkpoint_statement_is_canonical_json_of_its_fields() -> None:
    statement = checkpoint_statement(7, b"\xab" * 32, T0, "0123456789abcdef")
    assert (
        statement
        == (
            '{"entry_hash":"' + "ab" * 32 + '","key_id":"0123456789abcdef","seq":7,'
            '"signed_at":"2026-01-02T03:04:05.678901Z","type":"meshkit.audit.checkpoint.v1"}'
        ).encode()
    )
