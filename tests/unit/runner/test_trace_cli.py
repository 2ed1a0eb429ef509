"""The local trace receiver (OTLP export in, SQLite out) and `mesh trace` / `mesh traces`.

Spans are made by the real SDK and exported by the real OTLP/gRPC exporter to an in-process
receiver, then read back through the CLI entry point (tree and --json) and from OTLP JSON as
Jaeger's API v3 returns it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, set_span_in_context

from mesh_runner import receiver
from mesh_runner.cli import main
from mesh_runner.tracestore import TraceStore, spans_from_otlp_json
from meshkit.server import MeshServer

KEYS = {
    "trace_id",
    "span_id",
    "parent_span_id",
    "name",
    "service",
    "kind",
    "start_time",
    "end_time",
    "status",
    "attributes",
    "links",
    "events",
}


def make_trace() -> list[ReadableSpan]:
    """A small order-shaped trace over three services: SERVER -> CLIENT -> SERVER,
    SERVER -> PRODUCER -> CONSUMER (child and link), one failing span."""
    memory = InMemorySpanExporter()

    def provider(service: str) -> TracerProvider:
        p = TracerProvider(resource=Resource.create({"service.name": service}))
        p.add_span_processor(SimpleSpanProcessor(memory))
        return p

    orders = provider("orders").get_tracer("t")
    inventory = provider("inventory").get_tracer("t")
    views = provider("order_views").get_tracer("t")
    with orders.start_as_current_span(
        "shop.orders.v1.OrdersService/PlaceOrder",
        kind=SpanKind.SERVER,
        attributes={"rpc.status_code": "OK"},
    ) as root:
        with (
            orders.start_as_current_span(
                "shop.inventory.v1.InventoryService/Reserve", kind=SpanKind.CLIENT
            ) as client,
            inventory.start_as_current_span(
                "shop.inventory.v1.InventoryService/Reserve",
                context=set_span_in_context(client),
                kind=SpanKind.SERVER,
                attributes={"rpc.status_code": "FAILED_PRECONDITION"},
            ) as failing,
        ):
            failing.set_status(Status(StatusCode.ERROR, "out of stock"))
        with orders.start_as_current_span(
            "send orders.events.v1",
            kind=SpanKind.PRODUCER,
            attributes={"messaging.destination.name": "orders.events.v1"},
        ) as producer:
            pass
    with views.start_as_current_span(
        "process orders.events.v1",
        context=set_span_in_context(producer),
        kind=SpanKind.CONSUMER,
        links=[Link(producer.get_span_context())],
    ):
        pass
    assert root.get_span_context().is_valid
    return list(memory.get_finished_spans())


@pytest.fixture
def mesh_root(tmp_path: Path) -> Iterator[tuple[Path, MeshServer]]:
    """A mesh root with mesh.toml and a receiver storing into its .mesh/data/traces.db."""
    (tmp_path / "mesh.toml").write_text("")
    server = receiver.build("127.0.0.1", 0, tmp_path / ".mesh" / "data" / "traces.db", 3600.0)
    server.start()
    yield tmp_path, server
    server.stop(0)


def export(server: MeshServer, spans: list[ReadableSpan]) -> None:
    exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{server.port}", insecure=True)
    try:
        assert exporter.export(spans).name == "SUCCESS"
    finally:
        exporter.shutdown()


def test_export_then_query_as_json(
    mesh_root: tuple[Path, MeshServer], capsys: pytest.CaptureFixture[str]
) -> None:
    root, server = mesh_root
    spans = make_trace()
    export(server, spans)
    trace_id = format(spans[0].context.trace_id, "032x") if spans[0].context else ""
    assert main(["--root", str(root), "trace", trace_id, "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert len(got) == 5
    assert all(set(span) == KEYS for span in got)
    assert {s["kind"] for s in got} == {"SERVER", "CLIENT", "PRODUCER", "CONSUMER"}
    assert {s["service"] for s in got} == {"orders", "inventory", "order_views"}
    ids = {s["span_id"] for s in got}
    roots = [s for s in got if s["parent_span_id"] is None]
    assert [r["name"] for r in roots] == ["shop.orders.v1.OrdersService/PlaceOrder"]
    assert all(s["parent_span_id"] in ids for s in got if s is not roots[0])
    consumer = next(s for s in got if s["kind"] == "CONSUMER")
    producer = next(s for s in got if s["kind"] == "PRODUCER")
    assert consumer["parent_span_id"] == producer["span_id"]
    assert consumer["links"] == [
        {"trace_id": trace_id, "span_id": producer["span_id"], "attributes": {}}
    ]
    failing = next(s for s in got if s["status"]["code"] == "ERROR")
    assert failing["status"]["message"] == "out of stock"
    assert failing["attributes"] == {"rpc.status_code": "FAILED_PRECONDITION"}


def test_tree_marks_errors_and_nests_children(
    mesh_root: tuple[Path, MeshServer], capsys: pytest.CaptureFixture[str]
) -> None:
    root, server = mesh_root
    spans = make_trace()
    export(server, spans)
    trace_id = format(spans[0].context.trace_id, "032x") if spans[0].context else ""
    assert main(["--root", str(root), "trace", trace_id]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"trace {trace_id}  5 spans  3 services")
    assert "ERROR" in lines[0]
    assert lines[1].startswith("  orders: shop.orders.v1.OrdersService/PlaceOrder [SERVER]")
    (failing,) = [line for line in lines if line.startswith("!")]
    assert "inventory: shop.inventory.v1.InventoryService/Reserve [SERVER]" in failing
    assert "ERROR: out of stock" in failing
    consumer = next(line for line in lines if "[CONSUMER]" in line)
    assert "order_views: process orders.events.v1" in consumer and "links=1" in consumer
    # The consumer is nested under the producer, which is under the root.
    depth = {line.split(": ")[0].strip(" !│├└─"): line.index(":") for line in lines[1:]}
    assert depth["order_views"] > depth["orders"]


def test_traces_lists_recent_and_unknown_trace_is_exit_1(
    mesh_root: tuple[Path, MeshServer], capsys: pytest.CaptureFixture[str]
) -> None:
    root, server = mesh_root
    export(server, make_trace())
    export(server, make_trace())
    assert main(["--root", str(root), "traces", "--limit", "5", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 2
    assert rows[0]["root"] == "orders: shop.orders.v1.OrdersService/PlaceOrder"
    assert rows[0]["services"] == ["inventory", "order_views", "orders"]
    assert rows[0]["error"] is True and rows[0]["spans"] == 5
    assert main(["--root", str(root), "traces"]) == 0
    assert "PlaceOrder" in capsys.readouterr().out
    assert main(["--root", str(root), "trace", "0" * 31 + "1"]) == 1
    assert main(["--root", str(root), "trace", "not-hex"]) == 2


def test_otlp_json_from_jaeger_reads_like_the_store(tmp_path: Path) -> None:
    """Jaeger's API v3 answers OTLP JSON; both readers give the same spans."""
    from google.protobuf import json_format

    spans = make_trace()
    request = encode_spans(spans)
    store = TraceStore(tmp_path / "t.db")
    store.add(request)
    trace_id = format(spans[0].context.trace_id, "032x") if spans[0].context else ""
    stored = store.trace(trace_id)
    store.close()
    # json_format writes ids as base64 and enums by name; the OTLP/JSON spec (and Jaeger) use
    # hex ids: accept both.
    as_json = {"result": json_format.MessageToDict(request)}
    from_json = spans_from_otlp_json(as_json)
    key = lambda s: s["span_id"]  # noqa: E731
    assert sorted(from_json, key=key) == sorted(stored, key=key)


def _span(span_id: str, parent: str | None, kind: str, start: str) -> dict[str, object]:
    return {
        "trace_id": "ab" * 16,
        "span_id": span_id,
        "parent_span_id": parent,
        "name": f"op-{span_id}",
        "service": "svc",
        "kind": kind,
        "start_time": start,
        "end_time": start,
        "status": {"code": "OK", "message": ""},
        "attributes": {},
        "links": [],
    }


def test_every_call_from_outside_is_an_entry_and_only_real_gaps_are_flagged() -> None:
    """One outside caller (grpcurl with a traceparent, the demo) made seven calls sharing its
    trace id: seven SERVER spans whose parent is the caller's, never exported. Each is an entry
    point, none "(parent missing)" (six of the seven were, the issue found); a CONSUMER whose
    producer is not there still is."""
    from mesh_runner.traces import render_tree

    caller = "c0ffee00c0ffee00"
    spans = [
        _span(f"a{n}", caller, "SERVER", f"2026-01-01T00:00:00.00000{n}Z") for n in range(1, 8)
    ]
    spans += [
        _span("b2", "a1", "CLIENT", "2026-01-01T00:00:00.000008Z"),
        _span("d4", "ffff000000000000", "CONSUMER", "2026-01-01T00:00:00.000009Z"),
    ]
    lines = render_tree(spans).splitlines()
    entries = [line for line in lines if "op-a" in line]
    assert len(entries) == 7
    assert all("(from outside the mesh)" in line for line in entries), entries
    assert not any("parent missing" in line for line in entries)
    gap = next(line for line in lines if "op-d4" in line)
    assert "(parent missing)" in gap and "outside" not in gap
    child = next(line for line in lines if "op-b2" in line)
    assert "outside" not in child and "missing" not in child


def test_wait_prints_the_trace_once_its_late_spans_have_arrived(
    mesh_root: tuple[Path, MeshServer], capsys: pytest.CaptureFixture[str]
) -> None:
    root, server = mesh_root
    spans = make_trace()
    trace_id = format(spans[0].context.trace_id, "032x") if spans[0].context else ""
    # The first spans now, the rest a moment later (as a batch exporter sends them).
    export(server, spans[:2])
    late = threading.Timer(0.6, export, args=(server, spans[2:]))
    late.start()
    try:
        assert main(["--root", str(root), "trace", trace_id, "--json", "--wait", "20"]) == 0
    finally:
        late.join()
    assert len(json.loads(capsys.readouterr().out)) == 5
    unknown = "0" * 31 + "1"
    assert main(["--root", str(root), "trace", unknown, "--wait", "0.5"]) == 1


def trace_id_of(spans: list[ReadableSpan]) -> str:
    return format(spans[0].context.trace_id, "032x") if spans[0].context else ""


def test_a_span_exported_twice_is_shown_once(
    mesh_root: tuple[Path, MeshServer], capsys: pytest.CaptureFixture[str]
) -> None:
    root, server = mesh_root
    spans = make_trace()
    export(server, spans)
    export(server, spans[1:3])  # a retried export sends some spans again
    assert main(["--root", str(root), "trace", trace_id_of(spans), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert sorted(s["span_id"] for s in got) == sorted(
        format(s.context.span_id, "016x") for s in spans if s.context
    )
    assert main(["--root", str(root), "traces", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["spans"] == 5


def _shifted(spans: list[ReadableSpan], trace_id: int, offset_ns: int) -> list[ReadableSpan]:
    """``spans`` as another trace, ``offset_ns`` later (ids kept within the trace)."""
    from opentelemetry.trace import SpanContext

    out = []
    for span in spans:
        assert span.context is not None and span.start_time and span.end_time
        context = SpanContext(trace_id, span.context.span_id, False, span.context.trace_flags)
        parent = (
            SpanContext(trace_id, span.parent.span_id, True, span.parent.trace_flags)
            if span.parent
            else None
        )
        links = [
            Link(SpanContext(trace_id, link.context.span_id, False), link.attributes)
            for link in span.links
        ]
        out.append(
            ReadableSpan(
                name=span.name,
                context=context,
                parent=parent,
                resource=span.resource,
                attributes=span.attributes,
                kind=span.kind,
                status=span.status,
                start_time=span.start_time + offset_ns,
                end_time=span.end_time + offset_ns,
                links=links,
                instrumentation_scope=span.instrumentation_scope,
            )
        )
    return out


def test_recent_orders_traces_by_their_earliest_span(tmp_path: Path) -> None:
    """A long trace that started first but ended last is listed after the ones started later."""
    base = make_trace()
    store = TraceStore(tmp_path / "t.db")
    try:
        long = _shifted(base, 0xA1, 0)
        # The long trace's consumer span comes an hour later than everything else.
        late = _shifted(long[-1:], 0xA1, 3600 * 10**9)
        for index in range(5):
            store.add(encode_spans(_shifted(base, 0xB0 + index, (index + 1) * 10**9)))
        store.add(encode_spans(long[:-1] + late))
        rows = store.recent(3)
        assert [r["trace_id"] for r in rows] == [f"{0xB4:032x}", f"{0xB3:032x}", f"{0xB2:032x}"]
        every = store.recent(10)
        assert [r["trace_id"] for r in every][-1] == f"{0xA1:032x}"
        assert len(every) == 6 and every[-1]["spans"] == 5
        # Its spans are an hour (many index buckets) apart; the tree is whole.
        assert len(store.trace(f"{0xA1:032x}")) == 5
        assert every[-1]["duration_ms"] > 3600 * 1000
        assert store.recent(0) == []
    finally:
        store.close()


# Schema 1 (before the append-only table): rows keyed by (trace_id, span_id) as hex text.
SCHEMA_1 = """
CREATE TABLE spans (
    trace_id TEXT NOT NULL, span_id TEXT NOT NULL, parent_span_id TEXT, service TEXT NOT NULL,
    name TEXT NOT NULL, start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL,
    status INTEGER NOT NULL, span BLOB NOT NULL, PRIMARY KEY (trace_id, span_id)
) WITHOUT ROWID;
CREATE INDEX spans_by_start ON spans (start_ns);
"""


def test_a_schema_1_store_is_migrated_and_reads_the_same(tmp_path: Path) -> None:
    import sqlite3

    spans = make_trace()
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript(SCHEMA_1)
    for resource_spans in encode_spans(spans).resource_spans:
        service = next(
            kv.value.string_value
            for kv in resource_spans.resource.attributes
            if kv.key == "service.name"
        )
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                old.execute(
                    "INSERT INTO spans VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                    ),
                )
    old.commit()
    old.close()
    fresh = TraceStore(tmp_path / "new.db")
    fresh.add(encode_spans(spans))
    migrated = TraceStore(path)
    try:
        assert len(migrated.trace(trace_id_of(spans))) == 5
        assert migrated.trace(trace_id_of(spans)) == fresh.trace(trace_id_of(spans))
        assert migrated.recent() == fresh.recent()
        migrated.add(encode_spans(spans))  # still one copy of each span after the migration
        assert migrated.recent()[0]["spans"] == 5
    finally:
        migrated.close()
        fresh.close()
    again = TraceStore(path)  # the second open finds schema 2 and leaves it
    try:
        assert again.recent()[0]["spans"] == 5
    finally:
        again.close()


def test_a_schema_2_store_gets_the_bucketed_index_and_still_replaces_resent_spans(
    tmp_path: Path,
) -> None:
    import sqlite3

    spans = make_trace()
    path = tmp_path / "v2.db"
    TraceStore(path).close()
    with sqlite3.connect(path) as conn:  # schema 2's index: ids only
        conn.execute("DROP INDEX spans_by_id")
        conn.execute("CREATE UNIQUE INDEX spans_by_id ON spans (trace_id, span_id)")
        conn.execute("PRAGMA user_version = 2")
    store = TraceStore(path)
    try:
        store.add(encode_spans(spans))
        store.add(encode_spans(spans))
        assert len(store.trace(trace_id_of(spans))) == 5
    finally:
        store.close()
    with sqlite3.connect(path) as conn:
        (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'spans_by_id'").fetchone()
        assert "start_ns >>" in sql
        assert conn.execute("PRAGMA user_version").fetchone() == (3,)


def test_a_store_of_a_newer_schema_is_refused_by_name(tmp_path: Path) -> None:
    import sqlite3

    from mesh_runner.tracestore import TraceStoreError

    path = tmp_path / "future.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(TraceStoreError, match=r"schema 99 is newer.*delete the file"):
        TraceStore(path)


def test_prune_drops_what_started_before_the_cutoff(tmp_path: Path) -> None:
    spans = make_trace()
    store = TraceStore(tmp_path / "t.db")
    try:
        store.add(encode_spans(_shifted(spans, 0xC1, -7200 * 10**9)))
        store.add(encode_spans(spans))
        import time

        assert store.prune(time.time() - 3600) == 5
        assert [r["trace_id"] for r in store.recent()] == [trace_id_of(spans)]
        assert store.trace(f"{0xC1:032x}") == []
    finally:
        store.close()


def test_the_receiver_refuses_a_newer_store_with_exit_1(tmp_path: Path) -> None:
    import sqlite3
    import subprocess
    import sys

    path = tmp_path / "future.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    done = subprocess.run(
        [sys.executable, "-m", "mesh_runner.receiver", "--port", "0", "--db", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "schema 99 is newer" in done.stderr


def test_mesh_traces_on_a_newer_store_says_why_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import sqlite3

    from mesh_runner.traces import store_path

    (tmp_path / "mesh.toml").write_text("")
    path = store_path(tmp_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    assert main(["--root", str(tmp_path), "traces"]) != 0
    assert main(["--root", str(tmp_path), "trace", "0" * 31 + "1"]) != 0
    err = capsys.readouterr().err
    assert err.count("schema 99 is newer") == 2
    assert "Traceback" not in err


def test_html_writes_the_page_under_the_mesh_root_and_open_prints_its_url(
    mesh_root: tuple[Path, MeshServer], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    root, server = mesh_root
    spans = make_trace()
    export(server, spans)
    trace_id = trace_id_of(spans)
    assert main(["--root", str(root), "trace", trace_id, "--html"]) == 0
    page = root / ".mesh" / "traces" / f"{trace_id}.html"
    assert capsys.readouterr().out.splitlines() == [str(page)]
    assert page.read_text().startswith("<!DOCTYPE html>")
    assert page.read_text().count("<details") == 5
    elsewhere = tmp_path / "out" / "deep" / "t.html"
    assert main(["--root", str(root), "trace", trace_id, "--html", str(elsewhere), "--open"]) == 0
    assert capsys.readouterr().out.splitlines() == [str(elsewhere), elsewhere.as_uri()]
    assert elsewhere.exists()
    assert main(["--root", str(root), "trace", trace_id, "--open"]) == 0
    assert capsys.readouterr().out.splitlines() == [str(page), page.as_uri()]
    # --json and the tree are as they were.
    assert main(["--root", str(root), "trace", trace_id, "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 5


def test_no_spans_says_where_it_looked(
    mesh_root: tuple[Path, MeshServer],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root, _server = mesh_root
    for key in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(key, raising=False)
    unknown = "0" * 31 + "1"
    assert main(["--root", str(root), "trace", unknown]) == 1
    err = capsys.readouterr().err
    assert str(root / ".mesh" / "data" / "traces.db") in err
    assert "--jaeger" not in err  # nothing says spans went elsewhere
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4399")
    assert main(["--root", str(root), "trace", unknown]) == 1
    err = capsys.readouterr().err
    assert "http://127.0.0.1:4399" in err
    assert f"mesh trace {unknown} --jaeger http://127.0.0.1:16686" in err


def test_no_spans_hints_at_jaeger_when_the_running_mesh_exports_there(
    mesh_root: tuple[Path, MeshServer],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`mesh up` ran with OTEL_EXPORTER_OTLP_ENDPOINT set (to Jaeger), this shell has not: the
    running components' environment says where their spans go."""
    import os
    import subprocess
    import sys

    from mesh_runner.processes import ProcessRecord, start_ticks

    root, _server = mesh_root
    for key in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(key, raising=False)
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4398"}
    component = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE, env=env
    )
    try:
        ProcessRecord("orders", component.pid, 50051, [], 0.0, "", start_ticks(component.pid)).save(
            root / ".mesh" / "run"
        )
        assert main(["--root", str(root), "trace", "0" * 31 + "1"]) == 1
        err = capsys.readouterr().err
        assert "http://127.0.0.1:4398" in err and "orders" in err
        assert "--jaeger http://127.0.0.1:16686" in err
    finally:
        component.communicate(b"")
