"""Fixtures of order_views' unit tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from unit.order_views.shop_events import Projection


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
