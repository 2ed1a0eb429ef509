"""A follower's writes go to the primary: the `Api` of one instance among several on Kafka.

As Confluent's instances do (KafkaSchemaRegistry.registerOrForward and the other `*OrForward`
methods, RestService as the client), a request that changes state (register, delete, config,
mode) is answered by the primary only: on a follower it is sent to the primary's advertised URL
and the primary's answer (status, media type, body) goes back unchanged. Everything else (reads,
lookups, compatibility checks) is answered here from this instance's copy of the topic.

Better than Confluent in two ways users notice. Read-your-writes: after a forwarded write
succeeded, this instance answers only once it has read the topic that far (Confluent answers at
once, and a read that follows may miss the write). Failover: while no primary is known, or the
known one does not answer (killed, its session not yet expired), the request waits up to
``wait_s`` for the next one instead of failing at once; then it fails as Confluent's do: 50004
"unknown leader" (500) or 50003 "forwarding failed" (500), and clients retry.

Credentials (``serve --auth``), as Confluent's forwarding passes them (RequestHeaderBuilder: the
request's Authorization header goes with the forwarded request): the follower checks them first
and answers a refusal itself (401, 403, or 503 when identity cannot be asked), forwarding
nothing; what it lets through goes on with the caller's Authorization header, and the primary
checks it again as it checks any write (it cannot tell a forwarded request from a client's, and
the instances need not share one ``--auth`` configuration).

Audit records of refused writes (DENIED, FAILURE) go to ``audit.events.v1`` in a Kafka
transaction only the primary has a producer for. A follower that refuses a write cannot publish
its record, and sending it to the primary would need a route that takes audit records from the
network, which anyone could then fill with forged ones. So the follower writes the record as a
WARNING log line (logger ``schema_registry.forwarding``, message "audit record not published",
with the record's fields, never a credential): the refusal is in its log, not in the audit
topic. Forwarding the refused request instead would let the primary record it, but would double
every refused credential exchange with identity (its lockout counts them) and put unchecked
load on the one instance that writes.

A request is never forwarded to this instance's own URL: an instance the coordinator has just
named, still reading the topic to its end, makes the request wait until it has taken over.
A deposed primary that receives a forwarded request passes it on to the one the coordinator
names (the HTTP layer hands the API no headers to mark it with).
"""

from __future__ import annotations

import logging
import time
from http import HTTPStatus
from typing import Any, Final
from urllib.parse import urlsplit

from schema_registry import registry as ops
from schema_registry.api import Api, WriteContext, error_response
from schema_registry.audit import Origin
from schema_registry.auth import Guard
from schema_registry.client import RegistryClient
from schema_registry.election import Election
from schema_registry.errors import ErrorCode, RegistryError
from schema_registry.registry import Registry
from schema_registry.storage.kafka import KafkaStorage

log = logging.getLogger(__name__)

#: How long a write waits for a primary before 50004 / 50003: a failover takes the session
#: timeout (6 s) and a rebalance, so most writes ride through one.
PRIMARY_WAIT_S: Final = 10.0
#: How long the primary may take to answer (a check of a huge schema takes seconds).
FORWARD_TIMEOUT_S: Final = 30.0
#: How long a follower waits to read a forwarded write back before answering anyway.
READ_BACK_S: Final = 10.0
# The routes that change state: forwarded. Compatibility checks (audited=False) are not.
_CHANGES: Final = frozenset(
    {
        ops.REGISTER,
        ops.DELETE_SUBJECT,
        ops.DELETE_VERSION,
        ops.SET_CONFIG,
        ops.DELETE_CONFIG,
        ops.SET_MODE,
        ops.DELETE_MODE,
    }
)


class ForwardingApi(Api):
    """`Api` for the writer thread of one instance in a group (module docstring): changes go
    to the primary unless this instance is it. Like `Api`, used by one thread at a time."""

    def __init__(
        self,
        registry: Registry,
        *,
        storage: KafkaStorage,
        election: Election,
        guard: Guard | None = None,
        wait_s: float = PRIMARY_WAIT_S,
    ) -> None:
        super().__init__(registry, guard=guard)
        self._storage = storage
        self._election = election
        self._wait_s = wait_s
        self._client: RegistryClient | None = None

    def forwards(self, method: str, url: bytes) -> bool:
        """Whether ``method`` on ``url`` changes state (so only the primary runs it)."""
        if method in ("GET", "HEAD"):
            return False
        write = self._write_of(method, url.decode("latin-1"))[0]
        return write is not None and write.action in _CHANGES

    def handle(
        self,
        method: str,
        url: bytes,
        accept: bytes,
        body: bytes,
        context: WriteContext | None = None,
        *,
        peer: str = "",
    ) -> bytes:
        if not self.forwards(method, url) or self._refused_here(method, url, context):
            return super().handle(method, url, accept, body, context, peer=peer)
        deadline = time.monotonic() + self._wait_s
        failure = ""
        while True:
            if self._storage.is_primary:
                return super().handle(method, url, accept, body, context, peer=peer)
            primary = self._election.primary_url()
            if primary is not None and primary != self._election.url:
                answer = self._forward(primary, method, url, accept, body, context=context)
                if answer is not None:
                    return answer
                failure = primary
                self._election.refresh()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._election.wait_changed(min(remaining, 0.2))
        if failure:
            log.warning("forwarding %s %r to the primary %s failed", method, url, failure)
            # Confluent's words (SubjectVersionsResource and the other resources).
            return error_response(
                ErrorCode.FORWARDING_FAILED,
                f"Error while forwarding the request to the leader {failure}",
            )
        return error_response(ErrorCode.UNKNOWN_LEADER, "Leader not known.")

    def _refused_here(self, method: str, url: bytes, context: WriteContext | None) -> bool:
        """Whether this instance's guard refused the write's credentials: then `Api` answers
        the refusal here, and nothing goes to the primary."""
        return self.guarded(method, url) and (context is None or not context.allowed)

    def _record_alone(
        self,
        origin: Origin,
        action: str,
        outcome: str,
        subject: str | None,
        *,
        reason: str,
        details: dict[str, Any],
    ) -> None:
        """The primary records as `Api` does; a follower has no producer (module docstring):
        the record goes to the log instead, saying so."""
        if self._storage.is_primary:
            super()._record_alone(origin, action, outcome, subject, reason=reason, details=details)
            return
        extra: dict[str, Any] = {
            "audit_action": action,
            "audit_outcome": outcome,
            "subject": subject,
            "enduser_id": origin.actor.subject,
            "client_address": origin.source_address,
            "audit_reason": reason[:1000],
            "audit_details": details,
        }
        if origin.trace_id:
            extra["trace_id"] = origin.trace_id
        log.warning(
            "audit record not published (this instance is a follower, it has no producer): "
            "%s %s by %s from %s: %s",
            action,
            outcome,
            origin.who,
            origin.source_address or "?",
            reason[:1000],
            extra=extra,
        )

    def _forward(
        self,
        primary: str,
        method: str,
        url: bytes,
        accept: bytes,
        body: bytes,
        *,
        context: WriteContext | None,
    ) -> bytes | None:
        """The primary's answer as this instance sends it on; None when it could not be
        reached (or went away before answering)."""
        client = self._client
        if client is None or client.url != primary.rstrip("/"):
            if client is not None:
                client.close()
            client = self._client = RegistryClient(primary, timeout=FORWARD_TIMEOUT_S)
        headers = {"Accept": accept.decode("latin-1") or "*/*"}
        if body:
            headers["Content-Type"] = "application/vnd.schemaregistry.v1+json"
        traceparent = context.origin.traceparent if context is not None else ""
        if traceparent:
            headers["traceparent"] = traceparent
        if context is not None and context.authorization:
            headers["Authorization"] = context.authorization
        path = urlsplit(url.decode("latin-1"))
        target = path.path + (f"?{path.query}" if path.query else "")
        try:
            reply = client.request(method, target, raw_body=body or None, headers=headers)
        except OSError as exc:
            log.info("primary %s did not answer %s %s: %s", primary, method, target, exc)
            client.close()
            return None
        if 200 <= reply.status < 300:
            try:
                self._storage.catch_up(READ_BACK_S)
            except RegistryError as exc:  # the write happened: say so, even if not read back
                log.warning("a forwarded write was not read back in time: %s", exc)
        try:
            reason = HTTPStatus(reply.status).phrase
        except ValueError:
            reason = "Unknown"
        media_type = reply.headers.get("content-type", "application/vnd.schemaregistry.v1+json")
        head = (
            f"HTTP/1.1 {reply.status} {reason}\r\n"
            f"Content-Type: {media_type}\r\n"
            f"Content-Length: {len(reply.body)}\r\n\r\n"
        )
        return head.encode("latin-1") + reply.body
