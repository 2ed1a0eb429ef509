"""The README as a newcomer meets it: every block runnable by `make readme`, every command and
target it should list listed.

`make readme` (scripts/readme_run.py) runs the shell blocks for real, in CI; these tests keep its
rules honest (a failure is allowed only where the README says so) and catch a README that has
fallen behind the code without starting anything.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from mesh_runner.cli import build_parser

REPO = Path(__file__).resolve().parents[2]


def _load_runner() -> ModuleType:
    spec = importlib.util.spec_from_file_location("readme_run", REPO / "scripts" / "readme_run.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["readme_run"] = module
    spec.loader.exec_module(module)
    return module


runner = _load_runner()
README = (REPO / "README.md").read_text()


def run_readme(text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``text`` as a README the way `make readme` does (in ``tmp_path``)."""
    lines = text.splitlines()
    runnable = [b for b in runner.blocks(lines) if b.lang in runner.RUN_LANGS]
    (tmp_path / "README.md").write_text(text)
    (tmp_path / "run.sh").write_text(runner.script(lines, runnable))
    env = {
        **os.environ,
        "README_EXPECTED": " ".join(map(str, sorted(runner.expected_failures(lines, runnable)))),
        "README_FILE": str(tmp_path / "README.md"),
    }
    return subprocess.run(
        ["bash", "run.sh"], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )


def test_the_readme_parses_and_its_shell_blocks_are_valid_bash(tmp_path: Path) -> None:
    lines = README.splitlines()
    runnable = [b for b in runner.blocks(lines) if b.lang == "sh"]
    assert len(runnable) >= 20
    (tmp_path / "run.sh").write_text(runner.script(lines, runnable))
    check = subprocess.run(
        ["bash", "-n", str(tmp_path / "run.sh")], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stderr


def test_the_generated_script_keeps_the_readme_line_numbers() -> None:
    lines = README.splitlines()
    runnable = [b for b in runner.blocks(lines) if b.lang == "sh"]
    out = runner.script(lines, runnable).splitlines()
    assert len(out) == len(lines)
    for block in runnable:
        for n in range(block.first, block.last + 1):
            assert out[n - 1] == lines[n - 1]


def test_a_command_the_readme_says_fails_may_fail_and_the_run_goes_on(tmp_path: Path) -> None:
    text = (
        "# t\n\n```sh\nfalse \\\n    --an-argument\n#   -> exit 1: it says so\n"
        "echo after > after.txt\n```\n"
    )
    result = run_readme(text, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "as the README says" in result.stderr
    assert (tmp_path / "after.txt").read_text() == "after\n"


def test_any_other_failure_stops_the_run_naming_the_readme_line(tmp_path: Path) -> None:
    text = "# t\n\n```sh\necho one\nls /no/such/dir | cat\necho never > never.txt\n```\n"
    result = run_readme(text, tmp_path)
    assert result.returncode == 1
    assert "README.md:5 failed" in result.stderr  # pipefail: the ls in the pipeline
    assert not (tmp_path / "never.txt").exists()


def test_state_carries_from_one_block_to_the_next(tmp_path: Path) -> None:
    text = (
        "# t\n\n```sh\nX=42\n```\n\nprose\n\n```python\nraise SystemExit(1)\n```\n\n"
        '```sh\ntest "$X" = 42\n```\n'
    )
    assert run_readme(text, tmp_path).returncode == 0


@pytest.mark.parametrize("fence", ["```", "```bash", "```console"])
def test_a_shell_block_in_disguise_is_refused(fence: str) -> None:
    with pytest.raises(runner.ReadmeError, match="mark it ```sh"):
        runner.blocks(["# t", fence, "make demo", "```"])


def test_every_mesh_command_is_in_the_readme_table() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    commands = set(sub.choices)  # type: ignore[arg-type]
    table = [line for line in README.splitlines() if line.startswith("| `mesh ")]
    listed = {m[1] for line in table for m in re.finditer(r"`mesh ([a-z]+)", line)}
    assert commands - listed == set(), "add these to README's table of the `mesh` command"


def test_every_make_target_is_in_the_readme() -> None:
    help_lines = subprocess.run(
        ["make", "-s", "help"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    targets = re.findall(r"^\s+make (\S+)", help_lines, re.MULTILINE)
    assert "readme" in targets
    missing = [t for t in targets if f"make {t}`" not in README and f"make {t} " not in README]
    assert missing == []


def test_a_reader_leaving_early_is_not_a_failure(tmp_path: Path) -> None:
    """`mesh ps | head -4`: the writer may get SIGPIPE (141) when head is done; a terminal
    without pipefail shows nothing of it, and neither does the run."""
    text = (
        "# t\n\n```sh\n"
        "python3 -c 'import signal, sys; sys.exit(128 + signal.SIGPIPE)' | cat\n"
        "yes | head -1\necho after > after.txt\n```\n"
    )
    result = run_readme(text, tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "after.txt").exists()
