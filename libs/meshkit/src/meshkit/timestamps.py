"""Time, one way: an aware UTC ``datetime`` in the domain, whole microseconds in storage.

- Domain code holds instants as timezone-aware UTC ``datetime`` (``now()``); never naive, never
  float seconds (a float cannot hold today's instants to the microsecond, so a stored float and a
  time read back from the wire may differ by one ulp and compare wrongly).
- Storage keeps ``to_micros(t)``, an exact integer; ``from_micros`` gives the same instant back.
- The wire is ``google.protobuf.Timestamp`` (``to_timestamp``/``from_timestamp``, the latter
  checking the range and the nanos); Avro records carry the ``datetime`` itself (fastavro writes
  it as timestamp-millis or -micros, whichever the schema declares).
"""

from __future__ import annotations

import datetime

from google.protobuf import timestamp_pb2

from meshkit.errors import Violations

UTC = datetime.UTC
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=UTC)
# google.protobuf.Timestamp's range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
MIN_SECONDS = -62_135_596_800
MAX_SECONDS = 253_402_300_799


def now() -> datetime.datetime:
    """The current instant, aware UTC (the default clock of every use case)."""
    return datetime.datetime.now(UTC)


def to_micros(instant: datetime.datetime) -> int:
    """Whole microseconds since the Unix epoch (exact; ``instant`` must be aware)."""
    delta = instant - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime.datetime:
    """The aware UTC instant ``micros`` microseconds after the Unix epoch (exact)."""
    return EPOCH + datetime.timedelta(microseconds=micros)


def to_millis(instant: datetime.datetime) -> int:
    """Whole milliseconds since the Unix epoch, truncated (Avro timestamp-millis)."""
    return to_micros(instant) // 1000


def to_timestamp(instant: datetime.datetime) -> timestamp_pb2.Timestamp:
    """``instant`` as a google.protobuf.Timestamp (exact to the microsecond)."""
    seconds, micros = divmod(to_micros(instant), 1_000_000)
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=micros * 1000)


def from_timestamp(
    timestamp: timestamp_pb2.Timestamp,
    violations: Violations | None = None,
    field: str = "timestamp",
) -> datetime.datetime | None:
    """The aware UTC instant ``timestamp`` names, truncated to the microsecond.

    A Timestamp outside its documented range, or with nanos outside 0..999,999,999, is recorded
    in ``violations`` as a violation of ``field`` (and None returned); without ``violations`` it
    raises ValueError.
    """
    problem = None
    if not MIN_SECONDS <= timestamp.seconds <= MAX_SECONDS:
        problem = "must be between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z"
    elif not 0 <= timestamp.nanos <= 999_999_999:
        problem = "nanos must be between 0 and 999999999"
    if problem is not None:
        if violations is None:
            raise ValueError(f"{field}: {problem}")
        violations.add(field, problem)
        return None
    return from_micros(timestamp.seconds * 1_000_000 + timestamp.nanos // 1000)
