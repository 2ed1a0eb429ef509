"""`mesh new service`: what it refuses (writing nothing) and what it writes, on a scratch copy of
the checkout's configuration; and that what it writes passes the permission checks every service
must (issue 14) the moment it is made."""

from __future__ import annotations

import hashlib
import py_compile
import re
import shutil
import socket
import subprocess
import sys
import tomllib
from importlib import resources
from pathlib import Path

import pytest
import yaml
from google.protobuf import descriptor_pb2

from mesh.api.v1 import access_pb2
from mesh_runner.cli import main
from meshkit import authz

REPO = Path(__file__).resolve().parents[3]
BUF = REPO / ".cache" / "bin" / "buf"


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """The files `mesh new` reads and edits, copied; proto/ and services/ as they are."""
    for name in ("mesh.toml", "pyproject.toml", "docker-compose.yml"):
        shutil.copy(REPO / name, tmp_path / name)
    for name in ("proto", "services", "gen"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return h.hexdigest()


# zz_probe: a name no checkout has (one may well have made `loyalty` following the tutorial).
@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["inventory"], "exists already"),
        (["9lives"], "not a valid service name"),
        (["Loyalty"], "not a valid service name"),
        (["class"], "not a valid service name"),
        (["gift-cards"], "not a valid service name"),
        (["zz_probe", "--port", "50051"], "port 50051 is 'orders''s"),
        (["zz_probe", "--package", "Shop.Probe"], "versioned proto package"),
        (["zz_probe", "--resource", "member"], "UpperCamelCase"),
    ],
)
def test_refusals_touch_nothing(
    checkout: Path, args: list[str], why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = digest(checkout)
    assert main(["--root", str(checkout), "new", "service", *args]) == 2
    assert why in capsys.readouterr().err
    assert digest(checkout) == before


def test_a_port_in_use_by_a_process_is_refused(
    checkout: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        before = digest(checkout)
        assert (
            main(["--root", str(checkout), "new", "service", "zz_probe", "--port", str(port)]) == 2
        )
    assert "in use by a running process" in capsys.readouterr().err
    assert digest(checkout) == before


def test_a_new_service_gets_every_file_and_entry(checkout: Path) -> None:
    assert (
        main(["--root", str(checkout), "new", "service", "gift_cards", "--resource", "Card"]) == 0
    )
    src = checkout / "services/gift_cards/src/gift_cards"
    for relative in (
        "proto/shop/gift_cards/v1/gift_cards.proto",
        "proto/shop/gift_cards/v1/avro/card_created.avsc",
        "proto/shop/gift_cards/v1/avro/topic.json",
        "tests/unit/gift_cards/test_gift_cards.py",
        "tests/e2e/test_gift_cards_service.py",
    ):
        assert (checkout / relative).is_file(), relative
    for layer in ("domain", "app", "adapters", "entrypoints"):
        assert (src / layer / "__init__.py").is_file()
    for path in [*src.rglob("*.py"), *(checkout / "tests").rglob("*.py")]:
        assert "$" not in path.read_text(), f"unfilled placeholder in {path}"
        py_compile.compile(str(path), doraise=True)

    components = tomllib.loads((checkout / "mesh.toml").read_text())["component"]
    ours = next(c for c in components if c["name"] == "gift_cards")
    ports = [c["port"] for c in components if c["name"] != "gift_cards"]
    assert ours["port"] == max(p for p in ports if p >= 50051) + 1
    assert ours["command"] == ["python", "-m", "gift_cards"]

    project = tomllib.loads((checkout / "pyproject.toml").read_text())
    assert "gift_cards" in project["project"]["dependencies"]
    assert project["tool"]["uv"]["sources"]["gift_cards"] == {"workspace": True}
    assert "services/gift_cards/src" in project["tool"]["mypy"]["files"]

    compose = yaml.safe_load((checkout / "docker-compose.yml").read_text())
    block = compose["services"]["gift_cards"]
    assert block["command"] == ["python", "-m", "gift_cards"]
    assert block["environment"]["GIFT_CARDS_PORT"] == str(ours["port"])
    assert "gift-cards-data" in compose["volumes"]


# ------------------------------------------------------------------ who may call the new service

# Every role identity hands out, and what the scaffolded policy.cedar lets it do.
GRANTS = {
    "admin": {"gift_cards.create", "gift_cards.read"},
    "support": {"gift_cards.read"},
    "customer": {"gift_cards.read"},
    "auditor": {"gift_cards.read"},
}


def contract_rules(root: Path, proto: str) -> dict[str, authz.Rule]:
    """The access rule each RPC of ``proto`` declares, read from what protoc compiles of it
    (the very descriptors `make gen` would generate; nothing is added to this process's pool)."""
    well_known = resources.files("grpc_tools") / "_proto"
    out = root / "contract.binpb"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{root / 'proto'}",
            f"-I{root / 'proto' / 'vendor'}",
            f"-I{well_known}",
            f"--descriptor_set_out={out}",
            "--include_imports",
            str(root / "proto" / proto),
        ],
        check=True,
    )
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    compiled = next(f for f in files if f.name == proto)
    messages = {f".{compiled.package}.{m.name}": m for m in compiled.message_type}
    rules = {}
    for service in compiled.service:
        for method in service.method:
            assert method.options.HasExtension(access_pb2.access), f"{method.name}: no access"
            access = method.options.Extensions[access_pb2.access]
            fields = {f.name for f in messages[method.input_type].field}
            assert not access.resource or access.resource in fields, access.resource
            rules[method.name] = authz.Rule(
                f"/{compiled.package}.{service.name}/{method.name}",
                public=access.public,
                permission=access.permission,
                resource=access.resource,
            )
    return rules


def test_a_new_service_declares_its_permissions_and_its_policy_grants_them(
    checkout: Path,
) -> None:
    """What tests/unit/test_permissions.py and meshkit.authz ask of every service, asked of one
    just made: each RPC declares a permission, the policy parses, names only those and grants
    each to someone (admins create, any signed-in user reads, a service nothing)."""
    assert (
        main(["--root", str(checkout), "new", "service", "gift_cards", "--resource", "Card"]) == 0
    )
    rules = contract_rules(checkout, "shop/gift_cards/v1/gift_cards.proto")
    assert {name: (r.permission, r.resource) for name, r in rules.items()} == {
        "CreateCard": ("gift_cards.create", ""),
        "GetCard": ("gift_cards.read", "card_id"),
    }
    assert rules["GetCard"].resource_type == "Card"

    text = (checkout / "services/gift_cards/src/gift_cards/policy.cedar").read_text()
    policy = authz.Policy(text, name="gift_cards/policy.cedar")
    declared = {r.permission for r in rules.values()}
    assert set(re.findall(r'Action::"([^"]+)"', text)) == declared
    for role, granted in GRANTS.items():
        caller = authz.Principal(f"dev-{role}", (role,))
        for rule in rules.values():
            allowed = policy.decide(caller, rule.permission, rule.resource_type, owned=False)
            assert allowed.allowed is (rule.permission in granted), (role, rule.permission)
    no_role = authz.Principal("someone", ())
    assert policy.decide(no_role, "gift_cards.read", "Card", owned=False).allowed
    orders = authz.Principal("orders", ("service",), service="orders", on_behalf_of="c-1")
    assert not any(
        policy.decide(orders, r.permission, r.resource_type, owned=False).allowed
        for r in rules.values()
    )


def test_the_new_services_tests_call_with_tokens(checkout: Path) -> None:
    assert main(["--root", str(checkout), "new", "service", "gift_cards"]) == 0
    unit = (checkout / "tests/unit/gift_cards/test_gift_cards.py").read_text()
    assert "from support.tokens import" in unit and "authorized(channel, " in unit
    assert 'authz.Policy.from_package("gift_cards")' in unit
    e2e = (checkout / "tests/e2e/test_gift_cards_service.py").read_text()
    assert "from mesh_runner.token import mint" in e2e and "authorization: Bearer" in e2e


def test_the_new_proto_passes_buf_lint(checkout: Path) -> None:
    if not BUF.exists():
        pytest.skip("buf is not installed (make tools); make lint runs it")
    assert main(["--root", str(checkout), "new", "service", "gift_cards"]) == 0
    lint = subprocess.run(
        [str(BUF), "lint", "--path", "shop/gift_cards"],
        cwd=checkout / "proto",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_the_new_proto_names_its_go_package_by_the_rule(checkout: Path) -> None:
    """As every contract does (docs/clients.md), so `buf generate` for Go works on it and the
    package is giftcardsv1, not gift_cardsv1."""
    assert main(["--root", str(checkout), "new", "service", "gift_cards"]) == 0
    proto = (checkout / "proto/shop/gift_cards/v1/gift_cards.proto").read_text()
    assert (
        'option go_package = "github.com/meshkit/meshkit/gen/go/shop/gift_cards/v1;giftcardsv1";'
        in proto.splitlines()
    )
