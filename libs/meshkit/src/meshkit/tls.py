"""meshkit.tls: mutual TLS between the mesh's processes, with SPIFFE-style identities.

Contract:

- ``$MESH_TLS_DIR`` turns it on (``mesh up --tls`` sets it for every component, and the mesh CLI
  sets it for itself while the running mesh has TLS). The directory holds what ``mesh certs``
  writes: ``ca.pem`` (the mesh's CA, the only one trusted) and, per process name, ``<name>.pem``
  and ``<name>-key.pem``, a certificate with the URI SAN ``spiffe://meshkit.local/<name>``.
- ``server_credentials(name)``: a kit server then serves mTLS only: a client must present a
  certificate the mesh's CA signed, or the handshake fails. The files are read again, for the
  next handshakes, whenever they change (re-issued by ``mesh certs --force``, renewed by
  ``mesh up --tls``), so certificates rotate without a restart; connections already open keep
  the certificate they were made with.
- ``channel_credentials(name)``: what a client dials with: its own certificate and the mesh's CA.
  It is read once, when the channel is made (grpcio has no reloading channel credentials): a
  long-lived client picks up a renewed certificate when it makes a new channel.
- ``peer_identity(context)``: the caller's SPIFFE ID as the TLS handshake proved it (None when the
  call came over plaintext); ``current_peer_identity()`` the same for the RPC this thread is
  handling, anywhere below the handler (the kit's server edge makes it current).

Names: a process's certificate name is ``$MESH_TLS_NAME`` when set (``mesh up`` sets it to the
component's name), else the name its code passes (the server's service name; "client" for the
CLIs and grpcurl).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from opentelemetry import context as otel_context

log = logging.getLogger("meshkit.tls")

TLS_DIR_ENV = "MESH_TLS_DIR"
TLS_NAME_ENV = "MESH_TLS_NAME"
TRUST_DOMAIN = "meshkit.local"
SPIFFE_PREFIX = f"spiffe://{TRUST_DOMAIN}/"
CLIENT = "client"  # the certificate of the mesh CLI, grpcurl and other tools
CA_FILE = "ca.pem"

# grpc's auth context property holding every subject alternative name of the peer's certificate.
_SAN_PROPERTY = "x509_subject_alternative_name"
_SPIFFE_PROPERTY = "peer_spiffe_id"


class TlsError(OSError):
    """A certificate the process needs is missing or unreadable; the message names the file and
    what to run. An OSError, so a service failing to start on it exits like one that cannot bind
    its port (logged, exit 1)."""


def tls_dir(env: Mapping[str, str] | None = None) -> Path | None:
    """The mesh's certificate directory (``$MESH_TLS_DIR``), or None when TLS is off."""
    value = (os.environ if env is None else env).get(TLS_DIR_ENV, "").strip()
    return Path(value) if value else None


def tls_name(default: str, env: Mapping[str, str] | None = None) -> str:
    """This process's certificate name: ``$MESH_TLS_NAME``, else ``default``."""
    value = (os.environ if env is None else env).get(TLS_NAME_ENV, "").strip()
    return value or default


def spiffe_id(name: str) -> str:
    """The SPIFFE ID of the mesh process called ``name``: ``spiffe://meshkit.local/<name>``."""
    return SPIFFE_PREFIX + name


def server_name(name: str) -> str:
    """The DNS name in ``name``'s certificate that says which service it is (``order_views`` ->
    ``order-views.meshkit.local``: DNS labels have no underscores). A client that dials with the
    channel option ``("grpc.ssl_target_name_override", server_name(peer))`` accepts only that
    peer's certificate, not any the CA signed (what Istio calls secure naming)."""
    return f"{name.replace('_', '-')}.{TRUST_DOMAIN}"


@dataclass(frozen=True)
class CertFiles:
    """Where the certificate, key and CA of process ``name`` are in ``directory``."""

    directory: Path
    name: str

    @property
    def cert(self) -> Path:
        """``<name>.pem``: the certificate (PEM)."""
        return self.directory / f"{self.name}.pem"

    @property
    def key(self) -> Path:
        """``<name>-key.pem``: its private key (PEM, PKCS#8, mode 0600)."""
        return self.directory / f"{self.name}-key.pem"

    @property
    def ca(self) -> Path:
        """``ca.pem``: the mesh's CA certificate, the one root every peer is checked against."""
        return self.directory / CA_FILE

    def read(self) -> tuple[bytes, bytes, bytes]:
        """(certificate, key, CA) bytes; TlsError naming a missing or unreadable file."""
        try:
            return self.cert.read_bytes(), self.key.read_bytes(), self.ca.read_bytes()
        except OSError as exc:
            raise TlsError(
                f"TLS is on ({TLS_DIR_ENV}={self.directory}) but {exc.filename} cannot be read"
                f" ({exc.strerror}): run `mesh certs` (it issues one for every component of"
                f" mesh.toml and 'client'), or set {TLS_NAME_ENV} to a name that has one"
            ) from None


def _files(name: str, directory: Path | None) -> CertFiles:
    directory = directory or tls_dir()
    if directory is None:
        raise TlsError(f"TLS is off: {TLS_DIR_ENV} is not set")
    return CertFiles(directory, name)


def channel_credentials(name: str, directory: Path | None = None) -> grpc.ChannelCredentials:
    """Credentials to dial mesh servers with: ``name``'s certificate and key, trusting only the
    mesh's CA (``directory``, default ``$MESH_TLS_DIR``). Read now, once; TlsError when a file is
    missing."""
    cert, key, ca = _files(name, directory).read()
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )


def server_credentials(name: str, directory: Path | None = None) -> grpc.ServerCredentials:
    """mTLS server credentials of ``name`` (``directory``, default ``$MESH_TLS_DIR``): clients
    must present a certificate the mesh's CA signed. The certificate, key and CA are read again
    whenever their files change (checked at each new connection: three stat calls), so a
    re-issued certificate is served from the next handshake on, without a restart. A change
    that does not load (a key that does not match its certificate, e.g. caught between two
    renames, or a file gone) keeps the previous ones, with a warning. TlsError when the files
    are missing now."""
    reloader = _Reloader(_files(name, directory))
    return grpc.dynamic_ssl_server_credentials(
        reloader.initial(),
        reloader.fetch,  # type: ignore[arg-type] # grpc documents None as "no change"; stubs lack it
        require_client_authentication=True,
    )


_Signature = tuple[tuple[int, int, int], ...]


class _Reloader:
    """grpc's certificate fetcher: called before every handshake, returns a new configuration
    when the files changed since the last load, else None (keep the current one)."""

    def __init__(self, files: CertFiles) -> None:
        self.files = files
        self._lock = threading.Lock()
        self._signature: _Signature | None = None

    def _stat(self) -> _Signature | None:
        try:
            stats = [p.stat() for p in (self.files.cert, self.files.key, self.files.ca)]
        except OSError:
            return None
        return tuple((s.st_ino, s.st_mtime_ns, s.st_size) for s in stats)

    def initial(self) -> grpc.ServerCertificateConfiguration:
        signature = self._stat()
        cert, key, ca = self.files.read()
        _check_pair(cert, key, self.files)
        self._signature = signature
        log.info(
            "%s: serving mTLS only, as %s (%s)",
            self.files.name,
            spiffe_id(self.files.name),
            _describe(cert),
        )
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        signature = self._stat()
        if signature is None or signature == self._signature:
            return None
        with self._lock:
            if signature == self._signature:
                return None
            # Remembered even when the load fails: the next change of the files is tried, not
            # this same state again at every handshake.
            self._signature = signature
            try:
                cert, key, ca = self.files.read()
                _check_pair(cert, key, self.files)
            except (TlsError, ValueError) as exc:
                log.warning(
                    "%s: changed certificate files not loaded, keeping the previous ones: %s",
                    self.files.name,
                    exc,
                )
                return None
            log.info("%s: certificate reloaded: %s", self.files.name, _describe(cert))
            return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)


def _check_pair(cert: bytes, key: bytes, files: CertFiles) -> None:
    """ValueError unless ``key`` is the private key of ``cert`` (both PEM)."""
    certificate = x509.load_pem_x509_certificate(cert)
    private = serialization.load_pem_private_key(key, password=None)
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if certificate.public_key().public_bytes(*raw) != private.public_key().public_bytes(*raw):
        raise ValueError(f"{files.key} is not the key of {files.cert}")


def _describe(cert: bytes) -> str:
    certificate = x509.load_pem_x509_certificate(cert)
    return (
        f"serial {certificate.serial_number:x}, valid until"
        f" {certificate.not_valid_after_utc:%Y-%m-%d %H:%M}Z"
    )


def peer_identity(context: grpc.ServicerContext) -> str | None:
    """The SPIFFE ID (``spiffe://...``) in the certificate the caller presented on this RPC's
    connection, as the handshake verified it; None over plaintext or without one."""
    auth = context.auth_context()
    # grpc fills peer_spiffe_id when the certificate has exactly one URI SAN, a valid SPIFFE ID;
    # the SANs are scanned otherwise (e.g. a certificate with more URIs).
    for value in (*auth.get(_SPIFFE_PROPERTY, ()), *auth.get(_SAN_PROPERTY, ())):
        text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
        if text.startswith("spiffe://"):
            return text
    return None


class _Peer:
    """The caller of one RPC, resolved from its context when first asked (most RPCs never ask)."""

    __slots__ = ("_context", "_identity", "_resolved")

    def __init__(self, context: grpc.ServicerContext) -> None:
        self._context = context
        self._identity: str | None = None
        self._resolved = False

    def identity(self) -> str | None:
        # Two threads of one RPC asking at once both resolve it, to the same answer.
        if not self._resolved:
            self._identity = peer_identity(self._context)
            self._resolved = True
        return self._identity


_PEER_KEY = otel_context.create_key("meshkit.tls.peer")


def with_peer(context: grpc.ServicerContext, current: otel_context.Context) -> otel_context.Context:
    """``current`` carrying the caller of the RPC ``context`` belongs to (the server edge's job,
    with TLS on; unchanged when it is off). The OpenTelemetry context is the carrier because the
    edge already makes it current for the handler and re-attaches it at every step of a
    streaming handler, on whatever thread grpc resumes it."""
    if tls_dir() is None:
        return current
    return otel_context.set_value(_PEER_KEY, _Peer(context), current)


def current_peer_identity() -> str | None:
    """The SPIFFE ID of the caller of the RPC this thread is handling (see ``peer_identity``);
    None outside an RPC, over plaintext, or when TLS is off."""
    peer = otel_context.get_value(_PEER_KEY)
    return peer.identity() if isinstance(peer, _Peer) else None
