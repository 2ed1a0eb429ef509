"""The projector on SQLite: what an order's events make of the read model, and that duplicates,
events reordered across aggregates and topics, and unknown events change nothing they should not.
"""

from __future__ import annotations

import datetime
import random
from collections.abc import Callable

import pytest
from unit.order_views.shop_events import BASE, Projection, Published, order_life

from meshkit.money import Money
from order_views.domain.model import Fact, OrderStatus, OrderView


def view_of(copy: Projection, order_id: str) -> OrderView:
    view = copy.model.view(order_id)
    assert view is not None, order_id
    return view


def feed(copy: Projection, events: list[Published]) -> None:
    for _, _, fact in events:
        copy.apply(fact)


def interleave(streams: list[list[Published]], seed: int) -> list[Published]:
    """A random merge of the per-(topic, key) streams that keeps each stream's own order, as
    Kafka may deliver them: ordered per partition key, in any order across keys and topics."""
    by_stream: dict[tuple[str, str], list[Published]] = {}
    for stream in streams:
        for event in stream:
            by_stream.setdefault((event[0], event[1]), []).append(event)
    queues = list(by_stream.values())
    rng = random.Random(seed)
    merged: list[Published] = []
    while queues:
        queue = rng.choice(queues)
        merged.append(queue.pop(0))
        if not queue:
            queues.remove(queue)
    return merged


def test_a_confirmed_order_is_summarised_timelined_and_searchable(
    projection: Callable[[str], Projection],
) -> None:
    copy = projection("a")
    feed(copy, order_life("o-1", customer="cust-7", sku="mug-blue"))

    [(summary, _)] = copy.model.list_orders("cust-7", None, 10, None)
    assert summary.status is OrderStatus.CONFIRMED
    assert (summary.total and str(summary.total)) == "EUR 25.00"
    assert summary.version == 6 and len(summary.lines) == 1
    view = copy.model.view("o-1")
    assert view is not None
    assert (view.record.payment_state, view.record.shipment_state) == ("CAPTURED", "BOOKED")
    assert [e.description for e in view.timeline] == [
        "order placed: 1 line, EUR 25.00",
        "stock reserved",
        "payment authorized",
        "shipment booked (tracking MK1)",
        "payment captured",
        "stock committed",
        "order confirmed",
    ]
    assert [r.order_id for r, _ in copy.model.search('"mug-blue"*', 10, None)] == ["o-1"]


def test_compensations_show_on_the_timeline(projection: Callable[[str], Projection]) -> None:
    copy = projection("a")
    feed(copy, order_life("o-d", outcome="declined") + order_life("o-u", outcome="unshippable"))

    declined, unshippable = copy.model.view("o-d"), copy.model.view("o-u")
    assert declined is not None and unshippable is not None
    assert declined.record.status is OrderStatus.CANCELLED
    assert declined.record.cancellation_reason == "authorize payment: payment declined"
    assert declined.record.payment_state == "DECLINED"
    assert "stock released" in [e.description for e in declined.timeline]
    assert unshippable.record.payment_state == "VOIDED"
    assert [e.description for e in unshippable.timeline][-3:] == [
        "payment voided (nothing charged)",
        "stock released",
        "order cancelled: create shipment: FAILED_PRECONDITION",
    ]


def test_duplicates_change_nothing(projection: Callable[[str], Projection]) -> None:
    events = order_life("o-1") + order_life("o-2", outcome="declined")
    once, twice = projection("once"), projection("twice")
    feed(once, events)
    for event in events:  # each event redelivered right away, and the whole log again after
        twice.apply(event[2])
        twice.apply(event[2])
    feed(twice, events)
    assert twice.dump() == once.dump()


def test_a_batch_in_one_transaction_gives_what_one_transaction_per_event_gives(
    projection: Callable[[str], Projection],
) -> None:
    lives = [order_life(f"o-{n}", outcome=o) for n, o in enumerate(["confirmed", "declined"])]
    events = interleave(lives, seed=3)
    one_by_one, batched = projection("one-by-one"), projection("batched")
    feed(one_by_one, events)
    batched.apply_batch([fact for _, _, fact in events])
    assert batched.dump() == one_by_one.dump()


def test_an_event_rolled_back_to_its_savepoint_leaves_no_trace_in_the_batch(
    projection: Callable[[str], Projection],
) -> None:
    # The consumer applies a batch in one transaction, each record under a savepoint; a record
    # rolled back there (its handler ran) is retried later. The rest of the batch, the same
    # orders included, must be projected as if it had never been applied.
    events = [fact for _, _, fact in order_life("o-1") + order_life("o-2", outcome="unshippable")]
    dropped = [fact for n, fact in enumerate(events) if n % 3 == 0]  # OrderPlaced among them
    reference, batched = projection("reference"), projection("batched")
    batched.apply_batch(events, rolled_back={fact.id for fact in dropped})
    feed(reference, [("", "", fact) for fact in events if fact not in dropped])
    assert batched.dump() == reference.dump()
    assert reference.model.view("o-1") is None  # not placed: OrderPlaced was rolled back
    batched.apply_batch(dropped)  # the retry
    feed(reference, [("", "", fact) for fact in dropped])
    assert batched.dump() == reference.dump()
    assert view_of(batched, "o-1").record.status is OrderStatus.CONFIRMED


def test_reordered_across_aggregates_and_topics_gives_the_same_model(
    projection: Callable[[str], Projection],
) -> None:
    lives = [
        order_life(f"o-{n}", customer=f"c-{n % 3}", outcome=outcome, at=n)
        for n, outcome in enumerate(["confirmed", "declined", "unshippable", "confirmed"])
    ]
    reference = projection("reference")
    feed(reference, [event for life in lives for event in life])
    for seed in range(5):
        copy = projection(f"shuffled-{seed}")
        feed(copy, interleave(lives, seed))
        assert copy.dump() == reference.dump(), f"seed {seed}"


def test_payment_events_before_the_order_are_kept_but_not_listed(
    projection: Callable[[str], Projection],
) -> None:
    copy = projection("a")
    life = order_life("o-1")
    payments = [e for e in life if e[0] == "payments.events.v1"]
    feed(copy, payments)
    assert copy.model.list_orders("", None, 10, None) == []
    assert copy.dump()["search"] == []  # the search index holds placed orders only
    assert copy.model.view("o-1") is None
    feed(copy, [e for e in life if e[0] != "payments.events.v1"])
    view = copy.model.view("o-1")
    assert view is not None and view.record.payment_state == "CAPTURED"


def test_unknown_events_are_ignored(projection: Callable[[str], Projection]) -> None:
    copy = projection("a")
    before = copy.dump()
    stock_set = Fact("s-1", "shop.inventory.v1.StockSet", {"sku": "mug", "on_hand": 3}, BASE)
    from_the_future = Fact("x-1", "shop.orders.v2.OrderTeleported", {"order_id": "o-1"}, BASE)
    no_order = Fact("o-9:1", "shop.orders.v1.OrderConfirmed", {"occurred_at": 1}, BASE)
    assert not copy.apply(stock_set)
    assert not copy.apply(from_the_future)
    assert not copy.apply(no_order)
    assert copy.dump() == before


@pytest.mark.parametrize(
    ("price", "shown"),
    [
        (Money.of("JPY", 600), "JPY 1200"),  # no minor unit
        (Money.of("KWD", 0, 625_000_000), "KWD 1.250"),  # three decimals (fils)
        (Money.of("USD", 12, 500_000_000), "USD 25.00"),
    ],
    ids=["JPY", "KWD", "USD"],
)
def test_a_total_is_shown_with_its_currencys_decimals(
    projection: Callable[[str], Projection], price: Money, shown: str
) -> None:
    copy = projection("a")
    feed(copy, order_life("o-1", price=price))

    [(summary, _)] = copy.model.list_orders("", None, 10, None)
    assert summary.total == price * 2 and str(summary.total) == shown
    view = copy.model.view("o-1")
    assert view is not None
    assert view.record.lines[0].unit_price == price
    assert view.timeline[0].description == f"order placed: 1 line, {shown}"


def test_times_are_kept_to_the_microsecond(projection: Callable[[str], Projection]) -> None:
    copy = projection("a")
    feed(copy, order_life("o-1", at=0.123457))

    view = copy.model.view("o-1")
    assert view is not None
    placed = BASE + datetime.timedelta(seconds=1.123457)
    assert view.record.created_at == placed and view.record.created_at.tzinfo is not None
    assert view.record.updated_at == BASE + datetime.timedelta(seconds=6.123457)
    assert view.timeline[0].occurred_at == placed
