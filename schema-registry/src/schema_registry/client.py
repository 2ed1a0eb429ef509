"""A minimal registry HTTP client (stdlib only), used by the CLI and by the API tests.

It sends exactly the path it is given (subjects are percent-encoded with `quote(s, safe="")`, as
confluent-kafka does), keeps one connection alive, and never raises for HTTP error statuses:
callers look at `Response.status` and `Response.error_code`. Credentials for a registry that
guards its writes (`serve --auth`) go with POST, PUT and DELETE only: `bearer_token` or
`basic_auth` ("client_id:secret", as confluent-kafka's basic.auth.user.info).
"""

from __future__ import annotations

import base64
import http.client
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

V1_JSON = "application/vnd.schemaregistry.v1+json"


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


class RegistryClient:
    """One keep-alive connection to a registry; not thread-safe (use one per thread)."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        bearer_token: str = "",
        basic_auth: str = "",
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not a registry URL: {url!r} (expected http://host:port)")
        self._authorization = authorization(bearer_token, basic_auth)
        self.url = url.rstrip("/")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._base = parts.path.rstrip("/")
        self._timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=self._timeout)
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
        """Send one request; `path` is sent as given (already encoded), `body` as JSON."""
        payload = raw_body
        if payload is None and body is not None:
            payload = json.dumps(body).encode()
        sent = {"Accept": f"{V1_JSON}, application/vnd.schemaregistry+json, application/json"}
        if payload is not None:
            sent["Content-Type"] = V1_JSON
        if self._authorization and method not in ("GET", "HEAD"):
            sent["Authorization"] = self._authorization
        sent.update(headers or {})
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request(method, self._base + path, body=payload, headers=sent)
                reply = conn.getresponse()
                data = reply.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                # A kept-alive connection the server closed: retry once on a fresh one.
                self.close()
                if attempt == 2:
                    raise
                continue
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

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
