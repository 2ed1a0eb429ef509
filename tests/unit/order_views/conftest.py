"""Fixtures of order_views' unit tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path

import pytest
from unit.order_views.grpc_server import serving
from unit.order_views.shop_events import Projection

from meshkit.service import binding
from order_views.app.progress import Progress
from order_views.app.queries import OrderQueries
from order_views.entrypoints.grpc_api import OrderViewsServicer
from shop.order_views.v1 import order_views_pb2_grpc as pb_grpc


@pytest.fixture
def projection(tmp_path: Path) -> Iterator[Callable[[str], Projection]]:
    """A factory of fresh copies (``projection("a")``), closed after the test."""
    made: list[Projection] = []

    def make(name: str = "copy") -> Projection:
        made.append(Projection(tmp_path / f"{name}.db"))
        return made[-1]

    yield make
    for p in made:
        p.db.close()


@pytest.fixture
def served(
    projection: Callable[[str], Projection],
) -> Iterator[tuple[Projection, pb_grpc.OrderViewsServiceStub]]:
    """A copy and a stub of the OrderViewsService serving it on a real gRPC server (port 0)."""
    copy = projection("served")
    queries = OrderQueries(lambda: nullcontext(copy.model), Progress())
    servicer = OrderViewsServicer(queries, list)
    with serving(binding(servicer, pb_grpc.add_OrderViewsServiceServicer_to_server)) as channel:
        yield copy, pb_grpc.OrderViewsServiceStub(channel)
