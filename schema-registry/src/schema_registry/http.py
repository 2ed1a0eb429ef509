"""A small HTTP/1.1 server: asyncio.Protocol + httptools (llhttp), for uvloop.

Why not an ASGI framework: the read path must serve thousands of requests a second per core,
and the registry's answers are already complete byte strings (`Api.handle`). This protocol does
keep-alive, pipelining, `Expect: 100-continue`, HEAD, write back-pressure and the limits below;
nothing else.

Reads (GET, HEAD) are answered on the event loop, at once: they are mostly cached bytes. Every
other request (writes, lookups, compatibility checks) may take seconds (parsing and checking a
100,000-field schema does), so it runs on the worker's one writer thread, with an `Api` and a
storage connection of its own: the loop keeps answering reads meanwhile, and writes stay
serialised as before. A write the guard must pass (`serve --auth`) first has its credentials
checked on another thread (a JWKS fetch may block). While a request is off the loop, its
connection's later requests wait, unanswered and unrun, and reading from it pauses: answers stay
in request order, and a read sent after a write sees that write.

`HttpLimits` bounds what a client may hold; the defaults are Confluent's (rest-utils on Jetty):

* A keep-alive connection with nothing to do is closed after ``idle_timeout`` (Jetty's
  ``idle.timeout.ms``, 30 s), silently, as Jetty does.
* A request's head must arrive whole within ``header_timeout`` of its first byte. It is a total,
  not a gap between reads: a slowloris client trickling a byte at a time gains nothing. Its body
  must keep arriving (no gap over ``body_timeout``). Either way: 408, and the connection closes.
* The request line and headers may take ``max_header_bytes`` (Jetty's
  ``max.request.header.size``, 8 KiB): a longer URL is 414, longer headers 431. They are counted
  as they arrive, so a 100 MiB header is refused at its first chunks, not read in full. A body
  over ``max_body_bytes`` is 413.
* Each worker keeps at most ``max_connections`` (by default what its file limit leaves after the
  descriptors it needs itself). When full, a new connection closes the one idle the longest, or
  is closed itself when none is idle: a thousand idle sockets cannot lock clients out.
  uvloop (libuv) accepts through EMFILE, closing what it cannot keep, and goes on serving.
* Confluent's resources consume (``@Consumes``) ``application/vnd.schemaregistry.v1+json``,
  ``application/vnd.schemaregistry+json``, ``application/json`` and ``application/octet-stream``,
  which is what Jersey assumes when no Content-Type is sent. Any other Content-Type is 415
  before anything runs, for every method, as Jersey answers: a web page cannot register a schema
  on a registry on localhost with a ``text/plain`` or form POST.

Answers to refused requests have Confluent's error shape (``{"error_code", "message"}``); after
one the server stops writing, reads and drops what the client still sends for a moment (so the
client gets the answer, not a reset), then closes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import socket
import time
from collections import deque
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final, NoReturn, cast

import httptools

from schema_registry.api import V1_JSON, Api, WriteContext, error_response
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
_CONTENT_TYPE: Final = b"content-type"
_ORIGIN: Final = b"origin"
_READS: Final = ("GET", "HEAD")
_KEPT: Final = frozenset(
    {b"accept", _AUTHORIZATION, _TRACEPARENT, _EXPECT, _CONTENT_LENGTH, _CONTENT_TYPE, _ORIGIN}
)
# The @Consumes of every Confluent resource (rest/resources/*.java, client/rest/Versions.java).
_CONSUMED: Final = frozenset(
    {
        b"application/vnd.schemaregistry.v1+json",
        b"application/vnd.schemaregistry+json",
        b"application/json",
        b"application/octet-stream",
    }
)
# Descriptors a worker needs besides its connections: stdio, the listening socket, epoll and
# signal fds, two storage connections (database, WAL, shared memory, change counter each), the
# audit relay's Kafka sockets, the guard's HTTP client, logs.
_RESERVED_FDS: Final = 64
_MIN_CONNECTIONS: Final = 16
# After a refusal: how long, and how many bytes, the rest of the request is read and dropped
# before closing (closing with unread input sends a reset, which can destroy the answer).
_LINGER_S: Final = 1.0
_LINGER_BYTES: Final = 1024 * 1024
# Where a connection is in its current request.
_IDLE: Final = 0
_HEAD: Final = 1
_BODY: Final = 2


@dataclass(frozen=True)
class HttpLimits:
    """How long a client may take and how much it may send (module docstring). Seconds, bytes."""

    idle_timeout: float = 30.0
    header_timeout: float = 30.0
    body_timeout: float = 30.0
    max_header_bytes: int = 8192
    max_body_bytes: int = MAX_BODY
    #: Connections per worker; 0: as many as RLIMIT_NOFILE allows (`connection_cap`).
    max_connections: int = 0

    def connection_cap(self) -> int:
        """The connections a worker keeps: ``max_connections``, but never more than the soft
        file limit leaves after the descriptors the worker needs itself."""
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        room = 1 << 20 if soft == resource.RLIM_INFINITY else soft - _RESERVED_FDS
        room = max(room, _MIN_CONNECTIONS)
        return min(self.max_connections, room) if self.max_connections > 0 else room

    def tick(self) -> float:
        """How often connections are checked against the timeouts."""
        shortest = min(self.idle_timeout, self.header_timeout, self.body_timeout)
        return min(max(shortest / 4, 0.01), 1.0)


def raise_file_limit() -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit (a process may); the new soft limit.
    Linux's default soft limit (1024) is what a thousand idle sockets exhausted."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:  # e.g. macOS refuses RLIM_INFINITY
            log.warning("could not raise the open file limit from %d: %s", soft, exc)
    return int(soft)


# Statuses the HTTP layer answers itself, with Jetty's reason phrases (Python's differ by
# version: 3.11 says "Request-URI Too Long").
_REQUEST_TIMEOUT: Final = (408, "Request Timeout")
_URI_TOO_LONG: Final = (414, "URI Too Long")
_HEADERS_TOO_LARGE: Final = (431, "Request Header Fields Too Large")


def cross_origin_refusal(method: str, origin: bytes) -> bytes | None:
    """The answer to a write sent by a web page (it carries an ``Origin`` header, which only
    browsers send), else None. The 415 stops a page's form or text/plain POST, but a page can
    still send a body with no Content-Type at all, which reads as octet-stream (accepted, as in
    Confluent): a page a developer opens could then change a registry on localhost. The registry
    serves no page of its own, so no browser has a reason to write to it."""
    if not origin or method in _READS:
        return None
    message = (
        f"Writes from a web page (Origin: {origin.decode('latin-1')[:200]}) are refused; "
        "use the schema-registry CLI or a client library"
    )
    return error_response(ErrorCode.FORBIDDEN, message)


def _refusal(status: tuple[int, str], detail: str) -> bytes:
    """An answer of the HTTP layer itself (Jetty's, in Confluent: no registry error code), in
    Confluent's error shape; the connection closes after it."""
    code, reason = status
    message = f"HTTP {code} {reason}: {detail}"
    body = json.dumps({"error_code": code, "message": message}, separators=(",", ":")).encode()
    head = (
        f"HTTP/1.1 {code} {reason}\r\nContent-Type: {V1_JSON}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


_UNSUPPORTED: Final = error_response(
    ErrorCode.UNSUPPORTED_MEDIA_TYPE, "HTTP 415 Unsupported Media Type"
)
_NOT_A_MEDIA_TYPE: Final = error_response(ErrorCode.BAD_REQUEST, "HTTP 400 Bad Request")


def media_type_refusal(content_type: bytes) -> bytes | None:
    """None when Confluent's resources consume a request of this Content-Type (Jersey's
    `MediaType.isCompatible`: case-insensitive, parameters ignored, wildcards match); else the
    answer: 415, or 400 when the header is no media type at all. An empty one is no header."""
    media = content_type.split(b";", 1)[0].strip().lower()
    if not media or media in _CONSUMED:
        return None
    kind, _, subtype = media.partition(b"/")
    if not kind or not subtype or any(c in media for c in (b",", b" ", b"\t")) or b"/" in subtype:
        return _NOT_A_MEDIA_TYPE
    if kind == b"*" or (kind == b"application" and subtype == b"*"):
        return None
    return _UNSUPPORTED


class _Refused(Exception):
    """Raised in a parser callback to stop parsing a request already answered."""


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
    #: The answer decided on the loop already (a refused media type); None to run it.
    refusal: bytes | None = None


class _Server:
    """What the connections on one listening socket share: both `Api` objects, the writer
    thread, the limits, the connections and the sweep that enforces the timeouts."""

    def __init__(self, reads: Api, writes: Api, limits: HttpLimits) -> None:
        self.reads = reads
        self.writes = writes
        self.limits = limits
        self.cap = limits.connection_cap()
        self.connections: set[HttpProtocol] = set()
        # One thread: writes stay serialised, as they were on the loop.
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="registry-writer")
        self.tasks: set[asyncio.Task[None]] = set()
        self._loop = asyncio.get_running_loop()
        self._tick = limits.tick()
        self._timer = self._loop.call_later(self._tick, self._sweep)

    def admit(self, conn: HttpProtocol) -> bool:
        """Take a new connection, making room by closing the longest idle one when full;
        False (refuse it) when every connection is busy."""
        if len(self.connections) >= self.cap:
            idle = [c for c in self.connections if c.idle()]
            if not idle:
                return False
            min(idle, key=HttpProtocol.quiet_since).close()
        self.connections.add(conn)
        return True

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run a connection's off-loop request; kept so that shutdown can wait for it."""
        task = self._loop.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _sweep(self) -> None:
        now = time.monotonic()
        for conn in list(self.connections):
            conn.expire(now)
        self._timer = self._loop.call_later(self._tick, self._sweep)

    async def close(self, grace: float) -> None:
        """Close every connection; give requests off the loop ``grace`` seconds to end."""
        self._timer.cancel()
        for conn in list(self.connections):
            conn.close()
        # A write under way commits (or not) as a whole; queued ones are dropped.
        self.writer.shutdown(wait=False, cancel_futures=True)
        if self.tasks:
            _, late = await asyncio.wait(self.tasks, timeout=grace)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)


class HttpProtocol(asyncio.Protocol):
    """One client connection; httptools calls the `on_*` methods while `data_received` feeds."""

    def __init__(self, server: _Server) -> None:
        self._server = server
        self._api = server.reads
        self._limits = server.limits
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._accept = b""
        self._authorization = b""
        self._traceparent = b""
        self._content_type = b""
        self._origin = b""
        self._expect_continue = False
        self._rare = False  # whether any header below Accept was set for the current request
        self._body: list[bytes] = []
        self._body_size = 0
        self._content_length = 0
        self._closing = False
        self._peer = ""
        # While a request is answered off the loop: the requests that came after it, in order.
        self._waiting: deque[_Pending] | None = None
        self._write_paused = False
        # For the limits: where the current request is, since when, and its head's size.
        self._phase = _IDLE
        self._messages = 0
        self._last_io = time.monotonic()
        self._head_started = 0.0
        self._head_size = 0
        self._head_fed = 0
        self._buffered = 0
        self._refused = False  # a refusal waits behind an off-loop answer: read no more
        self._lingering = -1  # bytes dropped since a refusal; -1 when not lingering

    # asyncio callbacks ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        if not self._server.admit(self):
            self._closing = True
            self._transport.close()
            return
        peer = transport.get_extra_info("peername")
        self._peer = str(peer[0]) if isinstance(peer, tuple) and peer else ""

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        self._transport = None

    def data_received(self, data: bytes) -> None:
        if self._closing or self._refused:
            self._linger(len(data))
            return
        self._last_io = time.monotonic()
        phase, messages = self._phase, self._messages
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(error_response(ErrorCode.BAD_REQUEST, "Protocol upgrades are not supported"))
            return
        except httptools.HttpParserError as exc:
            if not self._closing:  # else a callback refused the request and answered already
                self._fail(error_response(ErrorCode.BAD_REQUEST, f"Malformed HTTP request: {exc}"))
            return
        if phase == _HEAD and self._phase == _HEAD and self._messages == messages:
            # All of it went to a head begun in an earlier chunk, still incomplete: httptools
            # keeps a header's pieces until it ends, so count them here, as they come.
            self._head_fed += len(data)
            if self._head_fed > self._limits.max_header_bytes:
                self._fail(self._headers_too_large())

    def eof_received(self) -> bool | None:
        return None  # the client is done sending: close (after what is being written)

    def pause_writing(self) -> None:
        # A client that pipelines without reading must not make us buffer without bound.
        self._write_paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._transport is not None and self._waiting is None and not self._closing:
            self._transport.resume_reading()

    def close(self) -> None:
        """Close the connection (server shutdown, or room for a new one)."""
        self._closing = True
        self._server.connections.discard(self)
        if self._transport is not None:
            self._transport.close()

    # the limits ----------------------------------------------------------------------------
    def idle(self) -> bool:
        """Between requests with nothing left to write: safe to close."""
        transport = self._transport
        return (
            transport is not None
            and not self._closing
            and self._phase == _IDLE
            and self._waiting is None
            and transport.get_write_buffer_size() == 0
        )

    def quiet_since(self) -> float:
        """When this connection last received bytes or sent an answer."""
        return self._last_io

    def expire(self, now: float) -> None:
        """Close the connection when it broke a timeout (called by the sweep)."""
        transport = self._transport
        if transport is None:
            return
        limits = self._limits
        if self._closing:
            if self._lingering >= 0 and now - self._last_io >= _LINGER_S:
                transport.close()
            return
        if self._waiting is not None or self._refused:
            return  # our turn: an answer is being computed
        if self._phase == _IDLE:
            buffered = transport.get_write_buffer_size()
            if buffered != self._buffered:  # the client is still taking its answers
                self._buffered, self._last_io = buffered, now
            elif now - self._last_io >= limits.idle_timeout:
                self.close()  # Jetty closes an idle connection without a word
        elif self._phase == _HEAD:
            if now - self._head_started >= limits.header_timeout:
                detail = f"the request's head took over {limits.header_timeout:g} s"
                self._fail(_refusal(_REQUEST_TIMEOUT, detail))
        elif now - self._last_io >= limits.body_timeout:
            detail = f"the request's body stalled for over {limits.body_timeout:g} s"
            self._fail(_refusal(_REQUEST_TIMEOUT, detail))

    def _headers_too_large(self) -> bytes:
        detail = f"the request line and headers may take {self._limits.max_header_bytes} bytes"
        return _refusal(_HEADERS_TOO_LARGE, detail)

    # httptools callbacks -------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._phase = _HEAD
        self._messages += 1
        self._head_started = self._last_io
        self._head_size = 0
        self._head_fed = 0
        self._url = b""
        self._accept = b""
        if self._rare:
            # Headers most requests lack, reset only after one that had any (the read path
            # pays for every attribute it touches: ~25 ns each, per request).
            self._rare = False
            self._authorization = b""
            self._traceparent = b""
            self._content_type = b""
            self._origin = b""
            self._expect_continue = False
            self._content_length = 0
        self._body = []
        self._body_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self._limits.max_header_bytes:
            detail = f"a URL may take {self._limits.max_header_bytes} bytes"
            self._fail(_refusal(_URI_TOO_LONG, detail))
            raise _Refused

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._head_size + len(self._url) > self._limits.max_header_bytes:
            self._fail(self._headers_too_large())
            raise _Refused
        lowered = name.lower()
        if lowered not in _KEPT:
            return
        self._rare = True
        if lowered == b"accept":
            self._accept = value if not self._accept else self._accept + b"," + value
        elif lowered == _AUTHORIZATION:
            self._authorization = value
        elif lowered == _TRACEPARENT:
            self._traceparent = value
        elif lowered == _CONTENT_TYPE:
            # Two Content-Type headers read as one list, which no media type is (400).
            self._content_type = value if not self._content_type else self._content_type + b","
        elif lowered == _ORIGIN:
            self._origin = value
        elif lowered == _EXPECT and value.lower() == b"100-continue":
            self._expect_continue = True
        elif lowered == _CONTENT_LENGTH and value.strip().isdigit():
            self._content_length = int(value)

    def on_headers_complete(self) -> None:
        self._phase = _BODY
        if self._content_length > self._limits.max_body_bytes:
            self._body_too_large()
        if self._expect_continue and self._transport is not None:
            self._transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self._limits.max_body_bytes:
            self._body_too_large()
        self._body.append(body)

    def _body_too_large(self) -> NoReturn:
        limit = self._limits.max_body_bytes
        self._fail(error_response(ErrorCode.PAYLOAD_TOO_LARGE, f"Request body over {limit} bytes"))
        raise _Refused

    def on_message_complete(self) -> None:
        self._phase = _IDLE
        transport = self._transport
        if transport is None or self._closing:
            return
        method = self._parser.get_method().decode("latin-1")
        if self._waiting is None and method in _READS and not self._content_type:
            # The read path: answered here and now, nothing else to look at.
            response = self._api.handle(
                method, self._url, self._accept, b"".join(self._body), peer=self._peer
            )
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
            self._refusal_of(method),
        )
        if self._waiting is not None:
            self._waiting.append(pending)  # behind the request being answered off the loop
        else:
            self._serve(pending)

    def _refusal_of(self, method: str) -> bytes | None:
        """What the HTTP layer answers instead of running the request, if anything: a write
        from a web page (403), an unsupported media type (415) for a resource that exists
        (otherwise the API's 404 or 405 comes first, as in Jersey)."""
        refusal = cross_origin_refusal(method, self._origin)
        if refusal is None and self._content_type:
            refusal = media_type_refusal(self._content_type)
            if refusal is not None and not self._api.serves(method, self._url):
                return None
        return refusal

    # answering in order ---------------------------------------------------------------------
    def _serve(self, request: _Pending) -> bool:
        """Answer ``request`` now; False when it went off the loop (then it answers itself, and
        whatever waits behind it, when it is done)."""
        if request.refusal is not None:
            self._send(request, request.refusal)
            return True
        if request.method in _READS:
            answer = self._api.handle(
                request.method, request.url, request.accept, b"", peer=self._peer
            )
            self._send(request, answer)
            return True
        self._waiting = deque()
        if self._transport is not None:
            self._transport.pause_reading()
        self._server.spawn(self._off_the_loop(request))
        return False

    async def _off_the_loop(self, request: _Pending) -> None:
        loop = asyncio.get_running_loop()
        writes = self._server.writes
        origin = Origin(
            source_address=self._peer, traceparent=request.traceparent.decode("latin-1")
        )
        # Kept whether or not this instance checks it: a follower without --auth still passes
        # it on to a primary that checks it.
        context = WriteContext(origin, authorization=request.authorization.decode("latin-1"))
        if writes.guarded(request.method, request.url):
            context = await self._checked(request, origin)
            if self._transport is None:
                return  # the client went away: the write is not made
        try:
            response = await loop.run_in_executor(
                self._server.writer,
                writes.handle,
                request.method,
                request.url,
                request.accept,
                request.body,
                context,
            )
        except RuntimeError:  # the writer is shut down: the server is stopping
            return
        except Exception as exc:  # Api.handle maps its errors; a bug must not hang the client
            log.exception("answering %s %r failed", request.method, request.url)
            response = error_response(ErrorCode.STORE_ERROR, f"Internal error: {exc}")
        self._send(request, response)
        self._answer_waiting()

    async def _checked(self, request: _Pending, origin: Origin) -> WriteContext:
        """The guard's verdict on a guarded write's credentials (off the loop: it may block)."""
        guard = self._server.writes.guard
        assert guard is not None
        authorization = request.authorization.decode("latin-1")
        try:
            verdict = await asyncio.get_running_loop().run_in_executor(
                None, guard.check, authorization
            )
        except Exception as exc:  # Guard.check does not raise; a bug must not hang the client
            log.exception("checking credentials failed")
            verdict = Refusal(503, f"credentials could not be checked: {exc}")
        refusal = verdict if isinstance(verdict, Refusal) else None
        who = actor_of(verdict.principal if isinstance(verdict, Refusal) else verdict)
        return WriteContext(
            Origin(who, origin.source_address, origin.traceparent),
            allowed=refusal is None,
            refusal=refusal,
            authorization=authorization,
        )

    def _answer_waiting(self) -> None:
        """After an off-loop answer: answer what queued behind it, then read again."""
        waiting, self._waiting = self._waiting or deque(), None
        while waiting:
            if not self._serve(waiting.popleft()):
                self._queue_behind(waiting)
                return
        transport = self._transport
        if transport is None or self._closing:
            return
        # The client's clock restarts: it could not send while we did not read.
        self._last_io = time.monotonic()
        if self._phase == _HEAD:
            self._head_started = self._last_io
        if not self._write_paused:
            transport.resume_reading()

    def _queue_behind(self, requests: deque[_Pending]) -> None:
        """Queue ``requests`` behind the one that `_serve` just sent off the loop."""
        if self._waiting is not None:
            self._waiting.extend(requests)

    def _send(self, request: _Pending, response: bytes) -> None:
        transport = self._transport
        if transport is None or self._closing:
            return
        if request.method == "HEAD":
            response = response[: response.index(b"\r\n\r\n") + 4]
        transport.write(response)
        self._last_io = time.monotonic()
        if not request.keep_alive:
            self._closing = True
            transport.close()

    def _fail(self, response: bytes) -> None:
        """Answer a refused request and close: stop writing, then read and drop what the client
        still sends for a moment, so that a client busy sending reads the answer."""
        if self._closing or self._refused:
            return
        if self._waiting is not None:
            # Behind an answer still being computed: it goes out in order, then we close.
            self._refused = True
            self._waiting.append(_Pending("", b"", b"", b"", b"", b"", False, response))
            return
        self._closing = True
        transport = self._transport
        if transport is None:
            return
        transport.write(response)
        self._last_io = time.monotonic()
        if self._waiting is None and transport.can_write_eof():
            self._lingering = 0
            transport.write_eof()
            transport.resume_reading()
        else:
            transport.close()

    def _linger(self, size: int) -> None:
        if self._lingering < 0 or self._transport is None:
            return
        self._lingering += size
        if self._lingering > _LINGER_BYTES:
            self._transport.close()


async def run_server(
    reads: Api,
    writes: Api,
    sock: socket.socket,
    *,
    limits: HttpLimits | None = None,
    started: asyncio.Future[None] | None = None,
    stop: asyncio.Event | None = None,
    grace: float = 10.0,
) -> None:
    """Serve on an already bound, listening socket until `stop` is set.

    ``reads`` answers GET and HEAD on the event loop; ``writes`` answers every other request on
    a writer thread. They must be two `Api` objects (each is used by one thread), on their own
    storage connections where the storage has them. On stop, requests off the loop get
    ``grace`` seconds to end.
    """
    loop = asyncio.get_running_loop()
    shared = _Server(reads, writes, limits or HttpLimits())
    server = await loop.create_server(lambda: HttpProtocol(shared), sock=sock, backlog=2048)
    if started is not None and not started.done():
        started.set_result(None)
    stop = stop or asyncio.Event()
    try:
        await stop.wait()
    finally:
        server.close()
        await shared.close(grace)
        await server.wait_closed()
