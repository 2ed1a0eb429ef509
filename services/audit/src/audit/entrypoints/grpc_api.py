"""The AuditService servicer: translates wire messages to use-case calls and back, nothing else.

Who may call what is declared in the contract (proto/mesh/audit/v1/audit.proto) and checked by
meshkit's interceptor against policy.cedar before a handler runs. Errors are not caught here:
meshkit's edge maps them to gRPC statuses once.
"""

from __future__ import annotations

import base64
import binascii
import datetime
from collections.abc import Callable, Mapping
from typing import Any

import grpc

from audit.app.ports import EntryFilter
from audit.app.trail import AuditQueries
from audit.domain.chain import ChainEntry
from mesh.audit.v1 import audit_pb2 as pb
from mesh.audit.v1 import audit_pb2_grpc as pb_grpc
from meshkit import timestamps
from meshkit.audit import AuditEntry
from meshkit.errors import FieldViolation, InvalidArgument, Violations

_PAGE_PREFIX = "before:"


def page_token(before_seq: int) -> str:
    """The opaque page token that continues below ``before_seq``."""
    return base64.urlsafe_b64encode(f"{_PAGE_PREFIX}{before_seq}".encode()).decode()


def _before_seq(token: str) -> int | None:
    if not token:
        return None
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
        if text.startswith(_PAGE_PREFIX):
            seq = int(text[len(_PAGE_PREFIX) :])
            if seq > 0:
                return seq
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise InvalidArgument(
        violations=[FieldViolation("page_token", "is not a next_page_token of QueryAudit")]
    )


class AuditServicer(pb_grpc.AuditServiceServicer):
    """mesh.audit.v1.AuditService over the audit queries. Stateless."""

    def __init__(
        self, queries: AuditQueries, record: Callable[[AuditEntry], None] | None = None
    ) -> None:
        self._queries = queries
        # Reading the trail is itself audited (NIST SP 800-92): who searched for what.
        self._record = record

    def QueryAudit(
        self, request: pb.QueryAuditRequest, context: grpc.ServicerContext
    ) -> pb.QueryAuditResponse:
        """See the contract in proto/mesh/audit/v1/audit.proto."""
        violations = Violations()
        since = (
            timestamps.from_timestamp(request.since, violations, "since")
            if request.HasField("since")
            else None
        )
        until = (
            timestamps.from_timestamp(request.until, violations, "until")
            if request.HasField("until")
            else None
        )
        violations.raise_if_any()
        query = EntryFilter(
            actor=request.actor,
            action=request.action,
            resource_type=request.resource_type,
            resource_id=request.resource_id,
            since=since,
            until=until,
            before_seq=_before_seq(request.page_token),
            limit=request.page_size,
        )
        entries, next_before = self._queries.search(query)
        if self._record is not None:
            self._record(
                AuditEntry(
                    "audit.read",
                    resource_type="AuditTrail",
                    details={
                        "actor": request.actor,
                        "action": request.action,
                        "resource": f"{request.resource_type}:{request.resource_id}".strip(":"),
                        "entries": str(len(entries)),
                    },
                )
            )
        return pb.QueryAuditResponse(
            entries=[_wire(entry) for entry in entries],
            next_page_token=page_token(next_before) if next_before is not None else "",
        )

    def GetPublicKeys(
        self, request: pb.GetPublicKeysRequest, context: grpc.ServicerContext
    ) -> pb.GetPublicKeysResponse:
        """See the contract in proto/mesh/audit/v1/audit.proto."""
        return pb.GetPublicKeysResponse(
            keys=[
                pb.PublicKey(
                    key_id=key.key_id,
                    algorithm="Ed25519",
                    public_key_pem=key.public_key_pem,
                    current=key.current,
                )
                for key in self._queries.public_keys()
            ]
        )


def _text(mapping: Mapping[str, Any], key: str) -> str:
    value = mapping.get(key, "")
    return value if isinstance(value, str) else ""


def _wire(entry: ChainEntry) -> pb.AuditEntry:
    """An entry on the wire; its record is read from the canonical bytes (what the hash covers),
    never from the search columns."""
    record = entry.record
    actor = record.get("actor")
    actor = actor if isinstance(actor, Mapping) else {}
    details = record.get("details")
    details = details if isinstance(details, Mapping) else {}
    wire = pb.AuditRecord(
        audit_id=_text(record, "audit_id"),
        service=_text(record, "service"),
        action=_text(record, "action"),
        outcome=_text(record, "outcome"),
        reason=_text(record, "reason"),
        resource_type=_text(record, "resource_type"),
        resource_id=_text(record, "resource_id"),
        actor=pb.Actor(
            subject=_text(actor, "subject"),
            roles=[r for r in actor.get("roles", []) if isinstance(r, str)],
            client_id=_text(actor, "client_id"),
            service=_text(actor, "service"),
            on_behalf_of=_text(actor, "on_behalf_of"),
        ),
        source_address=_text(record, "source_address"),
        trace_id=_text(record, "trace_id"),
        details={str(k): str(v) for k, v in details.items()},
    )
    occurred = _text(record, "occurred_at")
    if occurred:
        wire.occurred_time.CopyFrom(
            timestamps.to_timestamp(datetime.datetime.fromisoformat(occurred))
        )
    return pb.AuditEntry(
        seq=entry.seq,
        prev_hash=entry.prev_hash.hex(),
        entry_hash=entry.entry_hash.hex(),
        canonical=entry.canonical,
        recorded_time=timestamps.to_timestamp(entry.recorded_at),
        record=wire,
    )
