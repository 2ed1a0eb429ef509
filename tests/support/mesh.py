"""Fixtures for tests that run real services: free ports, the real grpcurl, in-process servers,
and the access tokens of a running mesh's identity (``MeshTokens``)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import tomllib
import uuid
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from mesh_runner.processes import port_open

REPO = Path(__file__).resolve().parents[2]
GRPCURL = REPO / ".cache" / "bin" / "grpcurl"
MESH = str(Path(sys.executable).parent / "mesh")
# The mesh's default ports: every port and http_port mesh.toml declares (gRPC services, their
# HTTP sides, the schema registry, the OTLP receiver).
DEFAULT_PORTS = tuple(
    int(component[key])
    for component in tomllib.loads((REPO / "mesh.toml").read_text())["component"]
    for key in ("port", "http_port")
    if key in component
)


def mesh_cli(
    root: Path, *args: str, timeout: float = 180, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real `mesh --root ROOT ARGS...` (in ``env``, default ours); capture its output.

    Every scratch mesh's audit service reads audit.events.v1, and its control service
    experiments.events.v1, in a consumer group of its own (named after its root, so a restart
    keeps it): meshes of one test run share the broker, and in one group they would split each
    other's records between their trails and reports."""
    environment = dict(os.environ if env is None else env)
    root_id = f"{zlib.crc32(str(root).encode()):08x}"
    environment.setdefault("AUDIT_CONSUMER_GROUP", f"audit-{root_id}")
    environment.setdefault("CONTROL_CONSUMER_GROUP", f"control-{root_id}")
    return subprocess.run(
        [MESH, "--root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
        check=False,
    )


@contextmanager
def mesh_up(root: Path, kafka_bootstrap: str, env: Mapping[str, str]) -> Iterator[None]:
    """`mesh up -d` in the scratch ``root`` (the repo's proto/ and scripts/ linked in), in
    ``env``, asserting it came up; `mesh down` when the block ends, whatever happened."""
    for name in ("proto", "scripts"):
        if not (root / name).exists():
            (root / name).symlink_to(REPO / name)
    up = mesh_cli(root, "up", "-d", "--kafka", kafka_bootstrap, env=env)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield
    finally:
        down = mesh_cli(root, "down", env=env)
        assert down.returncode == 0, down.stderr


def mesh_ps(root: Path) -> dict[str, dict[str, object]]:
    """`mesh ps --json`, by component name."""
    result = mesh_cli(root, "ps", "--json")
    assert result.returncode == 0, result.stderr
    return {str(row["name"]): row for row in json.loads(result.stdout)}


# Where the e2e tests' orders ship: a German address every country rule accepts.
BERLIN = {
    "name": "Ada Lovelace",
    "line1": "Unter den Linden 1",
    "city": "Berlin",
    "postal_code": "10117",
    "country_code": "DE",
}


def place_order_request(
    customer_id: str,
    sku: str,
    *,
    quantity: int = 1,
    units: int = 3,
    nanos: int = 0,
    payment_token: str = "tok_visa",
) -> dict[str, Any]:
    """A PlaceOrder request in proto JSON names (grpcurl's -d, or json_format.ParseDict): one
    line of ``sku`` at ``units``.``nanos`` EUR each, shipped to BERLIN, a fresh request id."""
    price = {"currency_code": "EUR", "units": units, **({"nanos": nanos} if nanos else {})}
    return {
        "request_id": f"req-{uuid.uuid4().hex[:8]}",
        "customer_id": customer_id,
        "lines": [{"sku": sku, "quantity": quantity, "unit_price": price}],
        "payment_token": payment_token,
        "shipping_address": dict(BERLIN),
    }


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int) -> bool:
    """True when something accepts connections on 127.0.0.1:port (the runner's probe, which a
    connection of the probe to itself, possible on ports in the ephemeral range, cannot fool)."""
    return port_open("127.0.0.1", port, timeout=0.2)


def write_moved_mesh_toml(root: Path, names: Sequence[str] | None = None) -> dict[str, int]:
    """Write ``root/mesh.toml``: the repository's components (all, or those in ``names``, in the
    repository's order) exactly as declared there, each moved to a free port (a port written
    inside a string, e.g. a URL or a ``--port`` argument, moves too). Returns each one's port
    (and ``"<name>:http"``: its ``http_port``, when it declares one).

    A mesh started from it neither needs nor disturbs the default ports, which a developer's own
    mesh or another test run may hold.
    """
    declared = tomllib.loads((REPO / "mesh.toml").read_text())["component"]
    wanted = [c for c in declared if names is None or c["name"] in names]
    missing = set(names or ()) - {c["name"] for c in wanted}
    assert not missing, f"not components of mesh.toml: {sorted(missing)}"
    ports: dict[int, int] = {}
    for component in wanted:
        for key in ("port", "http_port"):
            if key not in component:
                continue
            while (port := free_port()) in ports.values():
                pass  # two listeners on one port would fail; ask again
            ports[int(component[key])] = port
    lines = []
    for component in wanted:
        lines.append("[[component]]")
        lines += [f"{k} = {_toml_value(_moved(v, ports))}" for k, v in component.items()]
        lines.append("")
    (root / "mesh.toml").write_text("\n".join(lines))
    moved = {str(c["name"]): ports[int(c["port"])] for c in wanted}
    # A component's HTTP listener, when it declares one, as "<name>:http".
    moved.update(
        {f"{c['name']}:http": ports[int(c["http_port"])] for c in wanted if "http_port" in c}
    )
    return moved


def _toml_value(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


def _moved(value: Any, ports: dict[int, int]) -> Any:
    """``value`` with every default port (as a number, or inside a string) replaced."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return ports.get(value, value)
    if isinstance(value, str):
        # One pass over whole numbers: a new port is never rewritten again.
        return re.sub(r"\b\d+\b", lambda m: str(ports.get(int(m[0]), m[0])), value)
    if isinstance(value, list):
        return [_moved(v, ports) for v in value]
    if isinstance(value, dict):
        return {k: _moved(v, ports) for k, v in value.items()}
    return value


Metadata = tuple[tuple[str, str], ...]
# Service tokens are fetched again this long before they expire.
SERVICE_TOKEN_MARGIN_S = 60.0


class MeshTokens:
    """Access tokens from the identity of the mesh `mesh up` started in ``root``, cached.

    ``token(role, subject)`` is what `mesh token` prints (mesh_runner.token.mint: identity's
    admin command in identity's environment, signed with the key the running identity publishes;
    about a second each, so each (role, subject) is minted once per mesh). ``service(client)``
    is a service's own token from identity's token endpoint (client_credentials with the
    development secret), as orders' saga and the gateway get theirs: what calls inventory,
    payments and shipping, whose policies let only those services in. Thread-safe.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._minted: dict[tuple[str, str], str] = {}
        self._services: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def token(self, role: str = "customer", subject: str = "") -> str:
        """A token with ``role`` for ``subject`` (default ``dev-<role>``)."""
        from mesh_runner.token import mint

        with self._lock:
            key = (role, subject)
            if key not in self._minted:
                self._minted[key] = mint(self.root, role, subject)
            return self._minted[key]

    def metadata(self, role: str = "customer", subject: str = "") -> Metadata:
        """Call metadata carrying ``token(role, subject)``."""
        return (("authorization", f"Bearer {self.token(role, subject)}"),)

    def service(self, client_id: str = "orders") -> str:
        """The service ``client_id``'s own access token (roles ["service"], sub the client id)."""
        import requests

        with self._lock:
            token, expires = self._services.get(client_id, ("", 0.0))
            if token and time.monotonic() < expires - SERVICE_TOKEN_MARGIN_S:
                return token
            answer = requests.post(
                f"{self.issuer}/token",
                data={"grant_type": "client_credentials"},
                auth=(client_id, f"dev-{client_id}-secret"),
                timeout=10,
            )
            assert answer.status_code == 200, answer.text
            body = answer.json()
            token = str(body["access_token"])
            self._services[client_id] = (token, time.monotonic() + float(body["expires_in"]))
            return token

    def acting_for(self, subject: str, client_id: str = "orders") -> Metadata:
        """Call metadata of service ``client_id`` acting on behalf of ``subject``: what orders'
        saga sends inventory, payments and shipping (``mesh-on-behalf-of``)."""
        return (
            ("authorization", f"Bearer {self.service(client_id)}"),
            ("mesh-on-behalf-of", subject),
        )

    @property
    def issuer(self) -> str:
        """Identity's HTTP base URL in this mesh (its token endpoint is ``/token``)."""
        declared = tomllib.loads((self.root / "mesh.toml").read_text())["component"]
        identity = next(c for c in declared if c["name"] == "identity")
        return f"http://127.0.0.1:{identity['http_port']}"


_TOKENS: dict[Path, MeshTokens] = {}


def mesh_tokens(root: Path) -> MeshTokens:
    """The token cache of the mesh in ``root`` (one per mesh: its identity signs them)."""
    return _TOKENS.setdefault(root.resolve(), MeshTokens(root.resolve()))


class Grpcurl:
    """The real grpcurl binary (installed by `make tools`), plaintext, against 127.0.0.1."""

    def __init__(self, binary: Path) -> None:
        self.binary = binary

    def run(
        self, *args: str, data: object | None = None, metadata: Metadata = ()
    ) -> subprocess.CompletedProcess[str]:
        """Run grpcurl with ``args``; ``data`` is sent as the JSON request (-d), each pair of
        ``metadata`` as a header (-H "key: value", e.g. ``MeshTokens.metadata``)."""
        argv = [str(self.binary), "-plaintext", "-max-time", "10"]
        for key, value in metadata:
            argv += ["-H", f"{key}: {value}"]
        if data is not None:
            argv += ["-d", json.dumps(data)]
        return subprocess.run(
            [*argv, *args], capture_output=True, text=True, timeout=30, check=False
        )

    def call(
        self, address: str, method: str, data: object, metadata: Metadata = ()
    ) -> dict[str, object]:
        """Invoke ``method`` (with ``metadata``) and return the JSON response; fails the test on
        a non-zero exit."""
        result = self.run(address, method, data=data, metadata=metadata)
        assert result.returncode == 0, f"grpcurl {method} failed: {result.stderr}"
        parsed: dict[str, object] = json.loads(result.stdout or "{}")
        return parsed


@pytest.fixture(scope="session")
def grpcurl() -> Grpcurl:
    """The real grpcurl; `make tools` installs it (the test fails loudly when it is missing)."""
    binary = GRPCURL if GRPCURL.exists() else shutil.which("grpcurl")
    assert binary, "grpcurl not found: run `make tools` (installs it into .cache/bin)"
    return Grpcurl(Path(binary))


@pytest.fixture
def tmp_mesh_root(tmp_path: Path) -> Iterator[Path]:
    """A scratch checkout for `mesh --root`: the repo's mesh.toml, proto/ and .cache/ linked in
    (.cache/kafka holds the jars `mesh up --kafka local` would otherwise fetch again).

    State (.mesh/) lands in the scratch directory, so tests never touch a developer's own mesh.
    At teardown `mesh down` runs whatever happened (a failed `up` included), so nothing a test
    started outlives it.
    """
    for name in ("mesh.toml", "proto", ".cache"):
        (tmp_path / name).symlink_to(REPO / name)
    yield tmp_path
    mesh_cli(tmp_path, "down")


@pytest.fixture
def running_mesh(tmp_mesh_root: Path, kafka_bootstrap: str) -> Iterator[Path]:
    """`mesh up -d` on the real Kafka in a scratch root (torn down by ``tmp_mesh_root``)."""
    busy = [p for p in DEFAULT_PORTS if port_in_use(p)]
    assert not busy, f"ports {busy} are in use: stop your own mesh (`mesh down`) first"
    result = mesh_cli(tmp_mesh_root, "up", "-d", "--kafka", kafka_bootstrap)
    assert result.returncode == 0, result.stderr
    yield tmp_mesh_root
