"""Which Kafka the local mesh uses, and starting or stopping it.

- ``embedded``: librdkafka's mock cluster, hosted by mesh_runner.embedded_kafka; the default
  when nothing is configured. Good for demos, not a real broker.
- ``local``: real Apache Kafka 4.x on 127.0.0.1:9092 (9092 + N for `mesh --port-offset N`, with
  its own data dir), run by mesh_runner.local_kafka in this process (the jars are fetched once
  into <mesh root>/.cache/kafka).
- ``HOST:PORT``: a broker someone else runs; the mesh only points services at it.

The choice is recorded in .mesh/run/kafka-choice.json so that later `mesh up` calls keep it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from mesh_runner import local_kafka
from mesh_runner.config import KAFKA, Mesh
from mesh_runner.processes import ProcessRecord, is_alive, port_open, spawn, tail, terminate

LOCAL_BOOTSTRAP = f"{local_kafka.HOST}:{local_kafka.PORT}"


class KafkaError(RuntimeError):
    """Kafka could not be started or reached; the message says why."""


@dataclass(frozen=True)
class KafkaChoice:
    """The Kafka the mesh runs against."""

    mode: str  # embedded | local | external
    bootstrap: str
    managed: bool  # True when `mesh down` should stop it

    def save(self, run_dir: Path) -> None:
        """Record the choice for later `mesh` calls."""
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "kafka-choice.json").write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, run_dir: Path) -> KafkaChoice | None:
        """The recorded choice, if any."""
        try:
            return cls(**json.loads((run_dir / "kafka-choice.json").read_text()))
        except (OSError, ValueError, TypeError):
            return None


def requested_mode(flag: str | None) -> str:
    """The --kafka flag, else $MESH_KAFKA_BOOTSTRAP (an external broker), else ``embedded``."""
    if flag:
        return flag
    return os.environ.get("MESH_KAFKA_BOOTSTRAP") or "embedded"


def ensure_kafka(mesh: Mesh, flag: str | None, say: object = print) -> KafkaChoice:
    """Make sure the requested Kafka is up and return it (reusing what is already running)."""
    recorded = KafkaChoice.load(mesh.run_dir)
    if recorded and kafka_running(mesh, recorded):
        wanted = requested_mode(flag) if flag else recorded.mode
        if wanted not in (recorded.mode, recorded.bootstrap):
            raise KafkaError(
                f"the mesh runs with {recorded.mode} Kafka ({recorded.bootstrap});"
                f" run `mesh down` before switching to {wanted}"
            )
        _say(say, f"kafka: {recorded.mode} on {recorded.bootstrap} (already running)")
        return recorded
    mode = requested_mode(flag)
    if mode == "embedded":
        choice = _start_embedded(mesh, say)
    elif mode == "local":
        choice = _start_local(mesh, say)
    else:
        host, _, port = mode.rpartition(":")
        if not host or not port.isdigit():
            raise KafkaError(f"--kafka takes embedded, local or HOST:PORT, not {mode!r}")
        choice = KafkaChoice("external", mode, managed=False)
        _wait_port(choice.bootstrap, 30, f"Kafka at {mode}")
        _say(say, f"kafka: external broker at {mode}")
    choice.save(mesh.run_dir)
    return choice


def kafka_running(mesh: Mesh, choice: KafkaChoice) -> bool:
    """True when the recorded Kafka answers (and, if embedded, its process is ours)."""
    if choice.mode == "embedded":
        record = ProcessRecord.load(mesh.run_dir, KAFKA)
        if record is None or not is_alive(record):
            return False
    host, _, port = choice.bootstrap.rpartition(":")
    return port_open(host, int(port))


def stop_kafka(mesh: Mesh, say: object = print) -> None:
    """Stop the Kafka that `mesh up` started (nothing for an external broker)."""
    choice = KafkaChoice.load(mesh.run_dir)
    if choice is None:
        return
    if choice.mode == "embedded":
        record = ProcessRecord.load(mesh.run_dir, KAFKA)
        if record and terminate(record):
            _say(say, "kafka: embedded broker stopped")
        ProcessRecord.forget(mesh.run_dir, KAFKA)
    elif choice.mode == "local" and choice.managed:
        try:
            local_kafka.cmd_stop(local_paths(mesh))
        except local_kafka.LocalKafkaError as exc:
            _say(say, str(exc))
    (mesh.run_dir / "kafka-choice.json").unlink(missing_ok=True)


def _start_embedded(mesh: Mesh, say: object) -> KafkaChoice:
    bootstrap_file = mesh.run_dir / "kafka.bootstrap"
    bootstrap_file.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "mesh_runner.embedded_kafka"]
    argv += ["--bootstrap-file", str(bootstrap_file)]
    log_path = mesh.log_dir / f"{KAFKA}.log"
    record = spawn(KAFKA, argv, port=0, env=os.environ, cwd=mesh.root, log_path=log_path)
    deadline = time.monotonic() + 30
    while not bootstrap_file.exists():
        if not is_alive(record):
            raise KafkaError(f"embedded Kafka exited at start:\n{tail(log_path)}")
        if time.monotonic() > deadline:
            terminate(record)
            raise KafkaError(f"embedded Kafka gave no address in 30s:\n{tail(log_path)}")
        time.sleep(0.05)  # poll interval within the deadline loop
    bootstrap = bootstrap_file.read_text().strip()
    port = int(bootstrap.rpartition(":")[2])
    record = dataclasses.replace(record, port=port)
    record.save(mesh.run_dir)
    _say(say, f"kafka: embedded mock cluster on {bootstrap}")
    return KafkaChoice("embedded", bootstrap, managed=True)


def local_paths(mesh: Mesh) -> local_kafka.Paths:
    """The broker `mesh up --kafka local` runs for ``mesh``: its data dir under the mesh's root,
    its ports moved by the mesh's port offset."""
    try:
        return local_kafka.Paths.for_root(mesh.root, mesh.port_offset)
    except local_kafka.LocalKafkaError as exc:
        raise KafkaError(str(exc)) from None


def _start_local(mesh: Mesh, say: object) -> KafkaChoice:
    paths = local_paths(mesh)
    was_running = local_kafka.running(paths)
    bootstrap = paths.bootstrap
    _say(say, f"kafka: starting real Apache Kafka {local_kafka.KAFKA_VERSION} on {bootstrap}")
    try:
        result = local_kafka.cmd_start(paths)
    except local_kafka.LocalKafkaError as exc:
        raise KafkaError(str(exc)) from None
    if result != local_kafka.EXIT_OK:
        raise KafkaError(f"local Kafka did not start (log: {paths.log})")
    _wait_port(bootstrap, 60, f"Kafka on {bootstrap}")
    # Stopped by `mesh down` only when this call started it.
    return KafkaChoice("local", bootstrap, managed=not was_running)


def _wait_port(bootstrap: str, timeout: float, what: str) -> None:
    host, _, port = bootstrap.rpartition(":")
    deadline = time.monotonic() + timeout
    while not port_open(host, int(port)):
        if time.monotonic() > deadline:
            raise KafkaError(f"{what} does not answer after {timeout:.0f}s")
        time.sleep(0.1)  # poll interval within the deadline loop


def _say(say: object, message: str) -> None:
    if callable(say):
        say(message)
