"""The Confluent REST API over `Registry`: routing, query quirks, rendering, the GET cache.

`Api.handle()` takes a parsed HTTP request and returns the complete response bytes, so the
server (`schema_registry.http`) only moves bytes. Three things here are deliberate:

* Routing works on the raw path, split on `/` before percent-decoding, so `%2F` stays inside a
  subject (starlette#826 is why Karapace needed its own router).
* Errors are mapped to `{"error_code", "message"}` in `_dispatch` and nowhere else.
* Every GET answer is a pure function of the stored state, so whole responses are cached by
  (URL, Accept) and dropped when the storage change counter moves; the hot path
  (`GET /schemas/ids/{id}`) is then one dict lookup. The counter is shared by all worker
  processes, which gives read-your-writes across workers.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from importlib import metadata
from typing import Any, Final
from urllib.parse import parse_qsl, unquote

from schema_registry.errors import ErrorCode, RegistryError
from schema_registry.registry import Registry

log = logging.getLogger(__name__)

V1_JSON: Final = "application/vnd.schemaregistry.v1+json"
_MEDIA_TYPES: Final = (V1_JSON, "application/vnd.schemaregistry+json", "application/json")
_CACHE_LIMIT: Final = 20_000


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
        try:
            return int(text)
        except ValueError:
            raise RegistryError(
                ErrorCode.BAD_REQUEST, f"Query parameter {name} must be an integer, not '{text}'"
            ) from None


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


@dataclass
class Request:
    """What a handler sees: decoded path parameters, the query and the JSON body."""

    method: str
    params: dict[str, str]
    query: Query
    raw_body: bytes

    def json(self) -> Any:
        """The body as JSON; 400 when it is not JSON (empty is null)."""
        if not self.raw_body.strip():
            return None
        try:
            return json.loads(self.raw_body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise RegistryError(ErrorCode.BAD_REQUEST, f"Unexpected request body: {exc}") from None

    def int_param(self, name: str) -> int:
        """A path segment that must be an integer; Jersey answers 404 when it is not."""
        try:
            return int(self.params[name])
        except ValueError:
            raise RegistryError(ErrorCode.NOT_FOUND, "HTTP 404 Not Found") from None


@dataclass(frozen=True)
class Raw:
    """A handler result sent as-is (the `/schema` endpoints return the schema text itself)."""

    text: str


Handler = Callable[[Request], Any]


@dataclass
class _Node:
    """A routing tree node: literal children, one `{param}` child, handlers by method."""

    literals: dict[str, _Node] = field(default_factory=dict)
    param: tuple[str, _Node] | None = None
    handlers: dict[str, Handler] = field(default_factory=dict)


class Api:
    """The REST API. Call `handle()` from one thread at a time per instance (one per worker)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._root = _Node()
        self._cache: dict[tuple[bytes, bytes], bytes] = {}
        self._seen_counter = registry.storage.change_counter()
        self._version = _package_version()
        for method, pattern, handler in self._routes():
            self._add(method, pattern, handler)

    # ------------------------------------------------------------------ HTTP entry point
    def handle(self, method: str, url: bytes, accept: bytes, body: bytes) -> bytes:
        """The complete HTTP/1.1 response (status line, headers, body) for one request."""
        counter = self.registry.storage.change_counter()
        if counter != self._seen_counter:
            self._cache.clear()
            self._seen_counter = counter
        if method not in ("GET", "HEAD"):
            return self._audited(method, url, accept, body)
        hit = self._cache.get((url, accept))
        if hit is not None:
            return hit
        response = self._respond(method, url, accept, body)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        # Read the counter again: a write by this very request can't happen for GET, but a
        # write by another worker during it can, and then this answer may predate it.
        if self.registry.storage.change_counter() == self._seen_counter:
            self._cache[(url, accept)] = response
        return response

    def _audited(self, method: str, url: bytes, accept: bytes, body: bytes) -> bytes:
        """``_respond`` for a POST, PUT or DELETE, logged with its outcome: the registry's audit
        trail (GET and HEAD are not logged; they are most of the traffic). Schema lookups
        (``POST /subjects/{s}``) are logged too: they are rare, once per client and subject."""
        started = time.perf_counter()
        response = self._respond(method, url, accept, body)
        status = int(response[9:12])  # b"HTTP/1.1 200 OK..."
        duration_ms = round((time.perf_counter() - started) * 1000, 3)
        path = url.decode("latin-1")
        level = logging.WARNING if status >= 500 else logging.INFO
        log.log(
            level,
            "%s %s %d %.1fms",
            method,
            path,
            status,
            duration_ms,
            extra={"http.method": method, "url.path": path, "http.status": status},
        )
        return response

    def _respond(self, method: str, url: bytes, accept: bytes, body: bytes) -> bytes:
        media_type = _negotiate(accept.decode("latin-1"))
        if media_type is None:
            return _render(*_error(ErrorCode.NOT_ACCEPTABLE, "HTTP 406 Not Acceptable"), V1_JSON)
        status, payload = self._dispatch(method, url.decode("latin-1"), body)
        return _render(status, payload, media_type)

    def _dispatch(self, method: str, url: str, body: bytes) -> tuple[int, Any]:
        """Route and run a handler; the one place errors become `{"error_code", "message"}`."""
        path, _, raw_query = url.partition("?")
        try:
            handler, params = self._route(method, path)
            result = handler(Request(method, params, Query(raw_query), body))
            return 200, result
        except RegistryError as exc:
            return _error(exc.code, exc.message)
        except Exception as exc:
            log.exception("unexpected error in %s %s", method, path)
            return _error(ErrorCode.STORE_ERROR, f"Error in the backend data store: {exc}")

    # ------------------------------------------------------------------ routing
    def _add(self, method: str, pattern: str, handler: Handler) -> None:
        node = self._root
        for segment in filter(None, pattern.split("/")):
            if segment.startswith("{"):
                name = segment[1:-1]
                if node.param is None:
                    node.param = (name, _Node())
                node = node.param[1]
            else:
                node = node.literals.setdefault(segment, _Node())
        node.handlers[method] = handler

    def _route(self, method: str, path: str) -> tuple[Handler, dict[str, str]]:
        node = self._root
        params: dict[str, str] = {}
        for raw in filter(None, path.split("/")):
            # Split first, decode second: "%2F" is part of a segment, never a separator. Plain
            # unquote, not unquote_plus: "+" is a legal subject character (Karapace bug).
            segment = unquote(raw)
            child = node.literals.get(segment)
            if child is None and node.param is not None:
                params[node.param[0]] = segment
                child = node.param[1]
            if child is None:
                raise RegistryError(ErrorCode.NOT_FOUND, "HTTP 404 Not Found")
            node = child
        handler = node.handlers.get("GET" if method == "HEAD" else method)
        if handler is None:
            if node.handlers:
                raise RegistryError(ErrorCode.METHOD_NOT_ALLOWED, "HTTP 405 Method Not Allowed")
            raise RegistryError(ErrorCode.NOT_FOUND, "HTTP 404 Not Found")
        return handler, params

    def _routes(self) -> Sequence[tuple[str, str, Handler]]:
        r = self.registry
        return [
            ("GET", "/", lambda q: {}),
            ("POST", "/", lambda q: {}),
            ("GET", "/v1/metadata/id", lambda q: _metadata_id()),
            ("GET", "/v1/metadata/version", lambda q: {"version": self._version, "commitId": ""}),
            ("GET", "/contexts", lambda q: _paged(["."], q.query)),
            ("GET", "/subjects", self._list_subjects),
            ("POST", "/subjects/{subject}", self._lookup),
            ("DELETE", "/subjects/{subject}", self._delete_subject),
            ("GET", "/subjects/{subject}/versions", self._list_versions),
            ("POST", "/subjects/{subject}/versions", self._register),
            ("GET", "/subjects/{subject}/versions/{version}", self._get_version),
            ("DELETE", "/subjects/{subject}/versions/{version}", self._delete_version),
            ("GET", "/subjects/{subject}/versions/{version}/schema", self._get_version_schema),
            ("GET", "/subjects/{subject}/versions/{version}/referencedby", self._referenced_by),
            ("GET", "/subjects/{subject}/metadata", self._latest_with_metadata),
            ("GET", "/schemas", self._list_schemas),
            ("GET", "/schemas/types", lambda q: ["AVRO"]),
            ("GET", "/schemas/ids/{id}", self._get_schema),
            (
                "GET",
                "/schemas/ids/{id}/schema",
                lambda q: Raw(r.get_schema_text(q.int_param("id"))),
            ),
            ("GET", "/schemas/ids/{id}/subjects", self._schema_subjects),
            ("GET", "/schemas/ids/{id}/versions", self._schema_versions),
            ("POST", "/compatibility/subjects/{subject}/versions", self._compatibility),
            ("POST", "/compatibility/subjects/{subject}/versions/{version}", self._compatibility),
            ("GET", "/config", self._get_config),
            ("PUT", "/config", lambda q: r.set_config(None, q.json())),
            ("DELETE", "/config", lambda q: r.delete_config(None)),
            ("GET", "/config/{subject}", self._get_config),
            ("PUT", "/config/{subject}", lambda q: r.set_config(q.params["subject"], q.json())),
            ("DELETE", "/config/{subject}", lambda q: r.delete_config(q.params["subject"])),
            ("GET", "/mode", self._get_mode),
            ("PUT", "/mode", self._set_mode),
            ("DELETE", "/mode", lambda q: r.delete_mode(None, recursive=q.query.flag("recursive"))),
            ("GET", "/mode/{subject}", self._get_mode),
            ("PUT", "/mode/{subject}", self._set_mode),
            (
                "DELETE",
                "/mode/{subject}",
                lambda q: r.delete_mode(q.params["subject"], recursive=False),
            ),
        ]

    # ------------------------------------------------------------------ handlers
    def _list_subjects(self, q: Request) -> Any:
        # ckp sends the prefix as `subject`; Confluent reads `subjectPrefix`.
        prefix = q.query.text("subjectPrefix") or q.query.text("subject")
        names = self.registry.list_subjects(
            prefix, deleted=q.query.flag("deleted"), deleted_only=q.query.flag("deletedOnly")
        )
        return _paged(names, q.query)

    def _lookup(self, q: Request) -> Any:
        return self.registry.lookup(q.params["subject"], q.json(), deleted=q.query.flag("deleted"))

    def _delete_subject(self, q: Request) -> Any:
        return self.registry.delete_subject(
            q.params["subject"], permanent=q.query.flag("permanent")
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
        return self.registry.register(q.params["subject"], q.json())

    def _get_version(self, q: Request) -> Any:
        return self.registry.get_version(
            q.params["subject"], q.params["version"], deleted=q.query.flag("deleted")
        )

    def _get_version_schema(self, q: Request) -> Any:
        found = self.registry.get_version(
            q.params["subject"], q.params["version"], deleted=q.query.flag("deleted")
        )
        return Raw(found["schema"])

    def _delete_version(self, q: Request) -> Any:
        return self.registry.delete_version(
            q.params["subject"], q.params["version"], permanent=q.query.flag("permanent")
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
        return self.registry.get_schema(q.int_param("id"), fetch_max_id=q.query.flag("fetchMaxId"))

    def _schema_subjects(self, q: Request) -> Any:
        usages = self.registry.schema_usages(q.int_param("id"), deleted=q.query.flag("deleted"))
        subjects = sorted({u.subject for u in usages})
        return _paged(subjects, q.query)

    def _schema_versions(self, q: Request) -> Any:
        usages = self.registry.schema_usages(q.int_param("id"), deleted=q.query.flag("deleted"))
        return _paged([{"subject": u.subject, "version": u.version} for u in usages], q.query)

    def _compatibility(self, q: Request) -> Any:
        return self.registry.test_compatibility(
            q.params["subject"], q.params.get("version"), q.json(), verbose=q.query.flag("verbose")
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
            q.params.get("subject"), q.json(), force=q.query.flag("force")
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


def _render(status: int, payload: Any, media_type: str) -> bytes:
    if isinstance(payload, Raw):
        body = payload.text.encode()
    else:
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    head = (
        f"HTTP/1.1 {status} {_reason(status)}\r\n"
        f"Content-Type: {media_type}\r\n"
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


__all__ = ["V1_JSON", "Api", "Query", "Raw", "Request", "error_response"]
