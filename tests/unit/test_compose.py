"""Structural checks of docker-compose.yml, Dockerfile and .dockerignore; no Docker engine needed.

The stack cannot be started here, so these tests pin what makes it right by construction: every
service is built or pinned, health-checked, memory-limited and published on loopback only; every
dependency exists and waits on a condition; every Python service under services/ has its block,
its port (and its HTTP port, when mesh.toml gives it one) and the env that names Kafka, the
registry and Jaeger by compose service name; the image holds every workspace member. The two
in-container health probes are also run for real here, against a local gRPC server and a local
HTTP server.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import http.server
import importlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from meshkit import addresses

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"

# Python services: every directory under services/ with a pyproject.toml, so a new service
# without a compose block fails here.
PYTHON_SERVICES = sorted(p.parent.name for p in (REPO / "services").glob("*/pyproject.toml"))
# The mesh's port table, from its one source (mesh.toml): each gRPC service's one port, the same
# inside the container, on the host and as the default of its own settings.
MESH_ENV = {"MESH_CONFIG": str(REPO / "mesh.toml")}
SERVICE_PORTS = {
    name: port for name, port in addresses.ports(MESH_ENV).items() if name in PYTHON_SERVICES
}
# A service's second listener, HTTP (identity's OAuth endpoints), from mesh.toml's http_port:
# published like the gRPC port, and its <NAME>_HTTP_PORT said in the block.
SERVICE_HTTP_PORTS = {
    name: port
    for name, port in addresses.ports(MESH_ENV, key="http_port").items()
    if name in PYTHON_SERVICES
}
# Services that keep nothing on disk, so their blocks have no /data volume: the gateway (its
# rate limits count in memory in compose; a SQLite store is for replicas sharing one host).
STATELESS_SERVICES = {"gateway"}
# Infrastructure ports published on the host (container port: the same host port).
INFRA_PORTS = {
    "kafka": {29092},
    "schema-registry": {8081},
    "jaeger": {16686, 4317, 4318},
}
MESHKIT_IMAGE = "meshkit:local"
# Python services start only when the rest of the mesh is there (see x-python-service).
PYTHON_SERVICE_DEPENDS_ON = {
    "kafka": "service_healthy",
    "schema-registry": "service_healthy",
    "register-schemas": "service_completed_successfully",
    "jaeger": "service_started",
}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
# Generous ceiling: a limit above this is a typo (e.g. 16G for 16M), not a choice.
MAX_MEMORY = 4 * 1024**3

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose.get("services")
    assert isinstance(found, dict) and found, "docker-compose.yml has no services"
    return found


def is_one_shot(service: dict[str, Any]) -> bool:
    """A job that runs to completion: compose spells that restart "no"."""
    return str(service.get("restart", "no")) == "no"


def env_of(service: dict[str, Any]) -> dict[str, str]:
    """The environment as a name -> string mapping (compose accepts both list and map forms)."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        pairs = (item.split("=", 1) for item in raw)
        return {name: value for name, value in pairs}
    return {str(name): "" if value is None else str(value) for name, value in raw.items()}


def memory_bytes(text: str | int) -> int:
    """Compose byte values: 256M, 1G, 1536m, 512MiB, or a plain number of bytes."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([bkmg]?)(?:i?b)?", str(text).strip().lower())
    assert match, f"unreadable memory value {text!r}"
    number, unit = match.groups()
    return int(float(number) * 1024 ** "bkmg".index(unit or "b"))


def memory_limit(service: dict[str, Any]) -> int | None:
    limit = service.get("deploy", {}).get("resources", {}).get("limits", {}).get("memory")
    limit = limit if limit is not None else service.get("mem_limit")
    return None if limit is None else memory_bytes(limit)


@dataclasses.dataclass(frozen=True)
class Published:
    """One `ports:` entry."""

    host_ip: str | None
    host_port: int | None
    container_port: int


def published_ports(service: dict[str, Any]) -> list[Published]:
    result = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):  # long syntax
            published = entry.get("published")
            result.append(
                Published(
                    entry.get("host_ip"),
                    int(published) if published is not None else None,
                    int(entry["target"]),
                )
            )
            continue
        parts = str(entry).split("/", 1)[0].rsplit(":", 2)
        if len(parts) == 3:
            result.append(Published(parts[0].strip("[]"), int(parts[1]), int(parts[2])))
        elif len(parts) == 2:
            result.append(Published(None, int(parts[0]), int(parts[1])))
        else:
            result.append(Published(None, None, int(parts[0])))
    return result


def depends_on(service: dict[str, Any]) -> dict[str, Any]:
    raw = service.get("depends_on") or {}
    # The short (list) form cannot carry a condition; keep it visible to the condition check.
    return {name: {} for name in raw} if isinstance(raw, list) else raw


def healthcheck_command(service: dict[str, Any]) -> list[str]:
    test = service["healthcheck"]["test"]
    return shlex.split(test) if isinstance(test, str) else [str(part) for part in test]


def service(name: str) -> Any:
    """The service's kit declaration (services/<name>/src/<name>/bootstrap.py: SERVICE)."""
    return importlib.import_module(f"{name}.bootstrap").SERVICE


def service_port_default(name: str) -> int:
    port = service(name).defaults(MESH_ENV)["port"]
    assert isinstance(port, int)
    return port


# --------------------------------------------------------------------------------------------
# compose: every service
# --------------------------------------------------------------------------------------------


def test_every_service_has_an_image_or_a_build(services: dict[str, dict[str, Any]]) -> None:
    missing = [name for name, svc in services.items() if not (svc.get("image") or svc.get("build"))]
    assert not missing, f"services with neither image nor build: {missing}"


def test_pulled_images_are_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        if svc.get("build"):
            continue
        image = str(svc["image"])
        tag = image.rsplit("/", 1)[-1].partition(":")[2].split("@", 1)[0]
        assert re.fullmatch(r"\d+\.\d+\.\d+", tag), f"{name}: pin {image} to an x.y.z tag"
    assert services["kafka"]["image"].startswith("apache/kafka:4.")
    assert services["jaeger"]["image"].startswith("jaegertracing/jaeger:2.")


def test_long_running_services_restart_and_have_a_healthcheck(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, svc in services.items():
        if is_one_shot(svc):
            continue
        assert svc.get("restart") == "unless-stopped", f"{name}: restart: unless-stopped"
        check = svc.get("healthcheck")
        assert check, f"{name}: no healthcheck"
        assert not check.get("disable"), f"{name}: healthcheck disabled"
        command = healthcheck_command(svc)
        assert command and command[0] in {"CMD", "CMD-SHELL"}, f"{name}: healthcheck test"
        assert len(command) > 1, f"{name}: empty healthcheck test"


def test_one_shot_jobs_say_so(services: dict[str, dict[str, Any]]) -> None:
    # restart "no" must be the string: bare `no` is YAML 1.1 false, which compose rejects.
    for name, svc in services.items():
        if "restart" in svc:
            assert isinstance(svc["restart"], str), f"{name}: quote the restart policy"
    assert is_one_shot(services["register-schemas"])


def test_every_service_has_a_memory_limit(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        limit = memory_limit(svc)
        assert limit is not None, f"{name}: no memory limit (deploy.resources.limits.memory)"
        assert 32 * 1024**2 <= limit <= MAX_MEMORY, f"{name}: implausible memory limit {limit}"


def test_every_published_port_binds_loopback_only(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        for port in published_ports(svc):
            assert port.host_ip == "127.0.0.1", f"{name}: {port} must bind 127.0.0.1 only"
            assert port.host_port is not None, f"{name}: {port} needs a fixed host port"


def test_depends_on_targets_exist_and_use_a_condition(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, svc in services.items():
        for target, spec in depends_on(svc).items():
            assert target in services, f"{name} depends on unknown service {target}"
            condition = (spec or {}).get("condition")
            assert condition in CONDITIONS, f"{name} -> {target}: needs a condition"
            if condition == "service_healthy":
                assert services[target].get("healthcheck"), f"{target} has no healthcheck"
            if condition == "service_completed_successfully":
                assert is_one_shot(services[target]), f"{target} is not a one-shot job"


def test_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, svc in compose["services"].items():
        for volume in svc.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else str(volume).split(":")[0]
            if not source.startswith(("/", ".", "~", "$")):
                assert source in declared, f"{name}: volume {source} is not declared"


def test_infrastructure_ports_are_published(services: dict[str, dict[str, Any]]) -> None:
    for name, ports in INFRA_PORTS.items():
        published = {(p.host_port, p.container_port) for p in published_ports(services[name])}
        assert published == {(port, port) for port in ports}, f"{name}: {published}"


# --------------------------------------------------------------------------------------------
# compose: infrastructure
# --------------------------------------------------------------------------------------------


def test_kafka_is_a_single_kraft_node_reachable_as_kafka_9092(
    services: dict[str, dict[str, Any]],
) -> None:
    kafka = services["kafka"]
    env = env_of(kafka)
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_NODE_ID"] == "1"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka:9093"
    assert env["CLUSTER_ID"]
    listeners = dict(item.split("://", 1) for item in env["KAFKA_LISTENERS"].split(","))
    advertised = dict(item.split("://", 1) for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert listeners["PLAINTEXT"].endswith(":9092")
    assert listeners["CONTROLLER"].endswith(":9093")
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"
    assert advertised["PLAINTEXT"] == "kafka:9092"
    # Every listener has a protocol; the host one advertises exactly what is published.
    protocols = dict(
        item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    assert set(listeners) <= set(protocols)
    host = [name for name in advertised if name != "PLAINTEXT"]
    assert len(host) == 1, f"one host listener expected, got {host}"
    host_ip, host_port = advertised[host[0]].rsplit(":", 1)
    assert host_ip == "127.0.0.1"
    assert listeners[host[0]].endswith(f":{host_port}")
    assert Published("127.0.0.1", int(host_port), int(host_port)) in published_ports(kafka)
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "true"
    factors = {k: v for k, v in env.items() if k.endswith(("_REPLICATION_FACTOR", "_MIN_ISR"))}
    assert len(factors) >= 5
    assert set(factors.values()) == {"1"}, factors
    assert "kafka-broker-api-versions.sh --bootstrap-server localhost:9092" in " ".join(
        healthcheck_command(kafka)
    )


def test_kafka_heap_fits_in_its_memory_limit(services: dict[str, dict[str, Any]]) -> None:
    kafka = services["kafka"]
    heap = re.search(r"-Xmx(\d+[kmg])", env_of(kafka)["KAFKA_HEAP_OPTS"], re.IGNORECASE)
    assert heap, "KAFKA_HEAP_OPTS must set -Xmx (the start script's default is 1G)"
    probe = re.search(r"-Xmx(\d+[kmg])", " ".join(healthcheck_command(kafka)), re.IGNORECASE)
    assert probe, "the health probe JVM must not inherit the broker's heap"
    headroom = memory_limit(kafka) or 0
    assert memory_bytes(heap.group(1)) + memory_bytes(probe.group(1)) < headroom * 0.75


def test_jaeger_v2_listens_beyond_localhost_and_checks_health(
    services: dict[str, dict[str, Any]],
) -> None:
    jaeger = services["jaeger"]
    assert env_of(jaeger).get("JAEGER_LISTEN_HOST") == "0.0.0.0"
    assert "http://127.0.0.1:13133/status" in healthcheck_command(jaeger)


def test_schema_registry_serves_on_8081_from_its_volume(
    services: dict[str, dict[str, Any]],
) -> None:
    registry = services["schema-registry"]
    assert registry["image"] == MESHKIT_IMAGE
    command = registry["command"]
    assert command[:2] == ["schema-registry", "serve"]
    options = dict(zip(command[2::2], command[3::2], strict=True))
    assert options == {
        "--host": "0.0.0.0",
        "--port": "8081",
        "--storage": "sqlite:////data/schema-registry.db",
    }
    assert any(str(v).endswith(":/data") for v in registry["volumes"])
    assert "http://127.0.0.1:8081/" in " ".join(healthcheck_command(registry))


def test_register_schemas_runs_once_after_the_registry_is_healthy(
    services: dict[str, dict[str, Any]],
) -> None:
    job = services["register-schemas"]
    assert job["image"] == MESHKIT_IMAGE
    assert job["restart"] == "no"
    assert job["command"] == [
        "schema-registry",
        "--url",
        "http://schema-registry:8081",
        "register-all",
        "proto/",
    ]
    assert depends_on(job) == {"schema-registry": {"condition": "service_healthy"}}


# --------------------------------------------------------------------------------------------
# compose: the Python services
# --------------------------------------------------------------------------------------------


def test_python_services_are_found() -> None:
    # Guards the parametrization below against a glob that silently matches nothing.
    assert "inventory" in PYTHON_SERVICES


@pytest.mark.parametrize("name", PYTHON_SERVICES)
def test_python_service_has_its_block_and_port(
    name: str, services: dict[str, dict[str, Any]]
) -> None:
    assert name in SERVICE_PORTS, f"add {name} as a component of mesh.toml (the mesh's port table)"
    port = SERVICE_PORTS[name]
    assert name in services, f"services/{name} has no block in docker-compose.yml"
    svc = services[name]
    assert svc["image"] == MESHKIT_IMAGE
    assert svc["build"]["context"] == "."
    assert svc["command"] == ["python", "-m", name]
    expected = [Published("127.0.0.1", port, port)]
    http_port = SERVICE_HTTP_PORTS.get(name)
    if http_port is not None:
        expected.append(Published("127.0.0.1", http_port, http_port))
    assert published_ports(svc) == expected
    assert service_port_default(name) == port, "compose and the service's Settings disagree"

    # The service's own Settings read the block's env: unknown or misspelt keys fail there.
    env = env_of(svc)
    settings = service(name).load_settings(env)
    assert settings.host == "0.0.0.0", "listen beyond the container's loopback"
    assert settings.port == port
    if name in STATELESS_SERVICES:
        assert not svc.get("volumes"), f"{name} keeps no state; why a volume?"
    else:
        assert Path(settings.db_path).parent == Path("/data"), "keep state on the /data volume"
        assert any(str(v).endswith(":/data") for v in svc["volumes"]), f"{name}: no /data volume"
    # The shared health probe finds the port through OTEL_SERVICE_NAME (see x-python-service).
    assert env["OTEL_SERVICE_NAME"] == name
    assert env[name.upper().replace("-", "_") + "_PORT"] == str(port)
    if http_port is not None:
        # Said in the block, not left to mesh.toml, which is not in the image.
        assert env[name.upper().replace("-", "_") + "_HTTP_PORT"] == str(http_port)
        assert settings.http_port == http_port

    conditions = {target: spec["condition"] for target, spec in depends_on(svc).items()}
    shared = {t: c for t, c in conditions.items() if t in PYTHON_SERVICE_DEPENDS_ON}
    assert shared == PYTHON_SERVICE_DEPENDS_ON
    # Beyond the shared ones, a service may wait only for other services of the mesh to be healthy.
    for target, condition in conditions.items():
        if target not in PYTHON_SERVICE_DEPENDS_ON:
            assert target in SERVICE_PORTS and condition == "service_healthy", (name, target)


def test_orders_reaches_its_participants_by_service_name(
    services: dict[str, dict[str, Any]],
) -> None:
    env = env_of(services["orders"])
    for participant in ("inventory", "payments", "shipping"):
        target = addresses.address_of(participant, env)
        assert target == f"{participant}:{SERVICE_PORTS[participant]}"
        assert depends_on(services["orders"])[participant] == {"condition": "service_healthy"}


# What the gateway's GET /v1/orders/{order_id}/details asks besides its routes' backends
# (gateway.aggregate).
GATEWAY_DETAILS_PARTS = {"orders", "order_views", "payments", "shipping"}


def test_gateway_reaches_identity_and_its_backends_by_service_name(
    services: dict[str, dict[str, Any]],
) -> None:
    routing = importlib.import_module("gateway.routing")
    component_of = importlib.import_module("gateway.bootstrap").component_of
    backends = {component_of(r) for r in routing.RouteTable.from_contracts().routes}
    assert {"orders", "inventory", "order_views"} <= backends
    backends |= GATEWAY_DETAILS_PARTS
    gateway = services["gateway"]
    env = env_of(gateway)
    for backend in sorted(backends):
        assert addresses.address_of(backend, env) == f"{backend}:{SERVICE_PORTS[backend]}"
        assert depends_on(gateway)[backend] == {"condition": "service_healthy"}, backend
    # The JWKS from identity inside the compose network; the iss it expects is identity's
    # issuer, the published URL the tokens were got from, which is not that address.
    http_port = SERVICE_HTTP_PORTS["identity"]
    assert addresses.http_url_of("identity", env) == f"http://identity:{http_port}"
    assert depends_on(gateway)["identity"] == {"condition": "service_healthy"}
    settings = service("gateway").load_settings(env)
    assert settings.issuer == env_of(services["identity"])["IDENTITY_ISSUER"]


def test_http_ports_are_found() -> None:
    # Guards the http_port checks above against a key that silently matches nothing.
    assert SERVICE_HTTP_PORTS.get("identity") == 8090
    assert SERVICE_HTTP_PORTS.get("gateway") == 8080


def test_identity_issuer_is_its_published_http_url(
    services: dict[str, dict[str, Any]],
) -> None:
    # The issuer goes into every token and the discovery document, and browsers are sent to
    # its /authorize and /device: from the host that is the published port, not the container.
    svc = services["identity"]
    env = env_of(svc)
    settings = service("identity").load_settings(env)
    http_port = SERVICE_HTTP_PORTS["identity"]
    assert settings.issuer_for(http_port) == f"http://127.0.0.1:{http_port}"
    assert env["IDENTITY_ISSUER"] == f"http://127.0.0.1:{http_port}"
    # shop-backend's secret comes from the environment of `docker compose up`, with the
    # development default only when none is set.
    secret = env["SHOP_BACKEND_CLIENT_SECRET"]
    match = re.fullmatch(r"\$\{SHOP_BACKEND_CLIENT_SECRET:-([^}]+)\}", secret)
    assert match, f"want ${{SHOP_BACKEND_CLIENT_SECRET:-<dev default>}}, not {secret!r}"
    assert match.group(1) == "dev-shop-backend-secret"


@pytest.mark.parametrize("name", PYTHON_SERVICES)
def test_python_service_env_names_the_mesh_by_compose_service_name(
    name: str, services: dict[str, dict[str, Any]]
) -> None:
    env = env_of(services.get(name, {}))
    kafka_host, _, kafka_port = env.get("MESH_KAFKA_BOOTSTRAP", "").rpartition(":")
    assert (kafka_host, kafka_port) == ("kafka", "9092")
    registry = urlsplit(env.get("SCHEMA_REGISTRY_URL", ""))
    assert (registry.scheme, registry.hostname, registry.port) == ("http", "schema-registry", 8081)
    otlp = urlsplit(env.get("OTEL_EXPORTER_OTLP_ENDPOINT", ""))
    assert (otlp.scheme, otlp.hostname, otlp.port) == ("http", "jaeger", 4317)
    assert env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc") == "grpc", "4317 is OTLP over gRPC"
    for host in ("kafka", "schema-registry", "jaeger"):
        assert host in services


# --------------------------------------------------------------------------------------------
# the health probes, run for real
# --------------------------------------------------------------------------------------------


def run_probe(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    assert command[:2] == ["CMD", "python"], command
    return subprocess.run(
        [sys.executable, *command[2:]],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.fixture
def health_server() -> Iterator[tuple[int, health.HealthServicer]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port, servicer
    finally:
        server.stop(grace=None)


def test_grpc_probe_passes_only_when_serving(
    compose: dict[str, Any], health_server: tuple[int, health.HealthServicer]
) -> None:
    port, servicer = health_server
    probe = healthcheck_command(compose["x-python-service"])
    env = {"OTEL_SERVICE_NAME": "order_views", "ORDER_VIEWS_PORT": str(port)}

    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    result = run_probe(probe, env)
    assert result.returncode == 0, result.stderr

    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert run_probe(probe, env).returncode != 0


def test_grpc_probe_fails_when_nothing_listens(compose: dict[str, Any]) -> None:
    probe = healthcheck_command(compose["x-python-service"])
    env = {"OTEL_SERVICE_NAME": "inventory", "INVENTORY_PORT": "1"}
    assert run_probe(probe, env).returncode != 0


class _Status(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.parametrize(("status", "passes"), [(200, True), (503, False), (404, False)])
def test_registry_probe_passes_only_on_2xx(
    services: dict[str, dict[str, Any]], status: int, passes: bool
) -> None:
    handler = type("Handler", (_Status,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        probe = healthcheck_command(services["schema-registry"])
        script = probe[-1]
        assert script.count("127.0.0.1:8081/") == 1
        local = script.replace("127.0.0.1:8081/", f"127.0.0.1:{server.server_address[1]}/")
        result = run_probe([*probe[:-1], local], {})
        assert (result.returncode == 0) is passes, result.stderr
    finally:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------------------------
# Dockerfile and .dockerignore
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def dockerfile_stages() -> tuple[dict[str, str], list[list[Instruction]]]:
    """(global ARG defaults, instructions per stage starting with its FROM)."""
    lines: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"

    global_args: dict[str, str] = {}
    stages: list[list[Instruction]] = []
    for line in lines:
        keyword, _, args = line.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip())
        if instruction.keyword == "FROM":
            stages.append([instruction])
        elif stages:
            stages[-1].append(instruction)
        elif instruction.keyword == "ARG":
            name, _, default = instruction.args.partition("=")
            global_args[name] = default
    return global_args, stages


def copies(stage: list[Instruction]) -> list[tuple[dict[str, str], list[str], str]]:
    """Each COPY as (flags, sources, absolute destination), resolving WORKDIR as it goes."""
    result = []
    workdir = "/"
    for instruction in stage:
        if instruction.keyword == "WORKDIR":
            workdir = os.path.join(workdir, instruction.args)
        if instruction.keyword != "COPY":
            continue
        parts = (
            json.loads(instruction.args)
            if instruction.args.startswith("[")
            else shlex.split(instruction.args)
        )
        flags = dict(p[2:].split("=", 1) for p in parts if p.startswith("--"))
        paths = [p for p in parts if not p.startswith("--")]
        *sources, dest = paths
        result.append((flags, sources, os.path.normpath(os.path.join(workdir, dest))))
    return result


def stage_named(stages: list[list[Instruction]], name: str) -> list[Instruction]:
    for stage in stages:
        if stage[0].args.lower().endswith(f" as {name}"):
            return stage
    raise AssertionError(f"no stage named {name}")


def workspace_members() -> list[str]:
    root = tomllib.loads((REPO / "pyproject.toml").read_text())
    members: list[str] = []
    for pattern in root["tool"]["uv"]["workspace"]["members"]:
        matched = sorted(p for p in REPO.glob(pattern) if (p / "pyproject.toml").is_file())
        assert matched, f"workspace member pattern {pattern} matches nothing"
        members += [p.relative_to(REPO).as_posix() for p in matched]
    return members


def test_image_base_is_python_minor_pinned_and_matches_requires_python() -> None:
    global_args, stages = dockerfile_stages()
    root = tomllib.loads((REPO / "pyproject.toml").read_text())
    minimum = re.fullmatch(r">=\s*(\d+\.\d+)", root["project"]["requires-python"])
    assert minimum
    assert len(stages) >= 2, "multi-stage: a builder and a runtime stage"
    for stage in stages:
        image = stage[0].args.split()[0]
        image = re.sub(r"\$\{?(\w+)\}?", lambda m: global_args[m.group(1)], image)
        assert image == f"python:{minimum.group(1)}-slim", image


def test_uv_in_the_image_is_the_makefile_uv() -> None:
    _, stages = dockerfile_stages()
    makefile = (REPO / "Makefile").read_text()
    version = re.search(r"^UV_VERSION\s*:?=\s*(\S+)", makefile, re.MULTILINE)
    assert version
    runs = " ".join(i.args for i in stage_named(stages, "builder") if i.keyword == "RUN")
    assert f"uv=={version.group(1)}" in runs


def test_builder_syncs_the_locked_runtime_environment() -> None:
    _, stages = dockerfile_stages()
    runs = [i.args for i in stage_named(stages, "builder") if i.keyword == "RUN"]
    sync = [run for run in runs if "uv sync" in run]
    assert len(sync) == 1, sync
    flags = set(shlex.split(sync[0].split("uv sync", 1)[1]))
    assert {"--locked", "--no-dev", "--no-editable", "--all-packages"} <= flags


def test_builder_copies_every_workspace_member() -> None:
    _, stages = dockerfile_stages()
    copied = copies(stage_named(stages, "builder"))
    targets = {
        (os.path.normpath(source), dest)
        for flags, sources, dest in copied
        if "from" not in flags
        for source in sources
    }

    def in_image(path: str) -> bool:
        # Copied to /app/<same path>, itself or through a parent directory.
        return any(
            (path == source or path.startswith(source + "/"))
            and dest == os.path.normpath(f"/app/{source}")
            for source, dest in targets
        )

    for required in ("pyproject.toml", "uv.lock"):
        assert any(os.path.normpath(s) == required and d == "/app" for s, d in targets), (
            f"{required} not copied to /app"
        )
    members = workspace_members()
    assert "services/inventory" in members
    missing = [member for member in members if not in_image(member)]
    assert not missing, f"workspace members missing from the image: {missing}"


def test_runtime_stage_is_the_venv_and_proto_as_non_root() -> None:
    _, stages = dockerfile_stages()
    runtime = stages[-1]
    keywords = [i.keyword for i in runtime]
    assert "CMD" not in keywords and "ENTRYPOINT" not in keywords, "compose gives the commands"
    copied = {(tuple(sources), dest, flags.get("from")) for flags, sources, dest in copies(runtime)}
    assert (("/app/.venv",), "/app/.venv", "builder") in copied
    assert (("proto/",), "/app/proto", None) in copied
    # Nothing else from the source tree: the members are installed, not editable.
    assert len(copied) == 2, copied
    workdirs = [i.args for i in runtime if i.keyword == "WORKDIR"]
    assert workdirs[-1:] == ["/app"]
    users = [i.args for i in runtime if i.keyword == "USER"]
    assert users, "the runtime stage must switch to a non-root user"
    assert users[-1].split(":")[0] not in {"root", "0"}
    env = " ".join(i.args for i in runtime if i.keyword == "ENV")
    assert re.search(r"PATH=/app/\.venv/bin:\$PATH", env)


def test_dockerignore_keeps_caches_out_and_members_in() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for required in (".venv", ".cache", ".mesh", ".git", "**/__pycache__", "tests"):
        assert required in patterns, f".dockerignore lacks {required}"
    needed = [*workspace_members(), "proto", "pyproject.toml", "uv.lock"]
    for path in needed:
        prefixes = [path.split("/")[: i + 1] for i in range(path.count("/") + 1)]
        for pattern in patterns:
            for prefix in prefixes:
                candidate = "/".join(prefix)
                assert not fnmatch.fnmatch(candidate, pattern.lstrip("/")), (
                    f".dockerignore pattern {pattern} excludes {path}"
                )


# --------------------------------------------------------------------------------------------
# docker compose's own validation, where the CLI has the compose plugin
# --------------------------------------------------------------------------------------------


def test_docker_compose_config_accepts_the_file() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker CLI on PATH")
    version = subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, timeout=30, check=False
    )
    if version.returncode != 0:
        reason = (version.stderr or version.stdout).strip().splitlines()[:1]
        pytest.skip(f"docker compose unavailable: {' '.join(reason) or 'no compose plugin'}")
    # `config` parses, interpolates and validates against the compose spec; no engine needed.
    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE_FILE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
