"""Properties the issue asks of assignment: the same in every process, a change of coverage or
weights moves only the share of units it must, two experiments independent of each other; and
the definitions' parse rejecting what cannot run, naming the experiment and the field."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from typing import Any

import pytest

from meshkit.control.config import ConfigRejected
from meshkit.control.experiments import (
    NO_UNIT,
    NOT_IN_AUDIENCE,
    NOT_IN_COVERAGE,
    STOPPED,
    UNKNOWN_EXPERIMENT,
    Experiment,
    Variant,
    assign_unit,
    fnv1a32,
    parse_experiments,
)

UNITS = [f"user-{i}" for i in range(20_000)]


def experiment(key: str = "checkout-cta", **fields: Any) -> Experiment:
    return Experiment(
        key=key,
        variants=fields.pop("variants", (Variant("control", 0.5), Variant("buy-now", 0.5))),
        **fields,
    )


def variants_of(exp: Experiment, units: list[str]) -> list[str | None]:
    return [assign_unit(exp, unit).variant for unit in units]


def test_another_process_assigns_every_unit_the_same() -> None:
    # A fresh interpreter has another str hash seed: assignment must not depend on it.
    units = UNITS[:2000]
    script = (
        "import json, sys\n"
        "from meshkit.control.experiments import Experiment, Variant, assign_unit\n"
        "exp = Experiment('checkout-cta', (Variant('control', 0.3), Variant('a', 0.3),"
        " Variant('b', 0.4)), coverage=0.9)\n"
        "units = json.load(sys.stdin)\n"
        "print(json.dumps([assign_unit(exp, u).variant for u in units]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(units),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
    )
    here = experiment(
        variants=(Variant("control", 0.3), Variant("a", 0.3), Variant("b", 0.4)), coverage=0.9
    )
    assert json.loads(done.stdout) == variants_of(here, units)


def test_raising_coverage_only_adds_units() -> None:
    before = variants_of(experiment(coverage=0.5), UNITS)
    after = variants_of(experiment(coverage=0.8), UNITS)
    moved = sum(1 for b, a in zip(before, after, strict=True) if b is not None and a != b)
    assert moved == 0  # nobody in the experiment changes variant, nobody leaves it
    added = sum(1 for b, a in zip(before, after, strict=True) if b is None and a is not None)
    assert added / len(UNITS) == pytest.approx(0.3, abs=0.015)


def test_changing_weights_moves_only_the_share_between_the_boundaries() -> None:
    before = variants_of(experiment(), UNITS)
    shifted = (Variant("control", 0.4), Variant("buy-now", 0.6))
    after = variants_of(experiment(variants=shifted), UNITS)
    moves = [(b, a) for b, a in zip(before, after, strict=True) if a != b]
    # Only control -> buy-now, and only the units whose bucket lies in [0.4, 0.5): ~10 %.
    assert set(moves) == {("control", "buy-now")}
    assert len(moves) / len(UNITS) == pytest.approx(0.1, abs=0.01)


def test_two_experiments_are_independent() -> None:
    first = variants_of(experiment("checkout-cta"), UNITS)
    second = variants_of(experiment("free-shipping-banner"), UNITS)
    table = {(a, b): 0 for a in ("control", "buy-now") for b in ("control", "buy-now")}
    for pair in zip(first, second, strict=True):
        table[pair] += 1  # type: ignore[index]
    total = len(UNITS)
    rows = {a: sum(v for (x, _), v in table.items() if x == a) for a in ("control", "buy-now")}
    cols = {b: sum(v for (_, y), v in table.items() if y == b) for b in ("control", "buy-now")}
    chi_square = sum(
        (observed - rows[a] * cols[b] / total) ** 2 / (rows[a] * cols[b] / total)
        for (a, b), observed in table.items()
    )
    p_value = math.erfc(math.sqrt(chi_square / 2))  # chi-square, 1 degree of freedom
    assert p_value > 0.001, (table, chi_square)


def test_the_split_follows_the_weights() -> None:
    exp = experiment(variants=(Variant("control", 0.2), Variant("a", 0.3), Variant("b", 0.5)))
    found = variants_of(exp, UNITS)
    for key, weight in (("control", 0.2), ("a", 0.3), ("b", 0.5)):
        assert found.count(key) / len(UNITS) == pytest.approx(weight, abs=0.015)


def test_why_a_unit_is_not_in_the_experiment() -> None:
    assert assign_unit(None, "u1", key="nope").reason == UNKNOWN_EXPERIMENT
    assert assign_unit(experiment(status="stopped"), "u1").reason == STOPPED
    assert assign_unit(experiment(), "").reason == NO_UNIT
    assert assign_unit(experiment(coverage=0.0), "u1").reason == NOT_IN_COVERAGE
    german = experiment(audience={"in": [{"var": "country"}, ["DE", "AT"]]})
    assert assign_unit(german, "u1", {"country": "FR"}).reason == NOT_IN_AUDIENCE
    assert assign_unit(german, "u1", {"country": "DE"}).in_experiment
    # flagd's operators work in audiences too.
    staff = experiment(audience={"ends_with": [{"var": "email"}, "@example.com"]})
    assert assign_unit(staff, "u1", {"email": "a@example.com"}).in_experiment
    assert not assign_unit(staff, "u1", {"email": "a@other.org"}).in_experiment


def test_a_broken_audience_keeps_units_out_and_never_raises() -> None:
    odd = experiment(audience={"<": [{"var": "age"}, 18]})
    assert assign_unit(odd, "u1", {"age": "old"}).reason == NOT_IN_AUDIENCE


def test_another_hash_attribute_buckets_by_that_attribute() -> None:
    exp = experiment(hash_attribute="company")
    one = assign_unit(exp, "u1", {"company": "acme"})
    two = assign_unit(exp, "u2", {"company": "acme"})
    assert one == two and one.in_experiment
    assert assign_unit(exp, "u1", {}).reason == NO_UNIT


def test_fnv_hashes_utf16_code_units_as_javascript_does() -> None:
    # U+1F600 is the surrogate pair D83D DE00 in UTF-16: two steps of FNV, as charCodeAt sees.
    expected = 0x811C9DC5
    for unit in (0xD83D, 0xDE00):
        expected = ((expected ^ unit) * 0x01000193) & 0xFFFFFFFF
    assert fnv1a32("\U0001f600") == expected
    assert fnv1a32("é") == ((0x811C9DC5 ^ 0xE9) * 0x01000193) & 0xFFFFFFFF


DEFINITION = {
    "variants": [{"key": "control", "weight": 0.5}, {"key": "buy-now", "weight": 0.5}],
    "coverage": 1.0,
    "seed": "",
    "hashAttribute": "id",
    "audience": {"==": [{"var": "country"}, "DE"]},
    "metric": "order_confirmed",
    "status": "running",
}


def test_parse_reads_the_namespace_document() -> None:
    parsed = parse_experiments({"experiments": {"checkout-cta": DEFINITION}})
    assert parsed["checkout-cta"] == Experiment(
        key="checkout-cta",
        variants=(Variant("control", 0.5), Variant("buy-now", 0.5)),
        audience={"==": [{"var": "country"}, "DE"]},
        metric="order_confirmed",
    )
    assert parse_experiments({}) == {}
    equal = parse_experiments({"experiments": {"x": {"variants": [{"key": "a"}, {"key": "b"}]}}})
    assert [v.weight for v in equal["x"].variants] == [0.5, 0.5]


@pytest.mark.parametrize(
    ("change", "names"),
    [
        ({"variants": [{"key": "control", "weight": 1.0}]}, "checkout-cta.variants"),
        (
            {"variants": [{"key": "a", "weight": 0.5}, {"key": "b", "weight": 0.3}]},
            "checkout-cta.variants: the weights add up to 0.8",
        ),
        ({"coverage": 1.5}, "checkout-cta.coverage"),
        ({"coverage": -0.1}, "checkout-cta.coverage"),
        ({"status": "paused"}, "checkout-cta.status"),
        ({"hashVersion": 3}, "checkout-cta.hashVersion"),
        ({"audience": {"bogus": [1]}}, "checkout-cta.audience: unknown JsonLogic operation"),
        (
            {"variants": [{"key": "a", "weight": 0.5}, {"key": "a", "weight": 0.5}]},
            "checkout-cta.variants[1].key",
        ),
        (
            {"variants": [{"key": "a", "weight": 0.5}, {"key": "b"}]},
            "checkout-cta.variants: give every variant a weight",
        ),
    ],
)
def test_parse_rejects_naming_the_experiment_and_field(change: dict[str, Any], names: str) -> None:
    with pytest.raises(ConfigRejected) as raised:
        parse_experiments({"experiments": {"checkout-cta": DEFINITION | change}})
    assert f"experiments.{names}" in str(raised.value)


def test_parse_tolerates_weights_off_by_rounding() -> None:
    thirds = [{"key": k, "weight": 0.333} for k in ("a", "b", "c")]
    assert len(parse_experiments({"experiments": {"x": {"variants": thirds}}})["x"].variants) == 3
