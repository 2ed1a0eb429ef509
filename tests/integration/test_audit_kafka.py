"""The audit service on a real broker and a real registry: AuditRecorded records produced the way
every service produces them (the kit's outbox and relay: Confluent wire format, CloudEvents
headers, ce_id = audit_id) are appended exactly once, through redeliveries of the same event, the
same record under another event id, and a replay of the whole topic after a restart; the trail
then verifies (chain and signed checkpoints), offline and through the CLI, and answers auditors.

Each test reads the AuditRecorded contract on a topic and consumer group of its own (the
service's ``build(ctx, catalog, group)``), so it never shares audit.events.v1 with a mesh."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import json
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from confluent_kafka import Consumer, TopicPartition
from support.events import register_all, wait_for, write_contracts
from support.tokens import TEST_ISSUER

from audit.bootstrap import SERVICE, build
from audit.config import Settings
from mesh.audit.v1 import audit_pb2, audit_pb2_grpc
from mesh_runner.audit import load_public_keys, verify_store
from meshkit import Database, MeshServer, Service
from meshkit.events import OUTBOX_MIGRATION, EventCatalog, Outbox, OutboxRelay

REPO = Path(__file__).resolve().parents[2]
AVRO = REPO / "proto" / "mesh" / "audit" / "v1" / "avro"
RECORDED = "mesh.audit.v1.AuditRecorded"
SCHEMA = json.loads((AVRO / "audit_recorded.avsc").read_text())
MESH = Path(sys.executable).parent / "mesh"

pytestmark = pytest.mark.kafka


def audit_record(n: int, **fields: Any) -> dict[str, Any]:
    """An AuditRecorded record as a service writes one (meshkit.audit's fields)."""
    return {
        "audit_id": str(uuid.uuid4()),
        "occurred_at": datetime.datetime.now(datetime.UTC),
        "service": "orders",
        "action": "orders.place",
        "outcome": "SUCCESS",
        "reason": "",
        "resource_type": "Order",
        "resource_id": f"order-{n}",
        "actor": {
            "subject": f"customer-{n % 2}",
            "roles": ["customer"],
            "client_id": "shop",
            "service": "",
            "on_behalf_of": "",
        },
        "source_address": "ipv4:127.0.0.1:5555",
        "trace_id": uuid.uuid4().hex,
        "details": {"n": str(n)},
        **fields,
    }


@dataclasses.dataclass
class Run:
    """One test's topic, contracts, registry and broker."""

    tmp_path: Path
    topic: str
    catalog: EventCatalog
    registry: str
    bootstrap: str

    @property
    def db_path(self) -> Path:
        return self.tmp_path / "audit.db"

    def produce(
        self, records: Sequence[dict[str, Any]], *, event_ids: Sequence[str] | None = None
    ) -> None:
        """Publish ``records`` through an outbox and its relay, as a service does (a producer
        database of its own each time: a redelivery or a second writer)."""
        db = Database(self.tmp_path / f"producer-{uuid.uuid4().hex[:8]}.db", [OUTBOX_MIGRATION])
        outbox = Outbox(self.catalog, self.registry, source="/meshkit/orders")
        ids = event_ids or [str(r["audit_id"]) for r in records]
        with db.transaction() as conn:
            for record, event_id in zip(records, ids, strict=True):
                key = str(record["audit_id"])
                outbox.append(
                    conn, RECORDED, record, key=key, event_id=event_id, time=record["occurred_at"]
                )
        relay = OutboxRelay(db, self.bootstrap)
        sent = [0]

        def published() -> bool:
            sent[0] += relay.run_once()
            return sent[0] >= len(records)

        try:
            wait_for(published, what=f"{len(records)} records published")
        finally:
            relay.close()
            db.close()

    @contextlib.contextmanager
    def service(self, group: str, **env: str) -> Iterator[tuple[MeshServer, int]]:
        """The audit service reading this run's topic as ``group``, on a free port."""
        service: Service[Settings] = dataclasses.replace(
            SERVICE, build=functools.partial(build, catalog=self.catalog, group=group)
        )
        settings = service.load_settings(
            {
                "AUDIT_PORT": "0",
                "AUDIT_DB_PATH": str(self.db_path),
                "AUDIT_CHECKPOINT_EVERY": "7",
                "AUDIT_CHECKPOINT_SECONDS": "0.3",
                "SCHEMA_REGISTRY_URL": self.registry,
                "MESH_KAFKA_BOOTSTRAP": self.bootstrap,
                **TEST_ISSUER.env,
                **env,
            }
        )
        server = service.create(settings)
        port = server.start()
        try:
            yield server, port
        finally:
            server.stop(0)

    def entries(self) -> list[str]:
        """The audit_ids in the store, by seq (read as `mesh audit verify` reads it)."""
        if not self.db_path.exists():
            return []
        conn = sqlite3.connect(f"{self.db_path.as_uri()}?mode=ro", uri=True)
        try:
            return [r[0] for r in conn.execute("SELECT audit_id FROM audit_entry ORDER BY seq")]
        except sqlite3.OperationalError:  # not migrated yet
            return []
        finally:
            conn.close()

    def caught_up(self, group: str) -> bool:
        """True when ``group`` has committed every partition of the topic to its end."""
        probe = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group})
        try:
            metadata = probe.list_topics(self.topic, timeout=5).topics[self.topic]
            partitions = [TopicPartition(self.topic, p) for p in metadata.partitions]
            committed = probe.committed(partitions, timeout=5)  # reads offsets; joins nothing
            for tp in committed:
                _, high = probe.get_watermark_offsets(
                    TopicPartition(self.topic, tp.partition), timeout=5
                )
                if high > 0 and tp.offset < high:
                    return False
            return True
        finally:
            probe.close()

    def verify(self) -> Any:
        keys = load_public_keys((self.tmp_path / "audit.db.pub.pem").read_text())
        return verify_store(self.db_path, keys)


@pytest.fixture
def run(tmp_path: Path, kafka_topic: str, registry_url: str, kafka_bootstrap: str) -> Run:
    register_all(registry_url, AVRO)  # audit.events.v1's subject: the kit checks it at start
    avro = write_contracts(tmp_path / "contracts", kafka_topic, SCHEMA)
    register_all(registry_url, avro)
    return Run(tmp_path, kafka_topic, EventCatalog.load(avro), registry_url, kafka_bootstrap)


def test_records_are_appended_once_through_redeliveries_and_the_trail_verifies(run: Run) -> None:
    records = [audit_record(n) for n in range(20)]
    ids = [str(r["audit_id"]) for r in records]
    with run.service("audit-it-1") as (_, port):
        run.produce(records)
        wait_for(lambda: len(run.entries()) == 20, timeout=60, what="20 entries appended")
        # A redelivery (the same events again), and the same records under other event ids
        # (a replay by another writer): neither the inbox nor anything else lets them in twice.
        run.produce(records[:10])
        run.produce(records[10:15], event_ids=[f"{i}-again" for i in ids[10:15]])
        marker = audit_record(99)
        run.produce([marker])
        wait_for(lambda: run.caught_up("audit-it-1"), timeout=60, what="the consumer caught up")
        assert sorted(run.entries()) == sorted([*ids, str(marker["audit_id"])])
        # The oldest unsigned entry waits at most AUDIT_CHECKPOINT_SECONDS for its checkpoint.
        wait_for(lambda: run.verify().signed_through == 21, timeout=30, what="checkpoint of 21")
        report = run.verify()
        assert report.ok, report.problem
        assert report.checkpoints >= 3  # every 7 entries, then by time

        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = audit_pb2_grpc.AuditServiceStub(channel)
            keys = stub.GetPublicKeys(audit_pb2.GetPublicKeysRequest(), timeout=10).keys
            assert [k.current for k in keys] == [True]
            found = stub.QueryAudit(
                audit_pb2.QueryAuditRequest(actor="customer-1", page_size=100),
                metadata=tuple(TEST_ISSUER.metadata("auditor")),
                timeout=10,
            )
            theirs = [
                str(r["audit_id"])
                for r in [*records, marker]
                if r["actor"]["subject"] == "customer-1"
            ]
            assert sorted(e.record.audit_id for e in found.entries) == sorted(theirs)
            seqs = [e.seq for e in found.entries]
            assert seqs == sorted(seqs, reverse=True)  # newest first
            with pytest.raises(grpc.RpcError) as refused:  # separation of duties
                stub.QueryAudit(
                    audit_pb2.QueryAuditRequest(),
                    metadata=tuple(TEST_ISSUER.metadata("admin")),
                    timeout=10,
                )
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "audit.read" in (refused.value.details() or "")
            with pytest.raises(grpc.RpcError) as refused:
                stub.QueryAudit(audit_pb2.QueryAuditRequest(), timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

        listed = subprocess.run(
            [str(MESH), "audit", "ls", "--target", f"127.0.0.1:{port}", "--limit", "3", "--json"],
            env={**os.environ, "MESH_TOKEN": TEST_ISSUER.token("auditor")},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert listed.returncode == 0, listed.stderr
        assert [e["seq"] for e in json.loads(listed.stdout)] == ["21", "20", "19"]

    verified = subprocess.run(
        [str(MESH), "audit", "verify", "--db", str(run.db_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "verified 21 entries" in verified.stdout


def test_a_restart_that_replays_the_whole_topic_appends_nothing_twice(run: Run) -> None:
    records = [audit_record(n) for n in range(10)]
    with run.service("audit-it-2"):
        run.produce(records)
        wait_for(lambda: len(run.entries()) == 10, timeout=60, what="10 entries appended")
    before = run.entries()
    # Restarted under a consumer group that never read the topic: everything comes again.
    with run.service("audit-it-2-replay"):
        wait_for(lambda: run.caught_up("audit-it-2-replay"), timeout=60, what="replay done")
        late = audit_record(10)
        run.produce([late])
        wait_for(lambda: len(run.entries()) == 11, timeout=60, what="the new record")
        wait_for(lambda: run.verify().signed_through == 11, timeout=30, what="checkpoint of 11")
    assert run.entries() == [*before, str(late["audit_id"])]
    report = run.verify()
    assert report.ok, report.problem
