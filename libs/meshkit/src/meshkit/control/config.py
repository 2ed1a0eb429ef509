"""Live configuration: a namespace's document, pushed by the control service, applied in process.

``LiveConfig`` watches one namespace of the control service (``mesh.control.v1.ConfigService``,
``Watch``) on a thread of its own and keeps the newest version the service accepts as
``current``, an immutable ``Snapshot``: reading it is one attribute read, no lock, no RPC. What it
borrows from etcd's watch and Envoy's xDS:

- **Resume.** Every version has a number; after a lost stream the watch reconnects with the last
  version it received (``since_version``), so it misses no change and gets none twice. Reconnects
  back off exponentially (0.1 s .. 2 s, jittered), forever until ``close()``. A lost stream is
  logged once (WARNING, with the retry plan), its return once (INFO), not every attempt.
- **ACK/NACK.** Each version goes through the service's own ``parse`` function. One that raises
  (``ConfigRejected`` naming the field, or any exception) is rejected: the previous snapshot stays
  live, a WARNING names namespace, version and error, and the control service is told
  (``ReportStatus`` accepted=false, with the version still running; ``mesh config status``).
  Applied versions are reported too (accepted=true). A report that fails is logged, never fatal.
- **Last known good.** Each applied version is written to ``<cache_dir>/<namespace>.json``
  (temp file, fsync, rename) *before* it becomes current, so the file always holds a version the
  process ran. ``start()`` serves it when the control service does not answer in time (and says
  so, naming the version and the file), else the built-in ``default``; a corrupt or unreadable
  file is logged and ignored.
- **Reset.** A message with ``snapshot=true`` (a fresh watch, or the service's store replaced) is
  taken as it is, even with a lower version.

A service gets one with ``ctx.config(namespace, parse=..., default=...)`` (meshkit.service),
which starts it while the service builds and closes it on stop.

The wire protocol is the installed contracts package's ``mesh.control.v1`` (found by name at run
time, as meshkit.audit finds ``mesh.audit.v1``: meshkit itself depends on no contracts).

Thread safety: ``current``/``value`` from any thread; ``subscribe`` callbacks run on the watch
thread, one at a time, in version order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import logging
import os
import random
import re
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import Any, Generic, TypeVar

import grpc

from meshkit.addresses import AddressError, address_of
from meshkit.client import connect
from meshkit.credentials import TokenSource
from meshkit.resilience import unguarded

NAMESPACE_RE = r"^[a-z0-9][a-z0-9._-]{0,63}$"

LIVE = "live"
LAST_KNOWN_GOOD = "last-known-good"
DEFAULT = "default"

PROTOCOL_MODULE = "mesh.control.v1.control_pb2"
SERVICE = "mesh.control.v1.ConfigService"
BACKOFF_MIN_S = 0.1
BACKOFF_MAX_S = 2.0
# A watch is opened again (from its version, missing nothing) at least this often, so a stream
# whose peer vanished without a reset (a network partition, no keepalive) is not waited on forever.
STREAM_S = 300.0
REPORT_TIMEOUT_S = 5.0
CLOSE_JOIN_S = 5.0

T = TypeVar("T")
log = logging.getLogger("meshkit.control")
_EMPTY: Mapping[str, Any] = MappingProxyType({})
_protocol: ModuleType | None = None


@dataclasses.dataclass(frozen=True)
class Snapshot(Generic[T]):
    """One version of a namespace as the process runs it. Immutable; ``document`` is the JSON
    object as stored (do not change it), ``value`` what the parse function made of it."""

    namespace: str
    version: int  # 0: the built-in default (no document yet, or the service never reached)
    document: Mapping[str, Any]
    value: T
    source: str  # "live" | "last-known-good" | "default"


class ConfigRejected(ValueError):
    """Raised by a parse function: the client NACKs the version. str() says which field, why
    (e.g. ``max_lines_per_order: must be at least 1``)."""


def protocol() -> ModuleType:
    """``mesh.control.v1.control_pb2`` from the installed contracts package; RuntimeError saying
    so when it is not installed."""
    global _protocol  # noqa: PLW0603 - imported once per process
    if _protocol is None:
        try:
            _protocol = importlib.import_module(PROTOCOL_MODULE)
        except ImportError as exc:
            raise RuntimeError(
                f"live configuration needs the contracts package ({PROTOCOL_MODULE}): {exc}"
            ) from None
    return _protocol


class LiveConfig(Generic[T]):
    """A namespace's document pushed live by the control service (see the module doc).

    ``parse`` turns a document into the value the service uses and raises ``ConfigRejected``
    (or anything) for one it cannot run; ``default`` is the document served before any version
    arrives (it must parse: ValueError otherwise). ``target`` is the control service's address
    (default ``meshkit.addresses.address_of("control")``; unknown: no watch, the last known good
    or the default is served, and a WARNING says so); ``channel`` an existing channel to use
    instead (not closed here). ``cache_dir`` holds the last known good; ``client`` names this
    watcher to the control service (``"<service>@<host>:<pid>"``).
    """

    def __init__(
        self,
        namespace: str,
        *,
        parse: Callable[[Mapping[str, Any]], T],
        default: Mapping[str, Any] = _EMPTY,
        target: str | None = None,
        credentials: TokenSource | None = None,
        cache_dir: Path,
        client: str,
        channel: grpc.Channel | None = None,
    ) -> None:
        if not re.fullmatch(NAMESPACE_RE, namespace):
            raise ValueError(
                f"namespace {namespace!r}: lower-case letters, digits, '.', '_' and '-', 1 to 64"
            )
        self.namespace = namespace
        self.client = client
        self.cache_path = Path(cache_dir) / f"{namespace}.json"
        self._parse = parse
        document = dict(default)
        try:
            value = parse(document)
        except Exception as exc:
            raise ValueError(f"the default of {namespace!r} does not parse: {exc}") from exc
        self._default: Snapshot[T] = Snapshot(namespace, 0, document, value, DEFAULT)
        self._current = self._default
        self._pb = protocol()
        self._own_channel: grpc.Channel | None = None
        self._no_target_why = ""
        if channel is None and target is None:
            try:
                target = address_of("control")
            except AddressError as exc:
                self._no_target_why = str(exc)
        if channel is None and target is not None:
            # Breakers and bulkheads are for request paths: a watch is one call that stays
            # open for minutes and has its own backoff; a breaker's half-open trial that never
            # ends (an open stream) would hold the breaker half-open for good.
            channel = self._own_channel = connect(
                target, credentials=credentials, downstreams=unguarded()
            )
        self.target = target or "the given channel"
        self._watch: Any = None
        self._report: Any = None
        if channel is not None:
            self._watch = channel.unary_stream(
                f"/{SERVICE}/Watch",
                request_serializer=self._pb.WatchRequest.SerializeToString,
                response_deserializer=self._pb.WatchResponse.FromString,
            )
            self._report = channel.unary_unary(
                f"/{SERVICE}/ReportStatus",
                request_serializer=self._pb.ReportStatusRequest.SerializeToString,
                response_deserializer=self._pb.ReportStatusResponse.FromString,
            )
        self._subscribers: list[Callable[[Snapshot[T]], None]] = []
        self._changed = threading.Condition()
        self._first = threading.Event()  # the first message was handled (applied or NACKed)
        # start() waits no longer: the first message, or the first attempt failing (refused).
        self._settled = threading.Event()
        self._why_down = ""
        self._closed = threading.Event()
        self._call_lock = threading.Lock()
        self._call: Any = None
        self._thread: threading.Thread | None = None
        self._since = 0  # the last version received (applied or NACKed): where a watch resumes
        self._connected = False
        self._lost_at: float | None = None  # when the outage being retried began

    @property
    def current(self) -> Snapshot[T]:
        """The snapshot in force (an attribute read of an immutable value: no lock)."""
        return self._current

    @property
    def value(self) -> T:
        """``current.value``."""
        return self._current.value

    def subscribe(self, callback: Callable[[Snapshot[T]], None]) -> None:
        """Call ``callback(snapshot)`` on the watch thread after each snapshot is applied (not on
        a NACK). An exception in it is logged and does not stop the watch."""
        self._subscribers = [*self._subscribers, callback]  # copied: the watch thread iterates

    def start(self, wait_s: float = 2.0) -> Snapshot[T]:
        """Start watching; wait up to ``wait_s`` seconds for the first version, or less when the
        first attempt fails (control refused the connection or the watch). Returns the live
        snapshot, else the last known good (WARNING naming its version and file), else the
        default (WARNING). Never raises for an outage: the watch keeps trying. Idempotent."""
        if self._thread is not None or self._closed.is_set():
            return self._current
        cached = self._load_cache()
        if cached is not None:
            self._current = cached
        if self._watch is None:
            self._log_fallback(f"no control service to watch ({self._no_target_why})")
            return self._current
        self._thread = threading.Thread(
            target=self._run, name=f"config-{self.namespace}", daemon=True
        )
        self._thread.start()
        self._settled.wait(wait_s)
        snapshot = self._current
        if snapshot.source == LIVE:
            log.info("config %s: live, version %d", self.namespace, snapshot.version)
        elif self._first.is_set() and snapshot.version == 0 and self._since == 0:
            log.info("config %s: no document yet: serving the built-in default", self.namespace)
        elif self._first.is_set():
            self._log_fallback(f"version {self._since} was rejected")
        elif self._settled.is_set():
            self._log_fallback(f"control at {self.target} is not answering ({self._why_down})")
        else:
            self._log_fallback(f"control at {self.target} did not answer within {wait_s:g} s")
        return self._current

    def _log_fallback(self, why: str) -> None:
        snapshot = self._current
        if snapshot.source == LAST_KNOWN_GOOD:
            log.warning(
                "config %s: %s: serving the last known good, version %d from %s",
                self.namespace,
                why,
                snapshot.version,
                self.cache_path,
            )
        else:
            log.warning(
                "config %s: %s: serving the built-in default (no last known good in %s)",
                self.namespace,
                why,
                self.cache_path,
            )

    def wait_for_version(self, version: int, timeout: float) -> bool:
        """Wait until ``version`` or a later one is current; False after ``timeout`` seconds."""
        with self._changed:
            return self._changed.wait_for(lambda: self._current.version >= version, timeout)

    def close(self) -> None:
        """Stop watching: cancel the stream, join the thread, close the channel it made.
        ``current`` stays readable. Idempotent."""
        self._closed.set()
        with self._call_lock:
            call = self._call
        if call is not None:
            call.cancel()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(CLOSE_JOIN_S)
        if self._own_channel is not None:
            self._own_channel.close()

    # ------------------------------------------------------------------------- the watch thread

    def _run(self) -> None:
        delay = BACKOFF_MIN_S
        while not self._closed.is_set():
            why = self._watch_once()
            if self._closed.is_set():
                return
            if why is None:  # the stream reached its STREAM_S: open the next one at once
                continue
            if not self._settled.is_set():
                self._why_down = why
                self._settled.set()
            if self._connected or self._lost_at is None:
                self._lost(why)
                delay = BACKOFF_MIN_S
            else:
                log.debug("config %s: still no watch (%s)", self.namespace, why)
            # Equal jitter: watchers that lost one server do not all come back in one instant.
            self._closed.wait(delay / 2 + random.uniform(0, delay / 2))  # noqa: S311 - jitter
            delay = min(BACKOFF_MAX_S, delay * 2)

    def _watch_once(self) -> str | None:
        """One watch stream, until it ends; returns why it ended (None: it ran its course)."""
        request = self._pb.WatchRequest(
            namespace=self.namespace, since_version=self._since, client=self.client
        )
        try:
            call = self._watch(request, timeout=STREAM_S)
            with self._call_lock:
                self._call = call
            if self._closed.is_set():  # close() came before the call was there to cancel
                call.cancel()
            # Headers (or a first message) mean the service took the watch.
            call.initial_metadata()
            if not call.done():
                self._back()
            for response in call:
                self._back()
                self._receive(response)
        except grpc.RpcError as exc:
            code = exc.code()  # a call's error is also the Call
            if code == grpc.StatusCode.DEADLINE_EXCEEDED and self._connected:
                return None
            return f"{code.name}: {exc.details()}"
        except Exception as exc:  # noqa: BLE001 - e.g. no token now: retried like an outage
            return f"{type(exc).__name__}: {exc}"
        finally:
            with self._call_lock:
                self._call = None
        return "the control service ended the stream"

    def _back(self) -> None:
        if self._connected:
            return
        self._connected = True
        if self._lost_at is not None:
            log.info(
                "config %s: watching %s again after %.1f s, from version %d",
                self.namespace,
                self.target,
                time.monotonic() - self._lost_at,
                self._since,
            )
            self._lost_at = None

    def _lost(self, why: str) -> None:
        self._connected = False
        self._lost_at = time.monotonic()
        snapshot = self._current
        log.warning(
            "config %s: no watch on %s (%s); serving version %d (%s) meanwhile; retrying every"
            " %g..%g s (jittered) from version %d until it answers",
            self.namespace,
            self.target,
            why,
            snapshot.version,
            snapshot.source,
            BACKOFF_MIN_S,
            BACKOFF_MAX_S,
            self._since,
        )

    def _receive(self, response: Any) -> None:
        config = response.config
        version = int(config.version)
        if not response.snapshot:
            if version <= self._since:
                log.debug("config %s: version %d again, ignored", self.namespace, version)
                return
            if version != self._since + 1:
                # Documents are whole, so the newest is still right to apply; say what was missed.
                log.warning(
                    "config %s: version %d follows %d: the versions between were not received",
                    self.namespace,
                    version,
                    self._since,
                )
        self._since = version
        try:
            snapshot = self._snapshot_of(version, config.document)
        except Exception as exc:  # noqa: BLE001 - any failure of the parse rejects the version
            error = str(exc) if isinstance(exc, ConfigRejected) else f"{type(exc).__name__}: {exc}"
            log.warning(
                "config %s: version %d rejected: %s; keeping version %d (%s)",
                self.namespace,
                version,
                error,
                self._current.version,
                self._current.source,
                extra={"config_namespace": self.namespace, "config_version": version},
            )
            self._report_status(version, accepted=False, error=error)
        else:
            current = self._current
            if (snapshot.version, snapshot.document, snapshot.source) != (
                current.version,
                current.document,
                current.source,
            ):
                self._install(snapshot)
            self._report_status(version, accepted=True)
        self._first.set()
        self._settled.set()

    def _snapshot_of(self, version: int, text: str) -> Snapshot[T]:
        if version == 0:  # the namespace has no document yet: the service runs its default
            return self._default
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise ConfigRejected(f"the document is not JSON: {exc}") from None
        if not isinstance(document, dict):
            raise ConfigRejected("the document is not a JSON object")
        return Snapshot(self.namespace, version, document, self._parse(document), LIVE)

    def _install(self, snapshot: Snapshot[T]) -> None:
        self._write_cache(snapshot)  # first: the file only ever holds a version that ran
        with self._changed:
            self._current = snapshot
            self._changed.notify_all()
        log.info(
            "config %s: version %d applied",
            self.namespace,
            snapshot.version,
            extra={"config_namespace": self.namespace, "config_version": snapshot.version},
        )
        for callback in self._subscribers:
            try:
                callback(snapshot)
            except Exception:
                log.exception(
                    "config %s: a subscriber failed on version %d", self.namespace, snapshot.version
                )

    def _report_status(self, version: int, *, accepted: bool, error: str = "") -> None:
        request = self._pb.ReportStatusRequest(
            namespace=self.namespace,
            version=version,
            client=self.client,
            accepted=accepted,
            error=error,
            running_version=self._current.version,
        )
        what = "ACK" if accepted else "NACK"
        try:
            future = self._report.future(request, timeout=REPORT_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - a report is information, never a failure
            log.warning(
                "config %s: could not report %s of version %d: %s",
                self.namespace,
                what,
                version,
                exc,
            )
            return

        def reported(done: Any) -> None:
            failure = done.exception()
            if failure is not None and not self._closed.is_set():
                log.warning(
                    "config %s: could not report %s of version %d: %s",
                    self.namespace,
                    what,
                    version,
                    getattr(failure, "details", lambda: failure)(),
                )

        future.add_done_callback(reported)

    # ------------------------------------------------------------------- the last known good

    def _load_cache(self) -> Snapshot[T] | None:
        try:
            text = self.cache_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning(
                "config %s: cannot read %s: %s; ignored", self.namespace, self.cache_path, exc
            )
            return None
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("namespace") != self.namespace:
                raise ValueError("not this namespace's last known good")
            version, document = data.get("version"), data.get("document")
            if not isinstance(version, int) or version < 1 or not isinstance(document, dict):
                raise ValueError("no version and document in it")
            value = self._parse(document)
        except Exception as exc:  # noqa: BLE001 - a bad file is ignored: the default serves
            log.warning(
                "config %s: ignoring the last known good in %s: %s",
                self.namespace,
                self.cache_path,
                exc,
            )
            return None
        return Snapshot(self.namespace, version, document, value, LAST_KNOWN_GOOD)

    def _write_cache(self, snapshot: Snapshot[T]) -> None:
        path = self.cache_path
        try:
            if snapshot.version == 0:  # the service has no document (any more): nothing to keep
                path.unlink(missing_ok=True)
                return
            path.parent.mkdir(parents=True, exist_ok=True)
            text = json.dumps(
                {
                    "namespace": self.namespace,
                    "version": snapshot.version,
                    "document": snapshot.document,
                },
                sort_keys=True,
            )
            _write_atomically(path, text)
        except OSError as exc:
            # The version still applies: running it matters more than remembering it.
            log.warning(
                "config %s: cannot keep version %d in %s: %s",
                self.namespace,
                snapshot.version,
                path,
                exc,
            )


def _write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that a crash leaves the old file or the new, whole."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    # The rename itself is durable only once the directory is.
    with contextlib.suppress(OSError):
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
