"""Fault injection on the server side, per method and percentage, as Istio's ``fault`` does for
a route: add delay, abort with a status, or drop the call. Off by default; loudly logged when on.

Where the faults come from (the first that is set):

1. ``$MESH_FAULTS``: the JSON inline (read once, at start);
2. ``$MESH_FAULTS_FILE``: a file;
3. ``<mesh root>/.mesh/faults/<service>.json`` (mesh root: the directory of mesh.toml, as found by
   ``meshkit.addresses.find_config``; the working directory when there is none).

A file may appear, change or vanish while the service runs: ``FaultInjector.run_forever`` looks
at it every 0.5 s (one ``stat``) and re-reads it when it changed, so a chaos run turns faults on
and off without restarting anything. The format (docs/fault-injection.md)::

    {"faults": [
      {"method": "shop.payments.v1.PaymentsService/*",
       "abort": {"code": "UNAVAILABLE", "percent": 20}},
      {"method": "shop.shipping.v1.ShippingService/CreateShipment",
       "delay": {"ms": 500, "percent": 100}},
      {"method": "*", "drop": {"percent": 5}}
    ]}

Every entry whose ``method`` matches a call applies to it, each kind rolled on its own: first
the delays (in file order), then aborts and drops (in file order; the first that fires ends the
call). A delay never outlasts the caller's deadline: it waits at most what is left of it and
then ends the call DEADLINE_EXCEEDED without running the handler. An abort answers the status
with details ``fault injected: ...``. A drop resets the call's HTTP/2 stream (RST_STREAM, code
CANCEL) without any answer, as a connection lost mid-call would: the caller sees CANCELLED,
other calls on the same connection go on. grpc.health.v1 and reflection are never faulted.

An invalid file is refused with an ERROR naming the field, and the faults in force stay. Faults
becoming active, changing or going off are logged at WARNING (listing them), and while any are
active a WARNING every 10 s counts what was injected.

Cost when no faults are configured: one attribute read per RPC. Thread safety: the interceptor
is called from grpcio's threads; the faults in force are swapped whole (one reference).
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from meshkit.addresses import find_config

log = logging.getLogger("meshkit.faults")

ENV_INLINE = "MESH_FAULTS"
ENV_FILE = "MESH_FAULTS_FILE"
# How often the file is looked at (one stat), and how often what was injected is reported.
CHECK_S = 0.5
REPORT_S = 10.0
# time_remaining() of a call without a deadline is about 2**63 ns (see meshkit.deadlines).
_NO_DEADLINE_S = 1e6
_NEVER_FAULTED = ("/grpc.health.v1.Health/", "/grpc.reflection.")
_KINDS = ("delay", "abort", "drop")


class FaultError(ValueError):
    """A faults document is invalid; the message names the field (``faults[1].abort.code``)."""


@dataclass(frozen=True)
class Delay:
    """Wait ``seconds`` before the handler, in ``percent`` of the calls."""

    seconds: float
    percent: float


@dataclass(frozen=True)
class Abort:
    """Answer ``code`` without running the handler, in ``percent`` of the calls."""

    code: grpc.StatusCode
    percent: float


@dataclass(frozen=True)
class Drop:
    """Reset the call's stream without an answer, in ``percent`` of the calls."""

    percent: float


@dataclass(frozen=True)
class Fault:
    """One entry of a faults document: a method pattern and what to do to its calls.

    ``method`` is ``package.Service/Method``, ``package.Service/*`` or ``*``."""

    method: str
    delay: Delay | None = None
    abort: Abort | None = None
    drop: Drop | None = None

    def matches(self, method: str) -> bool:
        """Whether the call to ``method`` (grpcio's ``/package.Service/Method``) is covered."""
        pattern = self.method
        if pattern == "*":
            return True
        name = method.lstrip("/")
        if pattern.endswith("/*"):
            return name.startswith(pattern[:-1])
        return name == pattern

    def describe(self) -> str:
        """``abort UNAVAILABLE 20% on shop.payments.v1.PaymentsService/*`` (kinds joined)."""
        kinds = []
        if self.delay is not None:
            kinds.append(f"delay {self.delay.seconds * 1000:g}ms {self.delay.percent:g}%")
        if self.abort is not None:
            kinds.append(f"abort {self.abort.code.name} {self.abort.percent:g}%")
        if self.drop is not None:
            kinds.append(f"drop {self.drop.percent:g}%")
        return f"{' + '.join(kinds)} on {self.method}"


def parse_faults(text: str | bytes) -> tuple[Fault, ...]:
    """The faults of a JSON document (see the module doc); raises FaultError naming the field.
    ``{"faults": []}`` is valid: no faults."""
    try:
        document = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FaultError(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise FaultError('the document must be an object: {"faults": [...]}')
    _no_other_keys(document, ("faults",), "the document")
    entries = document.get("faults")
    if not isinstance(entries, list):
        raise FaultError("faults: must be a list of faults")
    return tuple(_fault(entry, f"faults[{i}]") for i, entry in enumerate(entries))


def _fault(entry: Any, where: str) -> Fault:
    if not isinstance(entry, dict):
        raise FaultError(f"{where}: must be an object with a method and a delay, abort or drop")
    _no_other_keys(entry, ("method", *_KINDS), where)
    method = _method(entry.get("method"), f"{where}.method")
    if not any(kind in entry for kind in _KINDS):
        raise FaultError(f"{where}: says no fault: give a delay, an abort or a drop")
    delay = abort = drop = None
    if "delay" in entry:
        spec = _spec(entry["delay"], f"{where}.delay", ("ms", "percent"))
        ms = _number(spec.get("ms"))
        if ms is None or ms < 0:
            raise FaultError(f"{where}.delay.ms: must be a number of milliseconds >= 0")
        delay = Delay(ms / 1000, _percent(spec, f"{where}.delay"))
    if "abort" in entry:
        spec = _spec(entry["abort"], f"{where}.abort", ("code", "percent"))
        abort = Abort(
            _code(spec.get("code"), f"{where}.abort.code"), _percent(spec, f"{where}.abort")
        )
    if "drop" in entry:
        spec = _spec(entry["drop"], f"{where}.drop", ("percent",))
        drop = Drop(_percent(spec, f"{where}.drop"))
    return Fault(method, delay, abort, drop)


def _no_other_keys(value: dict[str, Any], known: tuple[str, ...], where: str) -> None:
    unknown = sorted(k for k in value if k not in known)
    if unknown:
        raise FaultError(f"{where}: unknown key {unknown[0]!r} (expected {', '.join(known)})")


def _spec(value: Any, where: str, known: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FaultError(f"{where}: must be an object with {', '.join(known)}")
    _no_other_keys(value, known, where)
    return value


def _number(value: Any) -> float | None:
    """``value`` as a float when it is a JSON number (not a boolean), else None."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _percent(spec: dict[str, Any], where: str) -> float:
    value = _number(spec.get("percent"))
    if value is None or not 0 <= value <= 100:
        raise FaultError(f"{where}.percent: must be a number from 0 to 100")
    return value


def _method(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise FaultError(f"{where}: must be package.Service/Method, package.Service/* or *")
    pattern = value.lstrip("/")
    if pattern == "*":
        return pattern
    service, slash, name = pattern.partition("/")
    if not slash or not service or not name or "*" in service or ("*" in name and name != "*"):
        raise FaultError(
            f"{where}: {value!r} is not package.Service/Method, package.Service/* or *"
        )
    return pattern


def _code(value: Any, where: str) -> grpc.StatusCode:
    name = value.strip().upper() if isinstance(value, str) else None
    code = grpc.StatusCode.__members__.get(name) if name else None
    if code is None or code is grpc.StatusCode.OK:
        raise FaultError(
            f"{where}: {value!r} is not a gRPC status code name other than OK"
            " (e.g. UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL)"
        )
    return code


def faults_path(service: str, env: Mapping[str, str] | None = None) -> Path:
    """The faults file of ``service``: ``$MESH_FAULTS_FILE``, else
    ``<mesh root>/.mesh/faults/<service>.json`` (see the module doc)."""
    env = os.environ if env is None else env
    if env.get(ENV_FILE, "").strip():
        return Path(env[ENV_FILE].strip())
    config = find_config(env)
    root = config.parent if config is not None else Path()
    return root / ".mesh" / "faults" / f"{service}.json"


class _Active:
    """The faults in force, and per method the ones that apply (looked up once per method)."""

    def __init__(self, faults: tuple[Fault, ...]) -> None:
        self.faults = faults
        self._by_method: dict[str, tuple[Fault, ...]] = {}

    def for_method(self, method: str) -> tuple[Fault, ...]:
        found = self._by_method.get(method)
        if found is None:
            if method.startswith(_NEVER_FAULTED):
                found = ()
            else:
                found = tuple(f for f in self.faults if f.matches(method))
            # Only methods the server has reach here (the handler was found first): bounded.
            self._by_method[method] = found
        return found


def _listing(faults: tuple[Fault, ...]) -> str:
    return "; ".join(f.describe() for f in faults) or "none"


class FaultInjector(grpc.ServerInterceptor):
    """The server interceptor that injects the faults configured for ``service`` (see the module
    doc for where they come from and what each does). The kit's MeshServer builds one for every
    server and runs ``run_forever`` as a worker.

    Thread safety: ``intercept_service`` runs on grpcio's threads, ``check``/``run_once`` on the
    worker's; the faults in force are replaced as a whole, never changed in place.
    """

    def __init__(
        self,
        service: str,
        env: Mapping[str, str] | None = None,
        *,
        check_s: float = CHECK_S,
        report_s: float = REPORT_S,
    ) -> None:
        env = os.environ if env is None else env
        self.service = service
        self.check_s = check_s
        self.report_s = report_s
        inline = env.get(ENV_INLINE, "").strip()
        self._inline = inline or None
        # Where the faults come from, for the logs: the variable or the file.
        self.source = ENV_INLINE if inline else str(faults_path(service, env))
        self._path = None if inline else faults_path(service, env)
        # None when no fault is configured: the one attribute every RPC reads.
        self._active: _Active | None = None
        self._signature: tuple[int, int, int] | None = None
        self._random = random.Random()  # noqa: S311 - the odds of a fault, not a secret
        self._lock = threading.Lock()
        self._injected: dict[str, int] = {}
        self._reported = time.monotonic()
        self.injected_total = 0
        if self._inline is not None:
            self._load(self._inline)
        else:
            self.check()

    @property
    def faults(self) -> tuple[Fault, ...]:
        """The faults in force (empty when fault injection is off)."""
        active = self._active
        return () if active is None else active.faults

    def check(self) -> bool:
        """Look at the faults file (one stat) and re-read it if it appeared, changed or vanished;
        True when the faults in force changed. Inline faults (``$MESH_FAULTS``) never change."""
        path = self._path
        if path is None:
            return False
        try:
            stat = path.stat()
        except FileNotFoundError:
            signature = None
        except OSError as exc:
            log.error("fault injection: cannot look at %s: %s", path, exc)
            return False
        else:
            signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if signature == self._signature:
            return False
        self._signature = signature
        if signature is None:
            return self._set((), f"{path} is gone")
        try:
            text = path.read_bytes()
        except OSError as exc:
            log.error(
                "fault injection: cannot read %s: %s; the faults in force stay: %s",
                path,
                exc,
                _listing(self.faults),
            )
            return False
        return self._load(text)

    def _load(self, text: str | bytes) -> bool:
        try:
            faults = parse_faults(text)
        except FaultError as exc:
            log.error(
                "fault injection for %s: %s refused: %s; the faults in force stay: %s",
                self.service,
                self.source,
                exc,
                _listing(self.faults),
                extra={"faults.source": self.source},
            )
            return False
        return self._set(faults, f"from {self.source}")

    def _set(self, faults: tuple[Fault, ...], why: str) -> bool:
        before = self.faults
        if faults == before:
            return False
        self._active = _Active(faults) if faults else None
        if not faults:
            log.warning("fault injection OFF in %s: %s", self.service, why)
        else:
            log.warning(
                "fault injection %s in %s (%s): %s",
                "CHANGED" if before else "ON",
                self.service,
                why,
                _listing(faults),
                extra={"faults": [f.describe() for f in faults]},
            )
        return True

    def report(self) -> None:
        """Log (WARNING) what was injected since the last report, if anything."""
        with self._lock:
            injected, self._injected = self._injected, {}
            now, since, self._reported = time.monotonic(), self._reported, time.monotonic()
        if injected:
            log.warning(
                "fault injection in %s: %d faults injected in the last %.0fs: %s",
                self.service,
                sum(injected.values()),
                now - since,
                ", ".join(f"{what} x{count}" for what, count in sorted(injected.items())),
                extra={"faults.injected": injected},
            )

    def run_once(self) -> int:
        """Re-check the file, and report what was injected when ``report_s`` has passed;
        returns 1 when the faults in force changed, else 0."""
        changed = self.check()
        if time.monotonic() - self._reported >= self.report_s:
            self.report()
        return int(changed)

    def run_forever(self, stop: threading.Event) -> None:
        """``run_once`` every ``check_s`` until ``stop`` is set; then a last report."""
        while not stop.wait(self.check_s):
            try:
                self.run_once()
            except Exception:  # a bad moment of the file system must not end the checks
                log.exception("fault injection: checking %s failed", self.source)
        self.report()

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        active = self._active
        if active is None:
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        faults = active.for_method(method)
        if not faults:
            return handler
        # Faults act when grpcio calls the handler, before it runs: for a streaming response
        # that is before its first message, so the returned iterator needs no re-wrapping.
        inject = self._inject

        def faulted(behaviour: Callable[[Any, grpc.ServicerContext], Any]) -> Any:
            def wrapper(request: Any, context: grpc.ServicerContext) -> Any:
                inject(faults, method, context)
                return behaviour(request, context)

            return wrapper

        shapes: tuple[tuple[Any, Callable[..., grpc.RpcMethodHandler[Any, Any]]], ...] = (
            (handler.unary_unary, grpc.unary_unary_rpc_method_handler),
            (handler.unary_stream, grpc.unary_stream_rpc_method_handler),
            (handler.stream_unary, grpc.stream_unary_rpc_method_handler),
            (handler.stream_stream, grpc.stream_stream_rpc_method_handler),
        )
        for behaviour, make in shapes:
            if behaviour is not None:
                wrapped: grpc.RpcMethodHandler[Any, Any] = make(
                    faulted(behaviour),
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
                return wrapped
        return handler

    def _inject(
        self, faults: tuple[Fault, ...], method: str, context: grpc.ServicerContext
    ) -> None:
        """Roll each fault of ``faults`` for this call; delay, or end it (raises) with an abort
        or a drop."""
        roll = self._random.random
        for fault in faults:
            if fault.delay is not None and roll() * 100 < fault.delay.percent:
                self._count(f"delay {fault.delay.seconds * 1000:g}ms on {method}")
                self._delay(fault.delay.seconds, fault, context)
        for fault in faults:
            if fault.abort is not None and roll() * 100 < fault.abort.percent:
                code = fault.abort.code
                self._count(f"abort {code.name} on {method}")
                context.abort(code, f"fault injected: abort {code.name} ({fault.describe()})")
            if fault.drop is not None and roll() * 100 < fault.drop.percent:
                self._count(f"drop on {method}")
                # grpcio's cancel() on a server call resets the stream (RST_STREAM CANCEL): no
                # status, no trailers. The abort only ends the handler; nothing more is sent.
                context.cancel()
                context.abort(
                    grpc.StatusCode.CANCELLED, f"fault injected: drop ({fault.describe()})"
                )

    @staticmethod
    def _delay(seconds: float, fault: Fault, context: grpc.ServicerContext) -> None:
        """Wait ``seconds``, but never past the caller's deadline, and no longer than the call
        lives (a cancel or the server's stop ends the wait)."""
        left = context.time_remaining()
        bounded = left is not None and left < _NO_DEADLINE_S
        ended = threading.Event()
        if not context.add_callback(ended.set):
            return  # the call is over already
        if bounded and left is not None and left <= seconds:
            ended.wait(max(0.0, left))
            context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"fault injected: the delay outlasted the caller's deadline ({fault.describe()})",
            )
        if ended.wait(seconds) or not context.is_active():
            context.abort(grpc.StatusCode.CANCELLED, "fault injected: delay, then the call ended")

    def _count(self, what: str) -> None:
        with self._lock:
            self._injected[what] = self._injected.get(what, 0) + 1
            self.injected_total += 1
