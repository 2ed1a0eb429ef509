"""Experiments end to end on the real broker, through the control service as `mesh up` runs it
(``control.bootstrap.SERVICE``): exposures and conversions published to experiments.events.v1,
consumed into its read model, reported by ExperimentService.

- A service built by the kit without a database (the gateway's kind) watches the experiments
  namespace from control (with its own service token), assigns units with ``ctx.experiments``,
  and its exposures travel through the kit's outbox and relay to control's report.
- ``mesh experiments simulate`` (real assignment, --skew) makes the sample-ratio check fire (the
  issue's Done-when); the same traffic without the skew does not, and the report counts exactly
  the exposures and conversions the simulation published.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from support.events import register_all, wait_for
from support.tokens import TEST_ISSUER, authorized, token_endpoint

from control.bootstrap import SERVICE
from control.config import Settings
from mesh.control.v1 import control_pb2 as pb
from mesh.control.v1 import control_pb2_grpc as pb_grpc
from mesh_runner import cli
from mesh_runner.experimentscli import simulate
from meshkit import Service, ServiceContext, ServiceSettings
from meshkit.control.experiments import Experiments, parse_experiments
from meshkit.server import MeshServer, ServiceBinding

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
PROTO = REPO / "proto"
UNITS = 2000  # with 30 % of one arm's exposures dropped, chi-square ~ 50 (p ~ 1e-12)
SKEW = 0.3


def definition(metric: str = "order_confirmed") -> dict[str, Any]:
    return {
        "variants": [{"key": "control", "weight": 0.5}, {"key": "buy-now", "weight": 0.5}],
        "metric": metric,
    }


@pytest.fixture(scope="module")
def keys() -> dict[str, str]:
    """Experiment keys of this run's own: the topic and the broker outlive every test."""
    run = uuid.uuid4().hex[:8]
    return {name: f"{name}-{run}" for name in ("shopfront", "fair", "skewed")}


@pytest.fixture(scope="module")
def control(
    tmp_path_factory: pytest.TempPathFactory,
    kafka_bootstrap: str,
    registry_url: str,
    keys: dict[str, str],
) -> Iterator[MeshServer]:
    for path in ("mesh/experiments/v1/avro", "mesh/audit/v1/avro"):
        register_all(registry_url, PROTO / path)
    settings = Settings(
        port=0,
        db_path=tmp_path_factory.mktemp("control") / "control.db",
        kafka_bootstrap=kafka_bootstrap,
        schema_registry_url=registry_url,
        consumer_group=f"control-{uuid.uuid4().hex[:8]}",  # not another mesh's control's
        grace_seconds=0.5,
        auth_jwks_url=TEST_ISSUER.env["MESH_AUTH_JWKS_URL"],
        auth_issuer=TEST_ISSUER.env["MESH_AUTH_ISSUER"],
        auth_audience=TEST_ISSUER.env["MESH_AUTH_AUDIENCE"],
    )
    server = SERVICE.create(settings)
    server.start()
    try:
        document = {"experiments": {key: definition() for key in keys.values()}}
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            pb_grpc.ConfigServiceStub(authorized(channel, "admin")).SetConfig(
                pb.SetConfigRequest(namespace="experiments", document=json.dumps(document)),
                timeout=10,
            )
        yield server
    finally:
        server.stop()


def report(control: MeshServer, key: str) -> pb.ExperimentReport:
    with grpc.insecure_channel(f"127.0.0.1:{control.port}") as channel:
        stub = pb_grpc.ExperimentServiceStub(authorized(channel, "support"))
        response: pb.GetExperimentReportResponse = stub.GetExperimentReport(
            pb.GetExperimentReportRequest(key=key), timeout=10
        )
        return response.report


def report_with(control: MeshServer, key: str, units: int) -> pb.ExperimentReport:
    """The report once control has consumed ``units`` exposures of ``key`` (polled)."""
    found: list[pb.ExperimentReport] = []

    def arrived() -> bool:
        try:
            got = report(control, key)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
            return False
        found[:] = [got]
        return sum(v.units for v in got.variants) >= units

    wait_for(arrived, timeout=60, what=f"{units} exposures of {key} in control's report")
    return found[0]


@contextlib.contextmanager
def shopfront(
    tmp_path: Path, control: MeshServer, kafka_bootstrap: str, registry_url: str
) -> Iterator[Experiments]:
    """A kit service without a database whose ctx.experiments watches control (as itself)."""
    got: list[Experiments] = []

    def build(ctx: ServiceContext[ServiceSettings]) -> list[ServiceBinding]:
        got.append(ctx.experiments)
        return []

    service: Service[ServiceSettings] = Service(
        "shopfront", build, description="A shop front.", database=False
    )
    with token_endpoint() as identity, pytest.MonkeyPatch.context() as patch:
        patch.setenv("MESH_ADDRESS_CONTROL", f"127.0.0.1:{control.port}")
        patch.setenv("MESH_URL_IDENTITY", identity.url)
        env = {
            "SHOPFRONT_PORT": "0",
            "SHOPFRONT_DB_PATH": str(tmp_path / "shopfront.db"),
            "SCHEMA_REGISTRY_URL": registry_url,
            "MESH_KAFKA_BOOTSTRAP": kafka_bootstrap,
        } | TEST_ISSUER.env
        server = service.create(service.load_settings(env))
        server.start()
        try:
            yield got[0]
        finally:
            server.stop()


def test_a_services_exposures_reach_the_report_through_the_kits_outbox(
    tmp_path: Path,
    control: MeshServer,
    kafka_bootstrap: str,
    registry_url: str,
    keys: dict[str, str],
) -> None:
    key = keys["shopfront"]
    with shopfront(tmp_path, control, kafka_bootstrap, registry_url) as experiments:
        assert key in experiments.definitions  # the live version, watched from control
        assigned = [experiments.assign(key, f"visitor-{i}").variant for i in range(40)]
        for i in range(40):
            experiments.assign(key, f"visitor-{i}")  # seen before: no second exposure
        got = report_with(control, key, 40)
    assert {v.variant: v.units for v in got.variants} == {
        "control": assigned.count("control"),
        "buy-now": assigned.count("buy-now"),
    }
    assert json.loads(got.definition) == definition()


def test_the_sample_ratio_check_fires_on_a_deliberately_skewed_assignment(
    capsys: pytest.CaptureFixture[str],
    control: MeshServer,
    kafka_bootstrap: str,
    registry_url: str,
    keys: dict[str, str],
) -> None:
    key = keys["skewed"]
    code = cli.main(
        [
            "experiments", "simulate", key, "--units", str(UNITS),
            "--rates", "control=0.10,buy-now=0.12", "--skew", str(SKEW), "--seed", "16",
            "--bootstrap", kafka_bootstrap, "--registry", registry_url,
            "--target", f"127.0.0.1:{control.port}", "--token", TEST_ISSUER.token("support"),
        ]
    )  # fmt: skip
    out, _ = capsys.readouterr()
    assert code == 0, out
    exposed = {
        line.split(":")[0]: int(line.split(": ")[1].split()[0])
        for line in out.splitlines()
        if " exposures" in line
    }
    got = report_with(control, key, sum(exposed.values()))
    assert {v.variant: v.units for v in got.variants} == exposed
    assert got.sample_ratio.mismatch, got.sample_ratio
    assert got.sample_ratio.p_value < 0.001
    # And the command says so, loudly.
    code = cli.main(
        ["experiments", "report", key, "--target", f"127.0.0.1:{control.port}",
         "--token", TEST_ISSUER.token("support")]
    )  # fmt: skip
    out, _ = capsys.readouterr()
    assert code == 0
    assert "WARNING: SAMPLE RATIO MISMATCH" in out


def test_fair_traffic_passes_the_check_and_counts_what_was_published(
    control: MeshServer, kafka_bootstrap: str, registry_url: str, keys: dict[str, str]
) -> None:
    key = keys["fair"]
    experiment = parse_experiments({"experiments": {key: definition()}})[key]
    published = simulate(
        experiment,
        units=UNITS,
        rates={"control": 0.10, "buy-now": 0.12},
        bootstrap=kafka_bootstrap,
        registry=registry_url,
        seed=11,
    )
    got = report_with(control, key, sum(published.exposed.values()))
    assert {v.variant: (v.units, v.conversions) for v in got.variants} == {
        k: (published.exposed[k], published.converted[k]) for k in ("control", "buy-now")
    }
    assert not got.sample_ratio.mismatch, got.sample_ratio
    control_line, variant_line = got.variants
    assert variant_line.ci_low < variant_line.difference < variant_line.ci_high
    assert 0 < variant_line.p_value <= 1 and control_line.p_value == 1
