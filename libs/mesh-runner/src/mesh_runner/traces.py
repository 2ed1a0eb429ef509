"""``mesh trace`` and ``mesh traces``: read a trace without Jaeger (or from it).

    mesh trace TRACE_ID [--json] [--jaeger URL]     one trace as a tree (or a JSON list of spans)
    mesh trace TRACE_ID --html [PATH] | --open      ... as a waterfall page (runner/tracehtml.py)
    mesh traces [--limit N] [--json] [--jaeger URL --service S]   recent traces

Spans come from the local receiver's store (``.mesh/data/traces.db``, what `mesh up` runs), or
with ``--jaeger URL`` from Jaeger's API v3 (``GET /api/v3/traces/{id}``; a search needs a service
and a time window, and finds nothing as HTTP 404). The JSON shape is in runner/tracestore.py.
``--html`` writes the page to PATH (default ``.mesh/traces/<trace_id>.html`` under the mesh root)
and prints its path; ``--open`` writes it the same way and prints its path and ``file://`` URL,
for a browser (nothing is launched: the mesh often runs where no browser does).

When no span is found, the message says where it looked, and, when the mesh's components export
elsewhere (``OTEL_EXPORTER_OTLP_ENDPOINT`` set now, or in the environment of a running component
`mesh up` started), that the trace is probably there: ``--jaeger``.

Exit codes: 0 found, 1 no such trace (or the backend cannot be read), 2 usage error.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mesh_runner.tracehtml import render_html
from mesh_runner.tracestore import (
    Span,
    TraceStore,
    TraceStoreError,
    dumps,
    parse_rfc3339,
    span_tree,
    spans_from_otlp_json,
    summarize,
)

NOT_FOUND = 1
# Attributes worth a glance in the tree, in this order (the rest is in --json).
KEY_ATTRIBUTES = (
    "rpc.status_code",
    "error.type",
    "messaging.destination.name",
    "messaging.destination.partition.id",
    "messaging.kafka.offset",
    "messaging.consumer.group.name",
    "server.address",
    "server.port",
)


# --wait: a trace counts as complete once no new span arrived for this long.
SETTLE_S = 1.0


def store_path(root: Path) -> Path:
    """Where `mesh up`'s receiver keeps spans under the mesh root."""
    return root / ".mesh" / "data" / "traces.db"


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``trace`` and ``traces`` to the ``mesh`` parser."""
    one = sub.add_parser(
        "trace",
        help="print one trace as a tree: service, span, duration, status, key attributes"
        " (or a waterfall page: --html)",
        description="Print the spans of TRACE_ID as a tree (errors marked), or --json, or write"
        " them as a waterfall page to open in a browser (--html, --open).",
    )
    one.add_argument("trace_id", metavar="TRACE_ID", help="32 hex digits")
    one.add_argument("--json", action="store_true", help="a JSON list of spans")
    one.add_argument("--jaeger", metavar="URL", help="read from Jaeger's API v3 at URL instead")
    one.add_argument(
        "--html",
        nargs="?",
        const="",
        metavar="PATH",
        help="write a self-contained waterfall page (works offline) to PATH, default"
        " .mesh/traces/TRACE_ID.html under the mesh root, and print its path",
    )
    one.add_argument(
        "--open",
        action="store_true",
        help="write the page as --html does and print its path and file:// URL to open",
    )
    one.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait up to this long for the trace to arrive and settle (no new span for 1 s):"
        " spans are exported in batches, so a trace just made may not be complete yet",
    )
    many = sub.add_parser("traces", help="list recent traces: root span, services, duration")
    many.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    many.add_argument("--json", action="store_true", help="a JSON list of trace summaries")
    many.add_argument("--jaeger", metavar="URL", help="read from Jaeger's API v3 at URL instead")
    many.add_argument("--service", help="with --jaeger: the service to search (required there)")
    many.add_argument(
        "--lookback", type=float, default=3600.0, help="with --jaeger: seconds back (default 1h)"
    )


# -- reading ---------------------------------------------------------------------------------


class JaegerError(RuntimeError):
    """Jaeger answered with an error, or not at all."""


def _get_json(url: str, timeout: float = 10.0) -> dict[str, Any] | None:
    """GET ``url`` as JSON; None on HTTP 404 (Jaeger's "nothing found")."""
    try:
        # The URL is the user's own --jaeger argument; only http(s) gets here (checked in run).
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
            document: dict[str, Any] = json.loads(response.read())
            return document
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise JaegerError(f"{url}: HTTP {exc.code} {exc.read()[:200]!r}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise JaegerError(f"{url}: {exc}") from None


def jaeger_trace(base_url: str, trace_id: str) -> list[Span]:
    """The spans of ``trace_id`` from Jaeger's API v3 (empty when it has none)."""
    url = f"{base_url.rstrip('/')}/api/v3/traces/{trace_id.lower()}"
    document = _get_json(url)
    return spans_from_otlp_json(document) if document else []


def jaeger_search(base_url: str, service: str, lookback_s: float, limit: int) -> list[list[Span]]:
    """Traces of ``service`` that started in the last ``lookback_s`` seconds, as span lists."""
    now = datetime.datetime.now(datetime.UTC)
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ"
    query = urllib.parse.urlencode(
        {
            "query.service_name": service,
            "query.start_time_min": (now - datetime.timedelta(seconds=lookback_s)).strftime(fmt),
            "query.start_time_max": (now + datetime.timedelta(seconds=5)).strftime(fmt),
            "query.num_traces": str(limit),
        }
    )
    document = _get_json(f"{base_url.rstrip('/')}/api/v3/traces?{query}")
    if not document:
        return []
    by_trace: dict[str, list[Span]] = {}
    for span in spans_from_otlp_json(document):
        by_trace.setdefault(str(span["trace_id"]), []).append(span)
    return list(by_trace.values())


# -- rendering -------------------------------------------------------------------------------


def _duration_ms(span: Span) -> float:
    start = parse_rfc3339(span["start_time"])
    end = parse_rfc3339(span["end_time"])
    return (end - start).total_seconds() * 1000


def render_tree(spans: Sequence[Span], *, color: bool = False) -> str:
    """The trace as an indented tree, children by start time; a span whose parent is not in the
    trace is shown as a root and marked: a SERVER span ``(from outside the mesh)`` (its caller
    sent a ``traceparent`` without exporting its own span), any other ``(parent missing)``
    (``tracestore.span_tree``); errors are marked ``!``."""
    tree = span_tree(spans)
    summary = summarize(spans)
    lines = [
        f"trace {summary['trace_id']}  {summary['spans']} spans  "
        f"{len(summary['services'])} services ({', '.join(summary['services'])})  "
        f"{summary['duration_ms']:.1f}ms" + ("  ERROR" if summary["error"] else "")
    ]

    def walk(span: Span, prefix: str, last: bool, depth: int) -> None:
        error = span["status"]["code"] == "ERROR"
        branch = "" if depth == 0 else ("└─ " if last else "├─ ")
        attributes = span["attributes"]
        keys = " ".join(f"{k}={attributes[k]}" for k in KEY_ATTRIBUTES if k in attributes)
        marks = [tree.marks[span["span_id"]]] if span["span_id"] in tree.marks else []
        if span["links"]:
            marks.append(f"links={len(span['links'])}")
        status = "ERROR" + (f": {span['status']['message']}" if span["status"]["message"] else "")
        text = (
            f"{'!' if error else ' '} {prefix}{branch}{span['service']}: {span['name']} "
            f"[{span['kind']}] {_duration_ms(span):.2f}ms"
            + (f"  {status}" if error else "")
            + (f"  {keys}" if keys else "")
            + (f"  {' '.join(marks)}" if marks else "")
        )
        if color and error:
            text = f"\033[31m{text}\033[0m"
        lines.append(text)
        kids = tree.children.get(span["span_id"], [])
        extension = "" if depth == 0 else ("   " if last else "│  ")
        for index, child in enumerate(kids):
            walk(child, prefix + extension, index == len(kids) - 1, depth + 1)

    for root in tree.roots:
        walk(root, "", True, 0)
    return "\n".join(lines)


def render_summaries(rows: Sequence[dict[str, Any]]) -> str:
    """``mesh traces`` as a table."""
    lines = [
        f"{'TRACE ID':<34}{'START':<29}{'DURATION':>10} {'SPANS':>5}  {'ERR':<5}ROOT  [SERVICES]"
    ]
    for row in rows:
        lines.append(
            f"{row['trace_id']:<34}{row['start_time']:<29}{row['duration_ms']:>8.1f}ms"
            f" {row['spans']:>5}  {'ERR' if row['error'] else '':<5}{row['root']}"
            f"  [{', '.join(row['services'])}]"
        )
    return "\n".join(lines)


# -- commands --------------------------------------------------------------------------------


def run(args: argparse.Namespace, root: Path | None) -> int:
    """Run ``mesh trace`` or ``mesh traces``."""
    if args.jaeger and not args.jaeger.startswith(("http://", "https://")):
        print(f"mesh {args.command}: --jaeger wants an http(s) URL", file=sys.stderr)
        return 2
    try:
        if args.command == "trace":
            return _trace(args, root)
        return _traces(args, root)
    except JaegerError as exc:
        print(f"mesh {args.command}: {exc}", file=sys.stderr)
        return NOT_FOUND


def _store(root: Path | None) -> TraceStore | None:
    from mesh_runner.config import find_root

    path = store_path(root or find_root())
    if not path.exists():
        print(
            f"mesh: no trace store at {path}: `mesh up` runs the receiver that fills it"
            " (or pass --jaeger URL)",
            file=sys.stderr,
        )
        return None
    try:
        return TraceStore(path)
    except TraceStoreError as exc:  # e.g. written by a newer mesh: say so, no traceback
        print(f"mesh: {exc}", file=sys.stderr)
        return None


def _trace(args: argparse.Namespace, root: Path | None) -> int:
    trace_id = args.trace_id.strip().lower()
    if len(trace_id) != 32 or any(c not in "0123456789abcdef" for c in trace_id):
        print(f"mesh trace: {args.trace_id!r} is not a trace id (32 hex digits)", file=sys.stderr)
        return 2
    spans = _spans_of(args, root, trace_id)
    if spans is None:
        return NOT_FOUND
    deadline = time.monotonic() + max(0.0, args.wait)
    settled_at = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline and (not spans or time.monotonic() < settled_at):
        time.sleep(0.2)  # poll interval within the --wait deadline
        again = _spans_of(args, root, trace_id) or []
        if len(again) != len(spans):
            spans, settled_at = again, time.monotonic() + SETTLE_S
    if not spans:
        print(_not_found(args, root, trace_id), file=sys.stderr)
        return NOT_FOUND
    if args.html is not None or args.open:
        return _write_html(args, root, trace_id, spans)
    print(dumps(spans) if args.json else render_tree(spans, color=sys.stdout.isatty()))
    return 0


def _write_html(
    args: argparse.Namespace, root: Path | None, trace_id: str, spans: list[Span]
) -> int:
    """Write the waterfall page; print its path (and with --open its file:// URL)."""
    if args.html:
        path = Path(args.html)
    else:
        path = _mesh_root(root) / ".mesh" / "traces" / f"{trace_id}.html"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_html(spans), encoding="utf-8")
    except OSError as exc:
        print(f"mesh trace: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
        return NOT_FOUND
    print(path)
    if args.open:
        print(path.resolve().as_uri())
    return 0


def _mesh_root(root: Path | None) -> Path:
    """The mesh root: given, else found from here; with --jaeger outside a checkout, here."""
    from mesh_runner.config import ConfigError, find_root

    if root is not None:
        return root
    try:
        return find_root()
    except ConfigError:
        return Path.cwd()


def _not_found(args: argparse.Namespace, root: Path | None, trace_id: str) -> str:
    """Why no span was found: where we looked and, when tracing went elsewhere, where."""
    if args.jaeger:
        return f"mesh trace: no spans of trace {trace_id} in Jaeger at {args.jaeger}"
    where = store_path(_mesh_root(root))
    text = f"mesh trace: no spans of trace {trace_id} in the local store {where}"
    elsewhere = export_elsewhere(_mesh_root(root))
    if elsewhere:
        text += (
            f"; spans go to {elsewhere}, not to the local receiver: if that is a Jaeger, read"
            f" them there: mesh trace {trace_id} --jaeger http://127.0.0.1:16686"
        )
    return text


def export_elsewhere(root: Path) -> str | None:
    """Where spans are exported when that is not `mesh up`'s local receiver: the OTLP endpoint
    set in this environment, else the one a running component of the mesh at ``root`` was
    started with (its /proc environ: `mesh up` passes it on from its own). None when spans go
    to the local receiver (or nothing says otherwise)."""
    from mesh_runner.cli import OTLP_ENDPOINT_KEYS
    from mesh_runner.processes import ProcessRecord, is_alive

    for key in OTLP_ENDPOINT_KEYS:
        if os.environ.get(key, "").strip():
            return f"{os.environ[key].strip()} ({key} is set)"
    run_dir = root / ".mesh" / "run"
    receiver = ProcessRecord.load(run_dir, "trace-receiver")
    local = {f"http://127.0.0.1:{receiver.port}"} if receiver else set()
    for record_file in sorted(run_dir.glob("*.json")) if run_dir.is_dir() else ():
        record = ProcessRecord.load(run_dir, record_file.stem)
        if record is None or record.name == "trace-receiver" or not is_alive(record):
            continue
        try:
            raw = Path(f"/proc/{record.pid}/environ").read_bytes()
        except OSError:
            continue
        env = dict(
            item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item
        )
        for key in OTLP_ENDPOINT_KEYS:
            endpoint = env.get(key, "").strip()
            if endpoint and endpoint.rstrip("/") not in local:
                return f"{endpoint} (the {key} `mesh up` started {record.name} with)"
    return None


def _spans_of(args: argparse.Namespace, root: Path | None, trace_id: str) -> list[Span] | None:
    """The trace's spans now (from Jaeger or the local store); None when there is no store."""
    if args.jaeger:
        return jaeger_trace(args.jaeger, trace_id)
    store = _store(root)
    if store is None:
        return None
    try:
        return store.trace(trace_id)
    finally:
        store.close()


def _traces(args: argparse.Namespace, root: Path | None) -> int:
    if args.jaeger:
        if not args.service:
            print(
                "mesh traces: --jaeger needs --service (API v3 searches by service)",
                file=sys.stderr,
            )
            return 2
        found = jaeger_search(args.jaeger, args.service, args.lookback, args.limit)
        rows = sorted((summarize(t) for t in found), key=lambda r: r["start_time"], reverse=True)
    else:
        store = _store(root)
        if store is None:
            return NOT_FOUND
        try:
            rows = store.recent(args.limit)
        finally:
            store.close()
    print(json.dumps(rows, indent=2) if args.json else render_summaries(rows[: args.limit]))
    return 0
