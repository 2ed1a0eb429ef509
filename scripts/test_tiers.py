"""`make test`'s test run: the end-to-end tier beside the unit and integration tiers.

Why side by side: the e2e tier spends most of its time waiting (meshes starting, sagas, Kafka
round trips) while the unit and integration tiers want the CPU, so running them at once takes
about as long as the longer of the two instead of their sum. Each runs in its own pytest process
on its own Kafka test broker (``MESH_TEST_KAFKA_PORT``: 19092 for e2e, 19192 for the others,
each with its own data in ``.cache/``), because some tests stop and start their broker on
purpose (the relay's outage test, chaos broker-restart) and must not take the other tier's
away. Nothing else is shared: the e2e tier owns the mesh's default ports; the other tiers use
none.

Output: a progress line every 30 s while both run, then each tier's whole pytest report, one
after the other, and a last line per tier. The exit status is 0 only when every tier passed.
Each tier's report is also kept in ``.cache/test-logs/<tier>.log``.

    python scripts/test_tiers.py [PYTEST_ARGS...]    (extra arguments go to both tiers)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / ".cache" / "test-logs"
PROGRESS_EVERY_S = 30.0
PERCENT = re.compile(r"\[\s*\d+%\]")
RESULT_MARKS = set(".FEsxX")


@dataclass(frozen=True)
class Tier:
    """One pytest run: its name, its test paths and the port of its own test broker."""

    name: str
    paths: tuple[str, ...]
    broker_port: int


TIERS = (
    Tier("e2e", ("tests/e2e",), 19092),
    # integration before unit, the order of a plain `pytest tests`
    Tier("integration+unit", ("tests/integration", "tests/unit"), 19192),
)


def progress(log: Path) -> str:
    """How far a tier is: the tests pytest -q has reported so far (one character each on its
    progress lines, ``F`` and ``E`` for failures and errors)."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return "starting"
    done = failed = 0
    for line in text.splitlines():
        marks = PERCENT.sub("", line).strip()
        if marks and set(marks) <= RESULT_MARKS:
            done += len(marks)
            failed += marks.count("F") + marks.count("E")
    if not done:
        return "collecting"
    return f"{done} tests" + (f" ({failed} failed)" if failed else "")


def broker(tier: Tier, command: str) -> subprocess.CompletedProcess[str]:
    """``scripts/kafka --test COMMAND`` for the tier's broker."""
    return subprocess.run(
        [str(ROOT / "scripts" / "kafka"), "--test", command],
        env={**os.environ, "MESH_TEST_KAFKA_PORT": str(tier.broker_port)},
        capture_output=True,
        text=True,
        timeout=900,  # a cold start fetches the Kafka jars with mvn first
        check=False,
    )


def main(argv: list[str]) -> int:
    """Start the tiers' brokers, then every tier; report progress until all are done, print
    their reports, stop the brokers this run started."""
    LOGS.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    # One at a time, before the tiers: the first start fetches the jars (two mvn runs into one
    # cache would race), and a tier finding its broker running leaves it to us to stop.
    ours: list[Tier] = []
    for tier in TIERS:
        if broker(tier, "status").returncode == 0:
            continue
        print(
            f"==> starting the {tier.name} tier's Kafka test broker (127.0.0.1:{tier.broker_port})"
        )
        result = broker(tier, "start")
        if result.returncode != 0:  # once seen: a JVM that exited at once, logging nothing
            print(f"==> the {tier.name} tier's broker did not start; once more", flush=True)
            result = broker(tier, "start")
        if result.returncode != 0:
            print(result.stdout + result.stderr, file=sys.stderr)
            print(f"==> tests: the {tier.name} tier's broker did not start", file=sys.stderr)
            for done in ours:
                broker(done, "stop")
            return 1
        ours.append(tier)
    try:
        return run_tiers(argv, started)
    finally:
        for tier in ours:
            broker(tier, "stop")


def run_tiers(argv: list[str], started: float) -> int:
    """Run every tier at once and report."""
    running: list[tuple[Tier, Path, subprocess.Popen[bytes]]] = []
    for tier in TIERS:
        log = LOGS / f"{tier.name}.log"
        env = {**os.environ, "MESH_TEST_KAFKA_PORT": str(tier.broker_port)}
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "pytest", *tier.paths, "-q", "--durations=10", *argv],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        running.append((tier, log, process))
    print(
        "==> tests: "
        + ", ".join(f"{t.name} ({' '.join(t.paths)})" for t in TIERS)
        + f" side by side; reports in {LOGS.relative_to(ROOT)}/",
        flush=True,
    )
    next_report = time.monotonic() + PROGRESS_EVERY_S
    try:
        while any(p.poll() is None for _, _, p in running):
            time.sleep(0.5)  # a poll interval: the tiers run on their own
            if time.monotonic() >= next_report:
                next_report += PROGRESS_EVERY_S
                states = [
                    f"{t.name} {progress(log)}{'' if p.poll() is None else ', done'}"
                    for t, log, p in running
                ]
                print(f"    {time.monotonic() - started:4.0f}s  " + ", ".join(states), flush=True)
    except KeyboardInterrupt:
        for _, _, process in running:
            process.terminate()
        for _, _, process in running:
            process.wait()
        raise
    failed = []
    for tier, log, process in running:
        print(f"\n==> {tier.name} ({' '.join(tier.paths)}):", flush=True)
        sys.stdout.buffer.write(log.read_bytes())
        sys.stdout.flush()
        if process.returncode != 0:
            failed.append(f"{tier.name} (exit {process.returncode})")
    took = time.monotonic() - started
    if failed:
        print(f"\n==> tests FAILED in {took:.0f}s: {', '.join(failed)}", flush=True)
        return 1
    print(f"\n==> tests passed in {took:.0f}s: every tier", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
