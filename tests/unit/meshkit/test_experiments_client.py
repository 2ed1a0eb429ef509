"""meshkit.control.experiments.Experiments: one exposure per (experiment, unit) per process,
bounded memory, never failing the caller, conversions for the caller's unit of work; and the
events it makes are records their Avro contracts accept."""

from __future__ import annotations

import datetime
import json
import threading
from pathlib import Path
from typing import Any

import fastavro
import pytest

from meshkit.control.experiments import (
    EXPERIMENT_EVENTS,
    ConversionRecorded,
    ExperimentExposed,
    Experiments,
    static_experiments,
    with_experiment_events,
)
from meshkit.events import EventMap

AVRO = Path(__file__).parents[3] / "proto" / "mesh" / "experiments" / "v1" / "avro"
DOCUMENT = {
    "experiments": {
        "checkout-cta": {
            "variants": [{"key": "control", "weight": 0.5}, {"key": "buy-now", "weight": 0.5}],
            "metric": "order_confirmed",
        },
        "old-banner": {
            "variants": [{"key": "control"}, {"key": "b"}],
            "status": "stopped",
        },
    }
}
AT = datetime.datetime(2026, 12, 6, 12, 0, tzinfo=datetime.UTC)


def client(published: list[Any], *, limit: int = 1000, version: int = 7) -> Experiments:
    return Experiments(
        static_experiments(DOCUMENT, version),
        published.append,
        service="shopfront",
        seen_limit=limit,
        clock=lambda: AT,
    )


def test_the_first_assignment_of_a_unit_writes_one_exposure() -> None:
    published: list[Any] = []
    experiments = client(published)
    first = experiments.assign("checkout-cta", "user-1")
    for _ in range(3):
        assert experiments.assign("checkout-cta", "user-1") == first
    assert published == [
        ExperimentExposed(
            published[0].event_id, AT, "checkout-cta", str(first.variant), "user-1", "shopfront", 7
        )
    ]


def test_no_exposure_outside_the_experiment() -> None:
    published: list[Any] = []
    experiments = client(published)
    assert experiments.assign("old-banner", "user-1").reason == "stopped"
    assert experiments.assign("nope", "user-1").reason == "unknown_experiment"
    assert experiments.assign("checkout-cta", "").reason == "no_unit"
    assert published == []


def test_the_memory_of_exposed_units_is_bounded() -> None:
    published: list[Any] = []
    experiments = client(published, limit=2)
    for unit in ("a", "b", "c", "a"):  # "a" was forgotten when "c" came
        experiments.assign("checkout-cta", unit)
    assert [e.unit_id for e in published] == ["a", "b", "c", "a"]


def test_a_failed_write_never_fails_the_caller_and_is_tried_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    published: list[Any] = []
    down = True

    def publish(event: Any) -> None:
        if down:
            raise RuntimeError("outbox down")
        published.append(event)

    experiments = Experiments(static_experiments(DOCUMENT), publish, service="shopfront")
    assert experiments.assign("checkout-cta", "user-1").in_experiment
    assert "was not written" in caplog.text
    down = False  # the outbox is back: the unit's next assignment writes its exposure
    experiments.assign("checkout-cta", "user-1")
    experiments.assign("checkout-cta", "user-1")
    assert len(published) == 1


def test_concurrent_assignments_of_one_unit_write_one_exposure() -> None:
    published: list[Any] = []
    experiments = client(published)
    threads = [
        threading.Thread(target=experiments.assign, args=("checkout-cta", "user-9"))
        for _ in range(16)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(published) == 1


def test_conversions_for_the_callers_unit_of_work_and_on_their_own() -> None:
    published: list[Any] = []
    experiments = client(published)
    event = experiments.conversion("order_confirmed", "user-1", 42.5)
    assert event == ConversionRecorded(
        event.event_id, AT, "order_confirmed", "user-1", "shopfront", 42.5
    )
    experiments.convert("order_confirmed", "user-2")
    assert [e.unit_id for e in published] == ["user-2"]
    with pytest.raises(ValueError, match="metric"):
        experiments.conversion("", "user-1")
    with pytest.raises(RuntimeError):
        Experiments(static_experiments(DOCUMENT), service="x").convert("order_confirmed", "u")


@pytest.mark.parametrize(
    ("event", "contract"),
    [
        (
            ExperimentExposed("e1", AT, "checkout-cta", "control", "u1", "gateway", 3),
            "experiment_exposed",
        ),
        (
            ConversionRecorded("e2", AT, "order_confirmed", "u1", "orders", 12.0),
            "conversion_recorded",
        ),
    ],
)
def test_the_events_are_records_of_their_contracts(event: Any, contract: str) -> None:
    schema = fastavro.parse_schema(json.loads((AVRO / f"{contract}.avsc").read_text()))
    record = EXPERIMENT_EVENTS.to_record(event)
    assert fastavro.validate(record, schema, raise_errors=True)
    assert EXPERIMENT_EVENTS.key_of(event) == "u1"


def test_a_services_event_map_with_the_experiments_events() -> None:
    own: EventMap[Any] = EventMap("shop.test.v1")
    joined = with_experiment_events(own)
    exposed = ExperimentExposed("e1", AT, "checkout-cta", "control", "u1", "gateway")
    assert joined.type_of(exposed) == "mesh.experiments.v1.ExperimentExposed"
    assert joined.namespace == "shop.test.v1"
    assert "mesh.experiments.v1.ConversionRecorded" in joined.types
    with pytest.raises(KeyError):
        joined.type_of(object())
