"""GET /v1/experiments/{experiment}/assignment: the caller's variant (unit = the token's subject),
its exposure recorded once, and an answer of 200 whatever the experiment's state."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.experiments import NAME, assignment_route, operation
from gateway.problems import Problem
from meshkit.control.experiments import (
    ExperimentExposed,
    Experiments,
    assign_unit,
    parse_experiments,
    static_experiments,
)
from meshkit.tokens import Caller

REPO = Path(__file__).resolve().parents[3]
# The shop's own experiments document, as `mesh up` loads it.
SHOP = json.loads((REPO / "proto" / "shop" / "config" / "experiments.json").read_text())


def caller(sub: str) -> Caller:
    return Caller(sub=sub, client_id="shop-web", scope="orders", roles=("customer",), token="t")


def route(document: dict[str, Any]) -> tuple[Any, list[Any]]:
    written: list[Any] = []
    experiments = Experiments(static_experiments(document), written.append, service="gateway")
    return assignment_route(experiments), written


def test_the_caller_gets_the_experiments_own_assignment_and_one_exposure() -> None:
    composite, written = route(SHOP)
    assert composite.name == NAME
    matched = composite.pattern.fullmatch("/v1/experiments/checkout-cta/assignment")
    assert matched is not None
    answers = [composite.handler(matched.groupdict(), (), caller(f"user-{n}")) for n in range(40)]
    definition = parse_experiments(SHOP)["checkout-cta"]
    expected = [assign_unit(definition, f"user-{n}", None).variant for n in range(40)]
    assert [a["variant"] for a in answers] == expected
    assert {a["variant"] for a in answers} == {"control", "buy-now"}  # both are served
    assert all(a["inExperiment"] and a["reason"] == "assigned" for a in answers)
    # Asked again (a reload): the same variant, no second exposure.
    again = composite.handler(matched.groupdict(), (), caller("user-0"))
    assert again == answers[0]
    exposures = [e for e in written if isinstance(e, ExperimentExposed)]
    assert [(e.experiment, e.unit_id, e.variant) for e in exposures] == [
        ("checkout-cta", f"user-{n}", expected[n]) for n in range(40)
    ]


def test_outside_the_experiment_the_answer_is_200_with_no_variant_and_no_exposure() -> None:
    stopped = json.loads(json.dumps(SHOP))
    stopped["experiments"]["checkout-cta"]["status"] = "stopped"
    composite, written = route(stopped)
    answer = composite.handler({"experiment": "checkout-cta"}, (), caller("user-1"))
    assert answer == {
        "experiment": "checkout-cta",
        "variant": None,
        "inExperiment": False,
        "reason": "stopped",
    }
    unknown = composite.handler({"experiment": "no-such"}, (), caller("user-1"))
    assert (unknown["variant"], unknown["reason"]) == (None, "unknown_experiment")
    assert written == []


def test_a_malformed_experiment_key_is_a_400() -> None:
    composite, _ = route(SHOP)
    with pytest.raises(Problem) as refused:
        composite.handler({"experiment": "-" + "x" * 80}, (), caller("user-1"))
    assert (refused.value.status, refused.value.code) == (400, "INVALID_ARGUMENT")


def test_the_route_is_documented() -> None:
    documented = operation()
    assert (documented.http_method, documented.template) == ("GET", NAME.split(" ", 1)[1])
    assert set(documented.reply) == {"experiment", "variant", "inExperiment", "reason"}
