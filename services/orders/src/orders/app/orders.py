"""The orders use cases: place an order (and start its saga), read orders, their history, sagas."""

from __future__ import annotations

import datetime
import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from meshkit import timestamps
from meshkit.address import Address, WireAddress
from meshkit.audit import AuditEntry
from meshkit.errors import AlreadyExists, NotFound, Violations, quoted
from orders.app.ports import LineLimit, SeenRequest, UnitOfWork
from orders.domain.events import OrderEvent
from orders.domain.model import MAX_ID, MAX_LINES, LineRequest, Order, validate_place_order
from orders.domain.saga import RetryPolicy, Saga
from orders.domain.values import OrderLine

DEFAULT_REQUEST_RETENTION = datetime.timedelta(hours=24)
PRUNE_BATCH = 100
"""Expired request ids forgotten per PlaceOrder, at most (more than one PlaceOrder adds)."""


@dataclass(frozen=True)
class PlaceOrder:
    """The PlaceOrder request, as the use case sees it (prices and address as sent: the use
    case checks them)."""

    request_id: str
    customer_id: str
    lines: tuple[LineRequest, ...]
    payment_token: str
    shipping_address: WireAddress | None


@dataclass(frozen=True)
class Placed:
    """The order of a PlaceOrder call; ``created`` is False on a replay of the request id."""

    order: Order
    created: bool


@dataclass(frozen=True)
class SagaSummary:
    """A saga as operators see it: its state, how old it is and whether it looks stuck."""

    saga: Saga
    age: datetime.timedelta
    stuck: bool


OWNERS_KEPT = 100_000  # order owners remembered for permission checks (~10 MB at most)


def _nothing() -> None:
    return None


_CONTRACT_LIMIT = LineLimit(MAX_LINES, "the contract's bound")


def _contract_limit() -> LineLimit:
    return _CONTRACT_LIMIT


def _new_id() -> str:
    return str(uuid.uuid4())


class Orders:
    """Places and reads orders.

    Thread safety: safe to share; every call opens its own unit of work. Transactions: placing
    writes the OrderPlaced event (and its outbox row), the saga's first state and the request id
    in one transaction. Idempotency: a request id seen within ``request_retention`` (24 h by
    default) returns its order and starts nothing (AlreadyExists when the same id comes with a
    different order); an older one is forgotten, so its replay places a new order. Each
    PlaceOrder also forgets a batch of expired request ids. Reads go through ``read_only``
    (a unit of work that takes no write lock; by default ``unit_of_work``).

    ``line_limit`` is asked on every PlaceOrder for the most lines a new order may have (the
    live configuration's ``max_lines_per_order``), so a change applies to the next order with no
    restart; the contract's own bound (MAX_LINES) always holds too. A replay of a request id
    answers its order even if the limit went down since: the limit is for new orders.
    """

    def __init__(
        self,
        unit_of_work: Callable[[], UnitOfWork],
        *,
        clock: Callable[[], datetime.datetime] = timestamps.now,
        new_id: Callable[[], str] = _new_id,
        on_placed: Callable[[], None] = _nothing,
        policy: RetryPolicy | None = None,
        trace_context: Callable[[], str | None] = lambda: None,
        request_retention: datetime.timedelta = DEFAULT_REQUEST_RETENTION,
        read_only: Callable[[], UnitOfWork] | None = None,
        line_limit: Callable[[], LineLimit] = _contract_limit,
    ) -> None:
        self._uow = unit_of_work
        self._line_limit = line_limit
        self._read = read_only or unit_of_work
        self._retention = request_retention
        self._trace_context = trace_context
        self._clock = clock
        self._new_id = new_id
        self._on_placed = on_placed
        self._policy = policy or RetryPolicy()
        self._owners: dict[str, str] = {}  # order id -> customer, see owner_of

    def place(self, command: PlaceOrder) -> Placed:
        """Accept the order PENDING and start its saga, or return the order of a replay."""
        lines, address = validate_place_order(
            request_id=command.request_id,
            customer_id=command.customer_id,
            lines=command.lines,
            payment_token=command.payment_token,
            shipping_address=command.shipping_address,
        )
        fingerprint = _fingerprint(command.customer_id, lines, command.payment_token, address)
        with self._uow() as uow:
            now = self._clock()
            cutoff = now - self._retention
            uow.requests.prune(cutoff, PRUNE_BATCH)
            seen = uow.requests.get(command.request_id)
            if seen is not None and seen.created_at >= cutoff:
                if seen.fingerprint != fingerprint:
                    raise AlreadyExists(
                        f"request_id {quoted(command.request_id)} was used for a different order",
                        reason="REQUEST_ID_REUSED",
                        metadata={"order_id": seen.order_id},
                    )
                order = uow.orders.get(seen.order_id)
                assert order is not None, f"request {command.request_id} names a lost order"
                return Placed(order, created=False)
            _check_line_limit(len(lines), self._line_limit())
            order = Order.place(
                self._new_id(),
                request_id=command.request_id,
                customer_id=command.customer_id,
                lines=lines,
                shipping_address=address,
                now=now,
            )
            uow.orders.save(order)
            uow.publish(
                AuditEntry(
                    "orders.place",
                    resource_type="Order",
                    resource_id=order.order_id,
                    details={"customer_id": command.customer_id, "lines": str(len(lines))},
                )
            )
            traceparent = self._trace_context() or ""
            uow.sagas.save(Saga.start(order.order_id, command.payment_token, now, traceparent))
            uow.requests.add(command.request_id, SeenRequest(order.order_id, fingerprint, now))
        self._on_placed()
        return Placed(order, created=True)

    def get(self, order_id: str, as_of: datetime.datetime | None = None) -> Order:
        """The order now, or as it was at ``as_of``; NotFound when unknown (or not yet placed)."""
        _check_order_id(order_id)
        with self._read() as uow:
            order = uow.orders.get(order_id, as_of=as_of)
        if order is None:
            when = "" if as_of is None else " at that time"
            raise NotFound(
                f"no order {quoted(order_id)}{when}",
                reason="ORDER_NOT_FOUND",
                metadata={"order_id": order_id},
            )
        return order

    def owner_of(self, order_id: str) -> str | None:
        """The customer who placed ``order_id`` (None: no such order), for permission checks;
        an order's customer never changes, so the answer is kept."""
        owner = self._owners.get(order_id)
        if owner is None:
            with self._read() as uow:
                order = uow.orders.get(order_id)
            if order is None:
                return None
            owner = order.customer_id
            if len(self._owners) >= OWNERS_KEPT:
                self._owners.pop(next(iter(self._owners)), None)
            self._owners[order_id] = owner
        return owner

    def history(self, order_id: str) -> list[tuple[int, OrderEvent]]:
        """Every event of the order with its version, oldest first; NotFound when unknown."""
        _check_order_id(order_id)
        with self._read() as uow:
            events = uow.orders.history(order_id)
        if not events:
            raise NotFound(
                f"no order {quoted(order_id)}",
                reason="ORDER_NOT_FOUND",
                metadata={"order_id": order_id},
            )
        return events

    def sagas(self, *, include_finished: bool = False, limit: int = 100) -> list[SagaSummary]:
        """Sagas in flight (and finished ones if asked), oldest first, flagged when stuck."""
        now = self._clock()
        with self._read() as uow:
            sagas = uow.sagas.recent(include_finished=include_finished, limit=limit)
        return [SagaSummary(s, s.age(now), s.is_stuck(now, self._policy)) for s in sagas]


def _check_line_limit(count: int, limit: LineLimit) -> None:
    """InvalidArgument on ``lines`` when a new order has more lines than ``limit`` allows."""
    v = Violations()
    v.check(
        count <= limit.max_lines,
        "lines",
        f"must have at most {limit.max_lines} line{'' if limit.max_lines == 1 else 's'}:"
        f" {limit.source}",
    )
    v.raise_if_any()


def _check_order_id(order_id: str) -> None:
    v = Violations()
    if v.check(order_id != "", "order_id", "must not be empty"):
        v.check(len(order_id) <= MAX_ID, "order_id", f"must be at most {MAX_ID} characters")
    v.raise_if_any()


def _fingerprint(
    customer_id: str, lines: tuple[OrderLine, ...], payment_token: str, address: Address
) -> str:
    """A digest of everything a request asks for but its id: a replay must match it. (The JSON
    is the one earlier releases digested, so a replay across an upgrade still matches.)"""
    body = {
        "customer_id": customer_id,
        "lines": [
            {"sku": line.sku, "quantity": line.quantity, "unit_price": line.unit_price.to_record()}
            for line in lines
        ],
        "payment_token": payment_token,
        "shipping_address": address.to_record(),
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
