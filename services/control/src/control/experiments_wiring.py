"""The experiments half of the control service (ExperimentService and the consumer of
experiments.events.v1): its migrations and its build step, called by bootstrap.build.

Placeholder until the analysis lands: no tables, no servicer.
"""

from __future__ import annotations

from meshkit.server import ServiceBinding
from meshkit.service import ServiceContext
from meshkit.settings import ServiceSettings

MIGRATIONS: tuple[str, ...] = ()


def build_experiments(ctx: ServiceContext[ServiceSettings]) -> list[ServiceBinding]:
    """The ExperimentService binding; starts the consumer of experiments.events.v1."""
    return []
