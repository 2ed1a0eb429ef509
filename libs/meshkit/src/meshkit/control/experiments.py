"""Experiments: deterministic assignment of units to variants, and the events they are analysed by.

Assignment is GrowthBook's, to the bit (``growthbook/growthbook`` packages/sdk-js/src/util.ts, and
its test vectors in tests/fixtures/growthbook/)::

    n      = gb_hash(experiment.seed or experiment.key, unit, 2)   # FNV-1a 32, hash v2: [0, 1)
    ranges = bucket_ranges(len(variants), coverage, weights)       # [cumulative, + coverage * w)
    index  = choose_variation(n, ranges)                           # -1: outside the coverage

so it is a pure function of (seed, unit id): the same in every process and across restarts.
Each variant's range starts where the weights before it end, whatever the coverage, so raising
the coverage only adds units (nobody changes variant), and changing a weight moves only the
units whose bucket lies between the old and the new boundary. Two experiments have different
seeds (their keys), so their buckets are independent. FNV-1a runs over UTF-16 code units, as the
JavaScript SDK (the reference the vectors come from) does: ids outside the Basic Multilingual
Plane (emoji) hash as they do in a browser, not as GrowthBook's Python SDK hashes them.

A unit is the value of the experiment's hash attribute: the ``unit_id`` given (attribute ``id``)
unless the experiment names another attribute (``hashAttribute``), e.g. a company id. The
audience is JsonLogic over the attributes (plus ``id``), with flagd's ``starts_with``,
``ends_with`` and ``sem_ver``; a unit outside it is not in the experiment. Order of the checks:
unknown experiment, stopped, no unit, audience, coverage (``Assignment.reason`` says which).

The definitions come from the config namespace ``experiments`` (``parse_experiments`` is the
parse function a ``LiveConfig`` NACKs a bad version with; see meshkit.control.config)::

    {"experiments": {"checkout-cta": {"variants": [{"key": "control", "weight": 0.5},
                                                   {"key": "buy-now", "weight": 0.5}],
                                      "coverage": 1.0, "seed": "", "hashAttribute": "id",
                                      "hashVersion": 2, "audience": {JsonLogic},
                                      "metric": "order_confirmed", "status": "running"}}}

Events (``experiments.events.v1``): ``Experiments.assign`` writes one ``ExperimentExposed`` per
(experiment, unit) per process (a bounded set remembers whom it exposed; the analysis keeps each
unit's first exposure anyway, so a repeat after the set forgot costs a row, not a wrong count);
``conversion`` makes a ``ConversionRecorded`` for the caller's own unit of work (an order's
confirmation), ``convert`` writes one in a transaction of its own. A service gets all of it as
``ctx.experiments`` (meshkit.service), which writes through the service's outbox.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import logging
import math
import struct
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from json_logic import jsonLogic  # type: ignore[import-untyped]
from json_logic.builtins import BUILTINS  # type: ignore[import-untyped]
from openfeature.contrib.tools.flagd.core.targeting.custom_ops import (
    ends_with,
    sem_ver,
    starts_with,
)

from meshkit.control.config import ConfigRejected
from meshkit.events import EventMap

log = logging.getLogger("meshkit.control.experiments")

NAMESPACE = "experiments"  # the config namespace the definitions live in
EVENTS_NAMESPACE = "mesh.experiments.v1"  # the Avro contracts of the events (experiments.events.v1)
DEFAULT_HASH_VERSION = 2
DEFAULT_SEEN_LIMIT = 100_000  # (experiment, unit) pairs remembered per process: ~15 MB at most
WEIGHT_TOLERANCE = 0.01  # GrowthBook's: weights must add up to 1 within [0.99, 1.01]

ASSIGNED = "assigned"
NOT_IN_COVERAGE = "not_in_coverage"
NOT_IN_AUDIENCE = "not_in_audience"
STOPPED = "stopped"
UNKNOWN_EXPERIMENT = "unknown_experiment"
NO_UNIT = "no_unit"

RUNNING = "running"
STATUSES = (RUNNING, STOPPED)

# JsonLogic as flagd evaluates targeting, less `fractional` (coverage and weights do that here).
_OPERATORS: dict[str, Any] = {
    **BUILTINS,
    "starts_with": starts_with,
    "ends_with": ends_with,
    "sem_ver": sem_ver,
}
# Operations json_logic's apply() implements itself rather than through the table.
_SPECIAL = frozenset({"if", "?:", "and", "or", "filter", "reduce", "map", "all", "some", "none"})

_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193
_MASK32 = 0xFFFFFFFF


# ------------------------------------------------------------------------------ GrowthBook


def fnv1a32(text: str) -> int:
    """32-bit FNV-1a of ``text``'s UTF-16 code units (JavaScript's ``charCodeAt``)."""
    if text.isascii():
        units: Iterable[int] = text.encode("ascii")
    else:
        data = text.encode("utf-16-le", "surrogatepass")
        units = struct.unpack(f"<{len(data) // 2}H", data)
    value = _FNV_OFFSET
    for unit in units:
        value = ((value ^ unit) * _FNV_PRIME) & _MASK32
    return value


def gb_hash(seed: str, value: str, version: int) -> float | None:
    """GrowthBook's hash of ``value`` under ``seed``: a number in [0, 1). Version 2 (unbiased,
    4 decimals) hashes ``seed + value`` twice; version 1 (the original, 3 decimals) hashes
    ``value + seed`` once. Any other version: None."""
    if version == 2:
        return (fnv1a32(str(fnv1a32(seed + value))) % 10000) / 10000
    if version == 1:
        return (fnv1a32(value + seed) % 1000) / 1000
    return None


def bucket_ranges(
    count: int, coverage: float, weights: Sequence[float] | None
) -> list[tuple[float, float]]:
    """GrowthBook's ``getBucketRanges``: variant i takes ``[c_i, c_i + coverage * w_i)`` where
    ``c_i`` is the sum of the weights before it. Coverage is clamped to [0, 1]; weights of the
    wrong length, or not adding up to 1 (+-0.01), fall back to equal ones."""
    coverage = min(max(coverage, 0.0), 1.0)
    equal = [1 / count] * count if count > 0 else []
    chosen = list(weights) if weights is not None else equal
    if len(chosen) != count or abs(sum(chosen) - 1) > WEIGHT_TOLERANCE:
        chosen = equal
    ranges = []
    cumulative = 0.0
    for weight in chosen:
        start = cumulative
        cumulative += weight
        ranges.append((start, start + coverage * weight))
    return ranges


def choose_variation(n: float, ranges: Sequence[tuple[float, float]]) -> int:
    """The index of the first range with ``start <= n < end``, or -1 (not in the experiment)."""
    for index, (start, end) in enumerate(ranges):
        if start <= n < end:
            return index
    return -1


# ------------------------------------------------------------------------------ definitions


@dataclasses.dataclass(frozen=True)
class Variant:
    """One arm of an experiment: its key (what the code switches on) and its share of units."""

    key: str
    weight: float


@dataclasses.dataclass(frozen=True)
class Experiment:
    """An experiment's definition, as ``parse_experiments`` reads it (see the module doc).

    ``seed`` "" means the key; ``audience`` None means everyone; ``metric`` is the conversion
    the analysis counts by default; ``status`` "stopped" assigns nobody (every caller falls back
    to its default, and no exposure is written).
    """

    key: str
    variants: tuple[Variant, ...]
    coverage: float = 1.0
    seed: str = ""
    hash_attribute: str = "id"
    audience: Mapping[str, Any] | None = None
    metric: str = ""
    status: str = RUNNING
    hash_version: int = DEFAULT_HASH_VERSION

    @property
    def ranges(self) -> list[tuple[float, float]]:
        """The bucket ranges of its variants (``bucket_ranges``)."""
        return bucket_ranges(len(self.variants), self.coverage, [v.weight for v in self.variants])


@dataclasses.dataclass(frozen=True)
class Assignment:
    """Where a unit stands in an experiment: ``variant`` is None unless ``in_experiment``;
    ``reason`` is one of assigned, not_in_coverage, not_in_audience, stopped,
    unknown_experiment, no_unit."""

    experiment: str
    variant: str | None
    in_experiment: bool
    reason: str


def parse_experiments(document: Mapping[str, Any]) -> Mapping[str, Experiment]:
    """The experiments of an ``experiments`` namespace document, by key. ConfigRejected names
    the experiment and the field of the first problem: fewer than 2 variants, weights that do
    not add up to 1 (+-0.01), coverage outside [0, 1], an unknown status or hash version, an
    audience that is not JsonLogic. Fields this version does not know are ignored, so a newer
    definition does not stop an older service (the namespace's JSON Schema guards typos)."""
    if not isinstance(document, Mapping):
        raise ConfigRejected("the document must be a JSON object")
    experiments = document.get("experiments", {})
    if not isinstance(experiments, Mapping):
        raise ConfigRejected("experiments: must be an object of experiments by key")
    parsed = {}
    for key, raw in experiments.items():
        where = f"experiments.{key}"
        if not isinstance(key, str) or not key:
            raise ConfigRejected(f"{where}: an experiment's key must be a non-empty string")
        if not isinstance(raw, Mapping):
            raise ConfigRejected(f"{where}: must be an object")
        parsed[key] = _experiment(key, raw, where)
    return parsed


def _experiment(key: str, raw: Mapping[str, Any], where: str) -> Experiment:
    coverage = raw.get("coverage", 1.0)
    if not _is_number(coverage) or not 0 <= coverage <= 1:
        raise ConfigRejected(f"{where}.coverage: must be a number from 0 to 1, not {coverage!r}")
    status = raw.get("status", RUNNING)
    if status not in STATUSES:
        raise ConfigRejected(f"{where}.status: must be one of {list(STATUSES)}, not {status!r}")
    hash_version = raw.get("hashVersion", DEFAULT_HASH_VERSION)
    if hash_version not in (1, 2) or isinstance(hash_version, bool):
        raise ConfigRejected(f"{where}.hashVersion: must be 1 or 2, not {hash_version!r}")
    strings = {}
    for field, default in (("seed", ""), ("hashAttribute", "id"), ("metric", "")):
        value = raw.get(field, default)
        if not isinstance(value, str):
            raise ConfigRejected(f"{where}.{field}: must be a string, not {value!r}")
        strings[field] = value
    if not strings["hashAttribute"]:
        raise ConfigRejected(f"{where}.hashAttribute: must not be empty")
    audience = raw.get("audience")
    if audience is not None:
        if not isinstance(audience, Mapping):
            raise ConfigRejected(f"{where}.audience: must be a JsonLogic object, or null")
        _check_logic(audience, f"{where}.audience")
    return Experiment(
        key=key,
        variants=_variants(raw.get("variants"), f"{where}.variants"),
        coverage=float(coverage),
        seed=strings["seed"],
        hash_attribute=strings["hashAttribute"],
        audience=audience,
        metric=strings["metric"],
        status=status,
        hash_version=hash_version,
    )


def _variants(raw: Any, where: str) -> tuple[Variant, ...]:
    if not isinstance(raw, list) or len(raw) < 2:
        raise ConfigRejected(f"{where}: an experiment needs at least 2 variants")
    keys: list[str] = []
    weights: list[float | None] = []
    for index, variant in enumerate(raw):
        at = f"{where}[{index}]"
        if not isinstance(variant, Mapping):
            raise ConfigRejected(f"{at}: must be an object with a key and a weight")
        variant_key = variant.get("key")
        if not isinstance(variant_key, str) or not variant_key:
            raise ConfigRejected(f"{at}.key: must be a non-empty string")
        if variant_key in keys:
            raise ConfigRejected(f"{at}.key: {variant_key!r} is there twice")
        weight = variant.get("weight")
        if weight is not None and (not _is_number(weight) or not 0 <= weight <= 1):
            raise ConfigRejected(f"{at}.weight: must be a number from 0 to 1, not {weight!r}")
        keys.append(variant_key)
        weights.append(None if weight is None else float(weight))
    if all(w is None for w in weights):
        return tuple(Variant(k, 1 / len(keys)) for k in keys)  # GrowthBook's default: equal
    if any(w is None for w in weights):
        raise ConfigRejected(f"{where}: give every variant a weight, or none (equal shares)")
    total = math.fsum(w for w in weights if w is not None)
    if abs(total - 1) > WEIGHT_TOLERANCE:
        raise ConfigRejected(
            f"{where}: the weights add up to {total:g}, not 1 (+-{WEIGHT_TOLERANCE:g})"
        )
    return tuple(Variant(k, w) for k, w in zip(keys, weights, strict=True) if w is not None)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_logic(logic: Any, where: str) -> None:
    """Every operation in ``logic`` is one JsonLogic (with flagd's operators) evaluates."""
    if isinstance(logic, list):
        for item in logic:
            _check_logic(item, where)
        return
    if not isinstance(logic, Mapping) or len(logic) != 1:
        return  # a literal, which JsonLogic returns as it is
    ((operation, args),) = logic.items()
    if operation not in _OPERATORS and operation not in _SPECIAL:
        raise ConfigRejected(f"{where}: unknown JsonLogic operation {operation!r}")
    _check_logic(args, where)


# ------------------------------------------------------------------------------ assignment


def unit_of(experiment: Experiment, unit_id: str, attributes: Mapping[str, Any] | None) -> str:
    """The unit ``experiment`` hashes: ``unit_id`` for hash attribute ``id``, else that
    attribute's value ("" when it has none)."""
    if experiment.hash_attribute == "id" and unit_id:
        return unit_id
    value = (attributes or {}).get(experiment.hash_attribute)
    if value is None or isinstance(value, bool):
        return ""
    return str(value)


def assign_unit(
    experiment: Experiment | None,
    unit_id: str,
    attributes: Mapping[str, Any] | None = None,
    *,
    key: str = "",
) -> Assignment:
    """Where ``unit_id`` (with ``attributes``) stands in ``experiment`` (None: unknown ``key``).
    Pure: no events, no state."""
    if experiment is None:
        return Assignment(key, None, False, UNKNOWN_EXPERIMENT)
    key = experiment.key
    if experiment.status != RUNNING or len(experiment.variants) < 2:
        return Assignment(key, None, False, STOPPED)
    unit = unit_of(experiment, unit_id, attributes)
    if not unit:
        return Assignment(key, None, False, NO_UNIT)
    if experiment.audience is not None and not _in_audience(experiment, unit_id, attributes):
        return Assignment(key, None, False, NOT_IN_AUDIENCE)
    n = gb_hash(experiment.seed or key, unit, experiment.hash_version)
    index = -1 if n is None else choose_variation(n, experiment.ranges)
    if index < 0:
        return Assignment(key, None, False, NOT_IN_COVERAGE)
    return Assignment(key, experiment.variants[index].key, True, ASSIGNED)


_warned_audiences: set[str] = set()


def _in_audience(
    experiment: Experiment, unit_id: str, attributes: Mapping[str, Any] | None
) -> bool:
    data = dict(attributes or {})
    if unit_id:
        data["id"] = unit_id
    try:
        return bool(jsonLogic(dict(experiment.audience or {}), data, _OPERATORS))
    except Exception as exc:  # noqa: BLE001 - a bad audience keeps a unit out, never fails a page
        if experiment.key not in _warned_audiences:
            _warned_audiences.add(experiment.key)  # once per process: the page is hot
            log.warning(
                "experiment %s: its audience failed on attributes %s (%s): units it fails on"
                " are not in the experiment",
                experiment.key,
                sorted(data),
                exc,
            )
        return False


# ------------------------------------------------------------------------------ events


@dataclasses.dataclass(frozen=True)
class ExperimentExposed:
    """mesh.experiments.v1.ExperimentExposed: a unit was shown a variant (key: the unit)."""

    event_id: str
    occurred_at: datetime.datetime
    experiment: str
    variant: str
    unit_id: str
    service: str
    revision: int = 0


@dataclasses.dataclass(frozen=True)
class ConversionRecorded:
    """mesh.experiments.v1.ConversionRecorded: a unit did what a metric counts (key: the unit)."""

    event_id: str
    occurred_at: datetime.datetime
    metric: str
    unit_id: str
    service: str
    value: float = 0.0


EXPERIMENT_EVENTS: EventMap[ExperimentExposed | ConversionRecorded] = EventMap(EVENTS_NAMESPACE)
EXPERIMENT_EVENTS.add(ExperimentExposed, key=lambda e: e.unit_id)
EXPERIMENT_EVENTS.add(ConversionRecorded, key=lambda e: e.unit_id)


class _WithExperimentEvents(EventMap[Any]):
    """A service's own EventMap that also maps the experiments events (see
    ``with_experiment_events``). Read-only, like any filled EventMap."""

    def __init__(self, own: EventMap[Any]) -> None:
        super().__init__(own.namespace)
        self._own = own

    def _map(self, event: Any) -> EventMap[Any]:
        if isinstance(event, ExperimentExposed | ConversionRecorded):
            return EXPERIMENT_EVENTS
        return self._own

    @property
    def types(self) -> frozenset[str]:
        """The Avro full names of the service's events and of the experiments events."""
        return self._own.types | EXPERIMENT_EVENTS.types

    def type_of(self, event: Any) -> str:
        """See EventMap.type_of."""
        return self._map(event).type_of(event)

    def key_of(self, event: Any) -> str:
        """See EventMap.key_of."""
        return self._map(event).key_of(event)

    def to_record(self, event: Any) -> dict[str, Any]:
        """See EventMap.to_record."""
        return self._map(event).to_record(event)

    def event(self, full_name: str, record: Mapping[str, Any]) -> Any:
        """See EventMap.event."""
        if full_name in EXPERIMENT_EVENTS.types:
            return EXPERIMENT_EVENTS.event(full_name, record)
        return self._own.event(full_name, record)


def with_experiment_events(events: EventMap[Any]) -> EventMap[Any]:
    """``events`` plus the experiments events, so a service's outbox publisher takes an
    exposure or a conversion (``uow.publish(experiments.conversion(...))``) like its own."""
    return _WithExperimentEvents(events)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


# ------------------------------------------------------------------------------ the client


class ExperimentsSnapshot(Protocol):
    """What ``Experiments`` reads of a config snapshot (meshkit.control.config.Snapshot)."""

    @property
    def version(self) -> int:
        """The namespace's version (0: a built-in default)."""

    @property
    def value(self) -> Mapping[str, Experiment]:
        """The experiments, by key."""


class ExperimentsSource(Protocol):
    """Where ``Experiments`` reads the live definitions (a ``LiveConfig`` satisfies it)."""

    @property
    def current(self) -> ExperimentsSnapshot:
        """The snapshot in force now."""


@dataclasses.dataclass(frozen=True)
class _StaticSnapshot:
    version: int
    value: Mapping[str, Experiment]


@dataclasses.dataclass(frozen=True)
class _StaticSource:
    current: _StaticSnapshot


def static_experiments(document: Mapping[str, Any], version: int = 0) -> ExperimentsSource:
    """A source that always serves ``document`` (parsed; ConfigRejected when it is bad): for
    tests and the command line."""
    return _StaticSource(_StaticSnapshot(version, parse_experiments(document)))


class Experiments:
    """Assigns units to the live experiments and writes their exposures and conversions.

    ``source`` gives the definitions (``ctx.config("experiments", parse=parse_experiments)``);
    ``publish(event)`` writes one event in a transaction of its own (the service's outbox) and
    raises when it cannot; None for a process that only assigns. ``service`` names the writer
    in the events.

    Thread-safe: ``assign`` may be called from every request thread. It never raises for a
    missing or broken experiment, nor when the exposure cannot be written (that is logged and
    retried at the unit's next assignment): an experiment must never break the page it is on.
    """

    def __init__(
        self,
        source: ExperimentsSource,
        publish: Callable[[Any], None] | None = None,
        *,
        service: str,
        seen_limit: int = DEFAULT_SEEN_LIMIT,
        clock: Callable[[], datetime.datetime] = _now,
    ) -> None:
        self._source = source
        self._publish = publish
        self._service = service
        self._seen_limit = seen_limit
        self._clock = clock
        self._seen: collections.OrderedDict[tuple[str, str], None] = collections.OrderedDict()
        self._lock = threading.Lock()

    @property
    def definitions(self) -> Mapping[str, Experiment]:
        """The experiments in force now, by key."""
        return self._source.current.value

    def assign(
        self, key: str, unit_id: str, attributes: Mapping[str, Any] | None = None
    ) -> Assignment:
        """The variant of ``unit_id`` (with ``attributes`` for the audience and another hash
        attribute) in experiment ``key``; the first time this process assigns the unit in that
        experiment, an ExperimentExposed is written."""
        snapshot = self._source.current
        experiment = snapshot.value.get(key)
        assignment = assign_unit(experiment, unit_id, attributes, key=key)
        if assignment.in_experiment and assignment.variant is not None and experiment:
            unit = unit_of(experiment, unit_id, attributes)
            self._expose(key, assignment.variant, unit, snapshot.version)
        return assignment

    def _expose(self, key: str, variant: str, unit: str, revision: int) -> None:
        if self._publish is None:
            return
        pair = (key, unit)
        with self._lock:
            if pair in self._seen:
                self._seen.move_to_end(pair)
                return
            self._seen[pair] = None
            if len(self._seen) > self._seen_limit:
                self._seen.popitem(last=False)
        event = ExperimentExposed(
            str(uuid.uuid4()), self._clock(), key, variant, unit, self._service, revision
        )
        try:
            self._publish(event)
        except Exception as exc:  # noqa: BLE001 - see the class doc: never fail the caller
            with self._lock:
                self._seen.pop(pair, None)  # so the unit's next assignment tries again
            log.warning(
                "experiment %s: the exposure of unit %s to %s was not written (tried again at"
                " its next assignment): %s",
                key,
                unit,
                variant,
                exc,
            )

    def conversion(self, metric: str, unit_id: str, value: float = 0.0) -> ConversionRecorded:
        """A ConversionRecorded of ``unit_id`` on ``metric`` (worth ``value``), now, for the
        caller's own unit of work: ``uow.publish(event, event_id=event.event_id)``, so it is
        written exactly when what it counts is."""
        if not metric:
            raise ValueError("a conversion needs a metric, e.g. order_confirmed")
        if not unit_id:
            raise ValueError("a conversion needs the unit that converted")
        return ConversionRecorded(
            str(uuid.uuid4()), self._clock(), metric, unit_id, self._service, float(value)
        )

    def convert(self, metric: str, unit_id: str, value: float = 0.0) -> None:
        """Write a conversion (see ``conversion``) in a transaction of its own; raises what the
        outbox raises (RuntimeError when this client was built without ``publish``)."""
        if self._publish is None:
            raise RuntimeError("this Experiments client writes no events")
        self._publish(self.conversion(metric, unit_id, value))
