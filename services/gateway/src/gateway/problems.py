"""Errors at the edge: gRPC status to HTTP status, and RFC 9457 problem details.

The mapping is the standard one (grpc-gateway's HTTPStatusFromCode, google.rpc.Code's HTTP
mapping). A problem body is ``application/problem+json`` with ``type``, ``title``, ``status``,
``detail`` and ``instance`` (RFC 9457 §3.1), plus extension members: ``code`` (the gRPC status
name), ``requestId``, ``traceId`` and ``details``: the status's google.rpc details (BadRequest
field violations, ErrorInfo ...) in protojson, so a bad field is named. Nothing else reaches a
client: no exception text of ours, no stack trace.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import Any

import grpc
from google.protobuf import any_pb2, descriptor_pool, json_format
from google.rpc import error_details_pb2  # noqa: F401  (registers the detail types for Any)
from grpc_status import rpc_status

HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}
PROBLEM_TYPE = "application/problem+json"
# Messages of these are the server's own business, not the client's (INTERNAL may carry an
# exception's text): the client gets the status's title only.
_OPAQUE = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.DATA_LOSS}


class Problem(Exception):
    """An answer that is an RFC 9457 problem; raised anywhere in a request, written once."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        code: str = "",
        details: Iterable[Mapping[str, Any]] = (),
        headers: Iterable[tuple[str, str]] = (),
        title: str = "",
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.code = code
        self.details = list(details)
        self.headers = list(headers)
        self.title = title or _phrase(status)

    def body(self, *, instance: str, request_id: str, trace_id: str) -> bytes:
        """The problem document, as JSON bytes."""
        document: dict[str, Any] = {
            "type": "about:blank",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "instance": instance,
        }
        if self.code:
            document["code"] = self.code
        if self.details:
            document["details"] = self.details
        document["requestId"] = request_id
        if trace_id:
            document["traceId"] = trace_id
        return json.dumps(document).encode()


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Client Closed Request" if status == 499 else "Error"


def _detail(packed: any_pb2.Any) -> dict[str, Any]:
    try:
        return json_format.MessageToDict(packed, descriptor_pool=descriptor_pool.Default())
    except (json_format.Error, TypeError, KeyError):
        return {"@type": packed.type_url}


def from_rpc_error(error: grpc.RpcError, backend: str) -> Problem:
    """The problem for a failed backend call: its HTTP status, its message (unless the status is
    one whose message is the server's business) and its google.rpc details."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    status = HTTP_STATUS.get(code, 500)
    detail = error.details() if hasattr(error, "details") else ""
    if code in _OPAQUE:
        detail = f"{backend} failed"
    elif code == grpc.StatusCode.UNAVAILABLE:
        detail = f"{backend} is unavailable: try again"
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
        detail = f"{backend} did not answer in time"
    details: list[dict[str, Any]] = []
    if code not in _OPAQUE:
        try:
            found = rpc_status.from_call(error)
        except (ValueError, AttributeError):
            found = None
        if found is not None:
            details = [_detail(d) for d in found.details]
    headers = [("Retry-After", "1")] if code == grpc.StatusCode.UNAVAILABLE else []
    return Problem(status, detail or code.name, code=code.name, details=details, headers=headers)
