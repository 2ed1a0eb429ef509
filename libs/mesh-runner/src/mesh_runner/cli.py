"""``mesh``: run the whole mesh on this machine.

    mesh up [-d] [--kafka embedded|local|HOST:PORT]   start what is not running, health-gated
            [--replicas inventory=2,payments=2]       ... with more processes of some components
            [--registry-replicas N]                   ... with N schema registry instances
            [--tls]                                   ... with mTLS on every gRPC hop (docs/mtls.md)
                                                      (foreground: Ctrl-C, SIGTERM, SIGHUP stop it)
    mesh --port-offset N COMMAND                      a second mesh: every port + N, .mesh/offset-N/
    mesh certs [--dir D] [--days N] [--force]         the local CA and a certificate per component
    mesh down                                         stop everything `mesh up` started
    mesh ps [--json]                                  what runs: pids, ports, open breakers
    mesh logs [SERVICE] [-f] [-n N|all] [--since T]   the components' logs (last 200 lines)
    mesh dlq ls|replay TOPIC                          dead letters of TOPIC (TOPIC.dlq)
    mesh sagas [--all] [--json] [--token T]           sagas in flight: step, state, age, stuck
    mesh rebuild PROJECTION [--token T]               rebuild a read model and swap it in
    mesh trace TRACE_ID [--json] [--jaeger URL]       one trace as a tree (local store or Jaeger)
                        [--html [PATH]] [--open]      ... or as a waterfall page that works offline
    mesh traces [--limit N]                           recent traces: root, services, duration
    mesh load --rate R --duration S [--json]          PlaceOrder at a steady rate; latency summary
    mesh faults set|clear|ls                          abort, delay or drop some of a service's calls
    mesh chaos SCENARIO [--rate R] [--json]           a fault under load: lost/doubled orders, stock
    mesh experiments ls|report KEY|simulate KEY       A/B experiments: analysis, SRM check, traffic
    mesh audit verify [--db PATH] [--public-key PEM]  check the audit trail's chain and signatures
    mesh audit ls [--actor S] [--action A] [--since]  search the audit trail (an auditor's token)
    mesh token [--role R] [--subject ID] [--ttl S]    an access token from identity, for local use
    mesh config get|set|history|rollback|status|schema NAMESPACE   the live configuration
    mesh flags set FILE | eval FLAG --context JSON | ls   feature flags (flagd), as services see

The commands that call services (sagas, rebuild, load, audit ls) send an access token: the one
given with ``--token``, else ``$MESH_TOKEN``, else one they mint through the mesh's identity (as
``mesh token`` does) with the least role the command needs: admin for sagas, rebuild and load
(which places orders for its test customers), auditor for audit ls.

Replicas: ``--replicas NAME=N,...`` runs N processes of a component (kept for later plain
``mesh up`` calls until ``mesh down``). Replica k >= 2 is ``NAME#k`` in ``mesh ps`` and ``mesh
logs``, listens on the component's port + 1000 * (k - 1), and shares its database; every
component gets ``MESH_ADDRESS_NAME=127.0.0.1:PORT,127.0.0.1:PORT+1000,...`` and balances its
calls over them (meshkit.client). Components with an HTTP side (gateway, identity) and the trace
receiver run once (see ``not_replicable``).

Registry instances: ``--registry-replicas N`` (N > 1) runs the schema registry as N instances on
one Kafka topic, ``_schemas`` on the mesh's broker, which elect one primary (schema_registry.
election) instead of one process on its SQLite file. It needs a real broker (``--kafka local`` or
``HOST:PORT``): the embedded mock cluster auto-creates every topic with 4 partitions and cannot
create the single-partition compacted one the registry requires. Instance k listens on
127.0.0.1:8081 + k - 1 (8081, 8082, 8083, ...; the ports below identity's 8090, so at most 9),
is ``schema-registry#k`` in ``mesh ps`` (with its role, primary or follower, read from its log)
and ``mesh logs``, and advertises its own URL to the others. register-all (the component's
after_start) runs once the last instance is healthy, with every URL, and every component gets
them all in ``SCHEMA_REGISTRY_URL`` (comma separated; meshkit and the CLI fail over between
them). Kept until ``mesh down``; changing N while the registry runs is refused (one instance
keeps SQLite, several Kafka: a running registry cannot change its storage).

Exit codes: 0 success, 1 failure, 2 usage error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from mesh_runner import (
    audit,
    certs,
    chaos,
    configcli,
    dlq,
    experimentscli,
    faults,
    flagscli,
    load,
    logpipe,
    logread,
    rebuild,
    sagas,
    scaffold,
    token,
    traces,
)
from mesh_runner.config import (
    KAFKA,
    Component,
    ConfigError,
    Mesh,
    find_root,
    load_mesh,
    offset_root,
    port_offset_from_env,
    resolve_command,
)
from mesh_runner.kafka import (
    KafkaChoice,
    KafkaError,
    ensure_kafka,
    kafka_running,
    requested_mode,
    stop_kafka,
)
from mesh_runner.logread import DEFAULT_TAIL
from mesh_runner.processes import (
    ProcessRecord,
    ReplicaSpecError,
    breaker_states,
    healthy,
    is_alive,
    load_replicas,
    log_lines,
    parse_replicas,
    port_open,
    replica_name,
    replica_port,
    replica_records,
    save_replicas,
    shield_stop,
    spawn,
    stop_signals,
    tail,
    terminate,
)
from meshkit.addresses import env_key
from meshkit.console import quiet_on_closed_stdout
from meshkit.tls import TLS_DIR_ENV, TLS_NAME_ENV, CertFiles

HEALTH_TIMEOUT = 60.0
# The registry and the local trace receiver are mesh.toml's components of these names; how fast
# spans reach the receiver: the SDK's default batch delay is 5 s, long for someone waiting on
# `mesh trace`.
REGISTRY = "schema-registry"
TRACE_RECEIVER = "trace-receiver"
LOCAL_BSP_DELAY_MS = "500"
OTLP_ENDPOINT_KEYS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
# Several registry instances share this topic on the mesh's broker (Confluent's default name).
REGISTRY_TOPIC = "_schemas"


TOKEN_ENV = "MESH_TOKEN"  # noqa: S105 (the name of a variable, not a secret)


class UpError(RuntimeError):
    """A component did not come up; the message carries the end of its log."""


def say(message: str) -> None:
    """Progress for people, on stderr so stdout stays clean for --json."""
    print(f"==> {message}", file=sys.stderr, flush=True)


def component_env(mesh: Mesh, choice: KafkaChoice, component: Component) -> dict[str, str]:
    """The environment a component starts with: ours, the mesh-wide settings, its own.

    ``MESH_CONFIG`` names this mesh.toml, where a service finds its own port and its peers'
    (meshkit.addresses), whatever its working directory.
    """
    env = dict(os.environ)
    env["MESH_CONFIG"] = str(mesh.root / "mesh.toml")
    ports = {c.name: c.port for c in mesh.components}
    # Every replica of a replicated component, for clients to balance over (meshkit.client);
    # an address set in `mesh up`'s own environment stays as it is.
    counts = load_replicas(mesh.run_dir)
    for name, count in counts.items():
        if name in ports and name != REGISTRY:
            env.setdefault(
                env_key(name),
                ",".join(f"127.0.0.1:{replica_port(ports[name], k)}" for k in range(1, count + 1)),
            )
    if REGISTRY in ports:
        urls = registry_urls(ports[REGISTRY], counts.get(REGISTRY, 1))
        env.setdefault("SCHEMA_REGISTRY_URL", ",".join(urls))
    env["MESH_KAFKA_BOOTSTRAP"] = choice.bootstrap
    if choice.mode == "embedded":
        # The mock cluster cannot create topics (no controller); it auto-creates them.
        env["MESH_KAFKA_CREATE_TOPICS"] = "false"
    env["PYTHONUNBUFFERED"] = "1"
    if component.traced:
        # Tracing: to the endpoint the user set (Jaeger, a collector), else to the local
        # receiver `mesh up` started first; each component is a service of its own name.
        if not any(os.environ.get(k) for k in OTLP_ENDPOINT_KEYS):
            receiver = ports.get(TRACE_RECEIVER)
            if receiver is not None:
                env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{receiver}"
            env.setdefault("OTEL_BSP_SCHEDULE_DELAY", LOCAL_BSP_DELAY_MS)
        env["OTEL_SERVICE_NAME"] = component.name
    env.update(certs.component_env(mesh, component, env))  # with TLS: its certificate's name
    env.update(component.env)
    return env


def call_token(given: str | None, root: Path | None, role: str) -> str:
    """The access token a command calls the mesh's services with: ``given`` (its ``--token``),
    else ``$MESH_TOKEN``, else one minted by the mesh's identity (``mesh token --role ROLE``),
    ``role`` being the least the command needs. RuntimeError saying what to pass instead when
    none can be had (no mesh.toml, no identity in it, identity's database not there yet)."""
    if given:
        return given
    if os.environ.get(TOKEN_ENV, "").strip():
        return os.environ[TOKEN_ENV].strip()
    # Imported here: token imports this module for component_env.
    from mesh_runner.token import mint

    try:
        return mint(root, role)
    except (ConfigError, RuntimeError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(
            f"no token given and none could be minted with role {role} ({exc}): pass"
            f" --token, or set {TOKEN_ENV} (e.g. $(mesh token --role {role}) where the mesh runs)"
        ) from None


def token_help(role: str) -> str:
    """The ``--token`` help of a command that needs ``role``."""
    return (
        f"the access token to call with (default: ${TOKEN_ENV}, else one minted by the mesh's"
        f" identity with role {role}, as `mesh token --role {role}` does)"
    )


def start_component(mesh: Mesh, component: Component, choice: KafkaChoice) -> str:
    """Start ``component`` unless it runs already; wait until healthy. Returns what happened."""
    record = ProcessRecord.load(mesh.run_dir, component.name)
    if record and is_alive(record):
        _wait_healthy(mesh, component, record)
        return f"{component.name}: already running (pid {record.pid}, port {component.port})"
    if port_open("127.0.0.1", component.port):
        # Not ours, yet the port answers: starting would fail to bind, and the health check
        # would be answered by the stranger, so say so instead of pretending it is up.
        raise UpError(
            f"{component.name}: port {component.port} is already in use by another process"
            " (another mesh? `mesh ps` in its checkout, or stop it)"
        )
    if component.http_port is not None and port_open("127.0.0.1", component.http_port):
        raise UpError(
            f"{component.name}: its HTTP port {component.http_port} is already in use by another"
            " process (another mesh? `mesh ps` in its checkout, or stop it)"
        )
    started = time.monotonic()
    log_path = mesh.log_dir / f"{component.name}.log"
    record = spawn(
        component.name,
        resolve_command(component.command),
        port=component.port,
        env=component_env(mesh, choice, component),
        cwd=mesh.root,
        log_path=log_path,
    )
    record.save(mesh.run_dir)
    _wait_healthy(mesh, component, record)
    for command in component.after_start:
        result = subprocess.run(
            resolve_command(command),
            cwd=mesh.root,
            env=component_env(mesh, choice, component),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise UpError(
                f"{component.name}: `{' '.join(command)}` failed (exit {result.returncode}):\n"
                f"{result.stdout}{result.stderr}"
            )
    took = time.monotonic() - started
    http = f", HTTP on :{component.http_port}" if component.http_port is not None else ""
    return (
        f"{component.name}: healthy on 127.0.0.1:{component.port}{http}"
        f" (pid {record.pid}, {took:.1f}s)"
    )


def _wait_healthy(mesh: Mesh, component: Component, record: ProcessRecord) -> None:
    deadline = time.monotonic() + HEALTH_TIMEOUT
    while not healthy(component.health, component.port):
        if not is_alive(record):
            ProcessRecord.forget(mesh.run_dir, component.name)
            raise UpError(f"{component.name} exited during start-up:\n{tail(Path(record.log))}")
        if time.monotonic() > deadline:
            terminate(record)
            ProcessRecord.forget(mesh.run_dir, component.name)
            raise UpError(
                f"{component.name} not healthy after {HEALTH_TIMEOUT:.0f}s:\n"
                f"{tail(Path(record.log))}"
            )
        time.sleep(0.05)  # poll interval within the deadline loop


def not_replicable(component: Component) -> str | None:
    """Why ``component`` cannot run as several processes, or None when it can.

    Replicas need a gRPC port for clients to balance over and nothing that must be one address:
    the trace receiver is the one OTLP endpoint every component exports to (and its store is
    the file `mesh trace` reads); the registry's instances need Kafka storage and a primary
    (``--registry-replicas``); the gateway's and identity's HTTP sides are the one address
    browsers and OAuth clients (and the token issuer) name, which would need a load balancer
    in front.
    """
    if component.name == TRACE_RECEIVER:
        return "it is the one OTLP endpoint every component exports spans to"
    if component.name == REGISTRY:
        return "its instances share a Kafka topic and elect a primary: use --registry-replicas N"
    if component.health != "grpc":
        return f"it serves {component.health}, not gRPC, so no client balances over replicas"
    if component.http_port is not None:
        return (
            f"its HTTP side (:{component.http_port}) is one address browsers and OAuth clients"
            " use; replicas would need a load balancer in front of it"
        )
    return None


def replica_counts(mesh: Mesh, spec: str | None, registry: int | None = None) -> dict[str, int]:
    """The replica counts to run: those recorded for the running mesh, updated by ``spec``
    (``--replicas``; N=1 takes a component back to one process) and ``registry``
    (``--registry-replicas``). ConfigError (a usage error) for an unknown component, a bad
    count, a component that cannot be replicated, or a replica port that is out of range or
    another component's."""
    counts = load_replicas(mesh.run_dir)
    wanted: dict[str, int] = {}
    if spec is not None:
        try:
            wanted = parse_replicas(spec)
        except ReplicaSpecError as exc:
            raise ConfigError(f"--replicas: {exc}") from None
    taken = {c.port: c.name for c in mesh.components}
    taken.update({c.http_port: c.name for c in mesh.components if c.http_port is not None})
    for name, count in wanted.items():
        component = mesh.component(name)  # ConfigError naming the known ones
        why = not_replicable(component) if count > 1 else None
        if why:
            raise ConfigError(f"--replicas {name}={count}: {name} runs once: {why}")
        _claim_ports(component, count, taken, f"--replicas {name}={count}")
    if registry is not None:
        if registry < 1:
            raise ConfigError(f"--registry-replicas {registry}: the registry runs at least 1")
        _claim_ports(mesh.component(REGISTRY), registry, taken, f"--registry-replicas {registry}")
        wanted[REGISTRY] = registry
    return {**counts, **wanted}


def _claim_ports(component: Component, count: int, taken: dict[int, str], flag: str) -> None:
    """Add the ports of ``component``'s replicas 2..count to ``taken``; ConfigError when one
    is out of range or already taken."""
    for k in range(2, count + 1):
        port = instance_port(component, k)
        name = replica_name(component.name, k)
        if port > 65535 or port in taken:
            clash = f"the port of {taken[port]}" if port in taken else "not a TCP port"
            raise ConfigError(f"{flag}: {name} would listen on {port}, {clash}")
        taken[port] = name


def instance_port(component: Component, k: int) -> int:
    """Where replica ``k`` of ``component`` listens: the registry's next ports (8082, 8083,
    ...), for others the component's port + 1000 * (k - 1) (replica_port)."""
    if component.name == REGISTRY:
        return component.port + k - 1
    return replica_port(component.port, k)


def registry_urls(port: int, count: int) -> list[str]:
    """The URLs of ``count`` registry instances, the first on ``port``."""
    return [f"http://127.0.0.1:{port + k - 1}" for k in range(1, count + 1)]


def registry_instances(component: Component, count: int, bootstrap: str) -> list[Component]:
    """The registry as ``count`` (> 1) instances on the topic REGISTRY_TOPIC at ``bootstrap``:
    each is its replica (name, port, OTel instance id) serving ``--storage kafka://BOOTSTRAP/
    _schemas`` (instead of mesh.toml's, whatever it is) and ``--advertise-url`` its own URL.
    The component's after_start runs after the last instance, with ``--url`` naming them all:
    register-all then succeeds whichever of them is the primary."""
    urls = ",".join(registry_urls(component.port, count))
    storage = f"kafka://{bootstrap}/{REGISTRY_TOPIC}"
    plan = []
    for k in range(1, count + 1):
        each = replica(component, k)
        command = _with_option(each.command, "--storage", storage, add=True)
        command = (*command, "--advertise-url", f"http://127.0.0.1:{each.port}")
        after = (
            tuple(_with_option(c, "--url", urls, add=False) for c in component.after_start)
            if k == count
            else ()
        )
        plan.append(dataclasses.replace(each, command=command, after_start=after))
    return plan


def _with_option(argv: tuple[str, ...], flag: str, value: str, *, add: bool) -> tuple[str, ...]:
    """``argv`` with ``flag``'s value (``flag V`` or ``flag=V``) set to ``value``; appended
    when ``add`` and ``argv`` has no such flag."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == flag and i + 1 < len(out):
            out[i + 1] = value
            return tuple(out)
        if arg.startswith(f"{flag}="):
            out[i] = f"{flag}={value}"
            return tuple(out)
    return (*out, flag, value) if add else tuple(out)


def check_registry_count(mesh: Mesh, kafka: str | None, before: int, count: int) -> None:
    """ConfigError when ``count`` registry instances cannot run: several on the embedded mock
    cluster (it auto-creates every topic with 4 partitions and cannot create one: the registry
    refuses such a topic), or a change of count while the registry runs (one instance serves
    SQLite, several Kafka; a running process cannot switch)."""
    if count != before:
        record = ProcessRecord.load(mesh.run_dir, REGISTRY)
        if record is not None and is_alive(record):
            raise ConfigError(
                f"--registry-replicas {count}: the registry runs {before} instance(s) now;"
                " `mesh down` first (one instance keeps its state in SQLite, several in Kafka)"
            )
    if count > 1:
        recorded = KafkaChoice.load(mesh.run_dir)
        running = recorded is not None and kafka_running(mesh, recorded)
        mode = recorded.mode if (recorded is not None and running) else requested_mode(kafka)
        if mode == "embedded":
            raise ConfigError(
                f"--registry-replicas {count} needs a real broker: --kafka local or HOST:PORT"
                " (the embedded mock cluster auto-creates every topic with 4 partitions and"
                f" cannot create the single-partition, compacted {REGISTRY_TOPIC} the"
                " instances share)"
            )


def replica(component: Component, k: int) -> Component:
    """Replica ``k`` of a replicated ``component`` as a component of its own: named
    ``NAME#k`` (its record, pid and log), on its replica port (``<NAME>_PORT``, and the port in
    its command line if it names one), the same service name and database; each replica,
    the first included, has its own OTel ``service.instance.id``."""
    port = instance_port(component, k)
    env = dict(component.env)
    if k > 1:
        env[f"{component.name.upper().replace('-', '_')}_PORT"] = str(port)
        if component.traced:
            env["OTEL_SERVICE_NAME"] = component.name
        directory = os.environ.get(TLS_DIR_ENV)
        if directory:
            # Its certificate is the component's (`mesh certs` issues one per component), also
            # for exporting spans to the mesh's own receiver over mTLS.
            env[TLS_NAME_ENV] = component.name
            if not any(os.environ.get(key) for key in OTLP_ENDPOINT_KEYS):
                files = CertFiles(Path(directory), component.name)
                env["OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"] = str(files.cert)
                env["OTEL_EXPORTER_OTLP_CLIENT_KEY"] = str(files.key)
    instance = f"service.instance.id={replica_name(component.name, k)}"
    given = env.get("OTEL_RESOURCE_ATTRIBUTES", os.environ.get("OTEL_RESOURCE_ATTRIBUTES", ""))
    env["OTEL_RESOURCE_ATTRIBUTES"] = f"{given},{instance}" if given.strip() else instance
    if k == 1:
        return dataclasses.replace(component, env=env)
    command = tuple(str(port) if arg == str(component.port) else arg for arg in component.command)
    return dataclasses.replace(
        component,
        name=replica_name(component.name, k),
        port=port,
        command=command,
        env=env,
        after_start=(),  # once per component, done by the first
    )


def instances(component: Component, counts: dict[str, int], bootstrap: str = "") -> list[Component]:
    """``component`` as it runs: itself, or its replicas when ``counts`` has more than one
    (the registry's on Kafka at ``bootstrap``: registry_instances)."""
    count = counts.get(component.name, 1)
    if count == 1:
        return [component]
    if component.name == REGISTRY:
        return registry_instances(component, count, bootstrap)
    return [replica(component, k) for k in range(1, count + 1)]


def stop_extra_replicas(mesh: Mesh, name: str, count: int) -> None:
    """Stop ``name``'s replicas beyond ``count`` (a scale-down), the last first."""
    for record in reversed(replica_records(mesh.run_dir, name)):
        k = int(record.name.rpartition("#")[2])
        if k > count:
            if terminate(record):
                say(f"{record.name}: stopped (pid {record.pid}; {name} runs {count} now)")
            ProcessRecord.forget(mesh.run_dir, record.name)


def cmd_up(
    mesh: Mesh,
    detach: bool,
    kafka: str | None,
    replicas: str | None = None,
    registry_replicas: int | None = None,
) -> int:
    """Start Kafka and every component in order (each replica after the one before it); then
    follow logs unless ``detach``."""
    before = load_replicas(mesh.run_dir)
    # ConfigError: a usage error, nothing started.
    try:
        logpipe.limits(os.environ)  # how logs rotate: MESH_LOG_MAX_BYTES, MESH_LOG_KEEP
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    counts = replica_counts(mesh, replicas, registry_replicas)
    if any(c.name == REGISTRY for c in mesh.components):
        check_registry_count(mesh, kafka, before.get(REGISTRY, 1), counts.get(REGISTRY, 1))
    running = [
        c.name
        for c in mesh.components
        if (r := ProcessRecord.load(mesh.run_dir, c.name)) is not None and is_alive(r)
    ]
    save_replicas(mesh.run_dir, counts)  # before any start: component_env lists the replicas
    # SIGTERM and SIGHUP stop a foreground mesh as Ctrl-C does (start-up included): a mesh
    # whose `mesh up` is gone would run on with no one to stop it but `mesh down`.
    with stop_signals():
        try:
            return _up(
                mesh, detach=detach, kafka=kafka, counts=counts, before=before, running=running
            )
        except KeyboardInterrupt as stop:  # Ctrl-C, or StopRequested (SIGTERM, SIGHUP)
            shield_stop(stop)
            if detach:
                say("interrupted: what started keeps running; `mesh down` stops it")
                return 130
            say(f"stopping ({stop.args[0] if stop.args else 'Ctrl-C'})")
            return _down_after_stop(mesh)
        except BrokenPipeError:
            if detach:
                raise
            # Our reader left (`mesh up | head`): the foreground mesh ends with its output,
            # then quiet_on_closed_stdout ends the command.
            say("stdout was closed: stopping")
            _down_after_stop(mesh)
            raise


def _up(
    mesh: Mesh,
    *,
    detach: bool,
    kafka: str | None,
    counts: dict[str, int],
    before: dict[str, int],
    running: list[str],
) -> int:
    """cmd_up's start and (unless ``detach``) follow; the caller handles how it is stopped."""
    offsets = {p: p.stat().st_size for p in mesh.log_dir.glob("*.log")}
    try:
        choice = ensure_kafka(mesh, kafka, say)
        for component in mesh.components:
            because = component.skipped(os.environ)
            if because:
                say(f"{component.name}: not started ({because} is set)")
                continue
            for each in instances(component, counts, choice.bootstrap):
                say(start_component(mesh, each, choice))
            stop_extra_replicas(mesh, component.name, counts.get(component.name, 1))
    except (KafkaError, UpError) as exc:
        print(f"mesh up: {exc}", file=sys.stderr)
        return 1
    if counts != before and running:
        # A component finds its peers' addresses in its environment, given at its start.
        say(
            f"note: {', '.join(running)} ran already and keep the replica addresses they started"
            " with; `mesh down` and `mesh up` to have every client balance over the new replicas"
        )
    say("mesh is up" + ("; `mesh down` stops it" if detach else "; Ctrl-C stops it"))
    if detach:
        return 0
    follow(mesh, None, offsets)
    return 0


def _down_after_stop(mesh: Mesh) -> int:
    """`mesh down` for a foreground mesh told to stop; a second Ctrl-C cuts it short (130)."""
    try:
        return cmd_down(mesh)
    except KeyboardInterrupt:
        say("interrupted while stopping; `mesh down` stops the rest")
        return 130


def cmd_down(mesh: Mesh) -> int:
    """Stop every component (reverse order), then Kafka; remove their records."""
    for component in reversed(mesh.components):
        stop_extra_replicas(mesh, component.name, 1)
        record = ProcessRecord.load(mesh.run_dir, component.name)
        if record is None:
            continue
        if terminate(record):
            say(f"{component.name}: stopped (pid {record.pid})")
        ProcessRecord.forget(mesh.run_dir, component.name)
    save_replicas(mesh.run_dir, {})  # a mesh started later starts with one of each
    certs.forget(mesh.run_dir)  # the next mesh up chooses TLS or not afresh
    stop_kafka(mesh, say)
    say("mesh is down")
    return 0


def statuses(mesh: Mesh) -> list[dict[str, object]]:
    """``{name, pid, port, state}`` of Kafka and each component (running|unhealthy|stopped),
    each replica as a row of its own (``inventory#2``); a running gRPC component's row also
    has ``breakers``: its circuit breakers that are not closed, ``{peer: "OPEN"|"HALF-OPEN"}``
    (null when it cannot tell: no grpc.health.v1 List)."""
    rows: list[dict[str, object]] = []
    choice = KafkaChoice.load(mesh.run_dir)
    kafka_record = ProcessRecord.load(mesh.run_dir, KAFKA)
    if choice is not None:
        up = kafka_running(mesh, choice)
        rows.append(
            {
                "name": KAFKA,
                "pid": kafka_record.pid if (kafka_record and choice.mode == "embedded") else None,
                "port": int(choice.bootstrap.rpartition(":")[2]),
                "state": "running" if up else "stopped",
                "mode": choice.mode,
            }
        )
    else:
        rows.append({"name": KAFKA, "pid": None, "port": None, "state": "stopped", "mode": None})
    counts = load_replicas(mesh.run_dir)
    for component in mesh.components:
        running = instances(component, counts, choice.bootstrap if choice else "")
        # Replicas beyond the count (a scale-down that failed to stop one) still show.
        extra = [
            dataclasses.replace(component, name=r.name, port=r.port)
            for r in replica_records(mesh.run_dir, component.name)
            if r.name not in {each.name for each in running}
        ]
        for each in running + extra:
            row = _status(mesh, each)
            if component.name == REGISTRY and counts.get(REGISTRY, 1) > 1:
                row["role"] = registry_role(mesh, each.name) if row["pid"] is not None else None
            rows.append(row)
    return rows


# What a registry instance logs when its role changes (schema_registry.server's ready line,
# storage.kafka's become_primary and step_down), the last one saying what it is now.
_ROLE_LINES = (
    ("primary=this instance", "primary"),
    ("fenced the previous writer", "primary"),
    ("no longer the primary of", "follower"),
    (", primary=", "follower"),  # the ready line naming another instance (or none yet)
)


def registry_role(mesh: Mesh, name: str) -> str | None:
    """``primary`` or ``follower``: what the running registry instance ``name`` last logged
    about its role (this run's lines only); None when it has said nothing yet. Read from the
    log, not asked of Kafka, so `mesh ps` stays quick: a primary killed -9 is "stopped" at
    once, and its successor says "primary" once it has taken over (about 6-8 s later)."""
    record = ProcessRecord.load(mesh.run_dir, name)
    if record is None:
        return None
    role = None
    for line in log_lines(record):
        role = next((r for marker, r in _ROLE_LINES if marker in line), role)
    return role


def _status(mesh: Mesh, component: Component) -> dict[str, object]:
    record = ProcessRecord.load(mesh.run_dir, component.name)
    alive = record is not None and is_alive(record)
    state = "stopped"
    if alive:
        state = "running" if healthy(component.health, component.port) else "unhealthy"
    row: dict[str, object] = {
        "name": component.name,
        "pid": record.pid if (record and alive) else None,
        "port": component.port,
        "state": state,
    }
    if component.http_port is not None:
        row["http_port"] = component.http_port
    if state == "running" and component.health == "grpc":
        row["breakers"] = breaker_states(component.port)
    return row


def cmd_ps(mesh: Mesh, as_json: bool) -> int:
    """Print the components' state."""
    rows = statuses(mesh)
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'NAME':<18}{'STATE':<11}{'PID':<9}PORT")
    for row in rows:
        pid = row["pid"] if row["pid"] is not None else "-"
        port = row["port"] if row["port"] is not None else "-"
        if row.get("http_port") is not None:
            port = f"{port}, http {row['http_port']}"
        line = f"{row['name']!s:<18}{row['state']!s:<11}{pid!s:<9}{port}"
        if row.get("role"):
            line = f"{line:<42} {row['role']}"  # a registry instance: primary or follower
        breakers = row.get("breakers")
        if isinstance(breakers, dict) and breakers:
            opened = ", ".join(f"breaker {peer} {state}" for peer, state in breakers.items())
            line = f"{line:<42}{opened}"
        print(line)
    return 0


def follow(
    mesh: Mesh,
    only: str | None,
    offsets: dict[Path, int] | None = None,
    since: datetime | None = None,
    opened: dict[str, logread.LogFollower] | None = None,
) -> None:
    """Print new log lines of every component, prefixed with its name (or of ``only``, as
    they are), until Ctrl-C: from ``offsets`` (bytes per log path; a log not in it from its
    start), else from each log's current end, or where ``opened`` (by name) stand; across
    rotations without losing a line (logread.LogFollower)."""
    if opened is None:
        names = [only] if only else log_names(mesh)
        paths = {n: mesh.log_dir / f"{n}.log" for n in names}
        opened = {
            n: logread.LogFollower(p, None if offsets is None else offsets.get(p, 0))
            for n, p in paths.items()
        }
    width = max(len(n) for n in opened)
    filters = {n: logread.SinceFilter(since) for n in opened}
    color = sys.stdout.isatty()
    try:
        while True:
            printed = False
            for index, (name, log) in enumerate(opened.items()):
                for line in log.read():
                    if not filters[name].keep(line):
                        continue
                    if only:
                        print(line, flush=True)
                    else:
                        _print_prefixed(name, width, line, index if color else None)
                    printed = True
            if not printed:
                time.sleep(0.1)  # idle poll of the log files
    finally:
        for log in opened.values():
            log.close()


def _print_prefixed(name: str, width: int, line: str, color: int | None) -> None:
    prefix = f"{name:<{width}} | "
    if color is not None:
        prefix = f"\033[{31 + color % 6}m{prefix}\033[0m"
    print(prefix + line, flush=True)


def log_names(mesh: Mesh) -> list[str]:
    """Whose logs there are: Kafka, each component, and each replica that has a log."""
    names = [KAFKA]
    for component in mesh.components:
        names.append(component.name)
        replicas = [p.stem for p in mesh.log_dir.glob(f"{component.name}#*.log")]
        names += sorted(replicas, key=lambda n: int(n.rpartition("#")[2] or 0))
    return names


def cmd_logs(
    mesh: Mesh,
    service: str | None,
    follow_logs: bool,
    tail: int | None = DEFAULT_TAIL,
    since: str | None = None,
) -> int:
    """Print the last ``tail`` lines of each log (all components, or one; None: everything,
    rotated files included), of those at or after ``since`` when given (an age or a time,
    logread.parse_since), then follow them with -f."""
    if service and service != KAFKA:
        mesh.component(service.partition("#")[0])  # ConfigError for an unknown name
    try:
        moment = logread.parse_since(since) if since is not None else None
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    names = [service] if service else log_names(mesh)
    width = max(len(n) for n in names)
    # -f: open the logs before reading them, so a line written meanwhile is not lost (it may
    # print twice: once read, once followed).
    opened = {n: logread.LogFollower(mesh.log_dir / f"{n}.log") for n in names if follow_logs}
    cut = False
    for name in names:
        lines, left_out = logread.last_lines(mesh.log_dir, name, tail, moment)
        cut = cut or left_out
        for line in lines:
            print(line if service else f"{name:<{width}} | {line}")
    if cut:
        which = f"the last {tail} lines of each log" + (f" since {since}" if since else "")
        say(f"{which}; --tail N for more, --tail all for everything")
    if follow_logs:
        try:
            follow(mesh, service, since=moment, opened=opened)
        except KeyboardInterrupt:
            return 0
    return 0


def _tail(value: str) -> int | None:
    """``--tail``: a number of lines, or ``all``."""
    if value == "all":
        return None
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r}: a number of lines, or all")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    """The `mesh` argument parser (every command has --help)."""
    parser = argparse.ArgumentParser(
        prog="mesh",
        description="Run the meshkit mesh locally (declared in mesh.toml, state in .mesh/).",
    )
    parser.add_argument("--root", type=Path, help="the checkout (default: found from the cwd)")
    offset_help = (
        "a second mesh beside the first, from the same checkout: every port of mesh.toml + N"
        " (and --kafka local's 9092/9093), state in .mesh/offset-N/; every later command for"
        " it takes the same N (default: $MESH_PORT_OFFSET, else 0; e.g. 100)"
    )
    parser.add_argument("--port-offset", type=int, metavar="N", help=offset_help)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = sub.add_parser("up", help="start every component not running, in order, health-gated")
    # Also after `up` (SUPPRESS: when absent here, the global option's value stays).
    up.add_argument(
        "--port-offset", type=int, metavar="N", default=argparse.SUPPRESS, help=offset_help
    )
    up.add_argument("-d", "--detach", action="store_true", help="return once all are healthy")
    up.add_argument(
        "--replicas",
        metavar="NAME=N[,NAME=N...]",
        help="run N processes of these components (NAME#2 on its port + 1000, ...), sharing its"
        " database; clients balance over them. Kept until `mesh down`; N=1 goes back to one",
    )
    up.add_argument(
        "--registry-replicas",
        type=int,
        metavar="N",
        help="run N schema registry instances (N > 1: on the topic _schemas of a real broker,"
        " --kafka local or HOST:PORT) on ports 8081, 8082, ..., one of them the primary; every"
        " component gets all their URLs. Kept until `mesh down`",
    )
    up.add_argument(
        "--kafka",
        metavar="embedded|local|HOST:PORT",
        help="embedded mock cluster (default), real local Kafka 4.x, or a broker address",
    )
    up.add_argument(
        "--tls",
        action="store_true",
        help="mutual TLS on every gRPC hop: runs `mesh certs` (keeps valid certificates) and"
        " gives every component MESH_TLS_DIR; later mesh commands dial it with TLS too, until"
        " `mesh down`",
    )
    sub.add_parser("down", help="stop everything `mesh up` started")
    ps = sub.add_parser(
        "ps", help="list the components (and replicas) with pid, port, state and open breakers"
    )
    ps.add_argument(
        "--json", action="store_true", help="a JSON list of {name, pid, port, state, breakers}"
    )
    logs = sub.add_parser("logs", help="print the components' logs")
    logs.add_argument("service", nargs="?", help="only this component")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.add_argument(
        "-n",
        "--tail",
        type=_tail,
        default=DEFAULT_TAIL,
        metavar="N|all",
        help=f"the last N lines of each log (default: {DEFAULT_TAIL}); all: everything, the"
        " rotated files (NAME.log.1, ...) too; counted after --since",
    )
    logs.add_argument(
        "--since",
        metavar="AGE|TIME",
        help="only lines at or after this time: an age (30s, 10m, 2h, 1d, 1h30m) or an ISO 8601"
        " time (2026-12-06T19:35; without Z or an offset it is this machine's local time, as in"
        " docker logs; the lines' ts are UTC); a line without a time of its own (a traceback) goes"
        " with the line before it",
    )
    dlq.add_parser(sub)
    sagas.add_parser(sub)
    rebuild.add_parser(sub)
    audit.add_parser(sub)
    configcli.add_parser(sub)
    traces.add_parsers(sub)
    scaffold.add_parser(sub)
    load.add_parser(sub)
    faults.add_parser(sub)
    chaos.add_parser(sub)
    experimentscli.add_parser(sub)
    flagscli.add_parser(sub)
    token.add_parser(sub)
    certs.add_parser(sub)
    return parser


@quiet_on_closed_stdout  # `mesh ps | head -1`: no traceback (meshkit.console)
def main(argv: Sequence[str] | None = None) -> int:  # noqa: PLR0912 - one branch per command
    """Entry point of the `mesh` command."""
    args = build_parser().parse_args(argv)
    try:
        # `mesh --port-offset N`: every command works on the moved mesh's shadow root.
        offset = port_offset_from_env() if args.port_offset is None else args.port_offset
        if offset and args.command == "new":
            raise ConfigError("mesh new edits the checkout's mesh.toml: run it without an offset")
        if offset:
            args.root = offset_root(args.root.resolve() if args.root else find_root(), offset)
    except ConfigError as exc:
        print(f"mesh: {exc}", file=sys.stderr)
        return 1
    # A mesh that runs with TLS (mesh up --tls) is dialled with TLS by every command below.
    certs.adopt(args.root.resolve() if args.root else None)
    try:
        if args.command == "dlq":  # needs only Kafka, not mesh.toml
            return dlq.run(args, args.root.resolve() if args.root else None)
        if args.command == "sagas":  # asks the orchestrating service over gRPC
            return sagas.run(args, args.root.resolve() if args.root else None)
        if args.command == "rebuild":  # asks the projecting service over gRPC
            return rebuild.run(args, args.root.resolve() if args.root else None)
        if args.command == "audit":  # reads the audit store (verify) or asks the service (ls)
            return audit.run(args, args.root.resolve() if args.root else None)
        if args.command == "config":  # asks the control service over gRPC
            return configcli.run(args, args.root.resolve() if args.root else None)
        if args.command == "load":  # drives the running mesh over gRPC
            return load.run(args, args.root.resolve() if args.root else None)
        if args.command == "faults":  # edits the fault files the services read
            return faults.run(args, args.root.resolve() if args.root else None)
        if args.command == "chaos":  # load, a fault, and the account of every order
            return chaos.run(args, args.root.resolve() if args.root else None)
        if args.command == "experiments":  # asks the control service; simulate writes to Kafka
            return experimentscli.run(args, args.root.resolve() if args.root else None)
        if args.command == "flags":  # asks the control service, or evaluates a local file
            return flagscli.run(args, args.root.resolve() if args.root else None)
        if args.command == "token":  # identity's admin command, in identity's environment
            return token.run(args, args.root.resolve() if args.root else None)
        if args.command in ("trace", "traces"):  # reads the local store (or Jaeger)
            return traces.run(args, args.root.resolve() if args.root else None)
        mesh = load_mesh(args.root.resolve() if args.root else None)
        if args.command == "new":
            return scaffold.run(args, mesh.root)
        if args.command == "certs":
            return certs.run(args, mesh.root)
        if args.command == "up":
            if args.tls and not certs.enable(mesh, say):
                return 1
            return cmd_up(mesh, args.detach, args.kafka, args.replicas, args.registry_replicas)
        if args.command == "down":
            return cmd_down(mesh)
        if args.command == "ps":
            return cmd_ps(mesh, args.json)
        return cmd_logs(mesh, args.service, args.follow, args.tail, args.since)
    except ConfigError as exc:
        print(f"mesh: {exc}", file=sys.stderr)
        return 2
