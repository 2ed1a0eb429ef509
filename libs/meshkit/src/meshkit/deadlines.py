"""The request's deadline budget: what is left of the inbound call's deadline, carried to every
call a handler makes, so a server answering a request with 300 ms left never calls downstream with
more (gRPC Python does not propagate deadlines itself: grpc/grpc PR #17489).

The kit's server edge makes each RPC's budget current (``bound(context.time_remaining())``) for
its handler; meshkit.client's channels give every outgoing call ``outgoing_timeout(timeout)``:
the call's own timeout, else the mesh default (``MESH_DEADLINE_S``, 5 s), cut to the budget. So
no call of the kit is ever unbounded, and none outlives the request it serves.

A caller that set no deadline makes ``time_remaining()`` huge (grpc/grpc #26236); that counts as
no budget (the mesh default then applies), not as a budget of years.

Stdlib only; contextvars, so a budget follows the handler's thread (and the copies of its
context), not the process.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from contextvars import ContextVar

ENV_DEFAULT = "MESH_DEADLINE_S"
DEFAULT_S = 5.0
# time_remaining() of a call without a deadline is about 2**63 ns; anything above this is "none".
NO_DEADLINE_S = 1e6

_deadline: ContextVar[float | None] = ContextVar("meshkit_deadline", default=None)


def default_s() -> float:
    """The mesh default deadline: ``$MESH_DEADLINE_S`` (a positive number of seconds), else 5."""
    raw = os.environ.get(ENV_DEFAULT, "").strip()
    if raw:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{ENV_DEFAULT}={raw!r} is not a number of seconds") from None
        if value > 0:
            return value
        raise ValueError(f"{ENV_DEFAULT}={raw!r} must be more than 0")
    return DEFAULT_S


def remaining() -> float | None:
    """Seconds left of the current request's budget (may be <= 0: spent), None when there is
    no budget (outside a handler, or the caller set no deadline)."""
    deadline = _deadline.get()
    return None if deadline is None else deadline - time.monotonic()


@contextlib.contextmanager
def bound(seconds_left: float | None) -> Iterator[None]:
    """Make a budget of ``seconds_left`` current for the block (nested budgets only shrink:
    an inner one cannot outlive the outer). None, or a huge value, adds no budget."""
    outer = _deadline.get()
    deadline = outer
    if seconds_left is not None and seconds_left < NO_DEADLINE_S:
        mine = time.monotonic() + seconds_left
        deadline = mine if outer is None else min(outer, mine)
    token = _deadline.set(deadline)
    try:
        yield
    finally:
        _deadline.reset(token)


def outgoing_timeout(timeout: float | None, default: float | None = None) -> float:
    """The timeout an outgoing call gets: ``timeout`` (else ``default``, else the mesh default),
    never more than the current budget, never below 0 (a spent budget fails the call at once
    with DEADLINE_EXCEEDED instead of sending it)."""
    chosen = timeout if timeout is not None else (default if default is not None else default_s())
    left = remaining()
    if left is not None and left < chosen:
        chosen = left
    return max(0.0, chosen)
