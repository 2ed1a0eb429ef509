"""A minimal registry HTTP client (stdlib only), used by the CLI and by the API tests.

It sends exactly the path it is given (subjects are percent-encoded with `quote(s, safe="")`, as
confluent-kafka does), keeps one connection alive, and never raises for HTTP error statuses:
callers look at `Response.status` and `Response.error_code`. Credentials for a registry that
guards its writes (`serve --auth`) go with POST, PUT and DELETE only: `bearer_token` or
`basic_auth` ("client_id:secret", as confluent-kafka's basic.auth.user.info).

Several registries: `url` may be a comma-separated list, as confluent-kafka's `url` is. A request
goes to the first that answers, in the list's order, moving on from connection errors and, for
reads (GET, lookups, compatibility checks), from 5xx answers; the last one that answered is tried
first next time, the others after it in the list's order.
"""

from __future__ import annotations

import base64
import http.client
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

V1_JSON = "application/vnd.schemaregistry.v1+json"


class NotARegistry(OSError):
    """What answered at a registry URL does not speak the registry's HTTP/1.1: a gRPC (HTTP/2)
    port, a server that answers garbage, or an answer that is not JSON. An OSError, so a list of
    URLs fails over past it as past a refused connection; ``str()`` says what came back."""


def _not_http(exc: http.client.HTTPException) -> NotARegistry:
    """The words for an answer http.client could not read as HTTP/1.1."""
    if isinstance(exc, http.client.BadStatusLine):
        # http.client decodes the status line as ISO-8859-1: these are the bytes that came.
        raw = str(exc.args[0] if exc.args else "").encode("latin-1", errors="replace")
        # An HTTP/2 server (every gRPC server) answers an HTTP/1.1 request with frames: a
        # 3-byte length, then the type: SETTINGS (4) first, or GOAWAY (7).
        if len(raw) >= 4 and raw[3] in (0x04, 0x07) and raw[:1] == b"\x00":
            return NotARegistry("it answered with HTTP/2 frames, as a gRPC server does")
        if not raw:
            return NotARegistry("it closed the connection without an answer")
        shown = raw[:24].decode("ascii", errors="replace").encode("unicode_escape").decode()
        return NotARegistry(f"its answer is not HTTP (it began {shown!r})")
    return NotARegistry(f"its answer is not valid HTTP ({type(exc).__name__})")


def subject_path(subject: str) -> str:
    """A subject as one path segment (`/` becomes `%2F`)."""
    return quote(subject, safe="")


@dataclass(frozen=True)
class Response:
    """Status, headers (lower-cased names) and body of one exchange."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)

    @property
    def ok(self) -> bool:
        """2xx."""
        return 200 <= self.status < 300

    @property
    def error_code(self) -> int | None:
        """Confluent's `error_code` of an error answer, None for success or a non-JSON body."""
        if self.ok:
            return None
        try:
            value = self.json().get("error_code")
        except (ValueError, AttributeError):
            return None
        return int(value) if isinstance(value, int) else None

    @property
    def message(self) -> str:
        """The error `message`, or the raw body."""
        try:
            return str(self.json()["message"])
        except (ValueError, KeyError, TypeError):
            return self.body.decode(errors="replace")


def authorization(bearer_token: str = "", basic_auth: str = "") -> str:
    """The Authorization header value for a token or "user:password" credentials ("" for none);
    ValueError for malformed basic credentials or both at once."""
    if bearer_token and basic_auth:
        raise ValueError("give a bearer token or basic credentials, not both")
    if bearer_token:
        return f"Bearer {bearer_token.strip()}"
    if basic_auth:
        if ":" not in basic_auth or basic_auth.startswith(":"):
            raise ValueError("basic credentials must be CLIENT_ID:SECRET")
        return "Basic " + base64.b64encode(basic_auth.encode()).decode()
    return ""


def split_urls(url: str) -> list[str]:
    """The registry URLs of a comma-separated list, in order, without trailing slashes;
    ValueError naming one that is not http(s)://host[:port][/path]."""
    urls = [u.strip().rstrip("/") for u in url.split(",") if u.strip()]
    if not urls:
        raise ValueError(f"not a registry URL: {url!r} (expected http://host:port)")
    for one in urls:
        parts = urlsplit(one)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not a registry URL: {one!r} (expected http://host:port)")
    return urls


def is_read(method: str, path: str) -> bool:
    """Whether a request changes nothing, so another registry may be asked after a 5xx: GET and
    HEAD, and the POSTs that only look (`/compatibility/...` and a lookup `/subjects/{s}`)."""
    if method in ("GET", "HEAD"):
        return True
    route = path.split("?", 1)[0]
    if method != "POST":
        return False
    if route.startswith("/compatibility/"):
        return True
    return route.startswith("/subjects/") and "/" not in route[len("/subjects/") :]


class RegistryClient:
    """A keep-alive connection to the registry (of a list) that last answered; not thread-safe
    (use one per thread)."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        bearer_token: str = "",
        basic_auth: str = "",
    ) -> None:
        self._authorization = authorization(bearer_token, basic_auth)
        self.urls = split_urls(url)
        self._first = 0  # index of the URL tried first: the last that answered
        self._timeout = timeout
        self._conn: http.client.HTTPConnection | None = None
        self._conn_index = -1

    @property
    def url(self) -> str:
        """The URL tried first (the last that answered)."""
        return self.urls[self._first]

    def _connection(self, index: int) -> http.client.HTTPConnection:
        if self._conn is not None and self._conn_index != index:
            self.close()
        if self._conn is None:
            parts = urlsplit(self.urls[index])
            https = parts.scheme == "https"
            cls = http.client.HTTPSConnection if https else http.client.HTTPConnection
            port = parts.port or (443 if https else 80)
            self._conn = cls(parts.hostname or "", port, timeout=self._timeout)
            self._conn_index = index
        return self._conn

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw_body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """Send one request; `path` is sent as given (already encoded), `body` as JSON.
        OSError when no registry of the list could be reached (NotARegistry when what answered
        does not speak HTTP/1.1)."""
        payload = raw_body
        if payload is None and body is not None:
            payload = json.dumps(body).encode()
        sent = {"Accept": f"{V1_JSON}, application/vnd.schemaregistry+json, application/json"}
        if payload is not None:
            sent["Content-Type"] = V1_JSON
        if self._authorization and method not in ("GET", "HEAD"):
            sent["Authorization"] = self._authorization
        sent.update(headers or {})
        count = len(self.urls)
        order = [(self._first + i) % count for i in range(count)]
        for index in order:
            last = index == order[-1]
            try:
                response = self._exchange(index, method, path, payload, sent)
            except OSError:
                self.close()
                if last:
                    raise
                continue
            if response.status >= 500:
                if not last and is_read(method, path):
                    continue
            else:
                self._first = index
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def _exchange(
        self, index: int, method: str, path: str, payload: bytes | None, sent: dict[str, str]
    ) -> Response:
        base = urlsplit(self.urls[index]).path.rstrip("/")
        for attempt in (1, 2):
            conn = self._connection(index)
            try:
                conn.request(method, base + path, body=payload, headers=sent)
                reply = conn.getresponse()
                data = reply.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                # A kept-alive connection the server closed: retry once on a fresh one.
                self.close()
                if attempt == 2:
                    raise
                continue
            except http.client.HTTPException as exc:
                self.close()
                raise _not_http(exc) from None
            return Response(reply.status, {k.lower(): v for k, v in reply.getheaders()}, data)
        raise AssertionError("unreachable")  # pragma: no cover

    def get(self, path: str) -> Response:
        """GET."""
        return self.request("GET", path)

    def post(self, path: str, body: Any) -> Response:
        """POST a JSON body."""
        return self.request("POST", path, body)

    def put(self, path: str, body: Any) -> Response:
        """PUT a JSON body."""
        return self.request("PUT", path, body)

    def delete(self, path: str) -> Response:
        """DELETE."""
        return self.request("DELETE", path)

    def close(self) -> None:
        """Close the connection (a later request opens a new one)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
            self._conn_index = -1

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
