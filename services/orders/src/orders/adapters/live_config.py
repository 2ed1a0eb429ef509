"""Orders' live configuration: the control plane's namespace ``orders``, pushed to this process
(``ctx.config``, meshkit.control.LiveConfig) and read on every PlaceOrder, so a change applies to
the next order with no restart.

The document (its JSON Schema is the contract proto/shop/orders/v1/config/orders.schema.json)::

    {"max_lines_per_order": 50}

``parse_orders_config`` is orders' own validation, run on every version pushed: a value the
schema lets through but orders cannot honour is rejected (the client NACKs that version, and the
previous one stays live). ``line_limit`` turns the live snapshot into the use case's LineLimit,
which names the namespace and version in a refusal.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from meshkit.control import ConfigRejected, LiveConfig, Snapshot
from orders.app.ports import LineLimit
from orders.domain.model import MAX_LINES

NAMESPACE = "orders"
DEFAULT_MAX_LINES = 50
DEFAULTS: Mapping[str, Any] = {"max_lines_per_order": DEFAULT_MAX_LINES}
"""What orders runs with before the namespace has a document (and with no last known good)."""


@dataclass(frozen=True)
class OrdersConfig:
    """Orders' live settings: the most lines a new order may have (1 to MAX_LINES)."""

    max_lines_per_order: int = DEFAULT_MAX_LINES


def parse_orders_config(document: Mapping[str, Any]) -> OrdersConfig:
    """The document as OrdersConfig; ConfigRejected naming ``max_lines_per_order`` when it is
    not a whole number from 1 to MAX_LINES (the contract's bound: a live limit above it could
    never be honoured). A missing key means the default; keys orders does not know are left to
    the namespace's schema (a newer orders may read them)."""
    value = document.get("max_lines_per_order", DEFAULT_MAX_LINES)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigRejected(f"max_lines_per_order: must be a whole number, not {value!r}")
    if not 1 <= value <= MAX_LINES:
        raise ConfigRejected(
            f"max_lines_per_order: must be from 1 to {MAX_LINES} (PlaceOrder's contract allows"
            f" at most {MAX_LINES} lines), not {value}"
        )
    return OrdersConfig(value)


def describe(snapshot: Snapshot[OrdersConfig]) -> str:
    """Where the limit comes from, for a refusal: the namespace and version, and whether it is
    not the live document (the last known good kept on disk, or the built-in default)."""
    where = f"max_lines_per_order in config namespace {NAMESPACE}, version {snapshot.version}"
    if snapshot.source == "default":
        return f"{where} (the built-in default)"
    if snapshot.source == "last-known-good":
        return f"{where} (the last known good: the control service is not reached)"
    return where


def line_limit(live: LiveConfig[OrdersConfig]) -> Callable[[], LineLimit]:
    """The use case's ``line_limit``: the live snapshot's limit, read anew on every call
    (``LiveConfig.current`` is a lock-free read)."""

    def current() -> LineLimit:
        snapshot = live.current
        return LineLimit(snapshot.value.max_lines_per_order, describe(snapshot))

    return current
