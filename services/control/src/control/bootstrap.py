"""The composition root: control's config store, watch feed and ConfigService servicer, and the
experiments half (control.experiments_wiring), on the service kit.

At start the JSON Schemas shipped in the contracts packages (``**/config/*.schema.json`` of
``mesh`` and ``shop``) are registered for their namespaces when absent or different, as
"control"; one the current document fails is logged and left out, and the service starts.

Who may call which RPC is not decided here. Each RPC declares the permission it needs in
proto/mesh/control/v1/control.proto; policy.cedar beside this file grants it, and the kit checks
both before every RPC.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import cast

from control.adapters.contracts import bundled_schemas
from control.adapters.sqlite import MIGRATIONS, snapshots, transactions
from control.app.config import ConfigUseCases
from control.app.feed import ChangeFeed, FeedPoller
from control.config import Settings
from control.entrypoints.grpc_api import ConfigServicer
from control.experiments_wiring import MIGRATIONS as EXPERIMENT_MIGRATIONS
from control.experiments_wiring import build_experiments
from mesh.control.v1 import control_pb2_grpc
from meshkit.audit import AuditEntry
from meshkit.control.experiments import parse_experiments
from meshkit.control.flags import parse_flag_set
from meshkit.server import ServiceBinding
from meshkit.service import Service, ServiceContext, binding
from meshkit.settings import ServiceSettings

log = logging.getLogger("control")

KIT_NAMESPACES: dict[str, Callable[[Mapping[str, object]], object]] = {
    "flags": parse_flag_set,
    "experiments": parse_experiments,
}
"""The namespaces every service reads through the kit, checked here with the kit's own parse
(beyond their JSON Schemas), so what every client would NACK is refused at the source."""


def build_config(ctx: ServiceContext[Settings]) -> list[ServiceBinding]:
    """The ConfigService over ``ctx.db``: bundled schemas registered, the feed's poller running
    while the server does, the feed closed on stop (every watch ends)."""
    feed = ChangeFeed()
    use_cases = ConfigUseCases(
        transactions(ctx.db),
        snapshots(ctx.db),
        feed,
        audit=_audit_trail(ctx),
        checks=KIT_NAMESPACES,
    )
    use_cases.register_bundled(bundled_schemas())
    poller = FeedPoller(snapshots(ctx.db), feed, ctx.settings.watch_poll_seconds)
    poller.run_once()  # the feed starts from what is stored, not from 0
    ctx.add_worker("config-feed", poller.run_forever)
    ctx.on_stop(feed.close)
    return [
        binding(ConfigServicer(use_cases), control_pb2_grpc.add_ConfigServiceServicer_to_server)
    ]


def build(ctx: ServiceContext[Settings]) -> list[ServiceBinding]:
    """ConfigService and the experiments half."""
    # build_experiments reads only what every service's settings have.
    experiments = build_experiments(
        cast("ServiceContext[ServiceSettings]", ctx), group=ctx.settings.consumer_group
    )
    return [*build_config(ctx), *experiments]


def _audit_trail(ctx: ServiceContext[Settings]) -> Callable[[AuditEntry], None]:
    """``ctx.audit``: control publishes no events of its own, so its audit records go through
    the kit's audit outbox beside its database (see meshkit.service)."""

    def record(entry: AuditEntry) -> None:
        try:
            ctx.audit(entry)
        except RuntimeError as exc:  # the kit keeps no audit outbox (no registry at start)
            log.error(
                "control: %s on %s by %s not recorded in the audit trail: %s",
                entry.action,
                entry.resource_id,
                entry.actor.subject if entry.actor else "the caller",
                exc,
            )

    return record


SERVICE = Service[Settings](
    "control",
    build,
    settings=Settings,
    migrations=(*MIGRATIONS, *EXPERIMENT_MIGRATIONS),
    consumes=("mesh.experiments.v1",),
)
