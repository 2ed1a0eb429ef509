"""What the use cases need from the outside world, as Protocols (adapters implement them)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from order_views.domain.model import OrderRecord, OrderStatus, OrderView, TimelineEntry

Cursor = list[Any]
"""Where a page ended, as the read model understands it (JSON-able; opaque to callers)."""

Positions = dict[tuple[str, int], int]
"""Next offset to apply per (topic, partition)."""


class BadCursor(ValueError):
    """A page cursor the read model cannot continue from (a forged or corrupted page token)."""


@dataclass(frozen=True)
class PartitionPosition:
    """The serving copy's position in one partition and what is left to apply there
    (GetProjectionStatus; the Kafka adapter measures it)."""

    topic: str
    partition: int
    position: int
    lag: int


class ViewStore(Protocol):
    """The read model inside one open write transaction (the consumer's, with its inbox mark)."""

    def get(self, order_id: str) -> OrderRecord | None:
        """The order's record, or None."""

    def save(self, record: OrderRecord, *, reindex: bool) -> None:
        """Insert or replace the record; with ``reindex`` also (re)write its search entry."""

    def add_timeline(self, entry: TimelineEntry) -> None:
        """Add the entry unless the order already has one with its event id."""


class ReadModel(Protocol):
    """Queries over one copy of the read model; each call reads one consistent snapshot.
    Thread safety: callable from any thread."""

    def list_orders(
        self, customer_id: str, status: OrderStatus | None, limit: int, after: Cursor | None
    ) -> list[tuple[OrderRecord, Cursor]]:
        """Up to ``limit`` placed orders, newest first, after ``after``; each with its cursor.
        Raises BadCursor when ``after`` is not a cursor this listing made."""

    def search(
        self, match: str, limit: int, after: Cursor | None
    ) -> list[tuple[OrderRecord, Cursor]]:
        """Up to ``limit`` placed orders matching the FTS5 expression, best first. Raises
        BadCursor when ``after`` is not a cursor this search made."""

    def view(self, order_id: str) -> OrderView | None:
        """The placed order with its timeline, or None."""

    def version(self, order_id: str) -> int:
        """The order's projected orders-stream version; 0 when the model has not seen it."""


ReadModels = AbstractContextManager[ReadModel]
"""A lease on the copy that serves queries right now: the copy is not deleted while leased."""


class Copy(Protocol):
    """One copy of the read model: a database and the consumer group that fills it."""

    generation: int

    def positions(self) -> Positions:
        """Next offset to apply per partition, as far as this copy has applied them."""

    def applied(self) -> int:
        """How many events this copy has applied (handled or skipped)."""

    def start(self, *, replay: bool = False) -> None:
        """Start consuming (from the group's committed offsets; a new group from the start).
        ``replay``: from offset 0 of every partition, and where a log no longer starts there,
        apply nothing more rather than skip ahead."""

    def stop(self) -> None:
        """Stop consuming and wait until the consumer has let go; idempotent."""


class Copies(Protocol):
    """The copies of the read model and which one serves (thread-safe)."""

    def active(self) -> Copy:
        """The copy that serves queries."""

    def create(self) -> Copy:
        """A new, empty copy with a generation above every other, recorded as building."""

    def swap(self, fresh: Copy) -> Copy:
        """Make ``fresh`` the serving copy, durably and atomically; returns the old one. New
        queries read ``fresh`` from here on; leases on the old one stay valid. Raises Aborted
        when the serving copy changed meanwhile (another process swapped)."""

    def discard(self, copy: Copy) -> None:
        """Let go of a copy that does not serve (waiting for its leases to end first); it is
        deleted once no process holds it."""


class TopicLog(Protocol):
    """Where the logs of the consumed topics start now (Kafka's low watermarks)."""

    def starts(self) -> Positions:
        """The first offset still stored, per partition of every consumed topic that exists:
        0 while nothing was deleted; above 0 once retention (or an operator) removed the
        records before it."""


class Signal(Protocol):
    """Waits for the read model to advance (see order_views.app.progress.Progress)."""

    def wait_for(self, predicate: Any, timeout: float) -> bool:
        """True once ``predicate()`` holds; False after ``timeout`` seconds."""
