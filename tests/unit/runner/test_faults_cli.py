"""`mesh faults set|clear|ls`: the flags' parsing, the file it writes (whole, by rename), and
that the kit's own reader (meshkit.faults.FaultInjector, what every service runs) takes it."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from mesh_runner import cli
from mesh_runner import faults as mesh_faults
from meshkit.faults import FaultInjector

PAYMENTS_ALL = "shop.payments.v1.PaymentsService/*"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A mesh.toml with payments and shipping (never started: the command only edits files)."""
    (tmp_path / "mesh.toml").write_text(
        '[[component]]\nname = "payments"\nport = 1\ncommand = ["x"]\nhealth = "grpc"\n'
        '[[component]]\nname = "shipping"\nport = 2\ncommand = ["x"]\nhealth = "grpc"\n'
    )
    return tmp_path


def mesh(root: Path, *args: str) -> int:
    return cli.main(["--root", str(root), "faults", *args])


def test_the_flags_become_the_kits_format() -> None:
    assert mesh_faults.parse_abort("unavailable:20") == {"code": "UNAVAILABLE", "percent": 20}
    assert mesh_faults.parse_abort("INTERNAL:2.5") == {"code": "INTERNAL", "percent": 2.5}
    assert mesh_faults.parse_delay("500:100") == {"ms": 500, "percent": 100}
    assert mesh_faults.parse_drop("5") == {"percent": 5}
    for bad, words in (
        (lambda: mesh_faults.parse_abort("UNAVAILABLE"), "give CODE:PERCENT"),
        (lambda: mesh_faults.parse_abort("OK:10"), "abort.code"),
        (lambda: mesh_faults.parse_abort("NOPE:10"), "'NOPE' is not a gRPC status"),
        (lambda: mesh_faults.parse_delay("fast:10"), "give MILLISECONDS:PERCENT"),
        (lambda: mesh_faults.parse_drop("101"), "drop.percent"),
        (lambda: mesh_faults.parse_drop("lots"), "drop.percent"),
        (lambda: mesh_faults.check_method("PaymentsService"), "package.Service/Method"),
    ):
        with pytest.raises(mesh_faults.FaultError, match=words):
            bad()
    assert mesh_faults.check_method("*") == "*"
    assert mesh_faults.check_method(PAYMENTS_ALL) == PAYMENTS_ALL


def test_set_replaces_the_same_method_and_kind_and_adds_the_rest() -> None:
    abort20 = {"method": "*", "abort": {"code": "UNAVAILABLE", "percent": 20}}
    abort50 = {"method": "*", "abort": {"code": "INTERNAL", "percent": 50}}
    delay = {"method": "*", "delay": {"ms": 100, "percent": 100}}
    other = {"method": PAYMENTS_ALL, "abort": {"code": "UNAVAILABLE", "percent": 1}}
    faults = mesh_faults.with_fault([], abort20)
    faults = mesh_faults.with_fault(faults, other)
    faults = mesh_faults.with_fault(faults, abort50)
    assert faults == [abort50, other]
    # A hand-written entry with two kinds keeps the other kind when one is replaced.
    both = {"method": "*", "delay": {"ms": 5, "percent": 1}, "drop": {"percent": 2}}
    assert mesh_faults.with_fault([both], delay) == [
        {"method": "*", "delay": {"ms": 100, "percent": 100}, "drop": {"percent": 2}}
    ]
    assert mesh_faults.describe(both) == "delay 5 ms 1% + drop 2% on *"


def test_set_writes_what_the_kits_reader_applies_and_clear_ends_it(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert mesh(root, "set", "payments", "--abort", "UNAVAILABLE:20") == 0
    assert mesh(root, "set", "payments", "--method", PAYMENTS_ALL, "--delay", "500:100") == 0
    path = root / ".mesh" / "faults" / "payments.json"
    assert json.loads(path.read_text()) == {
        "faults": [
            {"method": "*", "abort": {"code": "UNAVAILABLE", "percent": 20}},
            {"method": PAYMENTS_ALL, "delay": {"ms": 500, "percent": 100}},
        ]
    }
    assert [p.name for p in path.parent.iterdir()] == ["payments.json"]  # no temporary left
    out = capsys.readouterr().out
    assert "payments: abort UNAVAILABLE 20% on *" in out

    # What payments itself would read: its injector finds the file through mesh.toml.
    injector = FaultInjector("payments", {"MESH_CONFIG": str(root / "mesh.toml")})
    (abort, delay) = injector.faults
    assert abort.method == "*" and abort.abort is not None
    assert (abort.abort.code, abort.abort.percent) == (grpc.StatusCode.UNAVAILABLE, 20)
    assert delay.delay is not None and delay.delay.seconds == 0.5

    assert mesh(root, "ls", "--json") == 0
    assert list(json.loads(capsys.readouterr().out)) == ["payments"]
    assert mesh(root, "clear", "payments") == 0
    assert not path.exists()
    assert injector.check() and injector.faults == ()
    assert mesh(root, "ls") == 0
    assert "no faults set" in capsys.readouterr().out


def test_clear_without_a_service_clears_every_one(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert mesh(root, "set", "payments", "--drop", "5") == 0
    assert mesh(root, "set", "shipping", "--delay", "500:100") == 0
    assert mesh(root, "ls") == 0
    listing = capsys.readouterr().out
    assert "payments        drop 5% on *" in listing
    assert "shipping        delay 500 ms 100% on *" in listing
    assert mesh(root, "clear") == 0
    assert list((root / ".mesh" / "faults").glob("*.json")) == []


def test_usage_errors_name_what_is_wrong_and_leave_the_file(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert mesh(root, "set", "payments", "--drop", "5") == 0
    path = root / ".mesh" / "faults" / "payments.json"
    before = path.read_text()
    capsys.readouterr()
    assert mesh(root, "set", "nosuch", "--drop", "5") == 2
    assert "no component 'nosuch'" in capsys.readouterr().err
    assert mesh(root, "set", "payments", "--abort", "NOPE:5") == 2
    assert "'NOPE' is not a gRPC status code" in capsys.readouterr().err
    assert mesh(root, "set", "payments", "--method", "Capture", "--drop", "5") == 2
    assert "--method 'Capture'" in capsys.readouterr().err
    assert path.read_text() == before
    with pytest.raises(SystemExit):  # one kind per call
        mesh(root, "set", "payments", "--drop", "5", "--delay", "1:1")


def test_ls_refuses_a_file_the_kit_would_refuse_naming_the_field(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = root / ".mesh" / "faults" / "shipping.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"faults": [{"method": "*", "abort": {"code": "UNAVAILABLE"}}]}))
    assert mesh(root, "ls") == 2
    err = capsys.readouterr().err
    assert "shipping.json" in err and "faults[0].abort.percent" in err
    path.write_text("{not json")
    assert mesh(root, "ls") == 2
    assert "not JSON" in capsys.readouterr().err
