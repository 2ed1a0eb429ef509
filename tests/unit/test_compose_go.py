"""docker-compose.yml validated for real: compose-go, the loader `docker compose` uses, loads it.

tests/interop/compose is a Go test over github.com/compose-spec/compose-go/v2 (v2.16.2: v2.17
needs a newer Go than ours): it loads the file as `docker compose config` does (interpolation,
the Compose schema, merge keys, environment with defaults, consistency) and checks images or
builds, depends_on targets, loopback-only published ports, that no ${VAR} is left unresolved,
and that every address a service finds another by names a compose service and a port it
listens on. tests/unit/test_compose.py keeps the structural checks that need no loader.

Here the Go test binary is built once (`go test -c`; the first run downloads compose-go through
the Go module proxy into Go's own module cache) and run against the real file, then against
broken copies, each of which must fail with the check that catches it. Skipped only where go is
not installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "tests" / "interop" / "compose"
COMPOSE = REPO / "docker-compose.yml"
GO_ENV = {"GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod", "GIT_TERMINAL_PROMPT": "0"}


@pytest.fixture(scope="module")
def compose_test(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The compiled Go test binary of tests/interop/compose."""
    if shutil.which("go") is None:
        pytest.skip("go is not installed")
    binary = tmp_path_factory.mktemp("compose-go") / "compose.test"
    built = subprocess.run(
        ["go", "test", "-c", "-o", str(binary), "."],
        cwd=PACKAGE,
        env={**os.environ, **GO_ENV},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    return binary


def run(binary: Path, compose_file: Path) -> subprocess.CompletedProcess[str]:
    """The Go tests against ``compose_file``; verbose, so a failure names its check."""
    return subprocess.run(
        [str(binary), "-test.v", "-test.count=1"],
        cwd=PACKAGE,
        env={**os.environ, "MESHKIT_COMPOSE_FILE": str(compose_file)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_compose_go_loads_and_accepts_the_compose_file(compose_test: Path) -> None:
    result = run(compose_test, COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr
    passed = {line.split()[2] for line in result.stdout.splitlines() if line.startswith("--- PASS")}
    assert passed == {
        "TestLoadsAndValidates",
        "TestEveryServiceHasAnImageOrABuild",
        "TestEveryDependencyExists",
        "TestPublishedPortsAreLoopbackOnly",
        "TestNoVariableIsLeftUnresolved",
        "TestServicesFindEachOtherByComposeName",
    }


# (what is broken, the text replaced, its replacement, what the failure says)
BREAKAGES = [
    (
        "port on every interface",
        '"127.0.0.1:8081:8081"',
        '"8081:8081"',
        'publishes 8081 on "", want 127.0.0.1 only',
    ),
    (
        "address of a misspelt service",
        "MESH_ADDRESS_SHIPPING: shipping:50054",
        "MESH_ADDRESS_SHIPPING: shiping:50054",
        'MESH_ADDRESS_SHIPPING names "shiping", which is not a compose service',
    ),
    (
        "address on a port nobody listens on",
        "MESH_ADDRESS_PAYMENTS: payments:50053",
        "MESH_ADDRESS_PAYMENTS: payments:50054",
        "MESH_ADDRESS_PAYMENTS names payments:50054, but payments listens on [50053]",
    ),
    (
        "registry URL to a wrong host",
        "SCHEMA_REGISTRY_URL: http://schema-registry:8081",
        "SCHEMA_REGISTRY_URL: http://registry:8081",
        'SCHEMA_REGISTRY_URL names "registry", which is not a compose service',
    ),
    (
        "variable without a default",
        "${SHOP_BACKEND_CLIENT_SECRET:-dev-shop-backend-secret}",
        "${SHOP_BACKEND_CLIENT_SECRET}",
        "${SHOP_BACKEND_CLIENT_SECRET} has no default and is not required",
    ),
    (
        "dependency on a missing service",
        "      inventory:\n        condition: service_healthy\n      payments:",
        "      inventroy:\n        condition: service_healthy\n      payments:",
        "inventroy",
    ),
    (
        "attribute the Compose schema does not know",
        "    restart: unless-stopped\n    environment:\n      # The image formats",
        "    restart_policy: unless-stopped\n    environment:\n      # The image formats",
        "restart_policy",
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "says"), [b[1:] for b in BREAKAGES], ids=[b[0] for b in BREAKAGES]
)
def test_each_check_fails_on_a_broken_copy(
    compose_test: Path, tmp_path: Path, old: str, new: str, says: str
) -> None:
    text = COMPOSE.read_text()
    assert old in text, f"the compose file changed: {old!r} is not in it"
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(text.replace(old, new, 1))  # the first place is enough to break it
    result = run(compose_test, broken)
    assert result.returncode != 0, result.stdout
    assert says in result.stdout + result.stderr, result.stdout + result.stderr
