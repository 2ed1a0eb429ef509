"""The `schema-registry` command, run as a real subprocess against an in-process server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.registry import field, record, run_cli
from unit.schema_registry.fake_identity import FakeIdentity

from schema_registry.server import running_server

V1 = record("StockReserved", field("sku"), namespace="shop.inventory.v1")
V2_OK = record(
    "StockReserved",
    field("sku"),
    field("quantity", "int", default=1),
    namespace="shop.inventory.v1",
)
V2_BAD = record("StockReserved", field("sku"), field("warehouse"), namespace="shop.inventory.v1")


@pytest.fixture
def url() -> Iterator[str]:
    with running_server() as base:
        yield base


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["serve"],
        ["subjects"],
        ["versions"],
        ["get"],
        ["register"],
        ["check"],
        ["config"],
        ["mode"],
        ["delete"],
        ["register-all"],
    ],
)
def test_every_command_has_help(command: list[str]) -> None:
    result = run_cli(*command, "--help")
    assert result.returncode == 0
    assert "usage: schema-registry" in result.stdout


def test_usage_errors_exit_2() -> None:
    assert run_cli().returncode == 2
    assert run_cli("frobnicate").returncode == 2
    assert run_cli("register", "only-subject").returncode == 2
    assert run_cli("--url", "not a url", "subjects").returncode == 2


def test_an_unreachable_registry_is_a_failure_not_a_traceback(tmp_path: Path) -> None:
    result = run_cli("subjects", url="http://127.0.0.1:9")
    assert result.returncode == 1
    assert "no schema registry at http://127.0.0.1:9: nothing listens there" in result.stderr
    assert "Traceback" not in result.stderr


def test_url_defaults_to_the_environment(url: str) -> None:
    result = run_cli("subjects", "--json", env={"SCHEMA_REGISTRY_URL": url})
    assert result.returncode == 0
    assert json.loads(result.stdout) == []


def test_register_get_versions_subjects(url: str, tmp_path: Path) -> None:
    v1 = write(tmp_path / "v1.avsc", V1)
    registered = run_cli("register", "inv-value", str(v1), url=url)
    assert registered.returncode == 0, registered.stderr
    assert "inv-value: version 1 (schema id 1)" in registered.stdout
    as_json = run_cli("--json", "register", "inv-value", str(v1), url=url)
    assert json.loads(as_json.stdout)["version"] == 1
    assert run_cli("subjects", url=url).stdout.split() == ["inv-value"]
    assert run_cli("versions", "inv-value", url=url).stdout.split() == ["1"]
    shown = run_cli("get", "inv-value", url=url)
    assert shown.returncode == 0
    assert "# subject inv-value  version 1  id 1" in shown.stdout
    assert json.loads(shown.stdout.split("\n", 1)[1]) == json.loads(V1)
    got = run_cli("get", "inv-value", "1", "--json", url=url)
    assert json.loads(got.stdout)["id"] == 1
    missing = run_cli("get", "nope", url=url)
    assert missing.returncode == 1
    assert "40401" in missing.stderr


def test_check_is_the_ci_gate(url: str, tmp_path: Path) -> None:
    write(tmp_path / "v1.avsc", V1)
    run_cli("register", "inv-value", str(tmp_path / "v1.avsc"), url=url)
    ok = run_cli("check", "inv-value", str(write(tmp_path / "ok.avsc", V2_OK)), url=url)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "compatible" in ok.stdout
    bad = run_cli("check", "inv-value", str(write(tmp_path / "bad.avsc", V2_BAD)), url=url)
    assert bad.returncode == 1
    assert "INCOMPATIBLE" in bad.stdout
    assert "'warehouse'" in bad.stdout
    assert "/fields/1" in bad.stdout
    assert "READER_FIELD_MISSING_DEFAULT_VALUE" in bad.stdout
    as_json = json.loads(
        run_cli("check", "inv-value", str(tmp_path / "bad.avsc"), "--json", url=url).stdout
    )
    assert as_json["is_compatible"] is False
    assert as_json["incompatibilities"][0]["path"] == "/fields/1"
    fresh = run_cli("check", "brand-new", str(tmp_path / "bad.avsc"), url=url)
    assert fresh.returncode == 0, "nothing to be incompatible with"
    invalid = run_cli("check", "inv-value", str(write(tmp_path / "x.avsc", "{")), url=url)
    assert invalid.returncode == 1


def test_register_refuses_an_incompatible_schema_with_exit_1(url: str, tmp_path: Path) -> None:
    run_cli("register", "inv-value", str(write(tmp_path / "v1.avsc", V1)), url=url)
    refused = run_cli("register", "inv-value", str(write(tmp_path / "b.avsc", V2_BAD)), url=url)
    assert refused.returncode == 1
    assert "'warehouse'" in refused.stdout


def test_config_and_mode(url: str) -> None:
    assert run_cli("config", url=url).stdout.strip() == "global: BACKWARD"
    assert run_cli("config", "full", url=url).stdout.strip() == "global: FULL"
    assert run_cli("config", "s", url=url).stdout.strip() == "s: FULL"
    assert run_cli("config", "s", "NONE", url=url).returncode == 0
    assert json.loads(run_cli("config", "s", "--json", url=url).stdout) == {
        "compatibilityLevel": "NONE"
    }
    bad = run_cli("config", "s", "SIDEWAYS", url=url)
    assert bad.returncode == 1
    assert run_cli("mode", url=url).stdout.strip() == "global: READWRITE"
    assert run_cli("mode", "s", "READONLY", url=url).stdout.strip() == "s: READONLY"
    assert run_cli("mode", "s", url=url).stdout.strip() == "s: READONLY"
    assert run_cli("mode", "IMPORT", url=url).stdout.strip() == "global: IMPORT"


def test_delete_soft_then_permanent(url: str, tmp_path: Path) -> None:
    run_cli("register", "s", str(write(tmp_path / "v1.avsc", V1)), url=url)
    run_cli("register", "s", str(write(tmp_path / "v2.avsc", V2_OK)), url=url)
    assert "soft-deleted version(s) 2" in run_cli("delete", "s", "2", url=url).stdout
    too_soon = run_cli("delete", "s", "--permanent", url=url)
    assert too_soon.returncode == 1
    assert "40405" in too_soon.stderr
    assert run_cli("delete", "s", url=url).returncode == 0
    gone = run_cli("delete", "s", "--permanent", "--json", url=url)
    assert json.loads(gone.stdout) == [1, 2]
    assert run_cli("subjects", "--deleted", url=url).stdout.strip() == ""


def make_proto_tree(root: Path) -> Path:
    avro = root / "proto" / "shop" / "inventory" / "v1" / "avro"
    write(avro / "topic.json", json.dumps({"topic": "inventory.events.v1"}))
    write(avro / "StockReserved.avsc", V1)
    write(
        avro / "StockReleased.avsc",
        record("StockReleased", field("sku"), namespace="shop.inventory.v1"),
    )
    orders = root / "proto" / "shop" / "orders" / "v1" / "avro"
    write(orders / "topic.json", json.dumps({"topic": "orders.events.v1"}))
    write(
        orders / "OrderPlaced.avsc",
        record("OrderPlaced", field("order_id"), namespace="shop.orders.v1"),
    )
    return root / "proto"


def test_register_all_registers_new_then_reports_unchanged(url: str, tmp_path: Path) -> None:
    proto = make_proto_tree(tmp_path)
    first = run_cli("register-all", str(proto), url=url)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "3 new, 0 unchanged, 0 refused" in first.stdout
    subjects = run_cli("subjects", "--json", url=url)
    assert json.loads(subjects.stdout) == [
        "inventory.events.v1-shop.inventory.v1.StockReleased",
        "inventory.events.v1-shop.inventory.v1.StockReserved",
        "orders.events.v1-shop.orders.v1.OrderPlaced",
    ]
    level = run_cli("config", "orders.events.v1-shop.orders.v1.OrderPlaced", url=url)
    assert level.stdout.strip().endswith("BACKWARD_TRANSITIVE")
    again = run_cli("register-all", str(proto), "--json", url=url)
    assert again.returncode == 0
    report = json.loads(again.stdout)
    assert report["summary"] == {"new": 0, "unchanged": 3, "refused": 0}


def test_register_all_evolves_and_refuses(url: str, tmp_path: Path) -> None:
    proto = make_proto_tree(tmp_path)
    run_cli("register-all", str(proto), url=url)
    avro = proto / "shop" / "inventory" / "v1" / "avro"
    write(avro / "StockReserved.avsc", V2_OK)
    evolved = run_cli("register-all", str(proto), url=url)
    assert evolved.returncode == 0
    assert "1 new, 2 unchanged, 0 refused" in evolved.stdout
    write(avro / "StockReserved.avsc", V2_BAD)
    refused = run_cli("register-all", str(proto), url=url)
    assert refused.returncode == 1
    assert "0 new, 2 unchanged, 1 refused" in refused.stdout
    assert "'warehouse'" in refused.stdout


def test_register_all_refuses_files_without_a_topic(url: str, tmp_path: Path) -> None:
    write(tmp_path / "proto" / "loose" / "Thing.avsc", record("Thing", field("x")))
    result = run_cli("register-all", str(tmp_path / "proto"), url=url)
    assert result.returncode == 1
    assert "topic.json" in result.stdout
    assert run_cli("register-all", str(tmp_path / "nope"), url=url).returncode == 1


def test_the_repositorys_event_contracts_register(url: str) -> None:
    # What `mesh up` runs: every .avsc under proto/ maps to a topic and registers cleanly.
    repo = Path(__file__).resolve().parents[3]
    if not any((repo / "proto").rglob("*.avsc")):
        pytest.skip("no event schemas in proto/ yet")
    result = run_cli("register-all", "proto/", "--json", url=url, cwd=repo)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout)["summary"]
    assert summary["refused"] == 0
    assert summary["new"] >= 1


@pytest.fixture
def guarded() -> Iterator[tuple[str, FakeIdentity]]:
    identity = FakeIdentity(clients={"schema-registrar": ("s3cret", "schemas:write", ("service",))})
    with running_server(guard=identity.guard()) as base:
        yield base, identity


NO_CREDENTIALS = {"SCHEMA_REGISTRY_TOKEN": "", "SCHEMA_REGISTRY_BASIC_AUTH": ""}


def test_writes_to_a_guarded_registry_say_which_credentials_to_pass(
    guarded: tuple[str, FakeIdentity], tmp_path: Path
) -> None:
    url, _ = guarded
    v1 = write(tmp_path / "v1.avsc", V1)
    refused = run_cli("register", "inv-value", str(v1), url=url, env=NO_CREDENTIALS)
    assert refused.returncode == 1
    assert "Unauthorized" in refused.stderr and "--basic-auth" in refused.stderr
    assert "error_code 401" in refused.stderr
    shown = run_cli("subjects", url=url, env=NO_CREDENTIALS)
    assert shown.returncode == 0, "reads need nothing"


def test_token_and_basic_credentials_come_from_flags_or_the_environment(
    guarded: tuple[str, FakeIdentity], tmp_path: Path
) -> None:
    url, identity = guarded
    v1 = write(tmp_path / "v1.avsc", V1)
    token = identity.token()
    with_flag = run_cli("--token", token, "register", "a-value", str(v1), url=url)
    assert with_flag.returncode == 0, with_flag.stderr
    after_command = run_cli(
        "register", "b-value", str(v1), "--basic-auth", "schema-registrar:s3cret", url=url
    )
    assert after_command.returncode == 0, after_command.stderr
    from_env = run_cli(
        "config",
        "a-value",
        "FULL",
        url=url,
        env={**NO_CREDENTIALS, "SCHEMA_REGISTRY_BASIC_AUTH": "schema-registrar:s3cret"},
    )
    assert from_env.returncode == 0, from_env.stderr
    # A flag of either kind wins over both variables.
    flag_wins = run_cli(
        "--basic-auth",
        "schema-registrar:s3cret",
        "delete",
        "b-value",
        url=url,
        env={**NO_CREDENTIALS, "SCHEMA_REGISTRY_TOKEN": "stale"},
    )
    assert flag_wins.returncode == 0, flag_wins.stderr


def test_both_kinds_of_credentials_at_once_are_a_usage_error(url: str) -> None:
    both = run_cli("--token", "t", "--basic-auth", "c:s", "subjects", url=url)
    assert both.returncode == 2
    assert "not both" in both.stderr
    assert run_cli("--basic-auth", "no-colon", "subjects", url=url).returncode == 2


# ------------------------------------------------------------------ several registry URLs
class _Unhealthy:
    """A real HTTP server standing in for a registry instance that answers every request 503
    (as one does while it cannot reach its storage); counts what reaches it."""

    def __init__(self) -> None:
        import http.server
        import threading

        hits = self.hits = [0]

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                hits[0] += 1
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = b'{"error_code": 50003, "message": "storage unavailable"}'
                self.send_response(503)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = _answer  # noqa: N815 - http.server's names

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def unhealthy() -> Iterator[_Unhealthy]:
    server = _Unhealthy()
    try:
        yield server
    finally:
        server.close()


def _closed_port_url() -> str:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"  # nothing listens once it closes


def test_the_cli_takes_several_urls_and_moves_past_one_that_is_down(url: str) -> None:
    dead = _closed_port_url()
    result = run_cli("subjects", "--json", url=f"{dead},{url}")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
    from_env = run_cli("subjects", "--json", env={"SCHEMA_REGISTRY_URL": f"{dead} , {url}/"})
    assert from_env.returncode == 0, from_env.stderr
    both_dead = run_cli("subjects", url=f"{dead},{_closed_port_url()}")
    assert both_dead.returncode == 1
    assert "no schema registry at" in both_dead.stderr
    assert run_cli("--url", f"{url},ftp://x", "subjects").returncode == 2


def test_reads_move_past_a_5xx_and_the_last_good_registry_is_asked_first(
    url: str, unhealthy: _Unhealthy
) -> None:
    from schema_registry.client import RegistryClient

    with RegistryClient(f"{unhealthy.url},{url}") as client:
        assert client.get("/subjects").json() == []
        assert unhealthy.hits == [1]
        assert client.url == url
        lookup = client.post("/subjects/s", {"schema": V1})  # a lookup only reads
        assert lookup.error_code == 40401
        assert client.get("/subjects").ok
        assert unhealthy.hits == [1]  # the registry that answered is asked first now
    with RegistryClient(f"{unhealthy.url},{url}") as client:
        # A write is not sent twice on a 5xx: it may have been applied.
        write_answer = client.post("/subjects/s/versions", {"schema": V1})
        assert write_answer.status == 503
        assert unhealthy.hits == [2]
        assert client.url == unhealthy.url
