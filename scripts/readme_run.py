"""Run every shell block of README.md in order, as a newcomer pasting them would: `make readme`.

The README is the first thing a new user runs, so it is tested as written. Every fenced block
whose info string is ``sh`` runs, top to bottom, in ONE bash process (a variable set in one block
is there in the next, as in a user's terminal), from the root of a fresh clone of HEAD (default:
``.cache/readme-run/``, its ``.cache`` shared with this checkout's, so nothing is fetched again),
or of this checkout with ``--here`` (CI, whose checkout is a fresh clone already). Blocks in other
languages (``proto``, ``python``, ``cedar``, the layout) are not commands; any other fence that
looks like a shell (``bash``, ``console``, ``shell``, none at all) is refused, so no block is
skipped by accident.

How a failure is judged: the generated script keeps the README's line numbers (every line outside
an ``sh`` block is blank), and bash's ERR trap reports the line of a command that failed. A
command may fail only where the README says so, with an expectation comment right after it
(``#   -> Code: PermissionDenied, ...``, ``#   exit 1 ...``); anything else stops the run at
once, naming README.md:LINE. A pipeline fails when any part of it fails (``pipefail``), except
for exit status 141 (SIGPIPE): a command whose reader left early (``mesh ps | head -4``), which
a terminal without pipefail never shows either.

Two things are not run twice: with ``README_RUN_SKIP_MAKE_TEST=1`` (what .ci/run sets, right
after its own ``make test``) the first block's ``make test`` says so and returns 0, since this
script is the step after it. Whatever the README leaves running is stopped at the end
(``mesh down``, ``scripts/kafka stop`` for a broker it started).

The README's commands use the mesh's default ports, so a mesh already running on them (your
own) makes the run refuse at the start, naming the ports: stop it, or run this later.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = "README.md"
RUN_LANGS = {"sh"}
# Fences that are not commands: code in other languages, and the layout tree.
OTHER_LANGS = {"proto", "python", "cedar", "toml", "json", "text", "go", "ts", "yaml"}
SHELLISH = {"", "bash", "shell", "console", "zsh", "shell-session"}
FENCE = re.compile(r"^(\s*)```\s*([\w+-]*)\s*$")
# `#   -> Code: ...`, `#   exit 1 ...`: the README's note that the command above it fails.
EXPECTATION = re.compile(r"^\s*#\s+(->|exit [1-9])")


@dataclass(frozen=True)
class Block:
    """One fenced block: its language and its first and last content line (1-based)."""

    lang: str
    first: int
    last: int


class ReadmeError(ValueError):
    """The README cannot be run as it is (an unclosed fence, a shell block in disguise)."""


def blocks(lines: list[str]) -> list[Block]:
    """Every fenced block of the README, in order."""
    found: list[Block] = []
    opened: tuple[str, int] | None = None
    for number, line in enumerate(lines, start=1):
        match = FENCE.match(line)
        if not match:
            continue
        if opened is None:
            opened = (match[2].lower(), number + 1)
        elif match[2] == "":
            found.append(Block(opened[0], opened[1], number - 1))
            opened = None
    if opened is not None:
        raise ReadmeError(f"README.md:{opened[1] - 1}: a ``` fence is never closed")
    for block in found:
        if block.lang in SHELLISH:
            name = f"```{block.lang}" if block.lang else "a ``` block with no language"
            raise ReadmeError(
                f"README.md:{block.first - 1}: {name} looks like commands: mark it ```sh to "
                "run it, or ```text when it is not meant to be run"
            )
        if block.lang not in RUN_LANGS | OTHER_LANGS:
            raise ReadmeError(f"README.md:{block.first - 1}: unknown block language {block.lang!r}")
    return found


def expected_failures(lines: list[str], runnable: list[Block]) -> set[int]:
    """Lines of every command the README says fails: the command just above an expectation
    comment (past any comment lines between), all its continuation lines, since bash may report
    any of them."""
    allowed: set[int] = set()
    for block in runnable:
        for number in range(block.first, block.last + 1):
            if not EXPECTATION.match(lines[number - 1]):
                continue
            end = number - 1
            while end >= block.first and lines[end - 1].lstrip().startswith("#"):
                end -= 1
            if end < block.first:
                continue
            start = end
            while start > block.first and lines[start - 2].rstrip().endswith("\\"):
                start -= 1
            allowed.update(range(start, end + 1))
    return allowed


PRELUDE = (
    "set -o pipefail; "
    "_readme_fail() { local line=$1 status=$2; "
    '[ "$status" = 141 ] && return 0; '
    'case " $README_EXPECTED " in *" $line "*) '
    'echo "readme-run: README.md:$line failed (exit $status), as the README says" >&2; return 0;; '
    "esac; "
    'echo "readme-run: README.md:$line failed (exit $status):" '
    '"$(sed -n "${line}p" "$README_FILE")" >&2; '
    "exit 1; }; "
    "trap '_readme_fail $LINENO $?' ERR; "
    'make() { if [ "$*" = test ] && [ "${README_RUN_SKIP_MAKE_TEST:-}" = 1 ]; then '
    'echo "readme-run: make test ran just before this run (CI); not twice" >&2; '
    'else command make "$@"; fi; }'
)


def script(lines: list[str], runnable: list[Block]) -> str:
    """The README as one bash script with its line numbers: shell blocks kept, all else blank."""
    keep: set[int] = set()
    for block in runnable:
        keep.update(range(block.first, block.last + 1))
    out = [PRELUDE]  # line 1 of the README is its title, never code
    if 1 in keep:
        raise ReadmeError("README.md:1: the first line cannot be code")
    out += [lines[n - 1] if n in keep else "" for n in range(2, len(lines) + 1)]
    return "\n".join(out) + "\n"


def default_ports(root: Path) -> list[int]:
    """Every port mesh.toml declares (the README's commands use them)."""
    with (root / "mesh.toml").open("rb") as f:
        components = tomllib.load(f)["component"]
    return sorted({int(c[k]) for c in components for k in ("port", "http_port") if k in c})


def busy(ports: list[int]) -> list[int]:
    """The ports something accepts connections on, on 127.0.0.1."""
    taken = []
    for port in ports:
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                taken.append(port)
    return taken


def fresh_clone(target: Path) -> Path:
    """A clone of this checkout's HEAD at ``target`` (replacing an earlier one), sharing
    ``.cache`` (uv's cache, the Go tools, the Kafka jars) with this checkout."""
    if target.exists():
        subprocess.run(
            [str(target / ".venv" / "bin" / "mesh"), "--root", str(target), "down"],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(target)
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(target)], check=True)
    (target / ".cache").mkdir(exist_ok=True)
    for entry in (ROOT / ".cache").iterdir():
        if entry.name not in ("readme-run",) and not (target / ".cache" / entry.name).exists():
            (target / ".cache" / entry.name).symlink_to(entry)
    return target


def cleanup(root: Path) -> None:
    """Stop what the README left running: the mesh, and a broker `--kafka local` started."""
    mesh = root / ".venv" / "bin" / "mesh"
    if mesh.exists():
        subprocess.run([str(mesh), "--root", str(root), "down"], capture_output=True, check=False)
    kafka = root / "scripts" / "kafka"
    if (root / ".mesh" / "kafka").exists():
        subprocess.run([str(kafka), "stop"], capture_output=True, check=False, cwd=root)


def main() -> int:
    """Parse the README, refuse a busy machine, run it, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--here",
        action="store_true",
        help="run in this checkout (CI's is a fresh clone) instead of a fresh clone of HEAD",
    )
    parser.add_argument(
        "--print",
        action="store_true",
        help="print the generated script (README line numbers) and exit",
    )
    parser.add_argument(
        "--stop-after",
        type=int,
        metavar="LINE",
        help="run the blocks only up to README.md:LINE (to try a change to the README quickly)",
    )
    parser.add_argument(
        "--clone-dir",
        type=Path,
        default=ROOT / ".cache" / "readme-run",
        help="where the fresh clone goes (default: .cache/readme-run)",
    )
    args = parser.parse_args()
    lines = (ROOT / README).read_text().splitlines()
    try:
        found = blocks(lines)
        runnable = [b for b in found if b.lang in RUN_LANGS]
        if args.stop_after:
            runnable = [
                Block(b.lang, b.first, min(b.last, args.stop_after))
                for b in runnable
                if b.first <= args.stop_after
            ]
        text = script(lines, runnable)
    except ReadmeError as exc:
        print(f"readme-run: {exc}", file=sys.stderr)
        return 2
    if args.print:
        sys.stdout.write(text)
        return 0
    if taken := busy(default_ports(ROOT)):
        print(
            f"readme-run: ports {taken} are in use (a mesh of yours?): the README's commands "
            "need them; stop it (`.venv/bin/mesh down`) and run again",
            file=sys.stderr,
        )
        return 2
    root = ROOT if args.here else fresh_clone(args.clone_dir.resolve())
    allowed = expected_failures(lines, runnable)
    commands = sum(b.last - b.first + 1 for b in runnable)
    print(
        f"==> readme-run: {len(runnable)} shell blocks ({commands} lines) of README.md in {root}",
        flush=True,
    )
    path = root / ".cache" / "readme-run.sh" if args.here else root / "readme-run.sh"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    env = {
        **os.environ,
        "README_EXPECTED": " ".join(str(n) for n in sorted(allowed)),
        "README_FILE": str(root / README),
    }
    started = time.monotonic()
    try:
        result = subprocess.run(["bash", str(path)], cwd=root, env=env, check=False)
    finally:
        cleanup(root)
    took = time.monotonic() - started
    if result.returncode != 0:
        print(f"readme-run: FAILED after {took:.0f} s (exit {result.returncode})", file=sys.stderr)
        return 1
    print(f"==> readme-run: every block ran as written ({took:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
