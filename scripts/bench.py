"""`make bench`: run every benchmark (scripts/bench_*.py) in turn and print their reports.

Each benchmark measures meshkit against a baseline in the same run on the same machine and
reports the ratio; none of them pass or fail on a time. Every figure is also written to
``.bench/results.json`` (scripts/benchlib.py: name, value, unit, baseline, ratio, machine,
commit). ``make bench ONLY=events,saga`` runs a subset; run one alone with
`.venv/bin/python scripts/bench_<name>.py --help`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from benchlib import RESULTS

HERE = Path(__file__).resolve().parent


def main() -> int:
    """Run the selected benchmarks; exit 1 if any of them failed to run."""
    available = sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "only",
        nargs="*",
        help=f"benchmarks to run, by name or comma-separated (default all: {', '.join(available)})",
    )
    args = parser.parse_args()
    chosen = [name for arg in args.only for name in arg.split(",") if name]
    unknown = sorted(set(chosen) - set(available))
    if unknown:
        parser.error(f"no benchmark {', '.join(unknown)}; choose from {', '.join(available)}")
    failed = []
    for name in chosen or available:
        print(f"\n==> bench: {name}", flush=True)
        result = subprocess.run([sys.executable, str(HERE / f"bench_{name}.py")], check=False)
        if result.returncode != 0:
            failed.append(name)
    print(f"\nbench: figures in {RESULTS}")
    if failed:
        print(f"\nbench: failed to run: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
