"""``mesh flags`` on a local file and against a real control server (the kit-built ConfigService
of tests/unit/control/servers.py, which validates the namespace with the shipped flags schema):
eval's line and --json, set checked as services check it, refusals naming the flag and field
(exit 1), usage errors (exit 2), the roles, and, through a LiveConfig watching that server, a
service's provider giving the answers ``mesh flags eval`` gives and hearing which flags a ``mesh
flags set`` changed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent, ProviderEventDetails
from support.events import wait_for
from support.tokens import TEST_ISSUER, authorized
from unit.control.servers import config_server

from mesh_runner import cli
from meshkit.control import LiveConfig, MeshFlagProvider, parse_flag_set
from meshkit.control.flags import EMPTY_FLAG_SET

EXPRESS = "checkout.express-shipping"
DE = '{"country": "DE"}'
FR_C1 = '{"targetingKey": "c-1", "country": "FR"}'
FLAG_SET: dict[str, Any] = {
    "$schema": "https://flagd.dev/schema/v0/flags.json",
    "metadata": {"flagSetId": "shop"},
    "flags": {
        EXPRESS: {
            "state": "ENABLED",
            "variants": {"on": True, "off": False},
            "defaultVariant": "off",
            "targeting": {
                "if": [
                    {"in": [{"var": "country"}, ["DE", "FR"]]},
                    {"fractional": [["on", 20], ["off", 80]]},
                    "off",
                ]
            },
        },
        "banner-color": {
            "state": "ENABLED",
            "variants": {"red": "#f00", "blue": "#00f"},
            "defaultVariant": "red",
            "targeting": {"if": [{"ends_with": [{"var": "email"}, "@staff.example"]}, "blue"]},
        },
        "old": {"state": "DISABLED", "variants": {"on": True, "off": False}},
    },
}


def write(folder: Path, flag_set: dict[str, Any], name: str = "flags.json") -> str:
    path = folder / name
    path.write_text(json.dumps(flag_set))
    return str(path)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["flags", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def no_ambient_token(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("MESH_TOKEN", raising=False)
    yield
    api.clear_providers()


# ------------------------------------------------------------------------------- a local file


def test_eval_prints_value_variant_reason_and_json(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    file = write(tmp_path, FLAG_SET)
    staff = '{"targetingKey": "u-1", "email": "ann@staff.example"}'
    assert run(capsys, "eval", "banner-color", "--file", file, "--context", staff) == (
        0,
        '"#00f"  blue  TARGETING_MATCH\n',
        "",
    )
    code, out, _ = run(capsys, "eval", "banner-color", "--file", file, "--json")
    assert code == 0 and json.loads(out) == {"value": "#f00", "variant": "red", "reason": "DEFAULT"}
    code, out, _ = run(
        capsys, "eval", EXPRESS, "--file", file, "--json", "--context", '{"country": "DE"}'
    )
    assert json.loads(out) == {
        "value": False,
        "variant": None,
        "reason": "ERROR",
        "error_code": "TARGETING_KEY_MISSING",
    }
    code, out, _ = run(
        capsys,
        "eval",
        EXPRESS,
        "--file",
        file,
        "--context",
        FR_C1,
    )
    value, variant, reason = out.split()
    assert (code, reason) == (0, "SPLIT") and (value, variant) in {("true", "on"), ("false", "off")}
    assert run(capsys, "eval", "old", "--file", file)[1] == "false  -  DISABLED\n"
    # Asked as a service asking with the wrong getter would: the default and the error code.
    code, out, _ = run(capsys, "eval", "banner-color", "--file", file, "--type", "boolean")
    assert (code, out) == (0, "false  -  ERROR  TYPE_MISMATCH\n")
    code, out, _ = run(
        capsys, "eval", EXPRESS, "--file", file, "--default", "true", "--context", DE
    )
    assert out == "true  -  ERROR  TARGETING_KEY_MISSING\n"


def test_eval_and_ls_refuse_what_a_service_would_and_usage_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    file = write(tmp_path, FLAG_SET)
    code, _, err = run(capsys, "eval", "nope", "--file", file)
    assert code == 1 and "no flag 'nope'" in err and EXPRESS in err
    for context in ("[1]", "{bad", '{"targetingKey": 7}'):
        code, _, err = run(capsys, "eval", EXPRESS, "--file", file, "--context", context)
        assert code == 2 and "--context" in err, err
    broken = json.loads(json.dumps(FLAG_SET))
    broken["flags"]["banner-color"]["defaultVariant"] = "green"
    code, _, err = run(capsys, "ls", "--file", write(tmp_path, broken, "broken.json"))
    assert code == 1 and "flags.banner-color.defaultVariant" in err
    code, _, err = run(capsys, "ls", "--file", str(tmp_path / "missing.json"))
    assert code == 2 and "cannot read" in err


def test_ls_lists_state_variants_default_and_targeting(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    file = write(tmp_path, FLAG_SET)
    code, out, _ = run(capsys, "ls", "--file", file)
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["FLAG", "STATE", "VARIANTS", "DEFAULT", "TARGETING"]
    assert lines[1].split() == [
        "banner-color",
        "ENABLED",
        'red="#f00",',
        'blue="#00f"',
        "red",
        "yes",
    ]
    assert lines[3].split() == ["old", "DISABLED", "on=true,", "off=false", "-", "-"]
    code, out, _ = run(capsys, "ls", "--file", file, "--json")
    assert json.loads(out)[1] == {
        "flag": EXPRESS,
        "state": "ENABLED",
        "variants": {"on": True, "off": False},
        "default": "off",
        "targeting": True,
    }


# ------------------------------------------------------------------------- the control server


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db = tmp_path_factory.mktemp("control") / "control.db"
    with config_server(db) as server:
        yield f"127.0.0.1:{server.port}"


def remote(
    capsys: pytest.CaptureFixture[str], target: str, *args: str, role: str
) -> tuple[int, str, str]:
    return run(capsys, *args, "--target", target, "--token", TEST_ISSUER.token(role))


def test_set_stores_the_file_and_a_service_evaluates_what_eval_prints(
    capsys: pytest.CaptureFixture[str], target: str, tmp_path: Path
) -> None:
    channel = grpc.insecure_channel(target)
    live = LiveConfig(
        "flags",
        parse=parse_flag_set,
        default=EMPTY_FLAG_SET,
        channel=authorized(channel, service="shipping"),
        cache_dir=tmp_path / "cache",
        client="shipping@test:1",
    )
    live.start(wait_s=5)
    provider = MeshFlagProvider(live)
    # A second provider on the same watch, its events recorded as the SDK receives them.
    events: list[tuple[ProviderEvent, ProviderEventDetails]] = []
    MeshFlagProvider(live).attach(lambda _p, event, details: events.append((event, details)))
    try:
        code, out, err = remote(
            capsys, target, "set", write(tmp_path, FLAG_SET), "--reason", "rollout", role="admin"
        )
        assert code == 0, err
        version = int(out.split("version ")[1].split()[0])
        assert out == f"flags: version {version} stored (was {version - 1}): 3 flags\n"
        assert live.wait_for_version(version, timeout=10)

        # A service's provider (fed by the watch) answers what `mesh flags eval` prints.
        api.set_provider_and_wait(provider, "shipping")
        service = api.get_client("shipping")
        for n in range(30):
            context = {"targetingKey": f"customer-{n}", "country": "DE"}
            code, out, _ = remote(
                capsys, target, "eval", EXPRESS, "--json", "--context", json.dumps(context),
                role="support",
            )  # fmt: skip
            details = service.get_boolean_details(
                EXPRESS, False, EvaluationContext(f"customer-{n}", {"country": "DE"})
            )
            assert json.loads(out) == {
                "value": details.value,
                "variant": details.variant,
                "reason": "SPLIT",
            }

        code, out, _ = remote(capsys, target, "ls", role="support")
        assert code == 0 and [line.split()[0] for line in out.splitlines()[1:]] == [
            "banner-color",
            EXPRESS,
            "old",
        ]

        # The next set: the provider hears which flags changed.
        changed = json.loads(json.dumps(FLAG_SET))
        changed["flags"]["banner-color"]["defaultVariant"] = "blue"
        events.clear()
        code, out, _ = remote(capsys, target, "set", write(tmp_path, changed), role="admin")
        assert code == 0
        # Subscribers hear a version right after it becomes current, on the watch thread.
        wait_for(lambda: bool(events), what="the configuration-changed event")
        assert [(e, d.flags_changed) for e, d in events] == [
            (ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, ["banner-color"])
        ]
        assert service.get_string_value("banner-color", "x") == "#00f"
    finally:
        live.close()
        channel.close()


def test_set_refuses_a_bad_set_before_storing_and_the_schema_refuses_the_rest(
    capsys: pytest.CaptureFixture[str], target: str, tmp_path: Path
) -> None:
    code, before, _ = remote(capsys, target, "ls", "--json", role="support")
    broken = json.loads(json.dumps(FLAG_SET))
    broken["flags"][EXPRESS]["targeting"] = {"if": [{"$ref": "staff"}, "on"]}
    code, out, err = remote(capsys, target, "set", write(tmp_path, broken), role="admin")
    assert code == 1 and out == ""
    assert f"flags.{EXPRESS}.targeting: $ref 'staff' names no entry of $evaluators" in err
    # Past the services' parse, the namespace's JSON Schema (flags.schema.json) still applies.
    odd = json.loads(json.dumps(FLAG_SET))
    odd["flags"][EXPRESS]["targeting"] = {"sem_ver": [{"var": "v"}, "=>", "1.0.0"]}
    code, _, err = remote(capsys, target, "set", write(tmp_path, odd), role="admin")
    assert code == 1 and "INVALID_ARGUMENT" in err
    assert f'flags["{EXPRESS}"].targeting.sem_ver[1]' in err  # the operator
    code, after, _ = remote(capsys, target, "ls", "--json", role="support")
    assert after == before  # nothing stored


def test_each_command_needs_its_role(
    capsys: pytest.CaptureFixture[str], target: str, tmp_path: Path
) -> None:
    code, _, err = remote(capsys, target, "set", write(tmp_path, FLAG_SET), role="support")
    assert code == 1 and "PERMISSION_DENIED" in err and "admin role" in err
    code, _, err = remote(capsys, target, "eval", EXPRESS, role="customer")
    assert code == 1 and "PERMISSION_DENIED" in err and "support role" in err
