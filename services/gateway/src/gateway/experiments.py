"""``GET /v1/experiments/{experiment}/assignment``: the signed-in caller's variant of an
experiment, for a page to render (the shop page's checkout runs ``checkout-cta``).

The unit is the caller's subject (the token's ``sub``): one person sees one variant, on every
device and after every restart, since assignment is a pure function of the experiment's seed and
the unit (meshkit.control.experiments, GrowthBook's hash). The gateway assigns in process
(``ctx.experiments``, the control plane's ``experiments`` namespace pushed live) and the first
assignment of a unit in this process records the exposure (an ExperimentExposed event on
experiments.events.v1, through the kit's outbox); the unit's conversion is counted where it
happens (orders, when the unit's order is confirmed). The answer is always 200: an unknown or
stopped experiment, or a unit outside its coverage or audience, is ``inExperiment: false`` with
the reason and no variant, and the page shows what it shows everyone else.
"""

from __future__ import annotations

import re
from typing import Any

from gateway.edge import Composite
from gateway.openapi import GatewayOperation
from gateway.problems import Problem
from meshkit.control.experiments import Experiments
from meshkit.tokens import Caller

PATH = "/v1/experiments/{experiment}/assignment"
NAME = f"GET {PATH}"
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def assignment_route(experiments: Experiments) -> Composite:
    """The route, assigning through ``experiments``."""

    def handler(
        values: dict[str, str], _metadata: tuple[tuple[str, str], ...], caller: Caller
    ) -> dict[str, Any]:
        key = values["experiment"]
        if not _KEY.fullmatch(key):
            raise Problem(
                400,
                "experiment: 1 to 64 letters, digits, '.', '_' or '-', starting with a letter"
                " or digit",
                code="INVALID_ARGUMENT",
            )
        attributes = {"id": caller.sub, "roles": list(caller.roles), "clientId": caller.client_id}
        assignment = experiments.assign(key, caller.sub, attributes)
        return {
            "experiment": key,
            "variant": assignment.variant,
            "inExperiment": assignment.in_experiment,
            "reason": assignment.reason,
        }

    return Composite(NAME, re.compile(r"/v1/experiments/(?P<experiment>[^/]+)/assignment"), handler)


def operation() -> GatewayOperation:
    """The route as /openapi.json documents it."""
    return GatewayOperation(
        "GET",
        PATH,
        "GetExperimentAssignment",
        "Experiments",
        "The signed-in caller's variant of an experiment (the unit is the token's subject), for"
        " a page to render; the first assignment of a unit records its exposure. Always 200:"
        " outside the experiment (unknown, stopped, not in its coverage or audience) the answer"
        " has `inExperiment: false`, no variant, and the reason.",
        {
            "experiment": {"type": "string"},
            "variant": {"type": ["string", "null"]},
            "inExperiment": {"type": "boolean"},
            "reason": {
                "type": "string",
                "enum": [
                    "assigned",
                    "not_in_coverage",
                    "not_in_audience",
                    "stopped",
                    "unknown_experiment",
                    "no_unit",
                ],
            },
        },
    )
