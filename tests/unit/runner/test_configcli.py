"""``mesh config`` against a real control server (the kit-built ConfigService of
tests/unit/control/servers.py): merge sets that retry on a concurrent change, replace by file,
refusals that name the field (exit 1), usage errors (exit 2), history with rollbacks, client
status, schemas, and the role each command needs."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import grpc
import pytest
from support.tokens import TEST_ISSUER, authorized
from unit.control.servers import config_server

from mesh.control.v1 import control_pb2 as pb
from mesh.control.v1 import control_pb2_grpc as pb_grpc
from mesh_runner import cli
from mesh_runner.configcli import ConfigClient, UsageError, merge, parse_value


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db = tmp_path_factory.mktemp("control") / "control.db"
    with config_server(db) as server:
        yield f"127.0.0.1:{server.port}"


@pytest.fixture(autouse=True)
def no_ambient_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MESH_TOKEN", raising=False)


def mesh(target: str, *args: str, role: str = "admin") -> int:
    return cli.main(["config", *args, "--target", target, "--token", TEST_ISSUER.token(role)])


def run(
    capsys: pytest.CaptureFixture[str], target: str, *args: str, role: str = "admin"
) -> tuple[int, str, str]:
    code = mesh(target, *args, role=role)
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------------ values and merges


@pytest.mark.parametrize(
    ("text", "value"),
    [("10", 10), ("true", True), ('"10"', "10"), ("[1, 2]", [1, 2]), ("on", "on"), ("", "")],
)
def test_a_value_is_json_when_it_parses_else_text(text: str, value: object) -> None:
    assert parse_value(text) == value


def test_merge_sets_nests_and_unsets_without_touching_the_original() -> None:
    original = {"a": 1, "limits": {"orders": 5, "x": 1}}
    merged = merge(original, ["limits.orders=7", 'new.deep.key="v"', "b=x=y"], ["limits.x"])
    assert merged == {"a": 1, "b": "x=y", "limits": {"orders": 7}, "new": {"deep": {"key": "v"}}}
    assert original == {"a": 1, "limits": {"orders": 5, "x": 1}}
    assert merge(original, [], ["nothing.here"]) == original


@pytest.mark.parametrize(("assignment"), ["novalue", "=1", "a..b=1", "a.=1", "a.b=1"])
def test_a_malformed_assignment_is_a_usage_error(assignment: str) -> None:
    with pytest.raises(UsageError):
        merge({"a": 5}, [assignment])


# ------------------------------------------------------------------------------ the server


def test_set_merges_into_the_current_document_and_get_prints_it(
    capsys: pytest.CaptureFixture[str], target: str
) -> None:
    code, out, _ = run(capsys, target, "set", "cli-merge", "a=1", "b.c=true", "--reason", "start")
    assert (code, out.strip()) == (0, "cli-merge: version 1 stored (was 0)")
    code, out, _ = run(capsys, target, "set", "cli-merge", "a=2", "--unset", "b.c")
    assert (code, out.strip()) == (0, "cli-merge: version 2 stored (was 1)")
    code, out, _ = run(capsys, target, "get", "cli-merge", role="support")
    assert code == 0 and json.loads(out) == {"a": 2, "b": {}}
    code, out, _ = run(capsys, target, "get", "cli-merge", "--version", "1", "--json")
    got = json.loads(out)
    assert got["version"] == 1 and got["document"] == {"a": 1, "b": {"c": True}}
    assert (got["author"], got["reason"], got["rollback_of"]) == ("test-admin", "start", 0)
    assert got["create_time"].endswith("Z")


def test_a_refused_change_exits_1_naming_the_field(
    capsys: pytest.CaptureFixture[str], target: str
) -> None:
    code, _, err = run(capsys, target, "set", "orders", "max_lines_per_order=0")
    assert code == 1
    assert "INVALID_ARGUMENT" in err and "max_lines_per_order: must be at least 1" in err
    code, _, err = run(capsys, target, "set", "orders", "max_lines_per_orders=5")
    assert code == 1 and "max_lines_per_orders: is not a field" in err
    code, out, _ = run(capsys, target, "set", "orders", "max_lines_per_order=1")
    assert code == 0
    code, out, _ = run(capsys, target, "get", "orders")
    assert json.loads(out) == {"max_lines_per_order": 1}


def test_if_absent_seeds_an_empty_namespace_and_never_overwrites_a_live_change(
    capsys: pytest.CaptureFixture[str], target: str, tmp_path: Path
) -> None:
    """What `mesh up` does with the shop's documents: a seed, not a reset."""
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps({"greeting": "hello"}))
    code, out, _ = run(capsys, target, "set", "seeded", "--if-absent", "--file", str(seed))
    assert code == 0 and "version 1 stored" in out
    assert run(capsys, target, "set", "seeded", "greeting=live")[0] == 0
    code, out, _ = run(capsys, target, "set", "seeded", "--if-absent", "--file", str(seed))
    assert code == 0 and "kept version 2" in out
    code, out, _ = run(capsys, target, "get", "seeded")
    assert json.loads(out) == {"greeting": "live"}


def test_kit_namespaces_are_checked_with_the_parse_every_client_runs(
    capsys: pytest.CaptureFixture[str], target: str, tmp_path: Path
) -> None:
    """Beyond its JSON Schema, an experiments or flags document every client would NACK is
    refused by control itself, naming the field."""
    skewed = {
        "experiments": {
            "cta": {"variants": [{"key": "a", "weight": 0.7}, {"key": "b", "weight": 0.7}]}
        }
    }
    path = tmp_path / "experiments.json"
    path.write_text(json.dumps(skewed))
    code, _, err = run(capsys, target, "set", "experiments", "--file", str(path))
    assert code == 1
    assert "experiments.cta.variants" in err and "add up to 1.4" in err
    bad_default = {
        "flags": {"f": {"state": "ENABLED", "variants": {"on": True}, "defaultVariant": "off"}}
    }
    path.write_text(json.dumps(bad_default))
    code, _, err = run(capsys, target, "set", "flags", "--file", str(path))
    assert code == 1 and "flags.f.defaultVariant" in err
    fine = {
        "experiments": {
            "cta": {"variants": [{"key": "a", "weight": 0.5}, {"key": "b", "weight": 0.5}]}
        }
    }
    path.write_text(json.dumps(fine))
    assert run(capsys, target, "set", "experiments", "--file", str(path))[0] == 0


def test_set_file_replaces_the_document_as_written(
    capsys: pytest.CaptureFixture[str],
    target: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run(capsys, target, "set", "cli-file", "old=1")
    text = '{"new": 1.10}\n'
    (tmp_path / "doc.json").write_text(text)
    code, out, _ = run(capsys, target, "set", "cli-file", "--file", str(tmp_path / "doc.json"))
    assert (code, out.strip()) == (0, "cli-file: version 2 stored (was 1)")
    code, out, _ = run(capsys, target, "get", "cli-file")
    assert out == text + "\n"  # as stored: 1.10 keeps its form
    monkeypatch.setattr("sys.stdin", io.StringIO('{"from": "stdin"}'))
    code, out, _ = run(capsys, target, "set", "cli-file", "--file", "-")
    assert code == 0
    code, _, err = run(capsys, target, "set", "cli-file", "--file", "-")
    assert code == 1 and "document: is not JSON" in err  # stdin is empty now


@pytest.mark.parametrize(
    "args",
    [
        ("set", "cli-usage", "novalue"),
        ("set", "cli-usage"),
        ("set", "cli-usage", "a=1", "--file", "x.json"),
        ("set", "cli-usage", "--file", "/nonexistent/x.json"),
    ],
)
def test_usage_errors_exit_2_before_any_change(
    capsys: pytest.CaptureFixture[str], target: str, args: tuple[str, ...]
) -> None:
    code, _, err = run(capsys, target, *args)
    assert code == 2 and err.startswith("mesh config set: ")
    assert run(capsys, target, "get", "cli-usage")[0] == 1  # nothing was stored


def test_a_key_under_a_value_that_is_not_an_object_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], target: str
) -> None:
    run(capsys, target, "set", "cli-scalar", "a=5")
    code, _, err = run(capsys, target, "set", "cli-scalar", "a.b=1")
    assert code == 2 and "a is 5, not an object" in err


def test_concurrent_sets_of_different_keys_all_land(target: str) -> None:
    token = TEST_ISSUER.token("admin")

    def bump(key: str) -> None:
        with ConfigClient(target, token) as client:
            for i in range(1, 6):
                assignment = [f"{key}={i}"]
                client.update("cli-race", partial(merge, assignments=assignment), attempts=50)

    threads = [threading.Thread(target=bump, args=(f"k{n}",)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with ConfigClient(target, token) as client:
        current = client.get("cli-race")
    assert json.loads(current.document) == {"k0": 5, "k1": 5, "k2": 5}
    assert current.version == 15  # every set stored once: no change lost, none doubled


def test_history_lists_when_who_why_and_rollbacks(
    capsys: pytest.CaptureFixture[str], target: str
) -> None:
    run(capsys, target, "set", "cli-history", "v=1", "--reason", "first")
    run(capsys, target, "set", "cli-history", "v=2", "--reason", "second")
    code, out, _ = run(capsys, target, "rollback", "cli-history", "1", "--reason", "undo")
    assert (code, out.strip()) == (
        0,
        "cli-history: version 3 stored, with the document of version 1",
    )
    code, out, _ = run(capsys, target, "history", "cli-history", role="support")
    lines = out.splitlines()
    assert lines[0].split() == ["VERSION", "WHEN", "(UTC)", "AUTHOR", "REASON"]
    assert lines[1].split()[0] == "3" and lines[1].endswith("undo (rollback of 1)")
    assert lines[2].split()[0] == "2" and "test-admin" in lines[2] and lines[2].endswith("second")
    assert lines[3].split()[0] == "1" and lines[3].endswith("first")
    code, out, _ = run(capsys, target, "history", "cli-history", "--limit", "2", "--json")
    assert [(v["version"], v["rollback_of"]) for v in json.loads(out)] == [(3, 1), (2, 0)]
    code, out, _ = run(capsys, target, "get", "cli-history")
    assert json.loads(out) == {"v": 1}
    code, _, err = run(capsys, target, "rollback", "cli-history", "9")
    assert code == 1 and "NOT_FOUND" in err


def test_status_shows_each_clients_verdict(capsys: pytest.CaptureFixture[str], target: str) -> None:
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.ConfigServiceStub(authorized(channel, service="orders"))
        for client, accepted, error in (("orders@a:1", True, ""), ("orders@b:2", False, "bad")):
            stub.ReportStatus(
                pb.ReportStatusRequest(
                    namespace="cli-status",
                    version=4,
                    client=client,
                    accepted=accepted,
                    error=error,
                    running_version=4 if accepted else 3,
                ),
                timeout=5,
            )
    code, out, _ = run(capsys, target, "status", "cli-status", role="support")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["CLIENT", "RUNS", "VERDICT"]
    assert lines[1].split()[:4] == ["orders@a:1", "4", "ACK", "4"]
    assert lines[2].split()[:4] == ["orders@b:2", "3", "NACK", "4"] and lines[2].endswith("bad")
    _, out, _ = run(capsys, target, "status", "cli-status", "--json")
    assert [(c["client"], c["accepted"], c["running_version"]) for c in json.loads(out)] == [
        ("orders@a:1", True, 4),
        ("orders@b:2", False, 3),
    ]


def test_schema_prints_and_registers(
    capsys: pytest.CaptureFixture[str], target: str, tmp_path: Path
) -> None:
    code, out, _ = run(capsys, target, "schema", "orders", role="support")
    assert code == 0 and json.loads(out)["properties"]["max_lines_per_order"]["maximum"] == 100
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps({"type": "object", "required": ["must"]}))
    run(capsys, target, "set", "cli-schema", "other=1")
    code, _, err = run(capsys, target, "schema", "cli-schema", "--set", str(schema))
    assert code == 1 and "FAILED_PRECONDITION" in err and "must: is required" in err
    schema.write_text(json.dumps({"type": "object"}))
    code, out, _ = run(capsys, target, "schema", "cli-schema", "--set", str(schema))
    assert (code, out.strip()) == (0, "cli-schema: schema registered (by test-admin)")


def test_ls_lists_namespaces(capsys: pytest.CaptureFixture[str], target: str) -> None:
    run(capsys, target, "set", "cli-ls", "a=1")
    code, out, _ = run(capsys, target, "ls", "--json", role="support")
    assert code == 0
    found = {n["namespace"]: n for n in json.loads(out)}
    assert found["cli-ls"]["version"] == 1 and found["orders"]["has_schema"] is True
    _, out, _ = run(capsys, target, "ls")
    assert out.splitlines()[0].split() == ["NAMESPACE", "VERSION", "SCHEMA", "UPDATED", "(UTC)"]


def test_changes_need_an_admin_and_reads_staff(
    capsys: pytest.CaptureFixture[str], target: str
) -> None:
    code, _, err = run(capsys, target, "set", "cli-roles", "a=1", role="support")
    assert code == 1 and "PERMISSION_DENIED" in err and "admin role" in err
    code, _, err = run(capsys, target, "get", "cli-roles", role="customer")
    assert code == 1 and "PERMISSION_DENIED" in err and "support role" in err
    code, _, err = run(capsys, target, "get", "cli-roles", role="support")
    assert code == 1 and "NOT_FOUND" in err and "no document yet" in err


def test_no_service_at_the_target_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "127.0.0.1:9", "get", "orders")
    assert code == 1 and "UNAVAILABLE" in err and "mesh ps" in err
