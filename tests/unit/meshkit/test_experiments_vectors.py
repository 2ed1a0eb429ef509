"""meshkit.control.experiments against GrowthBook's own test vectors (a selection of
packages/sdk-js/test/cases.json; provenance in the file): the hash (v1 and v2), getBucketRange,
chooseVariation, and the experiment-run cases whose features we have.

The vectors are GrowthBook's, so they are not committed here (fetched material stays out of the
repo): they are looked for in ``$MESH_GROWTHBOOK_REFERENCE``, ``tests/fixtures/growthbook`` and
``<repo>/../shared/reference/growthbook`` (its README gives repository, commit and path). Without
them the module is skipped, saying so; it never passes without running."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from meshkit.control.experiments import (
    ASSIGNED,
    Experiment,
    Variant,
    assign_unit,
    bucket_ranges,
    choose_variation,
    gb_hash,
)

ROOT = Path(__file__).resolve().parents[3]


def _cases() -> dict[str, Any] | None:
    for candidate in (
        os.environ.get("MESH_GROWTHBOOK_REFERENCE", ""),
        str(ROOT / "tests" / "fixtures" / "growthbook"),
        str(ROOT.parent / "shared" / "reference" / "growthbook"),
    ):
        if candidate and (Path(candidate) / "cases.json").is_file():
            loaded: dict[str, Any] = json.loads((Path(candidate) / "cases.json").read_text())
            return loaded
    return None


_FOUND = _cases()
if _FOUND is None:
    pytest.skip(
        "GrowthBook's cases.json is not here: see the module doc (looked in"
        " $MESH_GROWTHBOOK_REFERENCE, tests/fixtures/growthbook and"
        " ../shared/reference/growthbook)",
        allow_module_level=True,
    )
CASES: dict[str, Any] = _FOUND


@pytest.mark.parametrize(("seed", "value", "version", "expected"), CASES["hash"])
def test_hash(seed: str, value: str, version: int, expected: float | None) -> None:
    assert gb_hash(seed, value, version) == expected


@pytest.mark.parametrize(
    ("name", "args", "expected"),
    CASES["getBucketRange"],
    ids=[c[0] for c in CASES["getBucketRange"]],
)
def test_bucket_ranges(name: str, args: list[Any], expected: list[list[float]]) -> None:
    count, coverage, weights = args
    ranges = bucket_ranges(count, coverage, weights)
    assert len(ranges) == len(expected)
    for got, want in zip(ranges, expected, strict=True):
        assert got == pytest.approx(tuple(want), abs=1e-9)


@pytest.mark.parametrize(
    ("name", "n", "ranges", "expected"),
    CASES["chooseVariation"],
    ids=[c[0] for c in CASES["chooseVariation"]],
)
def test_choose_variation(name: str, n: float, ranges: list[list[float]], expected: int) -> None:
    assert choose_variation(n, [tuple(r) for r in ranges]) == expected  # type: ignore[misc]


def _experiment(raw: dict[str, Any]) -> Experiment:
    """GrowthBook's experiment as ours: variations are variant keys "0", "1"...; ``active``
    false is status stopped; a condition {attr: value} is the JsonLogic audience
    {"==": [{"var": attr}, value]}; GrowthBook's default hashVersion is 1 (ours is 2)."""
    count = len(raw["variations"])
    weights = raw.get("weights") or [1 / count] * count
    condition = raw.get("condition")
    audience = None
    if condition is not None:
        ((attribute, value),) = condition.items()
        audience = {"==": [{"var": attribute}, value]}
    return Experiment(
        key=raw["key"],
        variants=tuple(Variant(str(i), w) for i, w in enumerate(weights)),
        coverage=raw.get("coverage", 1.0),
        seed=raw.get("seed", ""),
        hash_attribute=raw.get("hashAttribute", "id"),
        audience=audience,
        status="stopped" if raw.get("active") is False else "running",
        hash_version=raw.get("hashVersion", 1),
    )


@pytest.mark.parametrize(
    ("name", "context", "raw", "value", "in_experiment", "hash_used"),
    CASES["run"],
    ids=[c[0] for c in CASES["run"]],
)
def test_run(
    name: str,
    context: dict[str, Any],
    raw: dict[str, Any],
    value: int,
    in_experiment: bool,
    hash_used: bool,
) -> None:
    attributes = context.get("attributes", {})
    experiment = _experiment(raw)
    unit = attributes.get("id")
    assignment = assign_unit(experiment, unit if isinstance(unit, str) else "", attributes)
    assert assignment.in_experiment is in_experiment
    if in_experiment:
        assert assignment.reason == ASSIGNED
        assert assignment.variant == str(value)
    else:
        # GrowthBook serves the first variation to a unit outside; ours says None (the
        # caller's default) and why.
        assert value == 0
        assert assignment.variant is None
