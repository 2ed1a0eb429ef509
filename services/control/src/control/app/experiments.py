"""Experiment analysis: what the exposure and conversion events say about each variant.

A unit counts in a variant from its FIRST exposure to the experiment (later ones, from any
service, change nothing), and counts as converted when it has a conversion of the metric at or
after that moment: a conversion before the unit saw the experiment cannot be its effect. The
first variant of the definition is the control; every other one is compared with it (difference
of rates, its 95 % interval, a two-proportion test's p-value), and the units per variant are
checked against the weights (sample-ratio mismatch; control.domain.stats).

The definition is the current document of the ``experiments`` namespace, read from this very
service's store (``ExperimentDefinitions``): the control service is where configuration lives,
so it asks nobody. An experiment no longer defined but with exposures is still reported, its
variants in alphabetical order, ``control`` first if there is one, with equal weights assumed
(``Report.definition`` is then None, and the report says so).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any, Protocol

from control.domain import stats
from meshkit.control.config import ConfigRejected
from meshkit.control.experiments import Experiment, parse_experiments
from meshkit.errors import NotFound

log = logging.getLogger("control.experiments")

EXPERIMENTS_NAMESPACE = "experiments"


@dataclasses.dataclass(frozen=True)
class Exposure:
    """A unit shown a variant (from an ExperimentExposed event)."""

    event_id: str
    experiment: str
    variant: str
    unit_id: str
    at: datetime.datetime
    service: str
    revision: int


@dataclasses.dataclass(frozen=True)
class Conversion:
    """A unit that did what a metric counts (from a ConversionRecorded event)."""

    event_id: str
    metric: str
    unit_id: str
    at: datetime.datetime
    value: float
    service: str


@dataclasses.dataclass(frozen=True)
class VariantCount:
    """Units first exposed to a variant, and how many of them converted afterwards."""

    units: int
    conversions: int


class ExperimentStore(Protocol):
    """Exposures and conversions, inside one transaction (or one read snapshot)."""

    def add_exposure(self, exposure: Exposure) -> None:
        """Keep ``exposure`` unless the unit was exposed to the experiment earlier."""

    def add_conversion(self, conversion: Conversion) -> None:
        """Keep ``conversion`` (once per event id)."""

    def counts(self, experiment: str, metric: str) -> Mapping[str, VariantCount]:
        """Per variant of ``experiment``: units, and those converted on ``metric`` at or after
        their first exposure ("" metric: none converted)."""


class ExperimentDefinitions(Protocol):
    """The current ``experiments`` document of this service's own configuration store."""

    def current(self) -> tuple[int, Mapping[str, Any]]:
        """(version, document); (0, {}) when the namespace has no document yet."""


@dataclasses.dataclass(frozen=True)
class VariantFigures:
    """One variant's line of a report (see mesh.control.v1.VariantReport)."""

    variant: str
    weight: float
    units: int
    conversions: int
    rate: float
    difference: float
    ci_low: float
    ci_high: float
    p_value: float


@dataclasses.dataclass(frozen=True)
class Report:
    """An experiment's analysis: its variants (the control first), the sample-ratio check, and
    the definition it read (None: the experiment is not defined any more) at ``revision``."""

    key: str
    metric: str
    control: str
    variants: tuple[VariantFigures, ...]
    sample_ratio: stats.SampleRatio
    definition: Mapping[str, Any] | None
    revision: int


class ExperimentAnalysis:
    """Reports on experiments. ``read()`` opens a read snapshot of the exposures and
    conversions; ``definitions`` reads the namespace. Thread-safe: holds no state of its own."""

    def __init__(
        self,
        read: Callable[[], AbstractContextManager[ExperimentStore]],
        definitions: ExperimentDefinitions,
    ) -> None:
        self._read = read
        self._definitions = definitions

    def report(self, key: str, metric: str = "") -> Report:
        """The report of experiment ``key`` on ``metric`` (default: the experiment's own).
        NotFound when it is neither defined nor has exposures."""
        revision, raw, experiment = self._definition(key)
        metric = metric or (experiment.metric if experiment else "")
        with self._read() as store:
            counts = store.counts(key, metric)
        if experiment is None and not counts:
            raise NotFound(
                f"experiment {key!r} is neither defined (namespace {EXPERIMENTS_NAMESPACE!r})"
                " nor has exposures",
                reason="EXPERIMENT_NOT_FOUND",
                metadata={"key": key},
            )
        if experiment is not None:
            weights = {v.key: v.weight for v in experiment.variants}
        else:
            names = sorted(counts, key=lambda name: (name != "control", name))
            weights = {name: 1 / len(names) for name in names}
        return build_report(
            key, metric, weights=weights, counts=counts, definition=raw, revision=revision
        )

    def _definition(self, key: str) -> tuple[int, Mapping[str, Any] | None, Experiment | None]:
        revision, document = self._definitions.current()
        raw = (document.get("experiments") or {}).get(key)
        if not isinstance(raw, Mapping):
            return revision, None, None
        try:
            experiment = parse_experiments({"experiments": {key: raw}})[key]
        except ConfigRejected as exc:
            # The store validated it against the namespace's schema; a definition that still
            # fails the kit's rules is reported on as if it were gone, and said so.
            log.warning(
                "experiment %s: its definition (version %d) is unusable: %s", key, revision, exc
            )
            return revision, None, None
        return revision, raw, experiment


def build_report(
    key: str,
    metric: str,
    *,
    weights: Mapping[str, float],
    counts: Mapping[str, VariantCount],
    definition: Mapping[str, Any] | None,
    revision: int,
) -> Report:
    """The report of ``counts`` for variants ``weights`` (in order; the first is the control).
    Variants exposed but not in ``weights`` are listed after them with weight 0, and left out
    of the sample-ratio check, which is about the configured split."""
    order = [*weights, *sorted(name for name in counts if name not in weights)]
    empty = VariantCount(0, 0)
    control = order[0] if order else ""
    base = counts.get(control, empty)
    figures = []
    for name in order:
        count = counts.get(name, empty)
        rate = count.conversions / count.units if count.units else 0.0
        base_rate = base.conversions / base.units if base.units else 0.0
        if name == control:
            difference, low, high, p_value = 0.0, 0.0, 0.0, 1.0
        else:
            difference = rate - base_rate if count.units and base.units else 0.0
            low, high = stats.difference_interval(
                base.conversions, base.units, count.conversions, count.units
            )
            p_value = stats.two_proportion_p_value(
                base.conversions, base.units, count.conversions, count.units
            )
        figures.append(
            VariantFigures(
                name,
                weights.get(name, 0.0),
                count.units,
                count.conversions,
                rate,
                difference,
                low,
                high,
                p_value,
            )
        )
    sample_ratio = (
        stats.sample_ratio_check(
            [counts.get(name, empty).units for name in weights], list(weights.values())
        )
        if len(weights) > 1
        else stats.SampleRatio(0.0, 1, 1.0, False)
    )
    return Report(key, metric, control, tuple(figures), sample_ratio, definition, revision)


def definition_text(report: Report) -> str:
    """The definition a report read, as JSON ("" when the experiment is not defined)."""
    return "" if report.definition is None else json.dumps(report.definition, sort_keys=True)
