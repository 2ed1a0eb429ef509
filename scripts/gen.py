"""Regenerate gen/ from proto/ (messages, .pyi stubs, gRPC stubs and their typing, event schemas).

The event contracts (``*.avsc`` and their ``topic.json``) and the configuration contracts (the
JSON Schemas of the control plane's namespaces, ``config/<namespace>.schema.json``) are copied
beside the generated modules, so the installed contracts package carries them: a service loads
its schemas with ``importlib.resources`` wherever it is installed (a checkout, a wheel, a
container).

Each .proto also gets ``<name>.source_info.binpb`` beside its module: the file's source info
(its comments, a SourceCodeInfo message), which protoc leaves out of the generated modules.
meshkit's server reflection serves it, so `grpcurl describe` prints the contract's comments. One
file per contract, so a new contract adds files and changes none.

`python scripts/gen.py` rewrites gen/shop/ from scratch; `--check` generates into a temporary
directory and fails, listing the files, when gen/ differs (the drift check CI runs). Generation is
deterministic for the pinned grpcio-tools and mypy-protobuf, so a clean tree means "up to date".
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
# Third-party contracts ours import (google/api/annotations.proto for HTTP routes), copied as
# published; on the include path, never generated: their Python modules come from their own
# package (googleapis-common-protos), which must match the copy.
VENDOR = PROTO / "vendor"
GEN = ROOT / "gen"
# Top-level proto packages (shop: the reference shop; mesh: platform services), each a package
# of the generated distribution (gen/pyproject.toml lists the same names).
# protoc's descriptor set with source info, split per package by split_source_info.
SOURCE_SET = "all_source_info.binpb"
# What meshkit.reflection looks for beside a contract's module (its SOURCE_INFO_SUFFIX).
SOURCE_INFO_SUFFIX = ".source_info.binpb"
PACKAGES = tuple(
    sorted(
        p.name for p in PROTO.iterdir() if p.is_dir() and p != VENDOR and any(p.rglob("*.proto"))
    )
)


def generate(out: Path) -> None:
    """Run protoc over every .proto under proto/ into `out`, adding __init__.py to each package."""
    protos = sorted(
        str(p.relative_to(PROTO)) for p in PROTO.rglob("*.proto") if VENDOR not in p.parents
    )
    well_known = resources.files("grpc_tools") / "_proto"
    plugin_dir = Path(sys.executable).parent  # protoc-gen-mypy_grpc lives beside the interpreter
    env = {**os.environ, "PATH": f"{plugin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO}",
        f"-I{VENDOR}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_grpc_out=quiet:{out}",
        f"--descriptor_set_out={out / SOURCE_SET}",
        "--include_source_info",
        *protos,
    ]
    subprocess.run(cmd, check=True, cwd=PROTO, env=env)
    split_source_info(out)
    for contract in sorted(
        [*PROTO.rglob("*.avsc"), *PROTO.rglob("topic.json"), *PROTO.rglob("config/*.schema.json")]
    ):
        target = out / contract.relative_to(PROTO)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(contract, target)
    for package in PACKAGES:
        for directory in [out / package, *(p for p in (out / package).rglob("*") if p.is_dir())]:
            if any(directory.glob("*.py")) or any(p.is_dir() for p in directory.iterdir()):
                (directory / "__init__.py").touch()
        (out / package / "py.typed").touch()


def split_source_info(out: Path) -> None:
    """Split protoc's one descriptor set (every file, with comments) into each file's source
    info, ``<dir>/<name>.source_info.binpb`` beside its generated module."""
    from google.protobuf import descriptor_pb2

    whole = descriptor_pb2.FileDescriptorSet.FromString((out / SOURCE_SET).read_bytes())
    (out / SOURCE_SET).unlink()
    for file in whole.file:
        if file.name.split("/", 1)[0] not in PACKAGES:
            continue  # an import from outside (google/api): not ours to ship
        target = out / file.name.removesuffix(".proto")
        target = target.with_name(target.name + SOURCE_INFO_SUFFIX)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(file.source_code_info.SerializeToString(deterministic=True))


def tree(root: Path) -> set[str]:
    """Relative paths of every generated file below the generated packages of root."""
    return {
        str(p.relative_to(root))
        for package in PACKAGES
        for p in (root / package).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def main() -> int:
    """Generate, or with --check compare against what is committed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when gen/ is stale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        generate(out)
        if args.check:
            fresh, committed = tree(out), tree(GEN)
            stale = sorted(
                (fresh ^ committed)
                | {f for f in fresh & committed if not filecmp.cmp(out / f, GEN / f, shallow=False)}
            )
            if stale:
                print("gen/ is stale against proto/; run `make gen`. Differs:", file=sys.stderr)
                for name in stale:
                    print(f"  gen/{name}", file=sys.stderr)
                return 1
            print("==> gen/ is up to date with proto/")
            return 0
        for package in PACKAGES:
            shutil.rmtree(GEN / package, ignore_errors=True)
            shutil.copytree(out / package, GEN / package)
        print(f"==> generated {len(tree(GEN))} files into gen/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
