"""What every benchmark shares: recording its figures in ``.bench/results.json``.

Each figure is one JSON object: ``name`` (e.g. ``events.throughput``), ``value``, ``unit``,
``baseline`` (the baseline's value measured in the same run, or null), ``baseline_name`` (what
that baseline is), ``ratio`` (value / baseline, or null), ``better`` (``higher`` or ``lower``),
``target`` (the figure the project aims at, or null), ``machine`` and ``commit``, ``at`` (UTC).

``record`` merges by name into the file under a lock, so a subset run (``make bench ONLY=...``)
or one benchmark run by hand replaces its own figures and keeps the others (each says the commit
it was measured on). Nothing here passes or fails on a number.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import platform
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(os.environ.get("MESH_BENCH_RESULTS", ROOT / ".bench" / "results.json"))


def machine() -> dict[str, Any]:
    """Where the figures were measured: host, cores, memory, OS and Python."""
    mem_gib = None
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        mem_gib = round(pages * size / 2**30, 1)
    except (ValueError, OSError):
        pass
    return {
        "host": socket.gethostname(),
        "cpus": os.cpu_count(),
        "memory_gib": mem_gib,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def calls_per_second(
    call: Callable[[], object], threads: int, seconds: float, warmup: int = 200
) -> float:
    """How many times a second ``threads`` threads can run ``call`` back to back for
    ``seconds`` (after ``warmup`` calls on this thread: connections made, caches filled)."""
    for _ in range(warmup):
        call()
    counts = [0] * threads
    stop = threading.Event()

    def run(n: int) -> None:
        while not stop.is_set():
            call()
            counts[n] += 1

    workers = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    began = time.perf_counter()
    for worker in workers:
        worker.start()
    stop.wait(seconds)
    stop.set()
    for worker in workers:
        worker.join()
    return sum(counts) / (time.perf_counter() - began)


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def commit() -> str:
    """The checked-out commit, with ``-dirty`` when the work tree has changes."""
    try:
        head = _git("rev-parse", "--short=12", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}-dirty" if dirty else head


def record(
    name: str,
    value: float,
    unit: str,
    *,
    baseline: float | None = None,
    baseline_name: str = "",
    better: str = "higher",
    target: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Record one figure (merged into ``.bench/results.json`` by ``name``); returns it."""
    if better not in ("higher", "lower"):
        raise ValueError(f"better must be 'higher' or 'lower', not {better!r}")
    figure: dict[str, Any] = {
        "name": name,
        "value": round(float(value), 3),
        "unit": unit,
        "baseline": None if baseline is None else round(float(baseline), 3),
        "baseline_name": baseline_name,
        "ratio": round(value / baseline, 4) if baseline else None,
        "better": better,
        "target": target,
        "machine": machine(),
        "commit": commit(),
        "at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        **extra,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            figures = json.loads(RESULTS.read_text())["figures"]
        except (OSError, ValueError, KeyError, TypeError):
            figures = []
        figures = [f for f in figures if f.get("name") != name] + [figure]
        figures.sort(key=lambda f: str(f.get("name")))
        tmp = RESULTS.with_suffix(".tmp")
        tmp.write_text(json.dumps({"figures": figures}, indent=2) + "\n")
        tmp.replace(RESULTS)
    return figure
