"""The audit service's edges: its contract (every RPC declares its access), its policy (only
auditors read the trail), the Kafka handler, and QueryAudit/GetPublicKeys over the real store."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cedarpy
import pytest
from unit.audit.trails import T0, Trail, make_trail, record

from audit.adapters.signing import publish
from audit.adapters.sqlite import SqliteAuditStore, snapshots
from audit.app.trail import AuditQueries
from audit.entrypoints.events import AUDIT_RECORDED, handlers
from audit.entrypoints.grpc_api import AuditServicer, page_token
from mesh.api.v1 import access_pb2
from mesh.audit.v1 import audit_pb2 as pb
from meshkit import InvalidArgument, timestamps
from meshkit.events import Event

POLICY = Path(__file__).resolve().parents[3] / "services/audit/src/audit/policy.cedar"


def test_every_rpc_declares_who_may_call_it() -> None:
    service = pb.DESCRIPTOR.services_by_name["AuditService"]
    rules: dict[str, Any] = {}
    for method in service.methods:
        options: Any = method.GetOptions()
        assert options.HasExtension(access_pb2.access), f"{method.name} declares no access"
        rules[method.name] = options.Extensions[access_pb2.access]
    assert rules["QueryAudit"].permission == "audit.read"
    assert rules["GetPublicKeys"].public
    assert all(rule.public or rule.permission for rule in rules.values()), rules


def allowed(roles: list[str], permission: str = "audit.read", *, service: bool = False) -> bool:
    """The policy's answer, with the entities meshkit.authz builds (a user under its roles, or a
    service; a Request resource, nobody's)."""
    kind = "Service" if service else "User"
    entities: list[dict[str, Any]] = [
        {
            "uid": {"type": kind, "id": "someone"},
            "attrs": {},
            "parents": [] if service else [{"type": "Role", "id": r} for r in roles],
        },
        {
            "uid": {"type": "Request", "id": "resource"},
            "attrs": {"owner": {"__entity": {"type": "User", "id": ""}}},
            "parents": [],
        },
    ]
    request = {
        "principal": f'{kind}::"someone"',
        "action": f'Action::"{permission}"',
        "resource": 'Request::"resource"',
        "context": {"on_behalf_of": ""},
    }
    result = cedarpy.is_authorized(request, POLICY.read_text(), entities)
    assert not list(result.diagnostics.errors)
    return bool(result.allowed)


def test_only_auditors_read_the_trail_and_admins_do_not() -> None:
    assert allowed(["auditor"])
    assert allowed(["customer", "auditor"])
    assert not allowed(["admin"])  # separation of duties
    assert not allowed(["support"])
    assert not allowed(["customer"])
    assert not allowed([])
    assert not allowed(["service"], service=True)
    assert not allowed(["auditor"], "audit.write")


@pytest.fixture
def trail(tmp_path: Path) -> Iterator[Trail]:
    made = make_trail(tmp_path, every=100)
    yield made
    made.db.close()


def event(data: dict[str, Any], offset: int = 0) -> Event:
    return Event(
        id=str(data["audit_id"]),
        type=AUDIT_RECORDED,
        source="/meshkit/orders",
        subject=str(data["audit_id"]),
        time=T0,
        data=data,
        topic="audit.events.v1",
        partition=0,
        offset=offset,
        key=str(data["audit_id"]),
        headers={},
    )


def test_the_handler_appends_in_the_consumers_transaction_once(trail: Trail) -> None:
    handle = handlers(trail.trail, SqliteAuditStore)[AUDIT_RECORDED]
    with trail.db.transaction() as conn:
        handle(event(record(1)), conn)
        handle(event(record(2), 1), conn)
    with trail.db.transaction() as conn:
        handle(event(record(1), 2), conn)  # a replay, with another offset
    assert [r["audit_id"] for r in trail.rows("SELECT audit_id FROM audit_entry")] == [
        record(1)["audit_id"],
        record(2)["audit_id"],
    ]


def servicer(trail: Trail) -> AuditServicer:
    return AuditServicer(AuditQueries(snapshots(trail.db), publish(trail.path, trail.signer)))


def query(trail: Trail, **fields: Any) -> pb.QueryAuditResponse:
    return servicer(trail).QueryAudit(pb.QueryAuditRequest(**fields), None)  # type: ignore[arg-type]


def seqs(response: pb.QueryAuditResponse) -> list[int]:
    return [e.seq for e in response.entries]


def test_query_filters_newest_first(trail: Trail) -> None:
    trail.fill(6)  # actors customer-1, -2, -0, -1, -2, -0
    trail.append(
        record(
            7,
            service="inventory",
            action="inventory.stock.set",
            resource_type="Sku",
            resource_id="SKU-1",
            actor={
                "subject": "orders",
                "roles": ["service"],
                "client_id": "orders",
                "service": "orders",
                "on_behalf_of": "customer-1",
            },
        )
    )
    assert seqs(query(trail)) == [7, 6, 5, 4, 3, 2, 1]
    assert seqs(query(trail, actor="customer-1")) == [7, 4, 1]  # on whose behalf counts too
    assert seqs(query(trail, action="inventory.stock.set")) == [7]
    assert seqs(query(trail, action="orders.*")) == [6, 5, 4, 3, 2, 1]
    assert seqs(query(trail, resource_type="Order", resource_id="order-3")) == [3]
    since = timestamps.to_timestamp(T0 + datetime.timedelta(seconds=3))
    until = timestamps.to_timestamp(T0 + datetime.timedelta(seconds=5))
    assert seqs(query(trail, since=since, until=until)) == [4, 3]


def test_query_answers_the_hashed_record_with_its_place_in_the_chain(trail: Trail) -> None:
    trail.fill(2)
    [entry] = query(trail, resource_id="order-2").entries
    [row] = trail.rows("SELECT * FROM audit_entry WHERE seq = 2")
    assert entry.entry_hash == bytes(row["entry_hash"]).hex()
    assert entry.prev_hash == bytes(row["prev_hash"]).hex()
    assert entry.canonical == bytes(row["canonical"])
    assert entry.record.audit_id == record(2)["audit_id"]
    assert entry.record.occurred_time.ToDatetime(datetime.UTC) == record(2)["occurred_at"]
    assert entry.record.actor.roles == ["customer"]
    assert dict(entry.record.details) == {"sku": "SKU-1", "quantity": "2"}


def test_query_pages(trail: Trail) -> None:
    trail.fill(5)
    first = query(trail, page_size=2)
    assert seqs(first) == [5, 4]
    second = query(trail, page_size=2, page_token=first.next_page_token)
    assert seqs(second) == [3, 2]
    third = query(trail, page_size=2, page_token=second.next_page_token)
    assert (seqs(third), third.next_page_token) == ([1], "")


def test_bad_queries_name_the_field(trail: Trail) -> None:
    with pytest.raises(InvalidArgument) as bad:
        query(trail, page_token="nonsense")
    assert [v.field for v in bad.value.violations] == ["page_token"]
    with pytest.raises(InvalidArgument) as bad:
        query(trail, page_size=-1)
    assert [v.field for v in bad.value.violations] == ["page_size"]
    later = timestamps.to_timestamp(T0)
    with pytest.raises(InvalidArgument) as bad:
        query(trail, since=later, until=later)
    assert [v.field for v in bad.value.violations] == ["until"]
    assert page_token(3) != page_token(4)


def test_the_public_keys_are_served(trail: Trail) -> None:
    keys = servicer(trail).GetPublicKeys(pb.GetPublicKeysRequest(), None)  # type: ignore[arg-type]
    [key] = keys.keys
    assert (key.key_id, key.algorithm, key.current) == (trail.signer.key_id, "Ed25519", True)
    assert key.public_key_pem == trail.signer.public_key_pem
