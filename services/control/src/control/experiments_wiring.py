"""The experiments half of the control service: ExperimentService (reports) and the consumer of
experiments.events.v1 that fills its read model; its migrations and its build step, called by
bootstrap.build (the service declares ``consumes=("mesh.experiments.v1",)``).

Definitions are read from the service's own config store (the ``experiments`` namespace), not
over gRPC: the control service is where they are kept.
"""

from __future__ import annotations

from control.adapters import experiments_sqlite
from control.adapters.sqlite import snapshots
from control.app.experiments import ExperimentAnalysis
from control.entrypoints.experiment_events import handlers
from control.entrypoints.experiments_grpc import ExperimentServicer
from mesh.control.v1 import control_pb2_grpc
from meshkit.events import INBOX_MIGRATION
from meshkit.server import ServiceBinding
from meshkit.service import ServiceContext, binding
from meshkit.settings import ServiceSettings

MIGRATIONS: tuple[str, ...] = (experiments_sqlite.MIGRATION, INBOX_MIGRATION)


def build_experiments(
    ctx: ServiceContext[ServiceSettings], group: str | None = None
) -> list[ServiceBinding]:
    """The ExperimentService binding; starts the consumer of experiments.events.v1 in consumer
    group ``group`` (default: the service's name)."""
    db = ctx.db
    ctx.consume(handlers(experiments_sqlite.SqliteExperimentStore), group=group)
    analysis = ExperimentAnalysis(
        lambda: experiments_sqlite.reads(db),
        experiments_sqlite.StoredDefinitions(snapshots(db)),
    )
    return [
        binding(
            ExperimentServicer(analysis),
            control_pb2_grpc.add_ExperimentServiceServicer_to_server,
        )
    ]
