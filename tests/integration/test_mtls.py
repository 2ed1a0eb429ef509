"""mTLS on a real kit server (meshkit.server with $MESH_TLS_DIR): a client with the mesh's
certificate is served and the handler sees its SPIFFE ID (unary and streaming); a client without
a certificate, in plaintext, or with another CA's certificate is refused; the server is checked
by the client too (another CA, another service's name); re-issued certificate files are served
from the next handshake on, without a restart; grpcurl works with -cacert -cert -key; the
runner's health probe dials TLS while the mesh has it."""

from __future__ import annotations

import logging
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support.mesh import GRPCURL

from mesh_runner import certs
from mesh_runner.processes import healthy
from meshkit import MeshServer, ServerSettings, ServiceBinding, create_server, tls

SERVICE = "test.v1.Who"
NAME = "inventory"  # the server's certificate name (its service name in the mesh)


class Who:
    """Answers with the caller's SPIFFE ID, as the handler's context and the kit see it."""

    def ask(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        return f"{tls.peer_identity(context)} {tls.current_peer_identity()}".encode()

    def asks(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        for _ in range(2):  # each step of a streaming handler runs with the caller current
            yield str(tls.current_peer_identity()).encode()

    def add_to(self, servicer: object, server: grpc.Server) -> None:
        handlers: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {
            "Ask": grpc.unary_unary_rpc_method_handler(self.ask),
            "Asks": grpc.unary_stream_rpc_method_handler(self.asks),
        }
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])


@pytest.fixture
def mesh_certs(tmp_path: Path) -> Path:
    directory = tmp_path / "certs"
    certs.ensure_certs(directory, [NAME, "orders", "client"])
    return directory


@pytest.fixture
def server(mesh_certs: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MeshServer]:
    monkeypatch.setenv("MESH_TLS_DIR", str(mesh_certs))
    monkeypatch.delenv("MESH_TLS_NAME", raising=False)
    who = Who()
    server = create_server(
        NAME, ServerSettings(port=0, grace_seconds=1), [ServiceBinding(who, who.add_to, SERVICE)]
    )
    server.start()
    yield server
    server.stop(0)


def _channel(port: int, credentials: grpc.ChannelCredentials, name: str = "") -> grpc.Channel:
    options = [("grpc.ssl_target_name_override", name)] if name else []
    return grpc.secure_channel(f"127.0.0.1:{port}", credentials, options=options)


def _ask(channel: grpc.Channel) -> str:
    ask: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(f"/{SERVICE}/Ask")
    return ask(b"", timeout=5).decode()


def _refused(channel: grpc.Channel) -> grpc.RpcError:
    with channel, pytest.raises(grpc.RpcError) as caught:
        _ask(channel)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    return caught.value


def test_a_client_with_the_meshs_certificate_is_served_and_known_by_its_spiffe_id(
    server: MeshServer, mesh_certs: Path
) -> None:
    with _channel(server.port, tls.channel_credentials("orders", mesh_certs)) as channel:
        assert _ask(channel) == "spiffe://meshkit.local/orders spiffe://meshkit.local/orders"
        asks: grpc.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(f"/{SERVICE}/Asks")
        assert [s.decode() for s in asks(b"", timeout=5)] == ["spiffe://meshkit.local/orders"] * 2
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_a_client_without_a_certificate_is_refused(server: MeshServer, mesh_certs: Path) -> None:
    ca_only = grpc.ssl_channel_credentials((mesh_certs / "ca.pem").read_bytes())
    _refused(_channel(server.port, ca_only))
    _refused(grpc.insecure_channel(f"127.0.0.1:{server.port}"))


def test_a_client_with_another_cas_certificate_is_refused(
    server: MeshServer, mesh_certs: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    certs.ensure_certs(other, ["orders"])
    # Its own certificate from another CA, though it trusts the mesh's CA for the server.
    impostor = grpc.ssl_channel_credentials(
        (mesh_certs / "ca.pem").read_bytes(),
        (other / "orders-key.pem").read_bytes(),
        (other / "orders.pem").read_bytes(),
    )
    _refused(_channel(server.port, impostor))


def test_the_client_checks_the_server_too(
    server: MeshServer, mesh_certs: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    certs.ensure_certs(other, ["orders"])
    _refused(_channel(server.port, tls.channel_credentials("orders", other)))
    # Pinned to the service it means to reach (meshkit.tls.server_name): only that one's
    # certificate is accepted, not any the CA signed.
    mine = tls.channel_credentials("orders", mesh_certs)
    with _channel(server.port, mine, tls.server_name(NAME)) as channel:
        assert _ask(channel).startswith("spiffe://meshkit.local/orders")
    _refused(_channel(server.port, mine, tls.server_name("payments")))


def _served_serial(port: int, directory: Path) -> int:
    """The serial of the certificate the server presents on a new connection (a plain TLS
    handshake with the client's certificate, as grpc's would be)."""
    context = ssl.create_default_context(cafile=str(directory / "ca.pem"))
    context.load_cert_chain(directory / "client.pem", directory / "client-key.pem")
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as wrapped,
    ):
        der = wrapped.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_reissued_certificates_are_served_without_a_restart(
    server: MeshServer, mesh_certs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = _served_serial(server.port, mesh_certs)
    issued = x509.load_pem_x509_certificate((mesh_certs / f"{NAME}.pem").read_bytes())
    assert first == issued.serial_number
    open_channel = _channel(server.port, tls.channel_credentials("orders", mesh_certs))
    assert _ask(open_channel).startswith("spiffe://")

    outcomes = {o.name: o for o in certs.ensure_certs(mesh_certs, [NAME, "client"], force=True)}
    assert _served_serial(server.port, mesh_certs) == outcomes[NAME].serial != first
    # Clients with re-issued certificates are served; an open connection keeps working.
    with _channel(server.port, tls.channel_credentials("client", mesh_certs)) as channel:
        assert _ask(channel).startswith("spiffe://meshkit.local/client")
    assert _ask(open_channel).startswith("spiffe://meshkit.local/orders")
    open_channel.close()

    # A change that does not load (a key that is not the certificate's) keeps the last good ones.
    with caplog.at_level(logging.WARNING, logger="meshkit.tls"):
        (mesh_certs / f"{NAME}-key.pem").write_bytes((mesh_certs / "orders-key.pem").read_bytes())
        assert _served_serial(server.port, mesh_certs) == outcomes[NAME].serial
    assert "changed certificate files not loaded, keeping the previous ones" in caplog.text


def test_a_server_without_its_certificate_refuses_to_start(
    mesh_certs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESH_TLS_DIR", str(mesh_certs))
    monkeypatch.delenv("MESH_TLS_NAME", raising=False)
    server = create_server("payments", ServerSettings(port=0), [])
    with pytest.raises(OSError, match=r"payments\.pem cannot be read.*run `mesh certs`"):
        server.start()


def test_grpcurl_lists_and_checks_health_with_the_client_certificate(
    server: MeshServer, mesh_certs: Path
) -> None:
    flags = [
        "-cacert", str(mesh_certs / "ca.pem"),
        "-cert", str(mesh_certs / "client.pem"),
        "-key", str(mesh_certs / "client-key.pem"),
    ]  # fmt: skip
    address = f"127.0.0.1:{server.port}"

    def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(GRPCURL), *args], capture_output=True, text=True, timeout=30, check=False
        )

    listed = grpcurl(*flags, address, "list")
    assert listed.returncode == 0, listed.stderr
    assert {SERVICE, "grpc.health.v1.Health"} <= set(listed.stdout.split())
    checked = grpcurl(*flags, address, "grpc.health.v1.Health/Check")
    assert checked.returncode == 0, checked.stderr
    assert '"status": "SERVING"' in checked.stdout
    # Without -cert the server ends each handshake and grpcurl keeps dialling until its
    # -connect-timeout (10 s by default): "context deadline exceeded" (docs/mtls.md says so).
    ca_only = ["-cacert", str(mesh_certs / "ca.pem"), "-connect-timeout", "1"]
    refused = grpcurl(*ca_only, address, "list")
    assert refused.returncode != 0
    assert "context deadline exceeded" in refused.stderr


def test_the_runners_health_probe_dials_tls_while_the_mesh_has_it(
    server: MeshServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESH_TLS_NAME", "client")  # what the mesh CLI adopts
    assert healthy("grpc", server.port)
    monkeypatch.delenv("MESH_TLS_DIR")
    assert not healthy("grpc", server.port)
