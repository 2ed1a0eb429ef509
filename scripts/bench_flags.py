"""Feature-flag evaluation in process: what ``client.get_boolean_value(...)`` costs a service.

A service evaluates its flags through the OpenFeature client over meshkit's provider
(meshkit.control.flags: flagd's evaluator, FlagdCore, plus SPLIT and TARGETING_KEY_MISSING), with
no RPC. This measures one call, on one thread, for a static flag (no targeting) and a targeted one
(the shop's shape: a country list, then a 20 % ``fractional`` rollout by targeting key), each
three ways in the same run: through the OpenFeature client (what a service pays), the provider
alone (``resolve_boolean_details``: what meshkit adds on top of flagd's evaluator), and flagd's
``FlagdCore`` alone; and against a bare dict lookup of the value (the baseline: a flag that
could not change). Figures are the median of several rounds, in microseconds per call. Nothing
passes or fails on a number; the project aims at 10 us per call through the client.

    .venv/bin/python scripts/bench_flags.py [--calls 20000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from benchlib import record
from openfeature import api
from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext

from meshkit.control import MeshFlagProvider, parse_flag_set, static_source

TARGET_US = 10.0
FLAG_SET: Mapping[str, Any] = parse_flag_set(
    {
        "metadata": {"flagSetId": "bench"},
        "flags": {
            "static": {
                "state": "ENABLED",
                "variants": {"on": True, "off": False},
                "defaultVariant": "on",
            },
            "targeted": {
                "state": "ENABLED",
                "variants": {"on": True, "off": False},
                "defaultVariant": "off",
                "targeting": {
                    "if": [
                        {"in": [{"var": "country"}, ["DE", "FR", "NL"]]},
                        {"fractional": [["on", 20], ["off", 80]]},
                        "off",
                    ]
                },
            },
        },
    }
)


def per_call_us(call: Callable[[], object], calls: int, rounds: int) -> float:
    """The median over ``rounds`` of the mean time of one ``call`` in a round of ``calls``."""
    for _ in range(min(calls, 1000)):
        call()
    means = []
    for _ in range(rounds):
        began = time.perf_counter()
        for _ in range(calls):
            call()
        means.append((time.perf_counter() - began) / calls * 1e6)
    return statistics.median(means)


Evaluate = Callable[[str, bool, EvaluationContext], object]


def _call(evaluate: Evaluate, flag: str, context: EvaluationContext) -> object:
    return evaluate(flag, False, context)


def main() -> None:
    """Measure, print a table, record the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds (the median is kept)")
    args = parser.parse_args()

    provider = MeshFlagProvider(static_source(FLAG_SET))
    api.set_provider_and_wait(provider)
    client = api.get_client("bench")
    core = FlagdCore()
    core.set_flags(dict(FLAG_SET))
    bare = {"static": True, "targeted": False}
    # Users in the targeted countries, so every call runs the fractional.
    users = [EvaluationContext(f"user-{n}", {"country": "DE"}) for n in range(64)]

    def cycle(fn: Callable[[EvaluationContext], object]) -> Callable[[], object]:
        state = {"n": 0}

        def call() -> object:
            state["n"] = (state["n"] + 1) & 63
            return fn(users[state["n"]])

        return call

    def measure(fn: Callable[[EvaluationContext], object]) -> float:
        return per_call_us(cycle(fn), args.calls, args.rounds)

    dict_us = measure(lambda _c: bare.get("static", False))
    figures: list[tuple[str, float, str]] = []
    ways: list[tuple[str, Evaluate, str]] = [
        ("eval", client.get_boolean_value, "through the OpenFeature client (what a service pays)"),
        ("provider", provider.resolve_boolean_details, "MeshFlagProvider alone"),
        ("flagd_core", core.resolve_boolean_value, "flagd's FlagdCore alone"),
    ]
    for flag in ("static", "targeted"):
        for way, evaluate, what in ways:
            figures.append((f"flags.{way}.{flag}", measure(partial(_call, evaluate, flag)), what))
    api.clear_providers()

    print(f"{'figure':<28}{'us/call':>10}{'x dict':>10}  what")
    print(f"{'dict lookup (baseline)':<28}{dict_us:>10.3f}{1:>10.0f}  a bare dict.get")
    for name, value, what in figures:
        print(f"{name:<28}{value:>10.3f}{value / dict_us:>10.0f}  {what}")
        record(
            name,
            value,
            "us/call",
            baseline=dict_us,
            baseline_name="a bare dict lookup, same run",
            better="lower",
            target=TARGET_US if name.startswith("flags.eval.") else None,
        )


if __name__ == "__main__":
    main()
