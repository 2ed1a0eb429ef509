"""The Confluent REST API over `Registry`: routing, query quirks, rendering, the GET cache.

`Api.handle()` takes a parsed HTTP request and returns the complete response bytes, so the
server (`schema_registry.http`) only moves bytes. These things here are deliberate:

* Routing works on the raw path, split on `/` before percent-decoding, so `%2F` stays inside a
  subject (starlette#826 is why Karapace needed its own router).
* Errors are mapped to `{"error_code", "message"}` in `_dispatch` and nowhere else; refused
  credentials (`--auth`) in `_refuse`, with their WWW-Authenticate challenge.
* Writes (POST, PUT, DELETE other than the schema lookup and the no-op `POST /`) carry a
  `WriteContext` from the HTTP layer: who is asking (the guard's verdict when the registry runs
  with `--auth`), from where, in which trace. A guarded write without a passing verdict is
  refused here whatever the caller of `handle()` forgot (fail closed); every write is audited
  (`schema_registry.audit`). None of this is on the GET path.
* Every GET answer is a pure function of the stored state, so whole 200 responses are cached
  by (URL, Accept) and dropped when the storage change counter moves; the hot path
  (`GET /schemas/ids/{id}`) is then one dict lookup. The counter is shared by all worker
  processes, which gives read-your-writes across workers. The cache is bounded by bytes, not
  entries, and keeps no error answers: a 404 echoes its URL, so caching those let a few
  thousand long unique URLs grow a worker by gigabytes.
* One JSON access-log line per write (logger ``schema_registry.access``), with method, path,
  status, duration, client address, subject and caller; reads only when sampled
  (``access_log_reads``, off by default: they are nearly all of the traffic).
* The API describes itself at ``GET /openapi.json`` (`schema_registry.openapi`).
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from importlib import metadata
from typing import Any, Final
from urllib.parse import parse_qsl, unquote

from meshkit.audit import DENIED, FAILURE
from schema_registry import jsontext
from schema_registry import registry as ops
from schema_registry.audit import ANONYMOUS, WRITE_ACTION, Origin
from schema_registry.auth import Guard, Refusal, challenge
from schema_registry.avro import has_lone_surrogate
from schema_registry.errors import ErrorCode, RegistryError
from schema_registry.openapi import openapi_document
from schema_registry.providers import PROVIDERS
from schema_registry.registry import Registry

log = logging.getLogger(__name__)
access_log = logging.getLogger("schema_registry.access")

V1_JSON: Final = "application/vnd.schemaregistry.v1+json"
_MEDIA_TYPES: Final = (V1_JSON, "application/vnd.schemaregistry+json", "application/json")
#: The GET cache's size in bytes. The hot set (every schema by id, each subject's versions,
#: under the few Accept spellings clients send) is ~1-2 KiB an entry, so this holds some 30,000
#: of them, while a worker flooded with unique URLs stays well under the 100 MiB above idle that
#: issue 17 asks for (Python's allocator keeps what it once took, so the bound is the peak).
CACHE_BUDGET: Final = 64 * 1024 * 1024
# What an entry costs besides its bytes: the dict slot, the key tuple and three bytes headers.
_ENTRY_OVERHEAD: Final = 256
_OK: Final = b"HTTP/1.1 200 "


class Query:
    """Query parameters with Confluent's and ckp's spellings unified.

    ckp sends snake_case for some names the server reads in camelCase (`deleted_only`,
    `reference_format`) and Python-formatted booleans (`True`), so names are folded to camelCase
    and booleans read case-insensitively (JAX-RS `Boolean.valueOf`: only "true" is true).
    """

    def __init__(self, raw: str) -> None:
        self._values: dict[str, list[str]] = {}
        for key, value in parse_qsl(raw, keep_blank_values=True):
            self._values.setdefault(_camel(key.removesuffix("[]")), []).append(value)

    def text(self, name: str, default: str = "") -> str:
        """The first value of a parameter."""
        values = self._values.get(name)
        return values[0] if values else default

    def every(self, name: str) -> list[str]:
        """Every value of a repeated parameter."""
        return list(self._values.get(name, ()))

    def has(self, name: str) -> bool:
        """Whether the parameter was sent."""
        return name in self._values

    def flag(self, name: str) -> bool:
        """`true` in any case is true; anything else (or absence) is false."""
        return self.text(name).strip().lower() == "true"

    def number(self, name: str, default: int) -> int:
        """An integer parameter; 400 when it is not one."""
        text = self.text(name)
        if not text:
            return default
        number = java_int(text)
        if number is None:
            raise RegistryError(
                ErrorCode.BAD_REQUEST, f"Query parameter {name} must be an integer, not '{text}'"
            )
        return number


_JAVA_INT = re.compile(r"[+-]?[0-9]{1,19}")
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1


def java_int(text: str) -> int | None:
    """``text`` as Java's Integer.parseInt reads a request's number (what Confluent's JAX-RS
    parameters are), else None: ASCII digits with an optional sign, within 32 bits. Python's
    int() would also take ``1_0``, other scripts' digits and spaces, and numbers SQLite cannot
    hold (ids above 2^63-1 answered 500)."""
    if not _JAVA_INT.fullmatch(text):
        return None
    number = int(text)
    return number if _INT_MIN <= number <= _INT_MAX else None


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


@dataclass(frozen=True)
class WriteContext:
    """What the HTTP layer knows of a write besides its bytes: who and from where (``origin``),
    and the guard's verdict: ``allowed`` when the credentials passed, else the ``refusal``.
    ``authorization`` is the request's Authorization header as sent, for a follower to pass on
    to the primary (`schema_registry.forwarding`), which checks it again; it is a secret: kept
    out of ``repr`` and never logged or recorded."""

    origin: Origin = ANONYMOUS
    allowed: bool = False
    refusal: Refusal | None = None
    authorization: str = field(default="", repr=False)


@dataclass(frozen=True)
class Write:
    """What a POST, PUT or DELETE route does: its audit ``action``; ``guarded`` when ``--auth``
    requires scope schemas:write for it; ``audited`` when its failures are recorded (a route
    that changes something records its successes itself, in the change's transaction)."""

    action: str
    guarded: bool = True
    audited: bool = True


_CHECK: Final = Write("schemas.compatibility.check", audited=False)


@dataclass
class Request:
    """What a handler sees: decoded path parameters, the query and the JSON body, and (for a
    write) who asked for it."""

    method: str
    params: dict[str, str]
    query: Query
    raw_body: bytes
    origin: Origin = ANONYMOUS

    def json(self) -> Any:
        """The body as JSON; 400 when it is not JSON (empty is null)."""
        if not self.raw_body.strip():
            return None
        try:
            value = jsontext.loads(self.raw_body)
        except (ValueError, UnicodeDecodeError) as exc:
            # int() refuses over 4,300 digits with advice for Python programmers, not API users.
            detail = str(exc).partition("; use sys.set_int_max_str_digits()")[0]
            raise RegistryError(
                ErrorCode.BAD_REQUEST, f"Unexpected request body: {detail}"
            ) from None
        except RecursionError:  # thousands of nested arrays: answered 500
            raise RegistryError(
                ErrorCode.BAD_REQUEST, "Unexpected request body: nested too deeply"
            ) from None
        if b"\\u" in self.raw_body and has_lone_surrogate(value):
            # "\ud800" alone decodes to a str no UTF-8 can carry: storing it, or an error
            # message echoing it, failed (a 500, or a dropped connection).
            raise RegistryError(
                ErrorCode.BAD_REQUEST,
                "Unexpected request body: a \\u escape is half of a surrogate pair"
                " (not Unicode text)",
            )
        return value

    def int_param(self, name: str) -> int:
        """A path segment that must be an integer; Jersey answers 404 when it is not."""
        number = java_int(self.params[name])
        if number is None:
            raise RegistryError(ErrorCode.NOT_FOUND, "HTTP 404 Not Found")
        return number


@dataclass(frozen=True)
class Raw:
    """A handler result sent as-is (the `/schema` endpoints return the schema text itself),
    with the negotiated media type unless it names its own (``/openapi.json``)."""

    text: str
    media_type: str = ""


Handler = Callable[[Request], Any]


@dataclass
class _Node:
    """A routing tree node: literal children, one `{param}` child, handlers by method."""

    literals: dict[str, _Node] = field(default_factory=dict)
    param: tuple[str, _Node] | None = None
    handlers: dict[str, tuple[Handler, Write | None]] = field(default_factory=dict)


class Api:
    """The REST API. Call `handle()` from one thread at a time per instance (one per worker).

    With a ``guard`` (``serve --auth``), guarded writes need a `WriteContext` whose credentials
    the guard allowed; the HTTP layer runs ``guard.check`` off the event loop and passes it.
    ``cache_budget`` bounds the GET cache in bytes (`cache_bytes` says what it holds now);
    ``access_log_reads`` is the share of reads (0..1) logged like writes.
    """

    def __init__(
        self,
        registry: Registry,
        *,
        guard: Guard | None = None,
        cache_budget: int = CACHE_BUDGET,
        access_log_reads: float = 0.0,
    ) -> None:
        if not 0.0 <= access_log_reads <= 1.0:
            raise ValueError(f"access_log_reads must be within 0..1, not {access_log_reads}")
        self.registry = registry
        self.guard = guard
        self._root = _Node()
        self._cache: dict[tuple[bytes, bytes], bytes] = {}
        self._cache_bytes = 0
        self._cache_budget = cache_budget
        # An entry bigger than this is not kept: one huge listing must not evict the hot set.
        self._cache_entry_max = cache_budget // 16
        self._read_log_rate = access_log_reads
        self._seen_counter = registry.storage.change_counter()
        self._version = _package_version()
        self._openapi = ""
        self._patterns: list[tuple[str, str]] = []
        for method, pattern, handler, write in self._routes():
            self._add(method, pattern, handler, write)
            self._patterns.append((method, pattern))

    @property
    def cache_bytes(self) -> int:
        """What the GET cache holds now, in bytes (responses, keys and per-entry overhead)."""
        return self._cache_bytes

    def routes(self) -> list[tuple[str, str]]:
        """Every (method, path pattern) served, e.g. ``("GET", "/schemas/ids/{id}")``; HEAD is
        answered wherever GET is."""
        return list(self._patterns)

    def serves(self, method: str, url: bytes) -> bool:
        """Whether a route answers ``method`` on ``url``'s path (HEAD wherever GET): the HTTP
        layer refuses a request's media type only for a resource that exists, as Jersey matches
        the resource (404) and the method (405) before what it consumes (415)."""
        try:
            self._route(
                "GET" if method == "HEAD" else method, url.decode("latin-1").partition("?")[0]
            )
        except RegistryError:
            return False
        return True

    # ------------------------------------------------------------------ HTTP entry point
    def handle(
        self,
        method: str,
        url: bytes,
        accept: bytes,
        body: bytes,
        context: WriteContext | None = None,
        *,
        peer: str = "",
    ) -> bytes:
        """The complete HTTP/1.1 response (status line, headers, body) for one request.
        ``context`` is for writes (see `WriteContext`); reads ignore it. ``peer`` is the
        client's address, for the access log (a write's ``context`` carries its own)."""
        counter = self.registry.storage.change_counter()
        if counter != self._seen_counter:
            self._drop_cache()
            self._seen_counter = counter
        if method not in ("GET", "HEAD"):
            return self._audited(method, url, accept, body, context or WriteContext(), peer=peer)
        if self._read_log_rate and random.random() < self._read_log_rate:  # noqa: S311
            started = time.perf_counter()
            response = self._cache.get((url, accept)) or self._fill(method, url, accept, body)
            self._log_access(method, url, response, started, peer=peer)
            return response
        hit = self._cache.get((url, accept))
        if hit is not None:
            return hit
        return self._fill(method, url, accept, body)

    def _fill(self, method: str, url: bytes, accept: bytes, body: bytes) -> bytes:
        """A read's answer, kept in the cache when it may be (a 200 that fits)."""
        response = self._respond(method, url, accept, body)
        # Only 200s: an error answer may echo the URL (Subject '...' not found), so caching
        # errors let unique URLs fill memory, and a miss is not the hot path anyway. Read the
        # counter again: a write by another worker during this read may postdate the answer.
        if (
            response.startswith(_OK)
            and self.registry.storage.change_counter() == self._seen_counter
        ):
            size = len(url) + len(accept) + len(response) + _ENTRY_OVERHEAD
            if size <= self._cache_entry_max:
                if self._cache_bytes + size > self._cache_budget:
                    # Clear on full, not LRU: a hit stays one dict lookup with no bookkeeping,
                    # and the hot set is back after one miss per key.
                    self._drop_cache()
                self._cache[(url, accept)] = response
                self._cache_bytes += size
        return response

    def _drop_cache(self) -> None:
        self._cache.clear()
        self._cache_bytes = 0

    def guarded(self, method: str, url: bytes) -> bool:
        """Whether this request must pass the guard first (False without one, and for reads)."""
        if self.guard is None or method in ("GET", "HEAD"):
            return False
        write = self._write_of(method, url.decode("latin-1"))[0]
        return write is not None and write.guarded

    def _write_of(self, method: str, url: str) -> tuple[Write | None, str | None]:
        """The route's `Write` (None for reads and unknown paths) and its subject parameter
        (None where the route has none)."""
        try:
            _, params, write = self._route(method, url.partition("?")[0])
        except RegistryError:
            return None, None
        return write, params.get("subject")

    def _audited(
        self,
        method: str,
        url: bytes,
        accept: bytes,
        body: bytes,
        context: WriteContext,
        *,
        peer: str,
    ) -> bytes:
        """``_respond`` for a POST, PUT or DELETE, after the guard's verdict, and its access-log
        line: every write is logged, with its outcome and the caller."""
        started = time.perf_counter()
        response = None
        if self.guard is not None and not context.allowed:
            write, subject = self._write_of(method, url.decode("latin-1"))
            if write is not None and write.guarded:
                refusal = context.refusal or Refusal(401, "the credentials were not checked")
                response = self._refuse(method, write, subject, refusal, context.origin)
        if response is None:
            response = self._respond(method, url, accept, body, context.origin)
        self._log_access(method, url, response, started, peer=peer, origin=context.origin)
        return response

    def _log_access(
        self,
        method: str,
        url: bytes,
        response: bytes,
        started: float,
        *,
        peer: str,
        origin: Origin | None = None,
    ) -> None:
        """One access-log line: meshkit.http's field names (one query reads the gateway's,
        identity's and the registry's lines), plus the subject and, for a write, the caller
        and its trace. The query string is logged too: the registry's carry no secrets, and
        ``permanent=true`` or ``force=true`` is what an auditor asks about."""
        level = logging.WARNING if response[9:10] == b"5" else logging.INFO
        if not access_log.isEnabledFor(level):
            return
        status = int(response[9:12])  # b"HTTP/1.1 200 OK..."
        elapsed_ms = round((time.perf_counter() - started) * 1000, 3)
        target = url.decode("latin-1")
        path, _, query = target.partition("?")
        subject = self._write_of(method, path)[1]
        address = (origin.source_address if origin is not None else "") or peer
        extra: dict[str, Any] = {
            "http_method": method,
            "http_path": path,
            "http_query": query,
            "http_status": status,
            "elapsed_ms": elapsed_ms,
            "client_address": address,
            "subject": subject,
        }
        if origin is not None:
            extra["enduser_id"] = origin.actor.subject
            if origin.trace_id:
                extra["trace_id"] = origin.trace_id
        who = f" by {origin.who}" if origin is not None else ""
        access_log.log(
            level, "%s %s %d %.1fms%s", method, target, status, elapsed_ms, who, extra=extra
        )

    def _refuse(
        self,
        method: str,
        write: Write,
        subject: str | None,
        refusal: Refusal,
        origin: Origin,
    ) -> bytes:
        """The answer to a write refused for its credentials (Confluent's words and codes), and
        its DENIED audit record. 503 (identity unreachable) denies nothing: not recorded."""
        if refusal.status == 503:
            message = f"Cannot check credentials now: {refusal.reason}"
            answer = _error(ErrorCode.SERVICE_UNAVAILABLE, message)
            return _render(*answer, V1_JSON, [("Retry-After", "1")])
        if refusal.status == 403:
            target = f"Subject: {subject}" if subject is not None else "the registry"
            message = f"User is denied operation Write on {target}: {refusal.reason}"
            answer = _error(ErrorCode.FORBIDDEN, message)
        else:
            answer = _error(ErrorCode.UNAUTHORIZED, f"Unauthorized: {refusal.reason}")
        self._record_alone(
            origin,
            WRITE_ACTION,
            DENIED,
            subject,
            reason=refusal.reason,
            details={"operation": write.action, "method": method, "status": refusal.status},
        )
        headers = [("WWW-Authenticate", value) for value in challenge(refusal)]
        return _render(*answer, V1_JSON, headers)

    def _record_alone(
        self,
        origin: Origin,
        action: str,
        outcome: str,
        subject: str | None,
        *,
        reason: str,
        details: dict[str, Any],
    ) -> None:
        try:
            self.registry.record_alone(
                origin,
                action,
                outcome=outcome,
                subject=subject,
                reason=reason[:1000],
                details=details,
            )
        except Exception:  # the answer goes out anyway; the log says what was not recorded
            log.exception("could not write the audit record of %s (%s) %s", action, outcome, reason)

    def _respond(
        self,
        method: str,
        url: bytes,
        accept: bytes,
        body: bytes,
        origin: Origin | None = None,
    ) -> bytes:
        media_type = _negotiate(accept.decode("latin-1"))
        if media_type is None:
            return _render(*_error(ErrorCode.NOT_ACCEPTABLE, "HTTP 406 Not Acceptable"), V1_JSON)
        status, payload = self._dispatch(method, url.decode("latin-1"), body, origin)
        return _render(status, payload, media_type)

    def _dispatch(
        self, method: str, url: str, body: bytes, origin: Origin | None = None
    ) -> tuple[int, Any]:
        """Route and run a handler; the one place errors become `{"error_code", "message"}`
        (and, for a write, a FAILURE audit record: the change itself rolled back)."""
        path, _, raw_query = url.partition("?")
        write: Write | None = None
        params: dict[str, str] = {}
        try:
            handler, params, write = self._route(method, path)
            request = Request(method, params, Query(raw_query), body, origin or ANONYMOUS)
            return 200, handler(request)
        except RegistryError as exc:
            failed = _error(exc.code, exc.message)
        except Exception as exc:
            log.exception("unexpected error in %s %s", method, path)
            failed = _error(ErrorCode.STORE_ERROR, f"Error in the backend data store: {exc}")
        if origin is not None and write is not None and write.audited:
            status, payload = failed
            self._record_alone(
                origin,
                write.action,
                FAILURE,
                params.get("subject"),
                reason=str(payload["message"]),
                # Confluent's error_code, under a key meshkit.audit's secret check lets by.
                details={
                    "method": method,
                    "status": status,
                    "registry_error": payload["error_code"],
                },
            )
        return failed

    # ------------------------------------------------------------------ routing
    def _add(self, method: str, pattern: str, handler: Handler, write: Write | None) -> None:
        node = self._root
        for segment in filter(None, pattern.split("/")):
            if segment.startswith("{"):
                name = segment[1:-1]
                if node.param is None:
                    node.param = (name, _Node())
                node = node.param[1]
            else:
                node = node.literals.setdefault(segment, _Node())
        node.handlers[method] = (handler, write)

    def _route(self, method: str, path: str) -> tuple[Handler, dict[str, str], Write | None]:
        node = self._root
        params: dict[str, str] = {}
        raws = path.split("/")[1:]
        if raws and raws[-1] == "":
            raws.pop()  # a trailing slash names the same resource
        for raw in raws:
            if not raw:  # "/subjects//versions" is no subject's, not the subject "versions"
                raise RegistryError(ErrorCode.NOT_FOUND, "HTTP 404 Not Found")
            # Split first, decode second: "%2F" is part of a segment, never a separator. Plain
            # unquote, not unquote_plus: "+" is a legal subject character (Karapace bug).
            # Strict UTF-8: with replacement, "%FF" and "%FE" both named the subject "\ufffd".
            try:
                segment = unquote(raw, errors="strict")
            except UnicodeDecodeError:
                raise RegistryError(ErrorCode.NOT_FOUND, "HTTP 404 Not Found") from None
            child = node.literals.get(segment)
            if child is None and node.param is not None:
                params[node.param[0]] = segment
                child = node.param[1]
            if child is None:
                raise RegistryError(ErrorCode.NOT_FOUND, "HTTP 404 Not Found")
            node = child
        found = node.handlers.get("GET" if method == "HEAD" else method)
        if found is None:
            if node.handlers:
                raise RegistryError(ErrorCode.METHOD_NOT_ALLOWED, "HTTP 405 Method Not Allowed")
            raise RegistryError(ErrorCode.NOT_FOUND, "HTTP 404 Not Found")
        return found[0], params, found[1]

    def _routes(self) -> Sequence[tuple[str, str, Handler, Write | None]]:
        r = self.registry
        return [
            ("GET", "/", lambda q: {}, None),
            ("GET", "/openapi.json", self._openapi_json, None),
            # Confluent's no-op POST /: changes nothing, so nothing to guard.
            ("POST", "/", lambda q: {}, None),
            ("GET", "/v1/metadata/id", lambda q: _metadata_id(), None),
            (
                "GET",
                "/v1/metadata/version",
                lambda q: {"version": self._version, "commitId": ""},
                None,
            ),
            ("GET", "/contexts", lambda q: _paged(["."], q.query), None),
            ("GET", "/subjects", self._list_subjects, None),
            # The lookup is a read (Confluent's SUBJECT_READ): every serializer without
            # auto-registration, and every service at start, makes it without credentials.
            ("POST", "/subjects/{subject}", self._lookup, None),
            ("DELETE", "/subjects/{subject}", self._delete_subject, Write(ops.DELETE_SUBJECT)),
            ("GET", "/subjects/{subject}/versions", self._list_versions, None),
            ("POST", "/subjects/{subject}/versions", self._register, Write(ops.REGISTER)),
            ("GET", "/subjects/{subject}/versions/{version}", self._get_version, None),
            (
                "DELETE",
                "/subjects/{subject}/versions/{version}",
                self._delete_version,
                Write(ops.DELETE_VERSION),
            ),
            (
                "GET",
                "/subjects/{subject}/versions/{version}/schema",
                self._get_version_schema,
                None,
            ),
            (
                "GET",
                "/subjects/{subject}/versions/{version}/referencedby",
                self._referenced_by,
                None,
            ),
            ("GET", "/subjects/{subject}/metadata", self._latest_with_metadata, None),
            ("GET", "/schemas", self._list_schemas, None),
            ("GET", "/schemas/types", lambda q: list(PROVIDERS), None),
            ("GET", "/schemas/ids/{id}", self._get_schema, None),
            (
                "GET",
                "/schemas/ids/{id}/schema",
                lambda q: Raw(r.get_schema_text(q.int_param("id"), format=q.query.text("format"))),
                None,
            ),
            ("GET", "/schemas/ids/{id}/subjects", self._schema_subjects, None),
            ("GET", "/schemas/ids/{id}/versions", self._schema_versions, None),
            # Confluent counts a compatibility check as SUBJECT_WRITE; it changes nothing.
            ("POST", "/compatibility/subjects/{subject}/versions", self._compatibility, _CHECK),
            (
                "POST",
                "/compatibility/subjects/{subject}/versions/{version}",
                self._compatibility,
                _CHECK,
            ),
            ("GET", "/config", self._get_config, None),
            (
                "PUT",
                "/config",
                lambda q: r.set_config(None, q.json(), origin=q.origin),
                Write(ops.SET_CONFIG),
            ),
            (
                "DELETE",
                "/config",
                lambda q: r.delete_config(None, origin=q.origin),
                Write(ops.DELETE_CONFIG),
            ),
            ("GET", "/config/{subject}", self._get_config, None),
            (
                "PUT",
                "/config/{subject}",
                lambda q: r.set_config(q.params["subject"], q.json(), origin=q.origin),
                Write(ops.SET_CONFIG),
            ),
            (
                "DELETE",
                "/config/{subject}",
                lambda q: r.delete_config(q.params["subject"], origin=q.origin),
                Write(ops.DELETE_CONFIG),
            ),
            ("GET", "/mode", self._get_mode, None),
            ("PUT", "/mode", self._set_mode, Write(ops.SET_MODE)),
            (
                "DELETE",
                "/mode",
                lambda q: r.delete_mode(None, recursive=q.query.flag("recursive"), origin=q.origin),
                Write(ops.DELETE_MODE),
            ),
            ("GET", "/mode/{subject}", self._get_mode, None),
            ("PUT", "/mode/{subject}", self._set_mode, Write(ops.SET_MODE)),
            (
                "DELETE",
                "/mode/{subject}",
                lambda q: r.delete_mode(q.params["subject"], recursive=False, origin=q.origin),
                Write(ops.DELETE_MODE),
            ),
        ]

    # ------------------------------------------------------------------ handlers
    def _openapi_json(self, q: Request) -> Raw:
        if not self._openapi:  # built on first use: most workers are never asked
            document = openapi_document(self._version)
            self._openapi = json.dumps(document, separators=(",", ":"), ensure_ascii=False)
        return Raw(self._openapi, "application/json")

    def _list_subjects(self, q: Request) -> Any:
        # ckp sends the prefix as `subject`; Confluent reads `subjectPrefix`.
        prefix = q.query.text("subjectPrefix") or q.query.text("subject")
        names = self.registry.list_subjects(
            prefix, deleted=q.query.flag("deleted"), deleted_only=q.query.flag("deletedOnly")
        )
        return _paged(names, q.query)

    def _lookup(self, q: Request) -> Any:
        return self.registry.lookup(
            q.params["subject"],
            q.json(),
            deleted=q.query.flag("deleted"),
            normalize=q.query.flag("normalize"),
        )

    def _delete_subject(self, q: Request) -> Any:
        return self.registry.delete_subject(
            q.params["subject"], permanent=q.query.flag("permanent"), origin=q.origin
        )

    def _list_versions(self, q: Request) -> Any:
        versions = self.registry.list_versions(
            q.params["subject"],
            deleted=q.query.flag("deleted"),
            deleted_only=q.query.flag("deletedOnly"),
            deleted_as_negative=q.query.flag("deletedAsNegative"),
        )
        return _paged(versions, q.query)

    def _register(self, q: Request) -> Any:
        return self.registry.register(
            q.params["subject"], q.json(), origin=q.origin, normalize=q.query.flag("normalize")
        )

    def _get_version(self, q: Request) -> Any:
        return self.registry.get_version(
            q.params["subject"],
            q.params["version"],
            deleted=q.query.flag("deleted"),
            format=q.query.text("format"),
        )

    def _get_version_schema(self, q: Request) -> Any:
        return Raw(self._get_version(q)["schema"])

    def _delete_version(self, q: Request) -> Any:
        return self.registry.delete_version(
            q.params["subject"],
            q.params["version"],
            permanent=q.query.flag("permanent"),
            origin=q.origin,
        )

    def _referenced_by(self, q: Request) -> Any:
        ids = self.registry.referenced_by(
            q.params["subject"], q.params["version"], deleted=q.query.flag("deleted")
        )
        return _paged(ids, q.query)

    def _latest_with_metadata(self, q: Request) -> Any:
        keys, values = q.query.every("key"), q.query.every("value")
        if len(keys) != len(values):
            raise RegistryError(ErrorCode.BAD_REQUEST, "key and value must be given in pairs")
        return self.registry.latest_with_metadata(
            q.params["subject"],
            dict(zip(keys, values, strict=True)),
            deleted=q.query.flag("deleted"),
        )

    def _list_schemas(self, q: Request) -> Any:
        found = self.registry.list_schemas(
            q.query.text("subjectPrefix"),
            deleted=q.query.flag("deleted"),
            latest_only=q.query.flag("latestOnly"),
        )
        return _paged(found, q.query)

    def _get_schema(self, q: Request) -> Any:
        # `subject` is a context hint in Confluent, never a filter: ckp's deserializer always
        # sends ?subject=<topic>-value, and the id must resolve whichever subject holds it.
        return self.registry.get_schema(
            q.int_param("id"),
            fetch_max_id=q.query.flag("fetchMaxId"),
            format=q.query.text("format"),
        )

    def _schema_subjects(self, q: Request) -> Any:
        usages = self.registry.schema_usages(q.int_param("id"), deleted=q.query.flag("deleted"))
        subjects = sorted({u.subject for u in usages})
        return _paged(subjects, q.query)

    def _schema_versions(self, q: Request) -> Any:
        usages = self.registry.schema_usages(q.int_param("id"), deleted=q.query.flag("deleted"))
        return _paged([{"subject": u.subject, "version": u.version} for u in usages], q.query)

    def _compatibility(self, q: Request) -> Any:
        return self.registry.test_compatibility(
            q.params["subject"],
            q.params.get("version"),
            q.json(),
            verbose=q.query.flag("verbose"),
            normalize=q.query.flag("normalize"),
        )

    def _get_config(self, q: Request) -> Any:
        return self.registry.get_config(
            q.params.get("subject"), default_to_global=q.query.flag("defaultToGlobal")
        )

    def _get_mode(self, q: Request) -> Any:
        return self.registry.get_mode(
            q.params.get("subject"), default_to_global=q.query.flag("defaultToGlobal")
        )

    def _set_mode(self, q: Request) -> Any:
        return self.registry.set_mode(
            q.params.get("subject"), q.json(), force=q.query.flag("force"), origin=q.origin
        )


def _paged(items: Sequence[Any], query: Query) -> list[Any]:
    """Confluent's `offset`/`limit` (limit <= 0: everything)."""
    offset = max(query.number("offset", 0), 0)
    limit = query.number("limit", -1)
    return list(items[offset : offset + limit] if limit > 0 else items[offset:])


def _negotiate(accept: str) -> str | None:
    """The response media type, v1+json unless the client asks only for another we serve.

    ckp's POSTs carry no Accept (httpx then sends */*), so a missing or wildcard Accept is v1.
    """
    if not accept.strip():
        return V1_JSON
    offered = [part.split(";", 1)[0].strip().lower() for part in accept.split(",")]
    for media_type in _MEDIA_TYPES:
        if media_type in offered:
            return media_type
    if any(o in ("*/*", "application/*") for o in offered):
        return V1_JSON
    return None


def _error(code: ErrorCode, message: str) -> tuple[int, Any]:
    return code.http_status, {"error_code": code.error_code, "message": message}


def _render(
    status: int, payload: Any, media_type: str, headers: Sequence[tuple[str, str]] = ()
) -> bytes:
    if isinstance(payload, Raw):
        body = payload.text.encode()
        media_type = payload.media_type or media_type
    else:
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers)
    head = (
        f"HTTP/1.1 {status} {_reason(status)}\r\n"
        f"Content-Type: {media_type}\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _metadata_id() -> dict[str, Any]:
    # No Kafka cluster backs this registry; the shape is Confluent's ServerClusterId.
    return {
        "id": "",
        "scope": {"path": [], "clusters": {"schema-registry-cluster": "schema-registry"}},
    }


def _package_version() -> str:
    try:
        return metadata.version("schema-registry")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0.0.0"


def error_response(code: ErrorCode, message: str) -> bytes:
    """A rendered error for failures the HTTP layer detects itself (bad request line, size)."""
    return _render(*_error(code, message), V1_JSON)


__all__ = ["V1_JSON", "Api", "Query", "Raw", "Request", "Write", "WriteContext", "error_response"]
