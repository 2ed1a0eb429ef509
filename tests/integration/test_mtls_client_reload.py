"""A kit client's own certificate is rotated without a restart (issue 15: certificates reload):
after `mesh certs --force` re-issues it, a kit channel presents the new one from its next
connection on, and the calls in between keep working."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from mesh_runner import certs
from meshkit import MeshServer, ServerSettings, ServiceBinding, create_server
from meshkit.client import RELOAD_CHECK_S, connect

SERVICE = "test.v1.Cert"


class Cert:
    """Answers with the serial of the certificate the caller presented."""

    def serial(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        pem = context.auth_context()["x509_pem_cert"][0]
        return str(x509.load_pem_x509_certificate(pem).serial_number).encode()

    def add_to(self, servicer: object, server: grpc.Server) -> None:
        handlers = {"Serial": grpc.unary_unary_rpc_method_handler(self.serial)}
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])


@pytest.fixture
def tls_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Path, MeshServer]]:
    directory = tmp_path / "certs"
    certs.ensure_certs(directory, ["inventory", "orders"])
    monkeypatch.setenv("MESH_TLS_DIR", str(directory))
    monkeypatch.setenv("MESH_TLS_NAME", "orders")  # the client below is "orders"
    cert = Cert()
    server = create_server(
        "inventory",
        ServerSettings(port=0, grace_seconds=0),
        [ServiceBinding(cert, cert.add_to, SERVICE)],
    )
    monkeypatch.setenv("MESH_TLS_NAME", "inventory")
    server.start()
    monkeypatch.setenv("MESH_TLS_NAME", "orders")
    yield directory, server
    server.stop(0)


def issued_serial(directory: Path, name: str) -> int:
    return x509.load_pem_x509_certificate((directory / f"{name}.pem").read_bytes()).serial_number


def test_a_rotated_client_certificate_is_presented_without_a_restart(
    tls_server: tuple[Path, MeshServer],
) -> None:
    directory, server = tls_server
    channel = connect(f"127.0.0.1:{server.port}", retry=False)
    serial = channel.unary_unary(f"/{SERVICE}/Serial")  # one stub method, made once
    first = int(serial(b"", timeout=5))
    assert first == issued_serial(directory, "orders")

    certs.ensure_certs(directory, ["orders"], force=True)
    rotated = issued_serial(directory, "orders")
    assert rotated != first
    deadline = time.monotonic() + RELOAD_CHECK_S + 5
    seen = first
    while seen != rotated:  # every call succeeds, and soon carries the new certificate
        assert time.monotonic() < deadline, "the client kept presenting its old certificate"
        seen = int(serial(b"", timeout=5))
        time.sleep(0.05)  # poll interval within the deadline loop
    channel.close()
