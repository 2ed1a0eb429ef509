"""The composition root: audit's signing key, trail, consumer, maintenance worker and servicer,
on the service kit.

Restart-safe by construction: the consumer appends each record and writes its inbox mark in one
transaction and commits the Kafka offset after it, and the store refuses a second entry with the
same audit_id; so a kill -9 anywhere loses nothing (uncommitted records are redelivered) and
doubles nothing (redelivered ones are skipped). The signing key and the published public key
live beside the database, so a restart signs with the same key.
"""

from __future__ import annotations

import datetime

from audit.adapters.signing import load_signer, publish
from audit.adapters.sqlite import MIGRATIONS, SqliteAuditStore, snapshots, transactions
from audit.app.trail import AuditQueries, AuditTrail, Maintenance
from audit.config import Settings
from audit.entrypoints.events import handlers
from audit.entrypoints.grpc_api import AuditServicer
from mesh.audit.v1 import audit_pb2_grpc
from meshkit.server import ServiceBinding
from meshkit.service import Service, ServiceContext, binding

# How often the maintenance worker looks for a due checkpoint, at most (and at least 20 times
# per AUDIT_CHECKPOINT_SECONDS, so a checkpoint is late by 5% of it at worst).
MAX_POLL_S = 1.0


def build(ctx: ServiceContext[Settings]) -> list[ServiceBinding]:
    """AuditService over the trail; the AuditRecorded consumer and the maintenance worker run
    while the server does."""
    settings = ctx.settings
    signer = load_signer(settings.signing_key, settings.db_path)
    keys = publish(settings.db_path, signer)
    trail = AuditTrail(
        signer,
        checkpoint_every=settings.checkpoint_every,
        checkpoint_after=datetime.timedelta(seconds=settings.checkpoint_seconds),
    )
    ctx.consume(handlers(trail, SqliteAuditStore))
    retention = (
        datetime.timedelta(days=settings.retention_days) if settings.retention_days else None
    )
    maintenance = Maintenance(
        transactions(ctx.db),
        trail,
        retention=retention,
        poll_s=min(MAX_POLL_S, settings.checkpoint_seconds / 20),
    )
    ctx.add_worker("audit-maintenance", maintenance.run_forever)
    return [
        binding(
            AuditServicer(AuditQueries(snapshots(ctx.db), keys)),
            audit_pb2_grpc.add_AuditServiceServicer_to_server,
        )
    ]


SERVICE = Service[Settings](
    "audit", build, settings=Settings, migrations=MIGRATIONS, consumes=("mesh.audit.v1",)
)
