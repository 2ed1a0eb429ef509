"""docs/first-service.md, run as written in a scratch copy of the checkout: every ``sh`` block is
run and every ``diff`` block applied, in order (its calls with tokens from `mesh token`, and its
denial). Then the new service's own generated tests run there too (its e2e test on the real
Kafka), the checks every contract and policy must pass (tests/unit/test_permissions.py) pass with
it present, and the copy's git status shows only what the tutorial says it adds."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TUTORIAL = REPO / "docs" / "first-service.md"
BLOCK = re.compile(r"^```(sh|diff)\n(.*?)^```$", re.S | re.M)
# What a new service may add or change, and nothing else (docs/first-service.md, step 8).
ALLOWED = (
    "proto/shop/loyalty/",
    "gen/shop/loyalty/",
    "services/loyalty/",
    "tests/unit/loyalty/",
    "tests/e2e/test_loyalty_service.py",
    "mesh.toml",
    "docker-compose.yml",
    "pyproject.toml",
    "uv.lock",
)

pytestmark = pytest.mark.kafka


def tutorial_script(workdir: Path) -> str:
    """The tutorial's blocks as one bash script (diffs saved beside it and applied)."""
    lines = ["set -euo pipefail", f"cd {workdir}"]
    for number, (kind, body) in enumerate(BLOCK.findall(TUTORIAL.read_text())):
        lines.append(f"echo '### block {number} ({kind})'")
        if kind == "sh":
            lines.append(body)
        else:
            patch = workdir.parent / f"step-{number}.diff"
            patch.write_text(body)
            lines.append(f"git apply --verbose {patch}")
    return "\n".join(lines) + "\n"


def scratch_checkout(target: Path) -> None:
    """The checkout's files as they are (tracked and not ignored), a git repo of its own, with
    the caches (uv, Go tools, Kafka jars) shared rather than fetched again."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for raw in filter(None, listed):
        source = REPO / raw.decode()
        if source.is_file():
            destination = target / raw.decode()
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)
    (target / ".cache").symlink_to(REPO / ".cache")
    git = ["git", "-c", "user.email=tutorial@meshkit", "-c", "user.name=tutorial"]
    subprocess.run([*git, "init", "-q"], cwd=target, check=True)
    subprocess.run([*git, "add", "-A"], cwd=target, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "checkout"], cwd=target, check=True)


def test_the_first_service_tutorial_runs_as_written(tmp_path: Path, kafka_bootstrap: str) -> None:
    if (REPO / "services" / "loyalty").exists():
        pytest.skip("this checkout has made loyalty already; the tutorial makes it anew")
    workdir = tmp_path / "checkout"
    scratch_checkout(workdir)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "MESH_"))}
    try:
        run = subprocess.run(
            ["bash", "-c", tutorial_script(workdir)],
            capture_output=True,
            text=True,
            env=env,
            timeout=900,
            check=False,
        )
        output = run.stdout + run.stderr
        assert run.returncode == 0, output[-6000:]
        assert "created loyalty (shop.loyalty.v1) on port 50060" in output
        assert '"display_name": "Ada"' in output
        assert "LOYALTY_NOT_FOUND" in output, "a customer's token reads"
        assert "Code: PermissionDenied" in output
        assert "permission loyalty.create denied" in output, "the denial names the permission"
        assert "Unauthenticated" not in output, "every call of the tutorial carries a token"
        assert '"points": 120' in output
        assert "points: must be 0 to 1000000" in output
        # What the `mesh trace` block printed (the block before the last, `mesh down`).
        trace = run.stdout.split("### block")[-2]
        assert "shop.loyalty.v1.LoyaltyService/CreateLoyalty" in trace
        assert "loyalty.events.v1" in trace, "the outbox relay's span joins the request's trace"

        # The service it made passes its own generated tests, the e2e one on the real Kafka.
        tests = subprocess.run(
            [
                str(workdir / ".venv" / "bin" / "python"),
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "tests/unit/loyalty",
                "tests/e2e/test_loyalty_service.py",
            ],
            cwd=workdir,
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
            check=False,
        )
        assert tests.returncode == 0, (tests.stdout + tests.stderr)[-6000:]
        # 8 generated (5 on the use cases, 3 calling with tokens) + the tutorial's + the e2e one.
        assert "10 passed" in tests.stdout

        # Its RPCs declare permissions and its policy.cedar grants exactly them, as every
        # service's must (the test reads the copy's proto/, gen/ and services/).
        permissions = subprocess.run(
            [
                str(workdir / ".venv" / "bin" / "python"),
                "-m",
                "pytest",
                "-v",
                "-p",
                "no:cacheprovider",
                "tests/unit/test_permissions.py",
            ],
            cwd=workdir,
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            check=False,
        )
        checked = permissions.stdout + permissions.stderr
        assert permissions.returncode == 0, checked[-6000:]
        assert "declared_permissions[loyalty] PASSED" in checked
        assert "LoyaltyService/GetLoyalty] PASSED" in checked

        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=all"],
            cwd=workdir,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        changed = [line[3:] for line in status]
        assert changed, "the tutorial changed nothing"
        strays = [path for path in changed if not path.startswith(ALLOWED)]
        assert not strays, f"the tutorial touched more than the new service: {strays}"
    finally:
        subprocess.run(
            [str(workdir / ".venv" / "bin" / "mesh"), "--root", str(workdir), "down"],
            capture_output=True,
            env=env,
            timeout=120,
            check=False,
        )
