"""The query use cases: what a customer-facing screen asks for, from the read model.

Every query may carry a consistency token (read-your-writes): it then answers only once the read
model holds the token's order at the token's version, waiting up to the time it is given, else
FailedPrecondition naming how far behind the projection is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from meshkit.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Violations,
    quoted,
)
from order_views.app.paging import bad_page_token, decode_token, encode_token, page_size
from order_views.app.ports import BadCursor, ReadModels, Signal
from order_views.domain.consistency import ConsistencyToken
from order_views.domain.model import OrderRecord, OrderStatus, OrderView
from order_views.domain.search import fts_query

MAX_QUERY_LENGTH = 512
MAX_ID_LENGTH = 128


@dataclass(frozen=True)
class Page:
    """A page of orders and the token of the next one ("" on the last page)."""

    orders: tuple[OrderRecord, ...]
    next_page_token: str = ""


class OrderQueries:
    """ListOrders, SearchOrders, GetOrderView over whichever copy serves right now.

    Thread safety: safe to share; every call takes its own lease on the serving copy, so a swap
    mid-call never pulls the copy from under it.
    """

    def __init__(self, read_models: Callable[[], ReadModels], progress: Signal) -> None:
        self._read_models = read_models
        self._progress = progress

    def list_orders(
        self,
        customer_id: str,
        status: OrderStatus | None,
        size: int,
        token: str,
        *,
        consistency: ConsistencyToken | None = None,
        wait_s: float = 0.0,
    ) -> Page:
        """A customer's (or, for "", everyone's) placed orders, newest first, one page."""
        violations = Violations()
        violations.check(len(customer_id) <= MAX_ID_LENGTH, "customer_id", "too long")
        violations.raise_if_any()
        limit = page_size(size)
        scope = ("list", customer_id, status.value if status else "")
        after = decode_token(token, scope)
        self._await(consistency, wait_s)
        try:
            with self._read_models() as model:
                rows = model.list_orders(customer_id, status, limit + 1, after)
        except BadCursor:
            raise bad_page_token() from None
        return _page(rows, limit, scope)

    def search_orders(
        self,
        query: str,
        size: int,
        token: str,
        *,
        consistency: ConsistencyToken | None = None,
        wait_s: float = 0.0,
    ) -> Page:
        """Placed orders whose id, customer, SKUs or address match every word of ``query``,
        best first. Any text is a valid query: operators and quotes are searched as words."""
        if not query.strip() or len(query) > MAX_QUERY_LENGTH:
            raise InvalidArgument(
                violations=[FieldViolation("query", f"must have 1..{MAX_QUERY_LENGTH} characters")]
            )
        limit = page_size(size)
        scope = ("search", query)
        after = decode_token(token, scope)
        self._await(consistency, wait_s)
        match = fts_query(query)
        if match is None:
            return Page(())
        try:
            with self._read_models() as model:
                rows = model.search(match, limit + 1, after)
        except BadCursor:
            raise bad_page_token() from None
        return _page(rows, limit, scope)

    def get_order_view(
        self, order_id: str, *, consistency: ConsistencyToken | None = None, wait_s: float = 0.0
    ) -> OrderView:
        """One placed order with its timeline; NotFound when the read model does not have it."""
        violations = Violations()
        if violations.check(order_id != "", "order_id", "must not be empty"):
            violations.check(len(order_id) <= MAX_ID_LENGTH, "order_id", "too long")
        violations.raise_if_any()
        self._await(consistency, wait_s)
        with self._read_models() as model:
            view = model.view(order_id)
        if view is None:
            raise NotFound(
                f"order {quoted(order_id)} is not in the read model (unknown, or not projected yet:"
                " pass PlaceOrder's consistency_token to wait for it)",
                reason="ORDER_NOT_FOUND",
                metadata={"order_id": order_id},
            )
        return view

    def owner_of(
        self, order_id: str, *, consistency: ConsistencyToken | None = None, wait_s: float = 0.0
    ) -> str | None:
        """The customer of ``order_id`` as the read model knows it (None: not projected yet),
        for permission checks; with ``consistency`` (of that same order), once the read model
        has that write or ``wait_s`` ran out."""
        if not order_id or len(order_id) > MAX_ID_LENGTH:
            return None
        if consistency is not None and consistency.order_id == order_id:
            with contextlib.suppress(FailedPrecondition):
                self._await(consistency, wait_s)
        with self._read_models() as model:
            view = model.view(order_id)
        return view.record.customer_id if view is not None else None

    def _version(self, order_id: str) -> int:
        with self._read_models() as model:
            return model.version(order_id)

    def _await(self, token: ConsistencyToken | None, wait_s: float) -> None:
        """Return once the read model has ``token``'s write; FailedPrecondition after ``wait_s``."""
        if token is None:
            return
        if self._progress.wait_for(lambda: self._version(token.order_id) >= token.version, wait_s):
            return
        have = self._version(token.order_id)
        behind = token.version - have
        raise FailedPrecondition(
            f"the read model is behind your write: it has order {quoted(token.order_id)} at version"
            f" {have}, the consistency token asks for {token.version} ({behind} version"
            f"{'s' if behind != 1 else ''} behind) after waiting {wait_s:.2f}s; retry, or"
            " give the call a longer deadline",
            reason="PROJECTION_BEHIND",
            metadata={
                "order_id": token.order_id,
                "projected_version": str(have),
                "wanted_version": str(token.version),
            },
        )


def _page(rows: list[tuple[OrderRecord, list[object]]], limit: int, scope: tuple[str, ...]) -> Page:
    more = len(rows) > limit
    rows = rows[:limit]
    token = encode_token(scope, rows[-1][1]) if more and rows else ""
    return Page(tuple(record for record, _ in rows), token)
