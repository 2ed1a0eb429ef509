"""The client templates (proto/buf.gen.go.yaml, proto/buf.gen.ts.yaml) generate code that builds.

What a user of "Generate a client" (docs/clients.md) runs, run for real: buf generate with each
template into a scratch directory (``-o``, so a developer's gen/go and gen/ts are left alone),
then the Go stubs compile as the module github.com/meshkit/meshkit/gen/go, and the TypeScript
type-checks with tsc and runs under node (a message encoded and decoded, a service descriptor
read). The contracts' go_package options are checked against the one naming rule without tools.

Needs buf from `make tools`; the Go plugins and the npm TypeScript toolchain are installed on
first use by `scripts/tools go` / `scripts/tools ts` (pinned, skipped when present).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]  # as test_compose.py: no stubs in .venv

REPO = Path(__file__).resolve().parents[2]
PROTO = REPO / "proto"
BIN = REPO / ".cache" / "bin"
NPM_BIN = REPO / ".cache" / "npm" / "node_modules"
GO_MODULE = "github.com/meshkit/meshkit/gen/go"
OUR_PROTOS = sorted(p for p in PROTO.rglob("*.proto") if "vendor" not in p.parts)
GO_PACKAGE = re.compile(r'^option go_package = "([^"]+)";$', re.MULTILINE)
# What a generated Go file needs at build time: the pins of tests/interop/shop-go/go.mod, whose
# go.sum holds their checksums.
SHOP_GO = REPO / "tests" / "interop" / "shop-go"


def expected_go_package(proto: Path) -> str:
    """The rule: import path = module + the file's directory; package name = context + version
    with underscores dropped (Go style: order_views/v1 is orderviewsv1)."""
    directory = proto.parent.relative_to(PROTO)
    context, version = directory.parts[-2], directory.parts[-1]
    return f"{GO_MODULE}/{directory.as_posix()};{context.replace('_', '')}{version}"


def test_every_contract_names_its_go_package_by_the_rule() -> None:
    assert OUR_PROTOS
    wrong = {
        str(p.relative_to(PROTO)): GO_PACKAGE.findall(p.read_text())
        for p in OUR_PROTOS
        if GO_PACKAGE.findall(p.read_text()) != [expected_go_package(p)]
    }
    assert not wrong, f"go_package missing or off the rule: {wrong}"


@pytest.mark.parametrize("template", ["buf.gen.go.yaml", "buf.gen.ts.yaml"])
def test_templates_use_local_plugins_into_ignored_dirs(template: str) -> None:
    """Only package registries are reachable: a remote (BSR) plugin would fail for every user
    here, so each plugin is a local binary; its output dir is gitignored (derived code)."""
    config = yaml.safe_load((PROTO / template).read_text())
    assert config["version"] == "v2"
    assert [i["directory"] for i in config["inputs"]] == ["proto"]
    ignored = (REPO / ".gitignore").read_text().splitlines()
    for plugin in config["plugins"]:
        assert set(plugin) & {"local", "remote"} == {"local"}, plugin
        assert f"/{plugin['out']}/" in ignored, f"{plugin['out']} is not in .gitignore"


def need(tool: Path, installer: str) -> None:
    """Install with `scripts/tools <installer>` when ``tool`` is missing; buf itself must be there
    (`make tools`: a cold build takes minutes, too long to start from a test)."""
    if not (BIN / "buf").exists():
        pytest.fail(f"{BIN / 'buf'} is missing: run `make tools`", pytrace=False)
    if not tool.exists():
        done = subprocess.run(
            [str(REPO / "scripts" / "tools"), installer],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, done.stderr


def buf_generate(template: str, out: Path, *path: Path) -> None:
    """`buf generate --template proto/<template>` from the repository root, as the docs say,
    with ``path`` first on PATH (where the local plugins are)."""
    env = {**os.environ, "PATH": os.pathsep.join([*map(str, path), str(BIN), os.environ["PATH"]])}
    done = subprocess.run(
        [str(BIN / "buf"), "generate", "--template", f"proto/{template}", "-o", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_go_template_generates_a_module_that_compiles(tmp_path: Path) -> None:
    need(BIN / "protoc-gen-go-grpc", "go")
    buf_generate("buf.gen.go.yaml", tmp_path)
    root = tmp_path / "gen" / "go"
    for proto in OUR_PROTOS:
        directory = root / proto.parent.relative_to(PROTO)
        generated = directory / f"{proto.stem}.pb.go"
        assert generated.exists(), f"no {generated.relative_to(tmp_path)}"
        package = expected_go_package(proto).split(";")[1]
        assert f"\npackage {package}\n" in generated.read_text()
        if "\nservice " in proto.read_text():
            assert (directory / f"{proto.stem}_grpc.pb.go").exists()
    assert not (root / "google").exists(), "vendor/ must not be generated for Go"
    # A module around them, with the client module's pins and checksums.
    requires = re.findall(
        r"^\t(google\.golang\.org/\S+ \S+)", (SHOP_GO / "go.mod").read_text(), re.M
    )
    (root / "go.mod").write_text(
        f"module {GO_MODULE}\n\ngo 1.26.0\n\nrequire (\n"
        + "".join(f"\t{r}\n" for r in requires)
        + ")\n"
    )
    shutil.copyfile(SHOP_GO / "go.sum", root / "go.sum")
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod", "GIT_TERMINAL_PROMPT": "0"}
    built = subprocess.run(
        ["go", "vet", "./..."],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert built.returncode == 0, built.stderr


SMOKE_TS = """
import { create, fromBinary, toBinary, toJsonString } from "@bufbuild/protobuf";
import { OrderStatus, OrdersService, PlaceOrderRequestSchema } from "./shop/orders/v1/orders_pb";
import { OrderViewsService } from "./shop/order_views/v1/order_views_pb";

const request = create(PlaceOrderRequestSchema, {
  customerId: "c-ts",
  lines: [{ sku: "sku-1", quantity: 2, unitPrice: { currencyCode: "EUR", units: 3n } }],
});
const back = fromBinary(PlaceOrderRequestSchema, toBinary(PlaceOrderRequestSchema, request));
console.log(JSON.stringify({
  service: OrdersService.typeName,
  methods: OrdersService.methods.map((m) => m.name),
  views: OrderViewsService.typeName,
  confirmed: OrderStatus.CONFIRMED,
  request: JSON.parse(toJsonString(PlaceOrderRequestSchema, back)),
}));
"""


def test_ts_template_generates_code_that_type_checks_and_runs(tmp_path: Path) -> None:
    need(NPM_BIN / ".bin" / "tsc", "ts")
    need(NPM_BIN / ".bin" / "protoc-gen-es", "ts")
    buf_generate("buf.gen.ts.yaml", tmp_path, NPM_BIN / ".bin")
    src = tmp_path / "gen" / "ts"
    for proto in [*OUR_PROTOS, PROTO / "vendor" / "google" / "api" / "annotations.proto"]:
        parent = proto.parent.relative_to(PROTO / "vendor" if "vendor" in proto.parts else PROTO)
        assert (src / parent / f"{proto.stem}_pb.ts").exists(), f"no TypeScript for {proto.name}"
    (src / "smoke.ts").write_text(SMOKE_TS)
    # CommonJS output (no "type": "module"): the generated relative imports carry no extension,
    # which node resolves for require() and not for ES modules.
    (tmp_path / "tsconfig.json").write_text(
        json.dumps(
            {
                "compilerOptions": {
                    "target": "es2022",
                    "module": "nodenext",
                    "moduleResolution": "nodenext",
                    "strict": True,
                    "skipLibCheck": True,
                    "types": [],
                    "rootDir": "gen/ts",
                    "outDir": "out",
                },
                "include": ["gen/ts/**/*.ts"],
            }
        )
    )
    (tmp_path / "node_modules").symlink_to(NPM_BIN)
    checked = subprocess.run(
        [str(NPM_BIN / ".bin" / "tsc"), "-p", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    ran = subprocess.run(
        ["node", str(tmp_path / "out" / "smoke.js")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout) == {
        "service": "shop.orders.v1.OrdersService",
        "methods": ["PlaceOrder", "GetOrder", "ListOrderEvents"],
        "views": "shop.order_views.v1.OrderViewsService",
        "confirmed": 2,
        "request": {
            "customerId": "c-ts",
            "lines": [
                {"sku": "sku-1", "quantity": 2, "unitPrice": {"currencyCode": "EUR", "units": "3"}}
            ],
        },
    }
