"""Spans as `mesh trace` shows them, read from the local store (SQLite) or from OTLP JSON (Jaeger).

One span is a plain dict, the ``mesh trace --json`` shape::

    {trace_id, span_id, parent_span_id, name, service, kind, start_time, end_time,
     status: {code, message}, attributes, links: [{trace_id, span_id, attributes}],
     events: [{name, time, attributes}]}

``kind`` is SERVER, CLIENT, PRODUCER, CONSUMER or INTERNAL; ``status.code`` UNSET, OK or ERROR;
times are RFC 3339 (UTC, microseconds); ids are lower-case hex; ``parent_span_id`` is None for
a root. ``events`` came last (an exception recorded on a span is one); readers of an older
``--json`` should treat it as optional.

``span_tree`` is how both renderings (the text tree, the HTML waterfall) hang spans together.

The store keeps each span's OTLP protobuf bytes next to the few columns that are queried, so the
receiver's per-span work is one serialize and one insert (it shares the CPU with the mesh). The
table is append-only (rowid order is arrival order) and ids are raw bytes. The only index with
random keys, ``(start bucket, trace_id, span_id)``, takes them within the current ~8.6 s bucket
of start times, so a batch dirties the table's last pages and a bounded number of index pages
however large the store has grown (keying the rows themselves by trace id, schema 1, dirtied a
page per span, more as the file grew). Finding a trace probes each bucket the store holds
(at most ~10,000 in a day's retention: ~15 ms). An older store (schema 1 or 2) is migrated in
place when first opened.
"""

from __future__ import annotations

import base64
import datetime
import heapq
import json
import logging
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

Span = dict[str, Any]

KINDS = {0: "INTERNAL", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
STATUSES = {0: "UNSET", 1: "OK", 2: "ERROR"}

log = logging.getLogger("mesh_runner.tracestore")

SCHEMA_VERSION = 3  # PRAGMA user_version; 0 with a ``spans`` table is schema 1 (text ids)
BUCKET_SHIFT = 33  # 2**33 ns, ~8.6 s: at 5,000 spans/s a bucket's index stays near 43k entries
_BUCKET = f"(start_ns >> {BUCKET_SHIFT})"  # SQLite matches an expression index by its text

# ``start_ns`` is in the table for the start index (pruning, `mesh traces`); the rest of a span
# (parent, name, end, status, attributes, links) is read from its protobuf bytes.
_SCHEMA = (
    """CREATE TABLE spans (
    trace_id BLOB NOT NULL,      -- 16 bytes
    span_id  BLOB NOT NULL,      -- 8 bytes
    start_ns INTEGER NOT NULL,
    service  TEXT NOT NULL,      -- the resource's service.name
    span     BLOB NOT NULL       -- opentelemetry.proto.trace.v1.Span
)""",
    # Unique: a span exported twice (a retried export) replaces itself (same start, same bucket).
    f"CREATE UNIQUE INDEX spans_by_id ON spans ({_BUCKET}, trace_id, span_id)",
    "CREATE INDEX spans_by_start ON spans (start_ns)",
)

# Every bucket that holds a span, ascending: one start-index probe per bucket.
_BUCKETS = f"""WITH RECURSIVE bucket(b) AS (
    SELECT (SELECT min(start_ns) FROM spans) >> {BUCKET_SHIFT}
    UNION ALL
    SELECT (
        SELECT start_ns FROM spans WHERE start_ns >= (b + 1) << {BUCKET_SHIFT}
        ORDER BY start_ns LIMIT 1
    ) >> {BUCKET_SHIFT}
    FROM bucket WHERE b IS NOT NULL
)"""
_OF_TRACE = f"{_BUCKET} IN (SELECT b FROM bucket) AND trace_id = ?"

_INSERT = "INSERT OR REPLACE INTO spans (trace_id, span_id, start_ns, service, span) VALUES"
_INSERT += " (?, ?, ?, ?, ?)"


class TraceStoreError(RuntimeError):
    """The trace store cannot be opened as this version of the mesh knows it."""


def rfc3339_ns(nanos: int) -> str:
    """Unix nanoseconds as RFC 3339 UTC with microseconds."""
    seconds, rest = divmod(nanos, 1_000_000_000)
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{rest // 1000:06d}Z"


def parse_rfc3339(text: str) -> datetime.datetime:
    """The inverse of ``rfc3339_ns`` (microsecond precision)."""
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.UTC)


class TraceStore:
    """Spans in one SQLite file (WAL: the receiver writes while `mesh trace` reads).

    Thread safety: one connection behind a lock; any thread may call any method. Opening an
    older store migrates it (one transaction); a store of a newer schema raises
    ``TraceStoreError``.
    """

    def __init__(self, path: Path | str) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._path = str(path)
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA busy_timeout=5000")
            # The id index takes random keys (within a bucket): keep its pages in memory.
            self._conn.execute("PRAGMA cache_size=-65536")
            # Checkpoint every 32 MiB of WAL rather than 4: a page dirtied by several commits
            # is copied back (and synced) once; this halved the cost of COMMIT per span.
            self._conn.execute("PRAGMA wal_autocheckpoint=8192")
            self._migrate()
        except BaseException:
            self._conn.close()
            raise
        self._lock = threading.Lock()

    def _version(self) -> int:
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        """Create the schema, or bring an older store to it: schema 1 (text ids, rows keyed by
        them) is copied into the new table; schema 2 (its id index without the bucket) gets the
        new index."""
        if self._version() == SCHEMA_VERSION:
            return
        old, moved = None, 0
        self._conn.execute("BEGIN IMMEDIATE")  # a second opener waits, then finds it done
        try:
            version = self._version()
            if version > SCHEMA_VERSION:
                raise TraceStoreError(
                    f"{self._path}: trace store schema {version} is newer than this mesh's"
                    f" ({SCHEMA_VERSION}); upgrade the mesh, or delete the file to start afresh"
                )
            if version == 2:
                self._conn.execute("DROP INDEX spans_by_id")
                self._conn.execute(_SCHEMA[1])
            elif version < SCHEMA_VERSION:
                old = self._conn.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'spans'"
                ).fetchone()
                if old:
                    self._conn.execute("DROP INDEX IF EXISTS spans_by_start")
                    self._conn.execute("ALTER TABLE spans RENAME TO spans_v1")
                self._conn.execute(_SCHEMA[0])
                if old:
                    # Rows first (in the old key order: one pass), then the indexes, built by
                    # sorting: this runs inside the receiver's start-up (`mesh up` waits 60 s).
                    self._conn.create_function("unhex", 1, bytes.fromhex, deterministic=True)
                    moved = self._conn.execute(
                        "INSERT INTO spans (trace_id, span_id, start_ns, service, span)"
                        " SELECT unhex(trace_id), unhex(span_id), start_ns, service, span"
                        " FROM spans_v1"
                    ).rowcount
                    self._conn.execute("DROP TABLE spans_v1")
                for statement in _SCHEMA[1:]:
                    self._conn.execute(statement)
            if version < SCHEMA_VERSION:
                self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")
        if old:
            log.info(
                "trace store %s: migrated %d spans to schema %d", self._path, moved, SCHEMA_VERSION
            )

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._conn.close()

    def add(self, request: trace_service_pb2.ExportTraceServiceRequest) -> int:
        """Store every span of an OTLP export request (a re-sent span replaces itself); returns
        how many."""
        rows: list[tuple[bytes, bytes, int, str, bytes]] = []
        for resource_spans in request.resource_spans:
            service = _service_of(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                rows.extend(
                    (
                        span.trace_id,
                        span.span_id,
                        span.start_time_unix_nano,
                        service,
                        span.SerializeToString(),
                    )
                    for span in scope_spans.spans
                )
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                self._conn.executemany(_INSERT, rows)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        return len(rows)

    def prune(self, before_unix_s: float) -> int:
        """Delete the spans that started before ``before_unix_s``; returns how many."""
        with self._lock:
            cursor = self._conn.execute(
                "DELETE FROM spans WHERE start_ns < ?", (int(before_unix_s * 1e9),)
            )
        return cursor.rowcount

    def trace(self, trace_id: str) -> list[Span]:
        """Every stored span of ``trace_id`` (32 hex digits), by start time."""
        try:
            key = bytes.fromhex(trace_id)
        except ValueError:
            return []
        with self._lock:
            rows = self._spans_of(key)
        return [span_from_proto(span, service) for service, span in rows]

    def _spans_of(self, trace_id: bytes) -> list[tuple[str, trace_pb2.Span]]:
        """The trace's (service, span) pairs by start time, then span id (the lock held)."""
        out = []
        for service, blob in self._conn.execute(
            f"{_BUCKETS} SELECT service, span FROM spans WHERE {_OF_TRACE}"
            " ORDER BY start_ns, span_id",
            (trace_id,),
        ):
            span = trace_pb2.Span()
            span.ParseFromString(blob)
            out.append((service, span))
        return out

    def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        """Summaries of the ``limit`` traces that started last (see ``summarize``), newest first.

        A trace starts at its earliest span. Spans are read newest first (the start index) and
        each trace seen gets its start from the id index (a probe per bucket), until ``limit``
        of them started after the span being read: every trace not seen yet started before it."""
        if limit <= 0:
            return []
        with self._lock:
            latest: list[tuple[int, bytes]] = []  # min-heap of the ``limit`` latest (start, id)
            seen: set[bytes] = set()
            for trace_id, start_ns in self._conn.execute(
                "SELECT trace_id, start_ns FROM spans ORDER BY start_ns DESC"
            ):
                if len(latest) == limit and latest[0][0] > start_ns:
                    break
                if trace_id in seen:
                    continue
                seen.add(trace_id)
                (first,) = self._conn.execute(
                    f"{_BUCKETS} SELECT min(start_ns) FROM spans WHERE {_OF_TRACE}", (trace_id,)
                ).fetchone()
                if len(latest) < limit:
                    heapq.heappush(latest, (first, trace_id))
                elif (first, trace_id) > latest[0]:
                    heapq.heapreplace(latest, (first, trace_id))
            chosen = sorted(latest, reverse=True)
            traces = [(trace_id, self._spans_of(trace_id)) for _, trace_id in chosen]
        return [
            _summary_of_rows(
                trace_id.hex(),
                [
                    (
                        span.span_id.hex(),
                        span.parent_span_id.hex() or None,
                        service,
                        span.name,
                        span.start_time_unix_nano,
                        span.end_time_unix_nano,
                        span.status.code,
                    )
                    for service, span in spans
                ],
            )
            for trace_id, spans in traces
        ]


def _summary_of_rows(trace_id: str, rows: Sequence[tuple[Any, ...]]) -> dict[str, Any]:
    ids = {r[0] for r in rows}
    roots = [r for r in rows if not r[1] or r[1] not in ids]
    root = roots[0] if roots else rows[0]
    start = min(r[4] for r in rows)
    end = max(r[5] for r in rows)
    return {
        "trace_id": trace_id,
        "root": f"{root[2]}: {root[3]}",
        "services": sorted({r[2] for r in rows}),
        "spans": len(rows),
        "start_time": rfc3339_ns(start),
        "duration_ms": round((end - start) / 1e6, 3),
        "error": any(r[6] == 2 for r in rows),
    }


def summarize(spans: Sequence[Span]) -> dict[str, Any]:
    """``{trace_id, root, services, spans, start_time, duration_ms, error}`` of one trace's spans
    (the root is the earliest span whose parent is not among them)."""
    rows = [
        (
            s["span_id"],
            s["parent_span_id"],
            s["service"],
            s["name"],
            _ns(s["start_time"]),
            _ns(s["end_time"]),
            2 if s["status"]["code"] == "ERROR" else 0,
        )
        for s in sorted(spans, key=lambda s: str(s["start_time"]))
    ]
    return _summary_of_rows(str(spans[0]["trace_id"]), rows)


def _ns(text: str) -> int:
    moment = parse_rfc3339(text)
    return (int(moment.timestamp()) * 1_000_000 + moment.microsecond) * 1000


def _service_of(attributes: Iterable[common_pb2.KeyValue]) -> str:
    for kv in attributes:
        if kv.key == "service.name":
            return str(_value(kv.value))
    return "unknown_service"


def _value(value: common_pb2.AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    if which == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, which)


def span_from_proto(span: trace_pb2.Span, service: str) -> Span:
    """An OTLP protobuf span as a ``mesh trace`` span dict."""
    return {
        "trace_id": span.trace_id.hex(),
        "span_id": span.span_id.hex(),
        "parent_span_id": span.parent_span_id.hex() or None,
        "name": span.name,
        "service": service,
        "kind": KINDS.get(span.kind, "INTERNAL"),
        "start_time": rfc3339_ns(span.start_time_unix_nano),
        "end_time": rfc3339_ns(span.end_time_unix_nano),
        "status": {"code": STATUSES.get(span.status.code, "UNSET"), "message": span.status.message},
        "attributes": {kv.key: _value(kv.value) for kv in span.attributes},
        "links": [
            {
                "trace_id": link.trace_id.hex(),
                "span_id": link.span_id.hex(),
                "attributes": {kv.key: _value(kv.value) for kv in link.attributes},
            }
            for link in span.links
        ],
        "events": [
            {
                "name": event.name,
                "time": rfc3339_ns(event.time_unix_nano),
                "attributes": {kv.key: _value(kv.value) for kv in event.attributes},
            }
            for event in span.events
        ],
    }


# -- OTLP JSON (Jaeger's API v3) ---------------------------------------------------------------


def _json_id(value: Any) -> str | None:
    """An id from OTLP JSON: hex per the OTLP spec, base64 from plain protobuf JSON mappers."""
    if not value:
        return None
    text = str(value)
    if len(text) in (16, 32) and all(c in "0123456789abcdefABCDEF" for c in text):
        return text.lower()
    raw = base64.b64decode(text)
    return raw.hex() if any(raw) else None


def _json_value(value: Mapping[str, Any]) -> Any:
    for key, item in value.items():
        if key == "stringValue":
            return item
        if key == "boolValue":
            return bool(item)
        if key == "intValue":
            return int(item)
        if key == "doubleValue":
            return float(item)
        if key == "bytesValue":
            return base64.b64decode(item).hex()
        if key == "arrayValue":
            return [_json_value(v) for v in item.get("values", [])]
        if key == "kvlistValue":
            return {kv["key"]: _json_value(kv.get("value", {})) for kv in item.get("values", [])}
    return None


def _json_attributes(items: Iterable[Mapping[str, Any]] | None) -> dict[str, Any]:
    return {kv["key"]: _json_value(kv.get("value", {})) for kv in items or ()}


def _json_enum(value: Any, names: Mapping[int, str], prefix: str) -> str:
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        return names.get(int(value), names[0])
    text = str(value or "").removeprefix(prefix)
    return text if text in names.values() else ("INTERNAL" if prefix == "SPAN_KIND_" else "UNSET")


def spans_from_otlp_json(document: Mapping[str, Any]) -> list[Span]:
    """Every span of an OTLP JSON document (``{"resourceSpans": [...]}``, or Jaeger's
    ``{"result": {"resourceSpans": [...]}}``), as ``mesh trace`` span dicts, by start time."""
    body = document.get("result", document)
    out: list[Span] = []
    for resource_spans in body.get("resourceSpans", []):
        resource = _json_attributes(resource_spans.get("resource", {}).get("attributes"))
        service = str(resource.get("service.name", "unknown_service"))
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                status = span.get("status", {})
                out.append(
                    {
                        "trace_id": _json_id(span.get("traceId")),
                        "span_id": _json_id(span.get("spanId")),
                        "parent_span_id": _json_id(span.get("parentSpanId")),
                        "name": span.get("name", ""),
                        "service": service,
                        "kind": _json_enum(span.get("kind", 0), KINDS, "SPAN_KIND_"),
                        "start_time": rfc3339_ns(int(span.get("startTimeUnixNano", 0))),
                        "end_time": rfc3339_ns(int(span.get("endTimeUnixNano", 0))),
                        "status": {
                            "code": _json_enum(status.get("code", 0), STATUSES, "STATUS_CODE_"),
                            "message": status.get("message", ""),
                        },
                        "attributes": _json_attributes(span.get("attributes")),
                        "links": [
                            {
                                "trace_id": _json_id(link.get("traceId")),
                                "span_id": _json_id(link.get("spanId")),
                                "attributes": _json_attributes(link.get("attributes")),
                            }
                            for link in span.get("links", [])
                        ],
                        "events": [
                            {
                                "name": event.get("name", ""),
                                "time": rfc3339_ns(int(event.get("timeUnixNano", 0))),
                                "attributes": _json_attributes(event.get("attributes")),
                            }
                            for event in span.get("events", [])
                        ],
                    }
                )
    out.sort(key=lambda s: str(s["start_time"]))
    return out


# -- the tree both renderings draw ------------------------------------------------------------

FROM_OUTSIDE = "(from outside the mesh)"
PARENT_MISSING = "(parent missing)"


@dataclass(frozen=True)
class SpanTree:
    """One trace's spans hung by parent: ``roots`` and ``children`` (by span id) by start time;
    ``marks[span_id]`` says why a span with a parent id is a root.

    A SERVER span whose parent is not in the trace was called from outside the mesh (grpcurl
    with a traceparent, a client that does not export its spans, the demo's calls sharing one
    trace id): an entry point, ``FROM_OUTSIDE``, however many there are. Any other span whose
    parent is not there (a CLIENT, CONSUMER, ... span) is a gap in the trace, ``PARENT_MISSING``:
    its parent was lost or has not arrived yet.
    """

    roots: list[Span]
    children: dict[str, list[Span]]
    marks: dict[str, str]


def span_tree(spans: Sequence[Span]) -> SpanTree:
    """``spans`` (of one trace) as a ``SpanTree``."""
    ids = {s["span_id"] for s in spans}
    roots: list[Span] = []
    children: dict[str, list[Span]] = {}
    marks: dict[str, str] = {}
    for span in sorted(spans, key=lambda s: str(s["start_time"])):
        parent = span["parent_span_id"]
        if parent in ids:
            children.setdefault(parent, []).append(span)
            continue
        roots.append(span)
        if parent:
            marks[span["span_id"]] = FROM_OUTSIDE if span["kind"] == "SERVER" else PARENT_MISSING
    return SpanTree(roots, children, marks)


def dumps(spans: Sequence[Span]) -> str:
    """The ``--json`` rendering: an indented JSON list."""
    return json.dumps(list(spans), indent=2)
