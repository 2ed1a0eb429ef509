"""The kit's HTTP side, for what is HTTP by its RFCs: identity's OAuth endpoints, the gateway.

A service serves a WSGI application (Werkzeug's ``Request``/``Response``/routing are the
toolkit) next to its gRPC server with ``ctx.serve_http(app, port)``; the kit runs it with
waitress, a production WSGI server in pure Python, on a thread pool:

- the socket is bound when the service is built, so a port in use refuses the start and a
  health check that says SERVING means HTTP accepts connections too;
- every request gets a SERVER span (W3C ``traceparent`` from its headers continues the caller's
  trace) and an access-log line (JSON, with the trace id and the response's X-Request-Id): at
  INFO for an edge (``access_log=True``), else at DEBUG, with a slow or failed one at
  INFO/WARNING;
- on stop it stops accepting, lets requests in progress finish (up to ``grace`` seconds), then
  closes the connections still open.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import waitress.server
from opentelemetry.trace import SpanKind

from meshkit import telemetry

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger("meshkit.http")

SLOW_MS = 500.0


class HttpServer:
    """One WSGI application on ``host:port`` (port 0: a free one, see ``port``).

    Thread safety: ``serve_forever`` runs on one thread (a kit worker); ``close`` may be called
    from any other, once.
    """

    def __init__(
        self,
        app: WSGIApplication,
        *,
        name: str,
        host: str = "127.0.0.1",
        port: int = 0,
        threads: int = 8,
        grace: float = 5.0,
        access_log: bool = False,
    ) -> None:
        self.name = name
        self._grace = grace
        try:
            self._server: Any = waitress.server.create_server(
                _Traced(app, name, access_log),
                host=host,
                port=port,
                threads=threads,
                ident=name,
                # Behind nothing by default: forwarded headers are not trusted, so a client
                # cannot claim another source address (identity throttles per address).
                clear_untrusted_proxy_headers=True,
                expose_tracebacks=False,
            )
        except OSError as exc:
            raise OSError(f"{name}: cannot listen on {host}:{port} (HTTP): {exc}") from None
        self.host = host
        self.port: int = int(self._server.effective_port)
        self._closed = threading.Event()

    @property
    def url(self) -> str:
        """``http://host:port``."""
        return f"http://{self.host}:{self.port}"

    def serve_forever(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set (the kit's worker signature), then close."""

        def close_on_stop() -> None:
            stop.wait()
            self.close()

        watcher = threading.Thread(target=close_on_stop, name=f"{self.name}-stop", daemon=True)
        watcher.start()
        log.info("%s serving HTTP on %s", self.name, self.url)
        self._server.run()

    def close(self) -> None:
        """Stop accepting, let running requests finish (up to the grace period), close the
        rest. Idempotent."""
        if self._closed.is_set():
            return
        self._closed.set()
        server = self._server
        # The asyncore loop owns the sockets: close them on its thread, through its trigger.
        server.trigger.pull_trigger(lambda: _stop_accepting(server))
        server.task_dispatcher.shutdown(cancel_pending=False, timeout=self._grace)
        server.trigger.pull_trigger(lambda: _close_all(server))


def _close_all(server: Any) -> None:
    # Every connection still open, and the trigger: with its map empty the loop returns.
    for channel in list(server._map.values()):
        channel.close()


def _stop_accepting(server: Any) -> None:
    # waitress has no public "stop listening" call; this is what its own close() does to the
    # listening socket, without closing the trigger the loop still needs.
    if server.accepting:
        server.accepting = False
        server.del_channel()
        server.socket.close()


class _Traced:
    """WSGI middleware: a SERVER span per request (continuing an incoming traceparent) and the
    access log."""

    def __init__(self, app: WSGIApplication, name: str, access_log: bool = False) -> None:
        self._app = app
        self._name = name
        self._routine = logging.INFO if access_log else logging.DEBUG

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "/")
        began = time.perf_counter()
        status: list[str] = ["500"]
        request_id: list[str] = [""]

        def recording(
            code: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], object]:
            status[0] = code.split(" ", 1)[0]
            request_id[0] = next((v for k, v in headers if k.lower() == "x-request-id"), "")
            return start_response(code, headers, exc_info)

        with telemetry.span(
            f"{method} {path}",
            SpanKind.SERVER,
            {
                "http.request.method": method,
                "url.path": path,
                "server.port": int(environ.get("SERVER_PORT", 0) or 0),
            },
            parent=environ.get("HTTP_TRACEPARENT") or None,
        ) as span:
            body = list(self._app(environ, recording))
            code = int(status[0])
            span.set_attribute("http.response.status_code", code)
            elapsed_ms = (time.perf_counter() - began) * 1000
            level = (
                logging.WARNING
                if code >= 500
                else max(self._routine, logging.INFO)
                if elapsed_ms >= SLOW_MS
                else self._routine
            )
            # Inside the span, so the line carries its trace id. The path only: a query string
            # may hold codes or tokens (OAuth redirects), and never reaches a log.
            log.log(
                level,
                "%s %s %s -> %d in %.1f ms",
                self._name,
                method,
                path,
                code,
                elapsed_ms,
                extra={
                    "http_method": method,
                    "http_path": path,
                    "http_status": code,
                    "elapsed_ms": round(elapsed_ms, 1),
                    "request_id": request_id[0],
                    "client_address": environ.get("REMOTE_ADDR", ""),
                },
            )
        return _Body(body)


class _Body:
    """The response body, already complete (the span covers producing it)."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._chunks)
