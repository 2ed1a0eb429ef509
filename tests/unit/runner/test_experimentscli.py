"""``mesh experiments`` against a real control server built by the kit (ConfigService and
ExperimentService over one database, no Kafka: the exposures are written into its read model
directly): the report's table with its sample-ratio line (a WARNING when it fires) and its JSON,
ls, the usage errors of simulate, and the token each needs. Simulating into Kafka and reading the
report back is tests/integration/test_experiments_report.py."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from support.tokens import TEST_ISSUER, authorized

from control.adapters import experiments_sqlite
from control.adapters.sqlite import MIGRATIONS, snapshots
from control.app.experiments import ExperimentAnalysis, Exposure
from control.bootstrap import build_config
from control.config import Settings
from control.entrypoints.experiments_grpc import ExperimentServicer
from mesh.control.v1 import control_pb2 as pb
from mesh.control.v1 import control_pb2_grpc as pb_grpc
from mesh_runner import cli
from mesh_runner.experimentscli import UsageError, format_report, parse_rates
from meshkit.control.experiments import Experiment, Variant, assign_unit
from meshkit.db import Database
from meshkit.server import ServiceBinding
from meshkit.service import Service, ServiceContext, binding
from schema_registry.server import running_server
from schema_registry.storage import MemoryStorage

ALL_MIGRATIONS = (*MIGRATIONS, experiments_sqlite.MIGRATION)
DOCUMENT = {
    "experiments": {
        "checkout-cta": {
            "variants": [{"key": "control", "weight": 0.5}, {"key": "buy-now", "weight": 0.5}],
            "metric": "order_confirmed",
        },
        "skewed": {
            "variants": [{"key": "control", "weight": 0.5}, {"key": "b", "weight": 0.5}],
            "metric": "order_confirmed",
        },
        "paused": {"variants": [{"key": "a"}, {"key": "b"}], "status": "stopped"},
    }
}


def build(ctx: ServiceContext[Settings]) -> list[ServiceBinding]:
    analysis = ExperimentAnalysis(
        lambda: experiments_sqlite.reads(ctx.db),
        experiments_sqlite.StoredDefinitions(snapshots(ctx.db)),
    )
    servicer = ExperimentServicer(analysis)
    return [
        *build_config(ctx),
        binding(servicer, pb_grpc.add_ExperimentServiceServicer_to_server),
    ]


def fill(db_path: Path) -> None:
    """checkout-cta: 400 units split by the real assignment, some converted; skewed: 300 vs 200."""
    at = datetime.datetime(2026, 12, 6, tzinfo=datetime.UTC)
    experiment = Experiment("checkout-cta", (Variant("control", 0.5), Variant("buy-now", 0.5)))
    db = Database(db_path, ALL_MIGRATIONS)
    try:
        with db.transaction() as conn:
            store = experiments_sqlite.SqliteExperimentStore(conn)
            for i in range(400):
                unit = f"u{i}"
                variant = str(assign_unit(experiment, unit).variant)
                store.add_exposure(Exposure(f"e{i}", "checkout-cta", variant, unit, at, "t", 1))
            for i in range(500):
                variant = "control" if i < 300 else "b"
                store.add_exposure(Exposure(f"s{i}", "skewed", variant, f"u{i}", at, "t", 1))
    finally:
        db.close()


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db_path = tmp_path_factory.mktemp("control") / "control.db"
    fill(db_path)
    service = Service[Settings]("control", build, settings=Settings, migrations=ALL_MIGRATIONS)
    # An empty registry of its own: the kit keeps no audit outbox (so no relay dials a broker
    # that is not there), and control logs its changes instead.
    storage = MemoryStorage()
    with running_server(storage) as registry_url:
        yield from _serve(service, db_path, registry_url)
    storage.close()


def _serve(service: Service[Settings], db_path: Path, registry_url: str) -> Iterator[str]:
    server = service.create(
        Settings(
            port=0,
            db_path=db_path,
            grace_seconds=0.2,
            schema_registry_url=registry_url,
            auth_jwks_url=TEST_ISSUER.env["MESH_AUTH_JWKS_URL"],
            auth_issuer=TEST_ISSUER.env["MESH_AUTH_ISSUER"],
            auth_audience=TEST_ISSUER.env["MESH_AUTH_AUDIENCE"],
        )
    )
    server.start()
    try:
        address = f"127.0.0.1:{server.port}"
        with grpc.insecure_channel(address) as channel:
            pb_grpc.ConfigServiceStub(authorized(channel, "admin")).SetConfig(
                pb.SetConfigRequest(namespace="experiments", document=json.dumps(DOCUMENT)),
                timeout=10,
            )
        yield address
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def no_ambient_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MESH_TOKEN", raising=False)


def run(
    capsys: pytest.CaptureFixture[str], target: str, *args: str, role: str = "support"
) -> tuple[int, str, str]:
    code = cli.main(["experiments", *args, "--target", target, "--token", TEST_ISSUER.token(role)])
    out, err = capsys.readouterr()
    return code, out, err


def test_report_prints_a_line_per_variant_and_a_quiet_sample_ratio_line(
    capsys: pytest.CaptureFixture[str], target: str
) -> None:
    code, out, _ = run(capsys, target, "report", "checkout-cta")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("experiment checkout-cta") and "order_confirmed" in lines[0]
    assert lines[1].split()[:3] == ["VARIANT", "WEIGHT", "UNITS"]
    assert lines[2].split()[0] == "control" and "(control)" in lines[2]
    assert lines[3].split()[0] == "buy-now" and "[" in lines[3]
    assert lines[4].startswith("sample ratio: chi-square")
    assert "WARNING" not in out


def test_report_warns_loudly_when_the_split_does_not_match_the_weights(
    capsys: pytest.CaptureFixture[str], target: str
) -> None:
    code, out, _ = run(capsys, target, "report", "skewed")
    assert code == 0
    (warning,) = [line for line in out.splitlines() if line.startswith("WARNING")]
    assert "SAMPLE RATIO MISMATCH" in warning and "(1 df)" in warning


def test_report_json_is_the_contracts_report(
    capsys: pytest.CaptureFixture[str], target: str
) -> None:
    code, out, _ = run(capsys, target, "report", "skewed", "--json")
    assert code == 0
    report = json.loads(out)
    assert [(v["variant"], int(v["units"])) for v in report["variants"]] == [
        ("control", 300),
        ("b", 200),
    ]
    assert report["sample_ratio"]["mismatch"] is True
    assert json.loads(report["definition"])["metric"] == "order_confirmed"


def test_report_of_an_unknown_experiment_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], target: str
) -> None:
    code, _, err = run(capsys, target, "report", "nope")
    assert code == 2 and "NOT_FOUND" in err


def test_report_needs_a_staff_or_service_token(
    capsys: pytest.CaptureFixture[str], target: str
) -> None:
    code, _, err = run(capsys, target, "report", "checkout-cta", role="customer")
    assert code == 1 and "PERMISSION_DENIED" in err


def test_ls_lists_the_namespace(capsys: pytest.CaptureFixture[str], target: str) -> None:
    code, out, _ = run(capsys, target, "ls")
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert set(rows) == {"checkout-cta", "paused", "skewed"}
    assert "control:0.5 buy-now:0.5" in rows["checkout-cta"]
    assert rows["paused"].split()[1] == "stopped"
    code, out, _ = run(capsys, target, "ls", "--json")
    assert {e["key"] for e in json.loads(out)} == {"checkout-cta", "paused", "skewed"}


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["simulate", "nope", "--units", "10", "--rates", "a=0.1"], "no experiment 'nope'"),
        (["simulate", "paused", "--units", "10", "--rates", "a=0.1"], "is stopped"),
        (["simulate", "checkout-cta", "--units", "10", "--rates", "x=0.1"], "not variants"),
        (["simulate", "checkout-cta", "--units", "10", "--rates", "control=2"], "control=2"),
        (["simulate", "checkout-cta", "--units", "0", "--rates", "control=0.1"], "--units"),
    ],
)
def test_simulate_refuses_what_it_cannot_do(
    capsys: pytest.CaptureFixture[str], target: str, args: list[str], says: str
) -> None:
    code, _, err = run(capsys, target, *args, "--bootstrap", "127.0.0.1:9")
    assert code == 2 and says in err


def test_rates_parse_and_name_a_bad_one() -> None:
    assert parse_rates("control=0.10, buy-now=0.12") == {"control": 0.10, "buy-now": 0.12}
    for bad in ("", "control", "control=x", "=0.1", "b=-0.1"):
        with pytest.raises(UsageError):
            parse_rates(bad)


def test_the_table_says_when_the_experiment_is_no_longer_defined() -> None:
    report: dict[str, Any] = {
        "key": "gone",
        "metric": "",
        "control": "control",
        "definition": "",
        "variants": [
            {"variant": "control", "weight": 0.5, "units": "3", "conversions": "0", "rate": 0.0,
             "difference": 0.0, "ci_low": 0.0, "ci_high": 0.0, "p_value": 1.0},
        ],
        "sample_ratio": {"chi_square": 0.0, "degrees_of_freedom": 1, "p_value": 1.0,
                         "mismatch": False},
    }  # fmt: skip
    text = format_report(report)
    assert "not defined any more" in text and "no conversions counted" in text
