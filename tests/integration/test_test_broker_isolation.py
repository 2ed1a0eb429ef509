"""The test suite's broker is not the developer's: `make test` leaves .mesh/ alone (issue 19).

Before, the tests wrote to the broker of `mesh up --kafka local` (127.0.0.1:9092, data in
<checkout>/.mesh/kafka), and the next `mesh up` dead-lettered their records, which carry another
registry's schema ids. The suite's broker (`scripts/kafka --test`) has its own ports and data dir.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka import Producer
from support.kafka import TEST_BOOTSTRAP, TEST_DATA_DIR

from mesh_runner.config import load_mesh
from mesh_runner.kafka import local_paths
from mesh_runner.local_kafka import Paths

REPO = Path(__file__).resolve().parents[2]


def test_the_test_broker_has_its_own_address_and_data_dir(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("KAFKA_DATA_DIR", "KAFKA_PORT", "KAFKA_CONTROLLER_PORT", "MESH_PORT_OFFSET"):
        monkeypatch.delenv(name, raising=False)
    developers = local_paths(load_mesh(REPO))  # what `mesh up --kafka local` runs
    tests = Paths.for_tests(REPO)
    assert tests.bootstrap == TEST_BOOTSTRAP != developers.bootstrap
    assert tests.controller_port != developers.controller_port
    assert tests.data == TEST_DATA_DIR.resolve()
    assert not tests.data.is_relative_to(REPO / ".mesh")
    # The developer's own KAFKA_* settings move their broker, never the suite's.
    monkeypatch.setenv("KAFKA_PORT", str(tests.port))
    monkeypatch.setenv("KAFKA_DATA_DIR", str(tests.data))
    assert Paths.for_tests(REPO).data == tests.data
    assert Paths.for_tests(REPO).port == tests.port


@pytest.mark.kafka
def test_records_of_the_tests_land_in_the_test_data_dir_only(
    kafka_bootstrap: str, kafka_topic: str
) -> None:
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(kafka_topic, b"from a test")
    assert producer.flush(30) == 0
    # One partition (the broker's num.partitions): its log directory is <topic>-0.
    assert (Paths.for_tests(REPO).kraft / f"{kafka_topic}-0").is_dir()
    developers = Paths.for_root(REPO)
    assert not (developers.kraft / f"{kafka_topic}-0").exists()
