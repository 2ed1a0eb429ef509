"""What the orders use cases need from the outside world, as Protocols (adapters implement them)."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from meshkit.control.experiments import ConversionRecorded
from meshkit.ports import UnitOfWorkPort
from orders.domain.events import OrderEvent
from orders.domain.model import Order
from orders.domain.saga import Command, Outcome, Saga


class OrderRepository(Protocol):
    """The event store of orders, inside the current unit of work."""

    def get(self, order_id: str, *, as_of: datetime.datetime | None = None) -> Order | None:
        """The order folded from its events (from the latest usable snapshot on), or None.

        With ``as_of``, only the events that had happened by then count (an event at exactly
        ``as_of`` does); None when the order did not exist yet.
        """

    def save(self, order: Order) -> None:
        """Append ``order.pending`` after version ``order.version - len(order.pending)`` and
        clear it. Raises meshkit Aborted when another writer appended first (the version is
        taken). Each appended event is also published (the unit of work's ``publish``, with
        ``<order_id>:<version>`` as its event id) in the same transaction."""

    def history(self, order_id: str) -> list[tuple[int, OrderEvent]]:
        """Every stored event of the order with its version, oldest first (empty if unknown)."""


class SagaRepository(Protocol):
    """Saga state rows, inside the current unit of work."""

    def get(self, order_id: str) -> Saga | None:
        """The saga of ``order_id``, or None."""

    def save(self, saga: Saga) -> None:
        """Insert or replace the saga's row."""

    def due(self, now: datetime.datetime, limit: int) -> list[str]:
        """Order ids of live sagas due at ``now``, the longest waiting first."""

    def live(self) -> list[Saga]:
        """Every saga still RUNNING or COMPENSATING."""

    def recent(self, *, include_finished: bool, limit: int) -> list[Saga]:
        """Live sagas (and finished ones if asked), the oldest first."""

    def beat(self, runner_id: str, now: datetime.datetime) -> None:
        """Record that the saga worker ``runner_id`` is alive at ``now``."""

    def others_alive(self, runner_id: str, since: datetime.datetime) -> bool:
        """True when a saga worker other than ``runner_id`` was alive after ``since``."""


@dataclass(frozen=True)
class LineLimit:
    """The most lines a new order may have now, and where that number comes from (said in the
    refusal, e.g. "max_lines_per_order in config namespace orders, version 3")."""

    max_lines: int
    source: str


@dataclass(frozen=True)
class SeenRequest:
    """A PlaceOrder request id remembered: the order it placed, the digest of what it asked for
    and when."""

    order_id: str
    fingerprint: str
    created_at: datetime.datetime


class RequestRepository(Protocol):
    """The PlaceOrder request ids seen within the retention window, inside the current unit of
    work."""

    def get(self, request_id: str) -> SeenRequest | None:
        """The earlier request with this id (expired or not: the caller judges), or None."""

    def add(self, request_id: str, seen: SeenRequest) -> None:
        """Remember that ``request_id`` placed ``seen.order_id`` (replacing an expired entry)."""

    def prune(self, before: datetime.datetime, limit: int) -> int:
        """Forget up to ``limit`` requests made before ``before``; returns how many."""


Conversion = ConversionRecorded
"""An experiment conversion (meshkit.control.experiments): what a confirmed order counts."""


class UnitOfWork(UnitOfWorkPort[OrderEvent | Conversion], Protocol):
    """One transaction over orders, sagas and request ids; the event store ``publish``es each
    event it appends (meshkit's port), and the saga an order's experiment conversions."""

    @property
    def orders(self) -> OrderRepository:
        """Orders, inside this transaction."""

    @property
    def sagas(self) -> SagaRepository:
        """Sagas, inside this transaction."""

    @property
    def requests(self) -> RequestRepository:
        """Request ids, inside this transaction."""


class EventRecords(Protocol):
    """How an order event reads outside the service: the full name of its contract's record and
    the record (``meshkit.events.EventMap`` is one; the composition root hands it to the edge)."""

    def type_of(self, event: OrderEvent) -> str:
        """The Avro full name, e.g. ``shop.orders.v1.OrderPlaced``."""

    def to_record(self, event: OrderEvent) -> Mapping[str, Any]:
        """The record: its times are aware datetimes (Avro timestamp-millis)."""


class Participants(Protocol):
    """The saga's participants (inventory, payments, shipping) behind one call.

    ``execute`` must not raise for a participant's answer: it returns Succeeded, Rejected (a
    business failure: the participant did nothing) or Transient (it may or may not have acted).
    Every command carries its idempotency key, so executing it twice acts once.
    """

    def execute(self, command: Command, timeout: float) -> Outcome:
        """Run ``command`` with a deadline of ``timeout`` seconds."""
