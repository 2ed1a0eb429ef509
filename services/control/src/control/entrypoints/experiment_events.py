"""Handlers of experiments.events.v1 for the kit's consumer (``ctx.consume``): each turns one
event into an exposure or a conversion and stores it in the consumer's own transaction (the
inbox mark commits with it, so a redelivered event is applied once)."""

from __future__ import annotations

import datetime
import sqlite3
from collections.abc import Callable, Mapping

from control.app.experiments import Conversion, ExperimentStore, Exposure
from meshkit.events import Event, Handler

EXPOSED = "mesh.experiments.v1.ExperimentExposed"
CONVERTED = "mesh.experiments.v1.ConversionRecorded"


def handlers(store: Callable[[sqlite3.Connection], ExperimentStore]) -> Mapping[str, Handler]:
    """The handlers by event type, storing through ``store(conn)``."""

    def exposed(event: Event, conn: sqlite3.Connection) -> None:
        data = event.data
        store(conn).add_exposure(
            Exposure(
                event_id=data["event_id"],
                experiment=data["experiment"],
                variant=data["variant"],
                unit_id=data["unit_id"],
                at=_aware(data["occurred_at"]),
                service=data["service"],
                revision=int(data.get("revision", 0)),
            )
        )

    def converted(event: Event, conn: sqlite3.Connection) -> None:
        data = event.data
        store(conn).add_conversion(
            Conversion(
                event_id=data["event_id"],
                metric=data["metric"],
                unit_id=data["unit_id"],
                at=_aware(data["occurred_at"]),
                value=float(data.get("value", 0.0)),
                service=data["service"],
            )
        )

    return {EXPOSED: exposed, CONVERTED: converted}


def _aware(instant: datetime.datetime) -> datetime.datetime:
    # fastavro reads timestamp-micros as an aware UTC datetime; stay safe with a naive one.
    return instant if instant.tzinfo else instant.replace(tzinfo=datetime.UTC)
