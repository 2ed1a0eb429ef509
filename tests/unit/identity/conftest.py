"""The ``world`` fixture of identity's unit tests: its use cases over a fresh database (see
unit.identity.world)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from unit.identity.world import World, make_world


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    made = make_world(tmp_path / "identity.db")
    yield made
    made.db.close()
