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
from meshkit.events import Consumers, EventCatalog
from meshkit.server import ServiceBinding
from meshkit.service import Service, ServiceContext, binding

# How often the maintenance worker looks for a due checkpoint, at most (and at least 20 times
# per AUDIT_CHECKPOINT_SECONDS, so a checkpoint is late by 5% of it at worst).
MAX_POLL_S = 1.0


def build(
    ctx: ServiceContext[Settings], catalog: EventCatalog | None = None, group: str | None = None
) -> list[ServiceBinding]:
    """AuditService over the trail; the AuditRecorded consumer and the maintenance worker run
    while the server does.

    ``catalog`` is what it consumes: by default the mesh.audit.v1 contract on audit.events.v1
    (``consumes``, checked against the registry by the kit); tests give the same contract on a
    topic of their own (checked here) and a consumer ``group`` of their own (default: the
    ``consumer_group`` setting, audit).
    """
    settings = ctx.settings
    signer = load_signer(settings.signing_key, settings.db_path)
    keys = publish(settings.db_path, signer)
    trail = AuditTrail(
        signer,
        checkpoint_every=settings.checkpoint_every,
        checkpoint_after=datetime.timedelta(seconds=settings.checkpoint_seconds),
    )
    apply = handlers(trail, SqliteAuditStore)
    group = group or settings.consumer_group
    if catalog is None:
        ctx.consume(apply, group=group)
    else:
        catalog.verify(settings.schema_registry_url, readers=True)
        consumers = Consumers(
            settings.kafka_bootstrap, settings.schema_registry_url, catalog, apply
        )
        consumer = consumers(ctx.db, group or ctx.name)
        ctx.add_worker("consumer", consumer.run_forever)
        ctx.on_stop(consumer.close)
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
            AuditServicer(AuditQueries(snapshots(ctx.db), keys), ctx.audit),
            audit_pb2_grpc.add_AuditServiceServicer_to_server,
        )
    ]


SERVICE = Service[Settings](
    "audit", build, settings=Settings, migrations=MIGRATIONS, consumes=("mesh.audit.v1",)
)
