"""A small HTTP/1.1 server: asyncio.Protocol + httptools (llhttp), for uvloop.

Why not an ASGI framework: the read path must serve thousands of requests a second per core,
and the registry's answers are already complete byte strings (`Api.handle`). This protocol does
keep-alive, pipelining (answers in order, since handlers are synchronous), `Expect:
100-continue`, HEAD, a body size limit and write back-pressure; nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Final, cast

import httptools

from schema_registry.api import Api, error_response
from schema_registry.errors import ErrorCode

log = logging.getLogger(__name__)

MAX_BODY: Final = 16 * 1024 * 1024
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"


class HttpProtocol(asyncio.Protocol):
    """One client connection; httptools calls the `on_*` methods while `data_received` feeds."""

    def __init__(self, api: Api, connections: set[HttpProtocol]) -> None:
        self._api = api
        self._connections = connections
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._accept = b""
        self._expect_continue = False
        self._body: list[bytes] = []
        self._body_size = 0
        self._content_length = 0
        self._closing = False

    # asyncio callbacks ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._connections.add(self)

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
        if self._transport is not None:
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
        self._expect_continue = False
        self._body = []
        self._body_size = 0
        self._content_length = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"accept":
            self._accept = value if not self._accept else self._accept + b"," + value
        elif lowered == b"expect" and value.lower() == b"100-continue":
            self._expect_continue = True
        elif lowered == b"content-length" and value.strip().isdigit():
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
        response = self._api.handle(method, self._url, self._accept, b"".join(self._body))
        if method == "HEAD":
            response = response[: response.index(b"\r\n\r\n") + 4]
        transport.write(response)
        if not self._parser.should_keep_alive():
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
