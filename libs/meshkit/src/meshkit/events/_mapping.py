"""Domain events <-> the Avro records of their contracts, and publishing them through the outbox.

A service lists its events once::

    EVENTS = EventMap("shop.inventory.v1")
    EVENTS.add(StockSet, key=lambda e: e.sku)
    EVENTS.add(StockReserved, key=lambda e: e.reservation_id)

The record name is the class name (``shop.inventory.v1.StockSet``). The record is built field by
field from the frozen dataclass (``as_record``): nested dataclasses become records, tuples become
arrays, enums their values, ``Money`` and ``Address`` their own records, and an aware
``datetime`` stays a ``datetime`` (fastavro writes it as the schema's timestamp type). Reading back
(``EventMap.event``) is the inverse, driven by the dataclass's type hints (``from_record``). Where a
contract's record is not the dataclass's shape, pass ``to_record``/``from_record`` to ``add``.

Publishing: the service's unit of work calls ``EventPublisher.publish(conn, event)``, which
appends the mapped event to the outbox in the unit's own transaction.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import functools
import sqlite3
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from meshkit.audit import AuditEntry, AuditTrail
from meshkit.events._outbox import Outbox

E = TypeVar("E")
T = TypeVar("T")


def as_record(value: Any) -> Any:
    """``value`` as an Avro record value (see the module doc for the conversions)."""
    to_record = getattr(value, "to_record", None)
    if callable(to_record):
        return to_record()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: as_record(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [as_record(item) for item in value]
    if isinstance(value, enum.Enum):
        return value.value
    return value


@functools.cache
def _fields(kind: type) -> tuple[tuple[str, Any], ...]:
    """A dataclass's fields with their resolved types, worked out once per class:
    ``typing.get_type_hints`` evaluates every annotation each call (profiled in issue 11: 5% of
    the orders service's CPU under the saga bench went to it)."""
    hints = typing.get_type_hints(kind)
    return tuple((f.name, hints[f.name]) for f in dataclasses.fields(kind))


def from_record(kind: Any, value: Any) -> Any:
    """The value of type ``kind`` that ``as_record`` turned into ``value`` (its inverse).

    An int read for a ``datetime`` is taken as Avro timestamp-millis.
    """
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
        origin = typing.get_origin(kind)
    if origin is tuple:
        (item, *_rest) = typing.get_args(kind)
        return tuple(from_record(item, element) for element in value)
    if origin is list:
        (item,) = typing.get_args(kind)
        return [from_record(item, element) for element in value]
    if not isinstance(kind, type):
        return value
    own = getattr(kind, "from_record", None)
    if callable(own):
        return own(value)
    if dataclasses.is_dataclass(kind):
        return kind(
            **{
                name: from_record(hint, value[name])
                for name, hint in _fields(kind)
                if name in value
            }
        )
    if issubclass(kind, enum.Enum):
        return kind(value)
    if kind is datetime.datetime and isinstance(value, int):
        return datetime.datetime.fromtimestamp(value / 1000, datetime.UTC)
    return value


@dataclasses.dataclass(frozen=True)
class _Entry(Generic[E]):
    cls: type[E]
    full_name: str
    key: Callable[[E], str]
    to_record: Callable[[E], dict[str, Any]]
    from_record: Callable[[Mapping[str, Any]], E]


class EventMap(Generic[E]):
    """A service's domain event classes and the Avro records of ``namespace`` they map to.

    Thread safety: fill it at import (``add``), then only read it; reads are safe from any thread.
    """

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._by_class: dict[type[Any], _Entry[Any]] = {}
        self._by_name: dict[str, _Entry[Any]] = {}

    def add(
        self,
        cls: type[T],
        *,
        key: Callable[[T], str],
        to_record: Callable[[T], dict[str, Any]] | None = None,
        from_record: Callable[[Mapping[str, Any]], T] | None = None,
        name: str | None = None,
    ) -> None:
        """Map ``cls`` to the record ``<namespace>.<name or class name>``, keyed (Kafka key,
        ``ce_subject``: the aggregate id) by ``key(event)``."""
        entry: _Entry[T] = _Entry(
            cls,
            f"{self.namespace}.{name or cls.__name__}",
            key,
            to_record or (lambda event: dict(as_record(event))),
            from_record or (lambda record: _from_record_of(cls, record)),
        )
        self._by_class[cls] = entry
        self._by_name[entry.full_name] = entry

    @property
    def types(self) -> frozenset[str]:
        """The Avro full names of every mapped event (== CloudEvents ``ce_type``)."""
        return frozenset(self._by_name)

    def type_of(self, event: E) -> str:
        """The Avro full name of ``event``'s record, e.g. ``shop.inventory.v1.StockSet``."""
        return self._entry(event).full_name

    def key_of(self, event: E) -> str:
        """The Kafka key (the aggregate id) of ``event``."""
        return self._entry(event).key(event)

    def to_record(self, event: E) -> dict[str, Any]:
        """``event`` as its contract's record."""
        return self._entry(event).to_record(event)

    def event(self, full_name: str, record: Mapping[str, Any]) -> E:
        """The domain event a record of type ``full_name`` describes; KeyError when unmapped."""
        entry: _Entry[E] = self._by_name[full_name]
        return entry.from_record(record)

    def _entry(self, event: E) -> _Entry[E]:
        try:
            return self._by_class[type(event)]
        except KeyError:
            raise KeyError(f"{type(event).__name__} is not an event of {self.namespace}") from None


def _from_record_of(cls: type[T], record: Mapping[str, Any]) -> T:
    result: T = from_record(cls, record)
    return result


class EventPublisher(Generic[E]):
    """Appends a service's domain events to its outbox, inside the caller's transaction.

    ``ce_time`` is the event's ``occurred_at`` when it has one. Thread-safe (the outbox is).
    """

    def __init__(
        self, outbox: Outbox, events: EventMap[E], audit: AuditTrail | None = None
    ) -> None:
        self._outbox = outbox
        self._events = events
        self._audit = audit

    def publish(self, conn: sqlite3.Connection, event: E, *, event_id: str | None = None) -> str:
        """Validate, serialize and append ``event`` in ``conn``'s open transaction; returns its
        ``ce_id`` (``event_id`` when given, which makes re-publishing idempotent downstream).

        A ``meshkit.audit.AuditEntry`` goes to the audit trail (``audit.events.v1``) instead,
        in the same transaction."""
        if isinstance(event, AuditEntry):
            if self._audit is None:
                raise RuntimeError("this publisher was built without an audit trail")
            return self._audit.record(conn, event)
        occurred_at = getattr(event, "occurred_at", None)
        return self._outbox.append(
            conn,
            self._events.type_of(event),
            self._events.to_record(event),
            key=self._events.key_of(event),
            event_id=event_id,
            time=occurred_at if isinstance(occurred_at, datetime.datetime) else None,
        )
