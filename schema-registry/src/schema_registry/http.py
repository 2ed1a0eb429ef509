"""A small HTTP/1.1 server: asyncio.Protocol + httptools (llhttp), for uvloop.

Why not an ASGI framework: the read path must serve thousands of requests a second per core,
and the registry's answers are already complete byte strings (`Api.handle`). This protocol does
keep-alive, pipelining (answers in order, since handlers are synchronous), `Expect:
100-continue`, HEAD, a body size limit and write back-pressure; nothing else.

A write the guard must pass (`serve --auth`) is the one thing not answered at once: checking
credentials may block (a JWKS fetch, a token request to identity), so `Guard.check` runs on a
worker thread and the answer follows when it is back. Meanwhile the connection's later requests
wait, unanswered and unrun, and reading from it pauses: answers stay in request order, and a
read sent after a write sees that write. Reads and unguarded writes never leave the loop.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from dataclasses import dataclass
from typing import Final, cast

import httptools

from schema_registry.api import Api, WriteContext, error_response
from schema_registry.audit import Origin, actor_of
from schema_registry.auth import Refusal
from schema_registry.errors import ErrorCode

log = logging.getLogger(__name__)

MAX_BODY: Final = 16 * 1024 * 1024
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
# The request headers kept besides Accept (one set lookup per header on every request).
_AUTHORIZATION: Final = b"authorization"
_TRACEPARENT: Final = b"traceparent"
_EXPECT: Final = b"expect"
_CONTENT_LENGTH: Final = b"content-length"
_READS: Final = ("GET", "HEAD")
_KEPT: Final = frozenset({b"accept", _AUTHORIZATION, _TRACEPARENT, _EXPECT, _CONTENT_LENGTH})


@dataclass(slots=True)
class _Pending:
    """A request taken off the parser to be answered later, in order."""

    method: str
    url: bytes
    accept: bytes
    body: bytes
    authorization: bytes
    traceparent: bytes
    keep_alive: bool


class HttpProtocol(asyncio.Protocol):
    """One client connection; httptools calls the `on_*` methods while `data_received` feeds."""

    def __init__(self, api: Api, connections: set[HttpProtocol]) -> None:
        self._api = api
        self._connections = connections
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._accept = b""
        self._authorization = b""
        self._traceparent = b""
        self._expect_continue = False
        self._body: list[bytes] = []
        self._body_size = 0
        self._content_length = 0
        self._closing = False
        self._peer = ""
        # While a guarded write is being checked: the requests that came after it, in order.
        self._waiting: deque[_Pending] | None = None
        self._check: asyncio.Task[None] | None = None

    # asyncio callbacks ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._connections.add(self)
        peer = transport.get_extra_info("peername")
        self._peer = str(peer[0]) if isinstance(peer, tuple) and peer else ""

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)
        self._transport = None

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ErrorCode.BAD_REQUEST, "Protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            self._fail(ErrorCode.BAD_REQUEST, f"Malformed HTTP request: {exc}")

    def pause_writing(self) -> None:
        # A client that pipelines without reading must not make us buffer without bound.
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None and self._waiting is None:
            self._transport.resume_reading()

    def close(self) -> None:
        """Close the connection (server shutdown)."""
        self._closing = True
        if self._transport is not None:
            self._transport.close()

    # httptools callbacks -------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._accept = b""
        self._authorization = b""
        self._traceparent = b""
        self._expect_continue = False
        self._body = []
        self._body_size = 0
        self._content_length = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered not in _KEPT:
            return
        if lowered == b"accept":
            self._accept = value if not self._accept else self._accept + b"," + value
        elif lowered == _AUTHORIZATION:
            self._authorization = value
        elif lowered == _TRACEPARENT:
            self._traceparent = value
        elif lowered == _EXPECT and value.lower() == b"100-continue":
            self._expect_continue = True
        elif lowered == _CONTENT_LENGTH and value.strip().isdigit():
            self._content_length = int(value)

    def on_headers_complete(self) -> None:
        if self._content_length > MAX_BODY:
            self._fail(ErrorCode.PAYLOAD_TOO_LARGE, f"Request body over {MAX_BODY} bytes")
            return
        if self._expect_continue and self._transport is not None:
            self._transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > MAX_BODY:
            self._fail(ErrorCode.PAYLOAD_TOO_LARGE, f"Request body over {MAX_BODY} bytes")
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        transport = self._transport
        if transport is None or self._closing:
            return
        method = self._parser.get_method().decode("latin-1")
        if self._waiting is None and method in _READS:
            # The read path: answered here and now, nothing else to look at.
            response = self._api.handle(method, self._url, self._accept, b"".join(self._body))
            if method == "HEAD":
                response = response[: response.index(b"\r\n\r\n") + 4]
            transport.write(response)
            if not self._parser.should_keep_alive():
                self._closing = True
                transport.close()
            return
        pending = _Pending(
            method,
            self._url,
            self._accept,
            b"".join(self._body),
            self._authorization,
            self._traceparent,
            self._parser.should_keep_alive(),
        )
        if self._waiting is not None:
            self._waiting.append(pending)  # behind the write being checked
        else:
            self._serve(pending)

    # answering in order ---------------------------------------------------------------------
    def _serve(self, request: _Pending) -> bool:
        """Answer ``request`` now; False when it went to the guard (then it answers itself,
        and whatever waits behind it, when the verdict is back)."""
        method = request.method
        if method in _READS:
            self._send(request, self._api.handle(method, request.url, request.accept, request.body))
            return True
        origin = Origin(
            source_address=self._peer, traceparent=request.traceparent.decode("latin-1")
        )
        if not self._api.guarded(method, request.url):
            context = WriteContext(origin)
            response = self._api.handle(method, request.url, request.accept, request.body, context)
            self._send(request, response)
            return True
        self._waiting = deque()
        if self._transport is not None:
            self._transport.pause_reading()
        self._check = asyncio.get_running_loop().create_task(self._guarded(request, origin))
        return False

    async def _guarded(self, request: _Pending, origin: Origin) -> None:
        guard = self._api.guard
        assert guard is not None
        authorization = request.authorization.decode("latin-1")
        loop = asyncio.get_running_loop()
        try:
            verdict = await loop.run_in_executor(None, guard.check, authorization)
        except Exception as exc:  # Guard.check does not raise; a bug must not hang the client
            log.exception("checking credentials failed")
            verdict = Refusal(503, f"credentials could not be checked: {exc}")
        refusal = verdict if isinstance(verdict, Refusal) else None
        who = actor_of(verdict.principal if isinstance(verdict, Refusal) else verdict)
        context = WriteContext(
            Origin(who, origin.source_address, origin.traceparent),
            allowed=refusal is None,
            refusal=refusal,
        )
        if self._transport is None:
            return  # the client went away: the write is not made
        response = self._api.handle(
            request.method, request.url, request.accept, request.body, context
        )
        self._send(request, response)
        waiting, self._waiting = self._waiting or deque(), None
        while waiting:
            if not self._serve(waiting.popleft()):
                self._wait_behind(waiting)
                return
        if self._transport is not None and not self._closing:
            self._transport.resume_reading()

    def _wait_behind(self, requests: deque[_Pending]) -> None:
        """Queue ``requests`` behind the guarded write that ``_serve`` just sent off."""
        if self._waiting is not None:
            self._waiting.extend(requests)

    def _send(self, request: _Pending, response: bytes) -> None:
        transport = self._transport
        if transport is None or self._closing:
            return
        if request.method == "HEAD":
            response = response[: response.index(b"\r\n\r\n") + 4]
        transport.write(response)
        if not request.keep_alive:
            self._closing = True
            transport.close()

    def _fail(self, code: ErrorCode, message: str) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.write(error_response(code, message))
            self._transport.close()


async def run_server(
    api: Api,
    sock: socket.socket,
    *,
    started: asyncio.Future[None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve on an already bound, listening socket until `stop` is set."""
    loop = asyncio.get_running_loop()
    connections: set[HttpProtocol] = set()
    server = await loop.create_server(
        lambda: HttpProtocol(api, connections),
        sock=sock,
        backlog=2048,
    )
    if started is not None and not started.done():
        started.set_result(None)
    stop = stop or asyncio.Event()
    try:
        await stop.wait()
    finally:
        server.close()
        for conn in list(connections):
            conn.close()
        await server.wait_closed()
