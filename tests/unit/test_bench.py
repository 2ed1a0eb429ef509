"""`make bench`'s plumbing: figures merged by name into results.json, subsets chosen by name."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"


def record(results: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Call benchlib.record(*args) in a fresh interpreter writing to ``results``."""
    code = (
        "import sys, json; sys.path.insert(0, sys.argv[1]); from benchlib import record;"
        " print(json.dumps(record(*json.loads(sys.argv[2]), **json.loads(sys.argv[3]))))"
    )
    positional, keywords = args
    return subprocess.run(
        [sys.executable, "-c", code, str(SCRIPTS), positional, keywords],
        env={"MESH_BENCH_RESULTS": str(results), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )


def test_figures_merge_by_name_with_ratio_machine_and_commit(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    record(results, '["events.throughput", 9000, "events/s"]', '{"baseline": 90000}')
    record(results, '["saga.paced.p99", 200, "ms"]', '{"baseline": 40, "better": "lower"}')
    record(results, '["events.throughput", 12000, "events/s"]', '{"baseline": 100000}')
    figures = {f["name"]: f for f in json.loads(results.read_text())["figures"]}
    assert sorted(figures) == ["events.throughput", "saga.paced.p99"]  # replaced, not added
    events = figures["events.throughput"]
    assert (events["value"], events["baseline"], events["ratio"]) == (12000, 100000, 0.12)
    assert events["unit"] == "events/s" and events["better"] == "higher"
    assert figures["saga.paced.p99"]["ratio"] == 5.0
    assert figures["saga.paced.p99"]["better"] == "lower"
    for figure in figures.values():
        assert figure["machine"]["cpus"] >= 1 and figure["machine"]["python"]
        assert figure["commit"]  # the checkout's commit, or "unknown" outside git


def test_a_figure_without_baseline_has_no_ratio_and_better_is_checked(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    record(results, '["load.cpu", 1.5, "ms"]', "{}")
    (figure,) = json.loads(results.read_text())["figures"]
    assert figure["baseline"] is None and figure["ratio"] is None
    bad = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); from benchlib import record;"
            " record('x', 1, 'ms', better='faster')",
            str(SCRIPTS),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode != 0 and "better must be" in bad.stderr


def test_bench_refuses_an_unknown_benchmark_and_lists_the_known_ones() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench.py"), "events,nope"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "no benchmark nope" in result.stderr
    for name in ("events", "saga", "order_views", "tracing", "registry", "control"):
        assert name in result.stderr
