"""`mesh up --registry-replicas N`: the registry instances the runner plans from the repository's
own mesh.toml (commands, ports, the after_start, every component's SCHEMA_REGISTRY_URL), the
default of one instance left exactly as it was, the refusals (embedded Kafka, bad counts, a
count change while the registry runs), and the role `mesh ps` reads from an instance's log."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mesh_runner.cli import (
    REGISTRY,
    check_registry_count,
    component_env,
    instances,
    registry_role,
    replica_counts,
)
from mesh_runner.config import ConfigError, Mesh, load_mesh
from mesh_runner.kafka import KafkaChoice
from mesh_runner.processes import ProcessRecord, save_replicas, start_ticks

MESH = str(Path(sys.executable).parent / "mesh")
REPO = Path(__file__).resolve().parents[3]
BOOTSTRAP = "127.0.0.1:9092"
CHOICE = KafkaChoice("external", BOOTSTRAP, managed=False)
URLS = "http://127.0.0.1:8081,http://127.0.0.1:8082,http://127.0.0.1:8083"


@pytest.fixture
def declared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Mesh:
    """The repository's mesh.toml in a root of its own (its .mesh/ state is this test's)."""
    monkeypatch.delenv("SCHEMA_REGISTRY_URL", raising=False)
    monkeypatch.delenv("MESH_KAFKA_BOOTSTRAP", raising=False)
    shutil.copy(REPO / "mesh.toml", tmp_path / "mesh.toml")
    return load_mesh(tmp_path)


def test_three_instances_share_the_schemas_topic_on_consecutive_ports(declared: Mesh) -> None:
    component = declared.component(REGISTRY)
    plan = instances(component, {REGISTRY: 3}, BOOTSTRAP)

    assert [(c.name, c.port, c.health) for c in plan] == [
        ("schema-registry", 8081, "http"),
        ("schema-registry#2", 8082, "http"),
        ("schema-registry#3", 8083, "http"),
    ]
    for each in plan:
        assert each.command == (
            "schema-registry",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(each.port),
            "--storage",
            f"kafka://{BOOTSTRAP}/_schemas",
            "--advertise-url",
            f"http://127.0.0.1:{each.port}",
        )
    # register-all once, after the last instance is healthy, through every URL.
    assert [c.after_start for c in plan[:2]] == [(), ()]
    assert plan[2].after_start == (("schema-registry", "--url", URLS, "register-all", "proto/"),)


def test_every_component_gets_every_registry_url(declared: Mesh) -> None:
    save_replicas(declared.run_dir, {REGISTRY: 3})
    for name in ("orders", REGISTRY):
        env = component_env(declared, CHOICE, declared.component(name))
        assert env["SCHEMA_REGISTRY_URL"] == URLS
        assert "MESH_ADDRESS_SCHEMA_REGISTRY" not in env  # HTTP, not a gRPC peer to balance


def test_one_instance_is_the_component_as_declared(declared: Mesh) -> None:
    component = declared.component(REGISTRY)
    assert instances(component, {}, BOOTSTRAP) == [component]
    assert replica_counts(declared, None, 1) == {REGISTRY: 1}
    assert "sqlite:///" in " ".join(component.command)
    env = component_env(declared, CHOICE, declared.component("orders"))
    assert env["SCHEMA_REGISTRY_URL"] == "http://127.0.0.1:8081"


@pytest.mark.parametrize(
    ("spec", "registry", "says"),
    [
        (None, 0, "--registry-replicas 0: the registry runs at least 1"),
        (None, 10, "schema-registry#10 would listen on 8090, the port of identity"),
        ("schema-registry=2", None, "elect a primary: use --registry-replicas N"),
    ],
)
def test_counts_that_cannot_be_are_refused(
    declared: Mesh, spec: str | None, registry: int | None, says: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(says)):
        replica_counts(declared, spec, registry)


def test_several_instances_refuse_the_embedded_mock_cluster(declared: Mesh) -> None:
    check_registry_count(declared, "local", 1, 3)  # a real broker: fine
    check_registry_count(declared, None, 1, 1)  # the default: one instance on embedded Kafka
    with pytest.raises(ConfigError, match="needs a real broker: --kafka local or HOST:PORT"):
        check_registry_count(declared, None, 1, 3)


def test_up_on_embedded_kafka_is_a_usage_error_and_starts_nothing(declared: Mesh) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MESH_KAFKA_BOOTSTRAP"}
    result = subprocess.run(
        [MESH, "--root", str(declared.root), "up", "-d", "--registry-replicas", "3"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert result.returncode == 2, result.stderr
    assert "--registry-replicas 3 needs a real broker" in result.stderr
    assert not list(declared.run_dir.glob("*.json")), "nothing was started or recorded"


def test_changing_the_count_while_the_registry_runs_is_refused(declared: Mesh) -> None:
    # This test process stands in for a running registry: a live pid with its start time.
    me = os.getpid()
    record = ProcessRecord(REGISTRY, me, 8081, [], 0.0, "", start_ticks(me))
    record.save(declared.run_dir)
    check_registry_count(declared, "local", 3, 3)  # same count: it keeps running
    with pytest.raises(ConfigError, match="runs 1 instance\\(s\\) now; `mesh down` first"):
        check_registry_count(declared, "local", 1, 3)


@pytest.mark.parametrize(
    ("lines", "role"),
    [
        ([], None),
        (
            [
                "INFO schema_registry.storage.kafka primary of _schemas: fenced the previous"
                " writer, read to offset 12 in 40 ms",
                "schema-registry listening on http://127.0.0.1:8081 (workers=1, ...,"
                " advertised as http://127.0.0.1:8081, primary=this instance)",
            ],
            "primary",
        ),
        (
            [
                "schema-registry listening on http://127.0.0.1:8082 (workers=1, ...,"
                " advertised as http://127.0.0.1:8082, primary=http://127.0.0.1:8081)",
            ],
            "follower",
        ),
        (
            [
                "schema-registry listening on http://127.0.0.1:8082 (..., primary=http://x:1)",
                "INFO schema_registry.election primary of _schemas: none",
                "INFO schema_registry.storage.kafka primary of _schemas: fenced the previous"
                " writer, read to offset 99 in 300 ms",
            ],
            "primary",
        ),
    ],
)
def test_ps_reads_the_role_from_this_runs_log_lines(
    declared: Mesh, lines: list[str], role: str | None
) -> None:
    log = declared.log_dir / "schema-registry#2.log"
    log.parent.mkdir(parents=True)
    # A previous run's lines come before this process's offset and do not count.
    earlier = b"schema-registry listening on ... primary=this instance)\n"
    log.write_bytes(earlier + "".join(f"{line}\n" for line in lines).encode())
    ProcessRecord("schema-registry#2", 1, 8082, [], 0.0, str(log), -1, len(earlier)).save(
        declared.run_dir
    )
    assert registry_role(declared, "schema-registry#2") == role
