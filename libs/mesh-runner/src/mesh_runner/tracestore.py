"""Spans as `mesh trace` shows them, read from the local store (SQLite) or from OTLP JSON (Jaeger).

One span is a plain dict, the ``mesh trace --json`` shape::

    {trace_id, span_id, parent_span_id, name, service, kind, start_time, end_time,
     status: {code, message}, attributes, links: [{trace_id, span_id, attributes}]}

``kind`` is SERVER, CLIENT, PRODUCER, CONSUMER or INTERNAL; ``status.code`` UNSET, OK or ERROR;
times are RFC 3339 (UTC, microseconds); ids are lower-case hex; ``parent_span_id`` is None for
a root.

The store keeps each span's OTLP protobuf bytes next to the few columns that are queried, so the
receiver's per-span work is one serialize and one insert (it shares the CPU with the mesh).
"""

from __future__ import annotations

import base64
import datetime
import json
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

Span = dict[str, Any]

KINDS = {0: "INTERNAL", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
STATUSES = {0: "UNSET", 1: "OK", 2: "ERROR"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spans (
    trace_id       TEXT NOT NULL,
    span_id        TEXT NOT NULL,
    parent_span_id TEXT,
    service        TEXT NOT NULL,
    name           TEXT NOT NULL,
    start_ns       INTEGER NOT NULL,
    end_ns         INTEGER NOT NULL,
    status         INTEGER NOT NULL,
    span           BLOB NOT NULL,     -- opentelemetry.proto.trace.v1.Span
    PRIMARY KEY (trace_id, span_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS spans_by_start ON spans (start_ns);
"""


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

    Thread safety: one connection behind a lock; any thread may call any method.
    """

    def __init__(self, path: Path | str) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._conn.close()

    def add(self, request: trace_service_pb2.ExportTraceServiceRequest) -> int:
        """Store every span of an OTLP export request (a re-sent span replaces itself); returns
        how many."""
        rows = []
        for resource_spans in request.resource_spans:
            service = _service_of(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    rows.append(
                        (
                            span.trace_id.hex(),
                            span.span_id.hex(),
                            span.parent_span_id.hex() or None,
                            service,
                            span.name,
                            span.start_time_unix_nano,
                            span.end_time_unix_nano,
                            span.status.code,
                            span.SerializeToString(),
                        )
                    )
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                self._conn.executemany(
                    "INSERT OR REPLACE INTO spans VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
                )
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
        with self._lock:
            rows = self._conn.execute(
                "SELECT service, span FROM spans WHERE trace_id = ? ORDER BY start_ns",
                (trace_id.lower(),),
            ).fetchall()
        out = []
        for service, blob in rows:
            span = trace_pb2.Span()
            span.ParseFromString(blob)
            out.append(span_from_proto(span, service))
        return out

    def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        """Summaries of the ``limit`` traces that started last (see ``summarize``), newest first."""
        with self._lock:
            ids = [
                row[0]
                for row in self._conn.execute(
                    "SELECT trace_id FROM spans GROUP BY trace_id ORDER BY min(start_ns) DESC"
                    " LIMIT ?",
                    (limit,),
                )
            ]
            summaries = []
            for trace_id in ids:
                rows = self._conn.execute(
                    "SELECT span_id, parent_span_id, service, name, start_ns, end_ns, status"
                    " FROM spans WHERE trace_id = ? ORDER BY start_ns",
                    (trace_id,),
                ).fetchall()
                summaries.append(_summary_of_rows(trace_id, rows))
        return summaries


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
                    }
                )
    out.sort(key=lambda s: str(s["start_time"]))
    return out


def dumps(spans: Sequence[Span]) -> str:
    """The ``--json`` rendering: an indented JSON list."""
    return json.dumps(list(spans), indent=2)
