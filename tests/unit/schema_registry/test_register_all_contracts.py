"""`schema-registry register-all` and `check DIR` over every contract type: events (.avsc), gRPC
contracts (.proto, subject = import path, imports as references) and the config service's
namespace schemas (config/<namespace>.schema.json), run as the real command against a real
in-process registry."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.registry import field, record, run_cli

from schema_registry.client import RegistryClient, subject_path
from schema_registry.server import running_server
from schema_registry.topics import discover_contracts, import_path, include_roots

REPO = Path(__file__).resolve().parents[3]

COMMON = """syntax = "proto3";
package demo.common.v1;
// Money in minor units.
message Money {
  string currency = 1;
  int64 minor = 2;
}
"""
HTTP = """syntax = "proto3";
package vendored.api;
message Rule {
  string get = 1;
}
"""
ORDERS = """syntax = "proto3";
package demo.orders.v1;
import "google/protobuf/timestamp.proto";
import "vendored/api/http.proto";
import "demo/common/v1/common.proto";
// An order.
message Order {
  string order_id = 1;
  demo.common.v1.Money total = 2;
  google.protobuf.Timestamp placed_at = 3;
  vendored.api.Rule route = 4;
}
service Orders {
  rpc Get(Order) returns (Order);
}
"""
CONFIG_V1 = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {"limit": {"type": "integer"}},
    "additionalProperties": False,
}


@pytest.fixture
def url() -> Iterator[str]:
    with running_server() as base:
        yield base


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def make_tree(root: Path) -> Path:
    """A proto/ like the repository's: buf.yaml modules `.` and `vendor`, an event, three
    .proto files (one vendored, one importing the others and a well-known type), a config
    namespace schema."""
    proto = root / "proto"
    write(
        proto / "buf.yaml",
        "version: v2\nmodules:\n  - path: .\n    excludes:\n"
        "      - vendor\n  - path: vendor\nlint:\n  use:\n    - STANDARD\n",
    )
    avro = proto / "demo" / "orders" / "v1" / "avro"
    write(avro / "topic.json", json.dumps({"topic": "orders.events.v1"}))
    write(avro / "order_placed.avsc", record("OrderPlaced", field("id"), namespace="demo.v1"))
    write(proto / "demo" / "common" / "v1" / "common.proto", COMMON)
    write(proto / "vendor" / "vendored" / "api" / "http.proto", HTTP)
    write(proto / "demo" / "orders" / "v1" / "orders.proto", ORDERS)
    write(proto / "demo" / "orders" / "v1" / "config" / "orders.schema.json", json.dumps(CONFIG_V1))
    return proto


def report(result: Any) -> dict[str, Any]:
    assert result.stderr == "", result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def by_subject(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["subject"]: e for e in data["results"]}


def get(url: str, path: str) -> Any:
    with RegistryClient(url) as client:
        response = client.get(path)
        assert response.ok, response.message
        return response.json()


def test_import_paths_start_at_buf_modules(tmp_path: Path) -> None:
    proto = make_tree(tmp_path).resolve()
    roots = include_roots(proto)
    assert roots == [proto, proto / "vendor"]
    assert import_path(proto / "vendor" / "vendored" / "api" / "http.proto", roots) == (
        "vendored/api/http.proto"
    )
    assert import_path(proto / "demo" / "common" / "v1" / "common.proto", roots) == (
        "demo/common/v1/common.proto"
    )
    assert include_roots(tmp_path) == [tmp_path]  # no buf.yaml: DIR itself


def test_discovery_orders_imports_first_and_skips_well_known_types(tmp_path: Path) -> None:
    contracts, problems = discover_contracts(make_tree(tmp_path))
    assert problems == []
    assert [(c.schema_type, c.subject) for c in contracts] == [
        ("AVRO", "orders.events.v1-demo.v1.OrderPlaced"),
        ("PROTOBUF", "demo/common/v1/common.proto"),
        ("PROTOBUF", "vendored/api/http.proto"),
        ("PROTOBUF", "demo/orders/v1/orders.proto"),
        ("JSON", "config.orders"),
    ]
    assert contracts[3].imports == ("vendored/api/http.proto", "demo/common/v1/common.proto")


def test_register_all_registers_every_type_with_references(url: str, tmp_path: Path) -> None:
    proto = make_tree(tmp_path)
    first = run_cli("register-all", str(proto), "--json", url=url)
    assert first.returncode == 0, first.stdout
    data = report(first)
    assert data["summary"] == {"new": 5, "unchanged": 0, "refused": 0}
    entries = by_subject(data)
    orders = entries["demo/orders/v1/orders.proto"]
    assert orders["schemaType"] == "PROTOBUF"
    assert orders["file"].endswith("proto/demo/orders/v1/orders.proto")
    assert entries["config.orders"]["schemaType"] == "JSON"
    assert entries["orders.events.v1-demo.v1.OrderPlaced"]["schemaType"] == "AVRO"
    held = get(url, f"/subjects/{subject_path('demo/orders/v1/orders.proto')}/versions/1")
    assert held["schemaType"] == "PROTOBUF"
    assert held["references"] == [
        {"name": "vendored/api/http.proto", "subject": "vendored/api/http.proto", "version": 1},
        {
            "name": "demo/common/v1/common.proto",
            "subject": "demo/common/v1/common.proto",
            "version": 1,
        },
    ]
    for subject in entries:
        level = get(url, f"/config/{subject_path(subject)}")["compatibilityLevel"]
        assert level == "BACKWARD_TRANSITIVE"
    human = run_cli("register-all", str(proto), url=url)
    assert human.returncode == 0
    assert "0 new, 5 unchanged, 0 refused" in human.stdout
    line = next(x for x in human.stdout.splitlines() if "orders.proto" in x)
    assert line.split()[:3] == ["unchanged", "demo/orders/v1/orders.proto", "PROTOBUF"]


def test_a_changed_import_gives_its_dependents_a_version_referencing_it(
    url: str, tmp_path: Path
) -> None:
    proto = make_tree(tmp_path)
    assert run_cli("register-all", str(proto), url=url).returncode == 0
    common = proto / "demo" / "common" / "v1" / "common.proto"
    write(common, COMMON.replace("}\n", "  string note = 3;\n}\n"))
    result = report(run_cli("register-all", str(proto), "--json", url=url))
    entries = by_subject(result)
    assert entries["demo/common/v1/common.proto"]["status"] == "new"
    assert entries["demo/orders/v1/orders.proto"]["status"] == "new"
    assert entries["vendored/api/http.proto"]["status"] == "unchanged"
    held = get(url, f"/subjects/{subject_path('demo/orders/v1/orders.proto')}/versions/2")
    assert {r["subject"]: r["version"] for r in held["references"]} == {
        "vendored/api/http.proto": 1,
        "demo/common/v1/common.proto": 2,
    }


def test_unmappable_protos_are_refused_with_their_dependents(url: str, tmp_path: Path) -> None:
    proto = tmp_path / "proto"
    write(proto / "a.proto", 'syntax = "proto3";\nimport "missing/b.proto";\nmessage A {}\n')
    write(proto / "c.proto", 'syntax = "proto3";\nimport "a.proto";\nmessage C {}\n')
    write(proto / "x.proto", 'syntax = "proto3";\nimport "y.proto";\nmessage X {}\n')
    write(proto / "y.proto", 'syntax = "proto3";\nimport "x.proto";\nmessage Y {}\n')
    write(proto / "ok.proto", 'syntax = "proto3";\n// import "a.proto";\nmessage Ok {}\n')
    result = run_cli("register-all", str(proto), "--json", url=url)
    assert result.returncode == 1
    data = json.loads(result.stdout)
    refused = {
        Path(e["file"]).name: e["messages"][0] for e in data["results"] if e["status"] == "refused"
    }
    assert "imports missing/b.proto, which is under none of" in refused["a.proto"]
    assert refused["c.proto"] == "imports a.proto, which cannot be registered"
    assert "import cycle" in refused["x.proto"] or "import cycle" in refused["y.proto"]
    assert by_subject(data)["ok.proto"]["status"] == "new"  # a commented import is no import


def test_check_dir_reports_every_break_with_its_path_and_registers_nothing(
    url: str, tmp_path: Path
) -> None:
    proto = make_tree(tmp_path)
    assert run_cli("register-all", str(proto), url=url).returncode == 0
    clean = run_cli("check", str(proto), url=url)
    assert clean.returncode == 0, clean.stdout
    assert "5 unchanged" in clean.stdout
    before = get(url, "/schemas?latestOnly=false")
    # one break of each type, plus a compatible change and a new file
    avsc = proto / "demo" / "orders" / "v1" / "avro" / "order_placed.avsc"
    write(avsc, record("OrderPlaced", field("id"), field("why"), namespace="demo.v1"))
    orders = proto / "demo" / "orders" / "v1" / "orders.proto"
    write(orders, ORDERS.replace("demo.common.v1.Money total = 2;", "int64 total = 2;"))
    config = proto / "demo" / "orders" / "v1" / "config" / "orders.schema.json"
    narrowed = {**CONFIG_V1, "properties": {"limit": {"type": "integer", "maximum": 10}}}
    write(config, json.dumps(narrowed))
    common = proto / "demo" / "common" / "v1" / "common.proto"
    write(common, COMMON.replace("}\n", "  string note = 3;\n}\n"))
    write(proto / "demo" / "new" / "v1" / "new.proto", 'syntax = "proto3";\nmessage N {}\n')
    result = run_cli("check", str(proto), "--json", url=url)
    assert result.returncode == 1
    entries = by_subject(report(result))
    assert entries["demo/common/v1/common.proto"]["status"] == "compatible"
    assert entries["demo/new/v1/new.proto"]["status"] == "new"
    assert entries["vendored/api/http.proto"]["status"] == "unchanged"
    broken = {s: e for s, e in entries.items() if e["status"] == "incompatible"}
    assert set(broken) == {
        "orders.events.v1-demo.v1.OrderPlaced",
        "demo/orders/v1/orders.proto",
        "config.orders",
    }
    assert "/fields/1" in broken["orders.events.v1-demo.v1.OrderPlaced"]["messages"][0]
    assert "#/Order/2" in " ".join(broken["demo/orders/v1/orders.proto"]["messages"])
    assert "#/properties/limit" in " ".join(broken["config.orders"]["messages"])
    assert get(url, "/schemas?latestOnly=false") == before  # nothing registered
    human = run_cli("check", str(proto), url=url)
    assert human.returncode == 1
    assert "3 incompatible" in human.stdout
    assert "#/Order/2" in human.stdout


def test_check_dir_marks_a_file_whose_import_is_not_registered_yet(
    url: str, tmp_path: Path
) -> None:
    proto = make_tree(tmp_path)
    assert run_cli("register-all", str(proto), url=url).returncode == 0
    write(
        proto / "demo" / "extra" / "v1" / "extra.proto",
        'syntax = "proto3";\npackage demo.extra.v1;\nmessage Extra {}\n',
    )
    orders = proto / "demo" / "orders" / "v1" / "orders.proto"
    write(
        orders,
        ORDERS.replace(
            'import "demo/common', 'import "demo/extra/v1/extra.proto";\nimport "demo/common'
        ),
    )
    result = run_cli("check", str(proto), "--json", url=url)
    assert result.returncode == 0, result.stdout
    entries = by_subject(report(result))
    assert entries["demo/extra/v1/extra.proto"]["status"] == "new"
    assert entries["demo/orders/v1/orders.proto"]["status"] == "unchecked"


def test_check_subject_file_infers_the_type_from_the_extension(url: str, tmp_path: Path) -> None:
    proto = make_tree(tmp_path)
    common = proto / "demo" / "common" / "v1" / "common.proto"
    assert run_cli("register", "money", str(common), url=url).returncode == 0
    assert get(url, "/subjects/money/versions/1")["schemaType"] == "PROTOBUF"
    write(common, COMMON.replace("int64 minor = 2;", "string minor = 2;"))
    result = run_cli("check", "money", str(common), url=url)
    assert result.returncode == 1
    assert "#/Money/2" in result.stdout
    as_avro = run_cli("check", "money", str(common), "--schema-type", "avro", url=url)
    assert as_avro.returncode == 1
    assert "not valid JSON" in as_avro.stdout  # --schema-type wins: read as Avro


def test_full_would_refuse_a_new_message_which_is_why_protos_get_backward_transitive(
    url: str, tmp_path: Path
) -> None:
    # Confluent's Protobuf rules: MESSAGE_ADDED is compatible, but seen from the old schema
    # (FORWARD) it is MESSAGE_REMOVED. A new RPC brings new messages, so FULL would refuse it.
    common = write(tmp_path / "common.proto", COMMON)
    for subject, level in (("full", "FULL"), ("backward", "BACKWARD_TRANSITIVE")):
        assert run_cli("config", subject, level, url=url).returncode == 0
        assert run_cli("register", subject, str(common), url=url).returncode == 0
    write(common, COMMON + "// A new request.\nmessage Quote {\n  string sku = 1;\n}\n")
    assert run_cli("check", "backward", str(common), url=url).returncode == 0
    full = run_cli("check", "full", str(common), url=url)
    assert full.returncode == 1
    assert "MESSAGE_REMOVED" in full.stdout


def test_the_repositorys_contracts_register_and_pass_the_gate(url: str) -> None:
    # What `mesh up` and CI run: every contract under proto/ registers, then `check` is clean.
    result = run_cli("register-all", "proto/", "--json", url=url, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    types = {e["schemaType"] for e in data["results"]}
    assert types == {"AVRO", "PROTOBUF", "JSON"}
    subjects = {e["subject"] for e in data["results"]}
    assert {"google/api/http.proto", "shop/orders/v1/orders.proto", "config.flags"} <= subjects
    gate = run_cli("check", "proto/", "--json", url=url, cwd=REPO)
    assert gate.returncode == 0, gate.stdout
    assert set(json.loads(gate.stdout)["summary"].items()) >= {("incompatible", 0), ("invalid", 0)}
