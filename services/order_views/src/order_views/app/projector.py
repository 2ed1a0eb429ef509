"""Projecting one event into the read model, inside the consumer's transaction."""

from __future__ import annotations

from order_views.app.ports import ViewStore
from order_views.domain.model import Fact, order_id_of, project


def apply_fact(store: ViewStore, fact: Fact) -> bool:
    """Fold ``fact`` into the read model through ``store`` (one open transaction: the caller
    commits it together with its inbox mark). Returns False when the projector does not apply
    the event's type (nothing is written). Idempotent: a second application changes nothing."""
    order_id = order_id_of(fact)
    if order_id is None:
        return False
    before = store.get(order_id)
    projected = project(before, fact)
    if projected is None:
        return False
    if projected.record is not before and projected.record != before:
        store.save(projected.record, reindex=projected.reindex)
    if projected.entry is not None:
        store.add_timeline(projected.entry)
    return True
