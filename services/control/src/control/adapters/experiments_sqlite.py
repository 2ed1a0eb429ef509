"""SQLite storage of experiment exposures and conversions (the ExperimentService's read model).

- ``experiment_exposure``: one row per (experiment, unit), the unit's FIRST exposure: a later
  one changes nothing, an earlier one arriving late (another service's, through another
  partition) replaces it.
- ``experiment_conversion``: one row per event id (a replayed event is a no-op), indexed by
  (metric, unit, time) so "did this unit convert at or after t" is one index probe.

``StoredDefinitions`` reads the experiments' definitions from the service's own config store
(the current document of the ``experiments`` namespace), through the config store's adapter.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator, Mapping
from typing import Any

from control.app.experiments import (
    EXPERIMENTS_NAMESPACE,
    Conversion,
    ExperimentStore,
    Exposure,
    VariantCount,
)
from control.app.ports import StoreTransaction
from meshkit import timestamps
from meshkit.db import Database

MIGRATION = """
CREATE TABLE experiment_exposure (
    experiment        TEXT NOT NULL,
    unit_id           TEXT NOT NULL,
    variant           TEXT NOT NULL,
    exposed_at_micros INTEGER NOT NULL,
    event_id          TEXT NOT NULL,
    service           TEXT NOT NULL,
    revision          INTEGER NOT NULL,
    PRIMARY KEY (experiment, unit_id)
) WITHOUT ROWID;
CREATE TABLE experiment_conversion (
    event_id            TEXT PRIMARY KEY,
    metric              TEXT NOT NULL,
    unit_id             TEXT NOT NULL,
    converted_at_micros INTEGER NOT NULL,
    value               REAL NOT NULL,
    service             TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX experiment_conversion_by_unit
    ON experiment_conversion (metric, unit_id, converted_at_micros);
"""


class SqliteExperimentStore:
    """ExperimentStore over one open transaction (or read snapshot) of the service's database."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def add_exposure(self, exposure: Exposure) -> None:
        """Keep the unit's earliest exposure to the experiment."""
        self._conn.execute(
            """
            INSERT INTO experiment_exposure (experiment, unit_id, variant, exposed_at_micros,
                                             event_id, service, revision)
            VALUES (?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (experiment, unit_id) DO UPDATE SET
                variant = excluded.variant,
                exposed_at_micros = excluded.exposed_at_micros,
                event_id = excluded.event_id,
                service = excluded.service,
                revision = excluded.revision
            WHERE excluded.exposed_at_micros < experiment_exposure.exposed_at_micros
            """,
            (
                exposure.experiment,
                exposure.unit_id,
                exposure.variant,
                timestamps.to_micros(exposure.at),
                exposure.event_id,
                exposure.service,
                exposure.revision,
            ),
        )

    def add_conversion(self, conversion: Conversion) -> None:
        """Keep the conversion, once per event id."""
        self._conn.execute(
            """
            INSERT INTO experiment_conversion (event_id, metric, unit_id, converted_at_micros,
                                               value, service)
            VALUES (?, ?, ?, ?, ?, ?)
            ON CONFLICT (event_id) DO NOTHING
            """,
            (
                conversion.event_id,
                conversion.metric,
                conversion.unit_id,
                timestamps.to_micros(conversion.at),
                conversion.value,
                conversion.service,
            ),
        )

    def counts(self, experiment: str, metric: str) -> Mapping[str, VariantCount]:
        """Units and converted units per variant (see ExperimentStore)."""
        rows = self._conn.execute(
            """
            SELECT e.variant,
                   COUNT(*),
                   SUM(EXISTS (SELECT 1 FROM experiment_conversion AS c
                               WHERE c.metric = :metric AND c.unit_id = e.unit_id
                                 AND c.converted_at_micros >= e.exposed_at_micros))
            FROM experiment_exposure AS e
            WHERE e.experiment = :experiment
            GROUP BY e.variant
            """,
            {"experiment": experiment, "metric": metric},
        ).fetchall()
        return {str(row[0]): VariantCount(int(row[1]), int(row[2] or 0)) for row in rows}


def reads(db: Database) -> contextlib.AbstractContextManager[ExperimentStore]:
    """A read snapshot of ``db``'s exposures and conversions."""
    return _reading(db)


@contextlib.contextmanager
def _reading(db: Database) -> Iterator[ExperimentStore]:
    with db.snapshot() as conn:
        yield SqliteExperimentStore(conn)


class StoredDefinitions:
    """ExperimentDefinitions from the config store's read snapshots (``snapshots(db)``)."""

    def __init__(self, snapshots: StoreTransaction) -> None:
        self._snapshots = snapshots

    def current(self) -> tuple[int, Mapping[str, Any]]:
        """The ``experiments`` namespace's current version and document; (0, {}) for none."""
        with self._snapshots() as store:
            current = store.current(EXPERIMENTS_NAMESPACE)
        if current is None or current.version == 0:
            return 0, {}
        document = json.loads(current.document)
        return current.version, document if isinstance(document, dict) else {}
