"""The local trace receiver `mesh up` starts first: OTLP/gRPC in, spans kept in SQLite.

    python -m mesh_runner.receiver [--host 127.0.0.1] [--port 4317] [--db .mesh/data/traces.db]

It serves ``opentelemetry.proto.collector.trace.v1.TraceService/Export`` (the stubs ship with
opentelemetry-proto) and grpc.health.v1, so tracing works with no software beyond the mesh:
every component exports to it (``OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317``) and
``mesh trace`` / ``mesh traces`` read the same file. Spans are kept until ``--retention-hours``
after they started (pruned at most once a minute). A store written by an older mesh is migrated
when the receiver opens it (see tracestore.py); one of a newer schema stops it with exit 1.

It does not trace itself: it never configures meshkit.telemetry (its own spans would be exported
to itself, one export begetting the next).
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from mesh_runner.tracestore import TraceStore, TraceStoreError
from meshkit.logs import configure_logging
from meshkit.server import MeshServer, ServiceBinding, create_server
from meshkit.settings import ServerSettings

log = logging.getLogger("mesh_runner.receiver")

DEFAULT_PORT = 4317
DEFAULT_DB = Path(".mesh") / "data" / "traces.db"
SERVICE_NAME = trace_service_pb2.DESCRIPTOR.services_by_name["TraceService"].full_name


class TraceReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    """OTLP TraceService: stores every exported span; thread safe (the store serializes writes)."""

    def __init__(self, store: TraceStore, retention_s: float = 24 * 3600.0) -> None:
        self._store = store
        self._retention_s = retention_s
        self._last_prune = 0.0
        self._prune_lock = threading.Lock()

    def Export(  # noqa: N802 - the generated servicer's name
        self,
        request: trace_service_pb2.ExportTraceServiceRequest,
        context: grpc.ServicerContext,
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        """Store the request's spans; an empty success response means all were accepted."""
        self._store.add(request)
        self._maybe_prune()
        return trace_service_pb2.ExportTraceServiceResponse()

    def _maybe_prune(self) -> None:
        now = time.monotonic()
        if now - self._last_prune < 60.0 or not self._prune_lock.acquire(blocking=False):
            return
        try:
            self._last_prune = now
            self._store.prune(time.time() - self._retention_s)
        finally:
            self._prune_lock.release()


def build(host: str, port: int, db: Path, retention_s: float) -> MeshServer:
    """The receiver's server (not started); closes the store on stop."""
    store = TraceStore(db)
    server = create_server(
        "trace-receiver",
        ServerSettings(host=host, port=port),
        [
            ServiceBinding(
                TraceReceiver(store, retention_s),
                trace_service_pb2_grpc.add_TraceServiceServicer_to_server,
                SERVICE_NAME,
            )
        ],
    )
    server.on_stop(store.close)
    return server


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mesh_runner.receiver``: receive spans until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m mesh_runner.receiver", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--db", type=Path, default=DEFAULT_DB, help="the SQLite file of spans")
    parser.add_argument("--retention-hours", type=float, default=24.0)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    configure_logging("trace-receiver", args.log_level)
    try:
        server = build(args.host, args.port, args.db, args.retention_hours * 3600.0)
    except TraceStoreError as exc:  # a store of a newer schema: named, not overwritten
        log.error("%s", exc)
        return 1
    try:
        server.run()
    except OSError as exc:
        log.error("%s", exc)
        server.stop(0)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
