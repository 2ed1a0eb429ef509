"""What the orders use cases need from the outside world, as Protocols (adapters implement them)."""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, Self

from orders.domain.events import OrderEvent
from orders.domain.model import Order
from orders.domain.saga import Command, Outcome, Saga


class OrderRepository(Protocol):
    """The event store of orders, inside the current unit of work."""

    def get(self, order_id: str, *, as_of: float | None = None) -> Order | None:
        """The order folded from its events (from the latest usable snapshot on), or None.

        With ``as_of`` (unix seconds), only the events that had happened by then count; None when
        the order did not exist yet.
        """

    def save(self, order: Order) -> None:
        """Append ``order.pending`` after version ``order.version - len(order.pending)`` and
        clear it. Raises meshkit Aborted when another writer appended first (the version is
        taken). The adapter publishes each event through the outbox in the same transaction."""

    def history(self, order_id: str) -> list[tuple[int, OrderEvent]]:
        """Every stored event of the order with its version, oldest first (empty if unknown)."""


class SagaRepository(Protocol):
    """Saga state rows, inside the current unit of work."""

    def get(self, order_id: str) -> Saga | None:
        """The saga of ``order_id``, or None."""

    def save(self, saga: Saga) -> None:
        """Insert or replace the saga's row."""

    def due(self, now: float, limit: int) -> list[str]:
        """Order ids of live sagas due at ``now``, the longest waiting first."""

    def live(self) -> list[Saga]:
        """Every saga still RUNNING or COMPENSATING."""

    def recent(self, *, include_finished: bool, limit: int) -> list[Saga]:
        """Live sagas (and finished ones if asked), the oldest first."""


class RequestRepository(Protocol):
    """The PlaceOrder request ids already seen, inside the current unit of work."""

    def get(self, request_id: str) -> tuple[str, str] | None:
        """``(order_id, fingerprint)`` of an earlier request with this id, or None."""

    def add(self, request_id: str, order_id: str, fingerprint: str) -> None:
        """Remember that ``request_id`` placed ``order_id``."""


class UnitOfWork(Protocol):
    """One atomic transaction over orders, sagas and request ids (and the outbox, in the adapter).

    ``with uow:`` begins; leaving the block normally commits, an exception rolls back.
    """

    @property
    def orders(self) -> OrderRepository:
        """Orders, inside this transaction."""

    @property
    def sagas(self) -> SagaRepository:
        """Sagas, inside this transaction."""

    @property
    def requests(self) -> RequestRepository:
        """Request ids, inside this transaction."""

    def __enter__(self) -> Self:
        """Begin the transaction."""

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Commit, or roll back when the block raised."""


class Participants(Protocol):
    """The saga's participants (inventory, payments, shipping) behind one call.

    ``execute`` must not raise for a participant's answer: it returns Succeeded, Rejected (a
    business failure: the participant did nothing) or Transient (it may or may not have acted).
    Every command carries its idempotency key, so executing it twice acts once.
    """

    def execute(self, command: Command, timeout: float) -> Outcome:
        """Run ``command`` with a deadline of ``timeout`` seconds."""
