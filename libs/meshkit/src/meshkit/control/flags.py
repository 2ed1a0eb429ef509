"""Feature flags: flagd flag sets pushed by the control plane, evaluated in process (OpenFeature).

A service reads its flags through the CNCF evaluation API (openfeature-sdk) and nothing
meshkit-specific::

    client = ctx.flags          # an openfeature.client.OpenFeatureClient
    client.get_boolean_value("checkout.express-shipping", False,
                             EvaluationContext(customer_id, {"country": "DE"}))

``MeshFlagProvider`` is the OpenFeature provider behind it. Its flag set is the control plane's
``flags`` namespace (``LiveConfig``, or any ``FlagSource``): a flagd flag set (flagd's JSON
format: ``state``, ``variants``, ``defaultVariant``, JsonLogic ``targeting`` with ``fractional``,
``starts_with``, ``ends_with`` and ``sem_ver``, ``$evaluators``, ``metadata``). Each snapshot is
fed to flagd's own evaluator, ``FlagdCore`` of openfeature-flagd-core (one per provider), so
targeting and bucketing are flagd's, bit for bit: ``fractional`` is the current one (murmur3 over
the deterministic CBOR encoding of the bucketing value, integer high-precision buckets; flagd's
ADR "fractional-non-string-rand-units", the testbed's ``@fractional-v3`` cases). An evaluation is
a local call: no RPC, no I/O.

What the provider adds on top of flagd's evaluator:

- reason ``SPLIT`` when a ``fractional`` chose the variant (flagd says TARGETING_MATCH for any
  targeting result); ``STATIC``, ``DEFAULT``, ``TARGETING_MATCH``, ``DISABLED`` and ``ERROR`` are
  flagd's;
- ``TARGETING_KEY_MISSING`` when an evaluation's targeting reads the targeting key (the
  ``fractional`` shorthand, which buckets by flag key and targeting key, or ``{"var":
  "targetingKey"}`` without a default) and the context has none: the caller's default, reason
  ERROR. flagd would quietly serve its default variant instead, which hides a caller that forgot
  the unit to bucket;
- never an exception (OpenFeature 1.4.10): every failure is the caller's default with reason ERROR
  and an error code (FLAG_NOT_FOUND, TYPE_MISMATCH, PARSE_ERROR, GENERAL, PROVIDER_NOT_READY);
- flag metadata is the flag set's ``metadata`` merged with the flag's (the flag's wins), as flagd
  does;
- lifecycle: READY once a flag set is there (the live one, or the last known good from disk);
  before that (no control service reached, no last known good) ``initialize`` fails with
  PROVIDER_NOT_READY and evaluations answer the default with that code, until a flag set
  arrives (then PROVIDER_READY). Each new snapshot emits PROVIDER_CONFIGURATION_CHANGED with the
  keys of the flags it changed (all of them when the flag set's metadata changed).

- every evaluation inside a recording span adds a ``feature_flag.evaluation`` event to it, with
  OpenTelemetry's feature-flag attributes (``feature_flag.key``, ``feature_flag.provider.name``,
  ``feature_flag.result.variant``, ``feature_flag.result.reason``, ``feature_flag.set.id``,
  ``feature_flag.version``, ``error.type``), so a trace shows which way each flag went (the
  provider itself; never the value, which may be anything).

``parse_flag_set`` is the ``LiveConfig`` parse function for the ``flags`` namespace: it checks a
document with flagd's evaluator and the rules of flagd's schema, and raises ``ConfigRejected``
naming the flag and field, so a bad flag set is NACKed and the previous one stays live.

Thread safety: evaluations from any thread, concurrently with snapshot changes (each evaluation
sees one flag set). The ``fractional`` and ``var`` operations of flagd's evaluator are wrapped, in
flagd-core's operation table, when this module is imported: outside an evaluation of this
provider they behave exactly as flagd's.
"""

from __future__ import annotations

import importlib
import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Protocol, TypeVar

from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEventDetails
from openfeature.exception import ErrorCode, OpenFeatureError, ProviderNotReadyError
from openfeature.flag_evaluation import FlagResolutionDetails, FlagValueType, Reason
from openfeature.provider import AbstractProvider, Metadata
from opentelemetry import trace

from meshkit.control.config import DEFAULT, LIVE, ConfigRejected, Snapshot

NAMESPACE = "flags"
PROVIDER_NAME = "meshkit"
EMPTY_FLAG_SET: Mapping[str, Any] = {"flags": {}}

log = logging.getLogger("meshkit.control.flags")
T = TypeVar("T")

# flagd-core's operation table: targeting() reads it at each evaluation. The package's
# ``targeting`` attribute is the function, so the module is imported by its full name.
_targeting = importlib.import_module("openfeature.contrib.tools.flagd.core.targeting.targeting")
_OPERATIONS: dict[str, Callable[..., Any]] = _targeting.OPERATORS
# JsonLogic forms json_logic.apply evaluates itself (their arguments lazily), not in the table.
_SPECIAL_FORMS = frozenset(
    {"if", "?:", "and", "or", "filter", "reduce", "map", "all", "some", "none"}
)
_STATES = ("ENABLED", "DISABLED")


class FlagSource(Protocol):
    """Where a provider gets its flag set: ``LiveConfig`` of the ``flags`` namespace, or
    ``static_source``. ``current.value`` is the flag set (what ``parse_flag_set`` returns);
    ``subscribe`` callbacks get each new snapshot, one at a time, in order."""

    @property
    def current(self) -> Snapshot[Any]: ...

    def subscribe(self, callback: Callable[[Snapshot[Any]], None]) -> None: ...


class StaticFlagSource:
    """A FlagSource over a flag set given in code (tests, ``mesh flags eval --file``): version 1,
    source "live". ``update`` replaces it (the next version) and tells subscribers, as a push
    would. The set is used as given: ``parse_flag_set`` it first to check it as a service
    would. Thread-safe."""

    def __init__(self, flag_set: Mapping[str, Any]) -> None:
        self._lock = threading.Lock()
        self._current: Snapshot[Any] = Snapshot(NAMESPACE, 1, flag_set, flag_set, LIVE)
        self._subscribers: list[Callable[[Snapshot[Any]], None]] = []

    @property
    def current(self) -> Snapshot[Any]:
        """The flag set in force."""
        return self._current

    def subscribe(self, callback: Callable[[Snapshot[Any]], None]) -> None:
        """Call ``callback(snapshot)`` after each ``update``."""
        with self._lock:
            self._subscribers.append(callback)

    def update(self, flag_set: Mapping[str, Any]) -> Snapshot[Any]:
        """Make ``flag_set`` the next version; subscribers are called before this returns."""
        with self._lock:
            snapshot = Snapshot(NAMESPACE, self._current.version + 1, flag_set, flag_set, LIVE)
            self._current = snapshot
            subscribers = list(self._subscribers)
        for callback in subscribers:
            callback(snapshot)
        return snapshot


def static_source(flag_set: Mapping[str, Any]) -> StaticFlagSource:
    """A FlagSource serving ``flag_set`` (see StaticFlagSource)."""
    return StaticFlagSource(flag_set)


# ------------------------------------------------------------------------------ evaluation


class _Evaluation:
    """What the wrapped operations saw during one evaluation of a flag of ours."""

    __slots__ = ("key_missing", "picks")

    def __init__(self) -> None:
        self.picks: list[str] = []  # the variant each fractional that ran chose (not None)
        self.key_missing = False  # the targeting read a targeting key the context lacks


# The evaluation under way on this thread (json_logic calls operations on the caller's thread,
# synchronously), or None: the wrappers then only forward to flagd's operations.
_current = threading.local()


def _flagd_operation(name: str) -> Callable[..., Any]:
    operation = _OPERATIONS[name]
    return getattr(operation, "flagd_operation", operation)  # once wrapped (a reload): flagd's


_flagd_fractional = _flagd_operation("fractional")
_flagd_var = _flagd_operation("var")


def _has_targeting_key(data: Any) -> bool:
    key = data.get("targetingKey") if isinstance(data, dict) else None
    return isinstance(key, str) and key != ""


def _fractional(data: Any, *args: Any) -> Any:
    evaluation: _Evaluation | None = getattr(_current, "evaluation", None)
    if evaluation is None:
        return _flagd_fractional(data, *args)
    # flagd-core's rule: a first argument that is a list is a variant, so the bucketing value is
    # the shorthand's [flag key, targeting key].
    if args and isinstance(args[0], list | tuple) and not _has_targeting_key(data):
        evaluation.key_missing = True
        return None  # what flagd answers, without its ERROR log line per evaluation
    pick = _flagd_fractional(data, *args)
    if pick is not None:
        evaluation.picks.append(pick if type(pick) is str else _variant_name(pick))
    return pick


def _var(data: Any = None, key: Any = None, default: Any = None) -> Any:
    if key == "targetingKey" and default is None:
        evaluation: _Evaluation | None = getattr(_current, "evaluation", None)
        # "$flagd" is in the evaluation's own context only, not in the items map/filter/reduce
        # hand to their sub-rules as data.
        if (
            evaluation is not None
            and isinstance(data, dict)
            and "$flagd" in data
            and not _has_targeting_key(data)
        ):
            evaluation.key_missing = True
    return _flagd_var(data, key, default)


_fractional.flagd_operation = _flagd_fractional  # type: ignore[attr-defined]
_var.flagd_operation = _flagd_var  # type: ignore[attr-defined]
_OPERATIONS["fractional"] = _fractional
_OPERATIONS["var"] = _var


def _variant_name(value: Any) -> str:
    """A targeting result as flagd-core turns it into a variant name."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _mentions_targeting(rule: Any, evaluators: Mapping[str, Any], depth: int = 0) -> bool:
    """Whether ``rule`` (a flag's targeting, its ``$ref``s followed) has a ``fractional`` or reads
    ``targetingKey``: only such flags need their evaluation watched."""
    if isinstance(rule, dict):
        for op, args in rule.items():
            if op == "fractional":
                return True
            if op == "$ref" and isinstance(args, str) and depth < 2:
                if _mentions_targeting(evaluators.get(args), evaluators, depth + 1):
                    return True
            elif _mentions_targeting(args, evaluators, depth):
                return True
        return False
    if isinstance(rule, list):
        return any(_mentions_targeting(item, evaluators, depth) for item in rule)
    return isinstance(rule, str) and rule == "targetingKey"


def _span_event(flag_key: str, details: FlagResolutionDetails[Any]) -> None:
    """A ``feature_flag.evaluation`` event on the current span, when it records (OpenTelemetry
    semantic conventions for feature flags). Done by the provider itself rather than by an
    OpenFeature hook: the SDK's hook machinery would cost about 6 µs on every evaluation, this
    costs one ``is_recording()`` when no span records."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    attributes: dict[str, str] = {
        "feature_flag.key": flag_key,
        "feature_flag.provider.name": PROVIDER_NAME,
    }
    if details.variant is not None:
        attributes["feature_flag.result.variant"] = details.variant
    if details.reason is not None:
        attributes["feature_flag.result.reason"] = str(
            getattr(details.reason, "value", details.reason)
        ).lower()
    metadata = details.flag_metadata or {}
    if "flagSetId" in metadata:
        attributes["feature_flag.set.id"] = str(metadata["flagSetId"])
    if "version" in metadata:
        attributes["feature_flag.version"] = str(metadata["version"])
    if details.error_code is not None:
        attributes["error.type"] = str(getattr(details.error_code, "value", details.error_code))
    span.add_event("feature_flag.evaluation", attributes)


class MeshFlagProvider(AbstractProvider):
    """The OpenFeature provider of a flagd flag set from a FlagSource (see the module doc).

    Set it once per process (``openfeature.api.set_provider``); ``ctx.flags`` does. Metadata
    name "meshkit". Evaluations never raise and never block on I/O.
    """

    def __init__(self, source: FlagSource) -> None:
        super().__init__()
        self._source = source
        self._core = FlagdCore()
        self._methods: dict[str, Callable[..., FlagResolutionDetails[Any]]] = {
            "boolean": self._core.resolve_boolean_value,
            "string": self._core.resolve_string_value,
            "integer": self._core.resolve_integer_value,
            "float": self._core.resolve_float_value,
            "object": self._core.resolve_object_value,
        }
        # flagd's answer for (flag, getter type) where it depends on nothing in the call.
        self._static: dict[tuple[str, str], FlagResolutionDetails[Any]] = {}
        self._metadata = Metadata(name=PROVIDER_NAME)
        self._lock = threading.Lock()  # one snapshot applied at a time
        self._applied: Snapshot[Any] | None = None
        self._ready = False
        self._closed = False
        self._watched: frozenset[str] = frozenset()
        self._set_metadata: Any = None
        self._previous_keys: frozenset[str] = frozenset()
        self.version = 0
        """The version of the flag set in force (0: none yet)."""
        # Subscribed first, applied after under the lock: a snapshot that arrives in between is
        # applied after the one read here, never before it.
        source.subscribe(self._on_snapshot)
        with self._lock:
            self._apply(source.current, emit=False)

    def get_metadata(self) -> Metadata:
        """``Metadata(name="meshkit")``."""
        return self._metadata

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        """Ready at once when a flag set is there; else ProviderNotReadyError (the SDK marks the
        provider ERROR; it turns READY with the first flag set)."""
        if not self._ready:
            raise ProviderNotReadyError(
                "no flag set yet (the control service has not answered and there is no last"
                " known good): flags answer their defaults until one arrives"
            )

    def shutdown(self) -> None:
        """Stop following the source (its later snapshots are ignored)."""
        self._closed = True

    # -------------------------------------------------------------------------- snapshots

    def _on_snapshot(self, snapshot: Snapshot[Any]) -> None:
        if self._closed:
            return
        with self._lock:
            if snapshot is not self._applied:
                self._apply(snapshot, emit=True)

    def _apply(self, snapshot: Snapshot[Any], *, emit: bool) -> None:
        flag_set = snapshot.value if isinstance(snapshot.value, Mapping) else snapshot.document
        try:
            # A copy: flagd-core rewrites the flag objects it is given (and $evaluators are
            # substituted as text), and a snapshot is shared and immutable.
            document = json.loads(json.dumps(flag_set))
            changed = self._core.set_flags_and_get_changed_keys(document)
        except Exception as exc:  # noqa: BLE001 - a source that was not parsed: keep the last
            log.error(
                "flags: version %d not applied (%s); keeping version %d",
                snapshot.version,
                exc,
                self.version,
            )
            return
        # Read from the snapshot's flag set: flagd-core has rewritten ``document``.
        flags = flag_set.get("flags") or {}
        evaluators = flag_set.get("$evaluators") or {}
        metadata = flag_set.get("metadata") or {}
        if self._set_metadata is not None and metadata != self._set_metadata:
            changed = sorted(set(changed) | set(flags) | set(self._previous_keys))
        self._previous_keys = frozenset(flags)
        self._set_metadata = metadata
        self._watched = frozenset(
            key
            for key, flag in flags.items()
            if isinstance(flag, dict) and _mentions_targeting(flag.get("targeting"), evaluators)
        )
        self._static = self._static_answers(flags)
        self._applied = snapshot
        self.version = snapshot.version
        became_ready = not self._ready and snapshot.source != DEFAULT
        if became_ready:
            self._ready = True
        if not emit:
            return
        if became_ready:
            self.emit_provider_ready(ProviderEventDetails(message=f"flag set v{snapshot.version}"))
        if changed:
            self.emit_provider_configuration_changed(
                ProviderEventDetails(flags_changed=sorted(changed))
            )

    def _static_answers(
        self, flags: Mapping[str, Any]
    ) -> dict[tuple[str, str], FlagResolutionDetails[Any]]:
        """flagd's answers, asked once per snapshot, for the flags whose answer depends on nothing
        in the call (enabled, no targeting, a default variant: reason STATIC), by getter type;
        a type flagd refuses is left out (its error carries the caller's default)."""
        answers: dict[tuple[str, str], FlagResolutionDetails[Any]] = {}
        for key, flag in flags.items():
            if not isinstance(flag, dict) or flag.get("state") != "ENABLED":
                continue
            if flag.get("targeting") or not flag.get("defaultVariant"):
                continue
            for kind, resolve in self._methods.items():
                try:
                    answer = resolve(key, None, None)
                except Exception:  # noqa: BLE001, S112 - e.g. TYPE_MISMATCH: asked per call
                    continue
                if answer.reason == Reason.STATIC:
                    # Shared by every call: its metadata read-only.
                    answer.flag_metadata = MappingProxyType(dict(answer.flag_metadata))
                    answers[key, kind] = answer
        return answers

    # ------------------------------------------------------------------------- evaluation

    def _resolve(
        self,
        kind: str,
        flag_key: str,
        default_value: T,
        context: EvaluationContext | None,
    ) -> FlagResolutionDetails[T]:
        details = self._details(kind, flag_key, default_value, context)
        _span_event(flag_key, details)
        return details

    def _details(
        self,
        kind: str,
        flag_key: str,
        default_value: T,
        context: EvaluationContext | None,
    ) -> FlagResolutionDetails[T]:
        if not self._ready:
            return FlagResolutionDetails(
                default_value,
                error_code=ErrorCode.PROVIDER_NOT_READY,
                error_message="no flag set yet",
                reason=Reason.ERROR,
            )
        answer = self._static.get((flag_key, kind))
        if answer is not None:
            return answer
        resolve = self._methods[kind]
        evaluation: _Evaluation | None = None
        try:
            if flag_key not in self._watched:
                return resolve(flag_key, default_value, context)
            evaluation = _current.evaluation = _Evaluation()
            try:
                result = resolve(flag_key, default_value, context)
            finally:
                _current.evaluation = None
        except OpenFeatureError as exc:
            if evaluation is not None and evaluation.key_missing:
                return self._key_missing(flag_key, default_value)
            return FlagResolutionDetails(
                default_value,
                error_code=exc.error_code,
                error_message=exc.error_message,
                reason=Reason.ERROR,
            )
        except Exception as exc:  # noqa: BLE001 - an evaluation answers, never raises (1.4.10)
            return FlagResolutionDetails(
                default_value,
                error_code=ErrorCode.GENERAL,
                error_message=f"{type(exc).__name__}: {exc}",
                reason=Reason.ERROR,
            )
        if evaluation.key_missing:
            return self._key_missing(flag_key, default_value, result.flag_metadata)
        if result.variant in evaluation.picks and result.reason == Reason.TARGETING_MATCH:
            result.reason = Reason.SPLIT
        return result

    @staticmethod
    def _key_missing(
        flag_key: str, default_value: T, metadata: Mapping[str, Any] | None = None
    ) -> FlagResolutionDetails[T]:
        return FlagResolutionDetails(
            default_value,
            error_code=ErrorCode.TARGETING_KEY_MISSING,
            error_message=f"flag {flag_key!r} buckets or targets by the targeting key, and the"
            " evaluation context has none",
            reason=Reason.ERROR,
            flag_metadata=dict(metadata or {}),
        )

    def resolve_boolean_details(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        """The flag as a boolean (flagd's evaluation; see the module doc)."""
        return self._resolve("boolean", flag_key, default_value, evaluation_context)

    def resolve_string_details(
        self,
        flag_key: str,
        default_value: str,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[str]:
        """The flag as a string."""
        return self._resolve("string", flag_key, default_value, evaluation_context)

    def resolve_integer_details(
        self,
        flag_key: str,
        default_value: int,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[int]:
        """The flag as an integer."""
        return self._resolve("integer", flag_key, default_value, evaluation_context)

    def resolve_float_details(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[float]:
        """The flag as a float (an integer variant too)."""
        return self._resolve("float", flag_key, default_value, evaluation_context)

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Sequence[FlagValueType] | Mapping[str, FlagValueType],
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Sequence[FlagValueType] | Mapping[str, FlagValueType]]:
        """The flag as a JSON object."""
        return self._resolve("object", flag_key, default_value, evaluation_context)


# ---------------------------------------------------------------------------- validation


def parse_flag_set(document: Mapping[str, Any]) -> Mapping[str, Any]:
    """The flag set in ``document`` (a copy), checked as flagd would run it; the parse function
    of the ``flags`` namespace. Raises ConfigRejected naming the flag and field: ``flags`` not an
    object; a flag whose ``state`` is not ENABLED/DISABLED, whose ``variants`` are empty or of
    mixed types (boolean, string, number, object), whose ``defaultVariant`` names no variant,
    whose ``metadata`` values are not boolean/string/number, or whose ``targeting`` uses an
    operation flagd does not have or a ``$ref`` to no ``$evaluators`` entry; and anything
    flagd's evaluator refuses to load."""
    try:
        flag_set = json.loads(json.dumps(document))
    except (TypeError, ValueError) as exc:
        raise ConfigRejected(f"the flag set is not JSON: {exc}") from None
    if not isinstance(flag_set, dict):
        raise ConfigRejected("the flag set must be a JSON object")
    flags = flag_set.get("flags")
    if not isinstance(flags, dict):
        raise ConfigRejected("flags: required, an object of flag key to flag definition")
    evaluators = flag_set.get("$evaluators", {})
    if not isinstance(evaluators, dict):
        raise ConfigRejected("$evaluators: must be an object of name to JsonLogic rule")
    _check_metadata("metadata", flag_set.get("metadata", {}))
    for name, rule in evaluators.items():
        _check_rule(f"$evaluators.{name}", rule, {})
    for key, flag in flags.items():
        _check_flag(key, flag, evaluators)
    core = FlagdCore()
    try:
        core.set_flags(json.loads(json.dumps(flag_set)))
    except Exception as exc:  # noqa: BLE001 - flagd-core's errors are of several kinds
        raise ConfigRejected(f"flags: flagd's evaluator refuses the set: {exc}") from None
    return flag_set


def _check_metadata(where: str, metadata: Any) -> None:
    if not isinstance(metadata, dict):
        raise ConfigRejected(f"{where}: must be an object")
    for name, value in metadata.items():
        if not isinstance(value, bool | int | float | str):
            raise ConfigRejected(f"{where}.{name}: must be a boolean, string or number")


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    return "array" if isinstance(value, list) else "null"


def _check_flag(key: str, flag: Any, evaluators: Mapping[str, Any]) -> None:
    where = f"flags.{key}"
    if not key:
        raise ConfigRejected("flags: a flag key must not be empty")
    if not isinstance(flag, dict):
        raise ConfigRejected(f"{where}: must be an object")
    if flag.get("state") not in _STATES:
        raise ConfigRejected(
            f"{where}.state: must be ENABLED or DISABLED, not {flag.get('state')!r}"
        )
    variants = flag.get("variants")
    if not isinstance(variants, dict) or not variants:
        raise ConfigRejected(f"{where}.variants: must be a non-empty object of name to value")
    kinds = {_kind(value) for value in variants.values()}
    if len(kinds) > 1 or kinds & {"array", "null"}:
        raise ConfigRejected(
            f"{where}.variants: values must all be booleans, all strings, all numbers or all"
            f" objects (found {', '.join(sorted(kinds))})"
        )
    default = flag.get("defaultVariant")
    if default is not None and (not isinstance(default, str) or default not in variants):
        raise ConfigRejected(
            f"{where}.defaultVariant: {default!r} is not one of its variants"
            f" ({', '.join(variants)})"
        )
    if "metadata" in flag:
        _check_metadata(f"{where}.metadata", flag["metadata"])
    targeting = flag.get("targeting")
    if targeting is not None:
        if not isinstance(targeting, dict):
            raise ConfigRejected(f"{where}.targeting: must be a JsonLogic object")
        _check_rule(f"{where}.targeting", targeting, evaluators)


def _check_rule(where: str, rule: Any, evaluators: Mapping[str, Any]) -> None:
    """Every operation in ``rule`` is one flagd's evaluator has (json_logic.apply's reading: a
    one-key object is an operation; any other value is a literal)."""
    if isinstance(rule, list):
        for item in rule:
            _check_rule(where, item, evaluators)
        return
    if not isinstance(rule, dict) or len(rule) != 1:
        return
    ((op, args),) = rule.items()
    if op == "$ref":
        if not isinstance(args, str) or args not in evaluators:
            raise ConfigRejected(f"{where}: $ref {args!r} names no entry of $evaluators")
        return
    if op not in _OPERATIONS and op not in _SPECIAL_FORMS:
        raise ConfigRejected(f"{where}: unknown operation {op!r}")
    _check_rule(where, args, evaluators)
