"""``mesh certs``: the mesh's local certificate authority and a certificate per process, for mTLS.

    mesh certs [--dir DIR] [--days N] [--force] [--new-ca]

Writes into ``.mesh/certs/`` (under the mesh's root) what meshkit.tls reads:

- ``ca.pem`` / ``ca-key.pem``: the local CA (ECDSA P-256, ten years), trusted by every process
  of the mesh and by nothing else;
- ``<name>.pem`` / ``<name>-key.pem`` for every component of mesh.toml and for ``client`` (the
  mesh CLI, grpcurl): ECDSA P-256, signed by the CA, URI SAN ``spiffe://meshkit.local/<name>``
  (the identity a server sees), DNS SANs ``localhost`` and ``<name>.meshkit.local`` (see
  meshkit.tls.server_name), IP SAN 127.0.0.1, usable as server and client (serverAuth and
  clientAuth).

Keys are mode 0600 and the directory 0700. Files are replaced atomically (write, then rename), so
a running server that reloads them reads whole files.

Idempotent: a certificate that is signed by the current CA, matches its key, names its identity
and has more than a third of its lifetime left is kept; any other is (re-)issued. ``--force``
re-issues every component's certificate (the CA stays: running processes keep trusting it);
``--new-ca`` makes a new CA and so new certificates for all (a running mesh trusts the old CA
until restarted). ``mesh up --tls`` runs this (without --force) before it starts anything, so the
certificates of a mesh that is brought up regularly renew themselves, and running servers pick
up renewed files without a restart.

Also here: how the mesh CLI knows that the running mesh has TLS (``.mesh/run/tls.json``, written
by ``mesh up --tls``, removed by ``mesh down``) and the environment that gives each component.

Exit codes: 0 done, 1 the files could not be written, 2 usage error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import json
import os
import sys
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mesh_runner.config import Component, ConfigError, Mesh, find_root, load_mesh
from mesh_runner.processes import ProcessRecord, is_alive
from meshkit.tls import CLIENT, TLS_DIR_ENV, TLS_NAME_ENV, CertFiles, server_name, spiffe_id

DEFAULT_DAYS = 90
CA_DAYS = 3650
# The CA is replaced when it has less than this left: leaves must not outlive it.
CA_RENEW_BEFORE = dt.timedelta(days=30)
CA_KEY_FILE = "ca-key.pem"
STATE_FILE = "tls.json"  # in the mesh's run directory while it runs with TLS
_ORGANIZATION = "meshkit local mesh"
# Issued this long before "now", so a clock a little behind the issuer's still accepts them.
_BACKDATE = dt.timedelta(minutes=5)
_PUBLIC = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo


class CertError(RuntimeError):
    """TLS cannot be turned on for the mesh as asked; the message says why and what to do."""


@dataclass(frozen=True)
class Authority:
    """The mesh's CA: its certificate and key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class Outcome:
    """What ``ensure_certs`` did for one name: ``issued``, ``renewed`` or ``kept`` (and why)."""

    name: str
    action: str
    serial: int
    not_after: dt.datetime
    reason: str = ""


def certs_dir(mesh: Mesh) -> Path:
    """The mesh's certificate directory: ``.mesh/certs`` under its root."""
    return mesh.state_dir / "certs"


def names_of(mesh: Mesh) -> list[str]:
    """Who gets a certificate: every component of mesh.toml, and ``client``."""
    return [*(c.name for c in mesh.components), CLIENT]


def ensure_certs(
    directory: Path,
    names: Sequence[str],
    *,
    days: int = DEFAULT_DAYS,
    force: bool = False,
    new_ca: bool = False,
    say: Callable[[str], None] | None = None,
) -> list[Outcome]:
    """Make ``directory`` hold a valid CA and a valid certificate per name (see the module's
    docstring for what valid means and what ``force`` and ``new_ca`` do); ``say`` gets a line
    per action. Returns what was done per name, in order. OSError when a file cannot be written."""
    say = say or (lambda _line: None)
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    authority, why_new = (None, "asked for (--new-ca)") if new_ca else _load_ca(directory)
    if authority is None:
        authority = issue_ca(directory)
        # Every certificate of an old CA is then "not signed by the current CA": re-issued below.
        say(f"CA: issued ({why_new}); valid until {authority.cert.not_valid_after_utc:%Y-%m-%d}")
    else:
        say(f"CA: kept (valid until {authority.cert.not_valid_after_utc:%Y-%m-%d})")
    outcomes = []
    for name in names:
        files = CertFiles(directory, name)
        problem = check(files, authority)
        if problem is None and force:
            problem = "asked for (--force)"
        if problem is None:
            cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
            outcome = Outcome(name, "kept", cert.serial_number, cert.not_valid_after_utc)
        else:
            cert = issue(files, authority, days)
            action = "issued" if problem == "missing" else "renewed"
            outcome = Outcome(name, action, cert.serial_number, cert.not_valid_after_utc, problem)
        outcomes.append(outcome)
        why = f" ({outcome.reason})" if outcome.reason and outcome.reason != "missing" else ""
        say(
            f"{name}: {outcome.action}{why}: {spiffe_id(name)}, serial {outcome.serial:x},"
            f" valid until {outcome.not_after:%Y-%m-%d}"
        )
    return outcomes


def _load_ca(directory: Path) -> tuple[Authority | None, str]:
    """The CA in ``directory``, or (None, why it must be made anew)."""
    try:
        cert = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
        key = serialization.load_pem_private_key(
            (directory / CA_KEY_FILE).read_bytes(), password=None
        )
    except FileNotFoundError:
        return None, "none yet"
    except (OSError, ValueError) as exc:
        return None, f"unreadable: {exc}"
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return None, "its key is not an EC key"
    if cert.public_key().public_bytes(*_PUBLIC) != key.public_key().public_bytes(*_PUBLIC):
        return None, f"{CA_KEY_FILE} is not the key of ca.pem"
    if cert.not_valid_after_utc - _now() < CA_RENEW_BEFORE:
        return None, f"it expires on {cert.not_valid_after_utc:%Y-%m-%d}"
    return Authority(cert, key), ""


def check(files: CertFiles, authority: Authority) -> str | None:
    """Why ``files``' certificate must be (re-)issued (``"missing"``, expiring, not signed by
    ``authority``, not its key's, wrong identity), or None when it is good to keep."""
    try:
        cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
        key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    except FileNotFoundError:
        return "missing"
    except (OSError, ValueError) as exc:
        return f"unreadable: {exc}"
    try:
        cert.verify_directly_issued_by(authority.cert)
    except (ValueError, TypeError, InvalidSignature):
        return "not signed by the current CA"
    if cert.public_key().public_bytes(*_PUBLIC) != key.public_key().public_bytes(*_PUBLIC):
        return f"{files.key.name} is not its key"
    try:
        uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "no subject alternative names"
    if spiffe_id(files.name) not in uris.get_values_for_type(x509.UniformResourceIdentifier):
        return f"does not name {spiffe_id(files.name)}"
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    left = cert.not_valid_after_utc - _now()
    if left <= dt.timedelta():
        return "expired"
    if left < lifetime / 3:
        return f"expires on {cert.not_valid_after_utc:%Y-%m-%d}"
    return None


def issue_ca(directory: Path, days: int = CA_DAYS) -> Authority:
    """A new CA in ``directory`` (``ca.pem``, ``ca-key.pem``), replacing any there."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, "meshkit local CA"),
        ]
    )
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(directory / CA_KEY_FILE, _key_pem(key), 0o600)
    _write(directory / "ca.pem", cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return Authority(cert, key)


def issue(files: CertFiles, authority: Authority, days: int = DEFAULT_DAYS) -> x509.Certificate:
    """A new key and certificate for ``files.name``, signed by ``authority``, valid ``days``
    (never beyond the CA), written key first: a server reloading in between sees a pair that
    does not match and keeps its previous one until the certificate lands too."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    not_after = min(now + dt.timedelta(days=days), authority.cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORGANIZATION),
                    x509.NameAttribute(NameOID.COMMON_NAME, files.name),
                ]
            )
        )
        .issuer_name(authority.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.UniformResourceIdentifier(spiffe_id(files.name)),
                    x509.DNSName("localhost"),
                    x509.DNSName(server_name(files.name)),
                    x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
                ]
            ),
            # SPIFFE X.509-SVID: critical when the subject is empty; ours has a CN, so not.
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.key.public_key()),
            critical=False,
        )
        .sign(authority.key, hashes.SHA256())
    )
    _write(files.key, _key_pem(key), 0o600)
    _write(files.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """Signatures (ECDSA: the TLS handshake's), and for the CA certificates and CRLs too."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` with ``data`` atomically, created with ``mode`` (a key is never readable
    by others, not even for a moment)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(tmp, mode)  # the umask may have taken bits a certificate should have
    tmp.replace(path)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --- the running mesh's TLS state ------------------------------------------------------------


def recorded(run_dir: Path) -> Path | None:
    """The certificate directory of the mesh running from ``run_dir``, None when it runs without
    TLS (or not at all)."""
    try:
        return Path(json.loads((run_dir / STATE_FILE).read_text())["dir"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def record(run_dir: Path, directory: Path) -> None:
    """Note that the mesh of ``run_dir`` runs with TLS from ``directory`` (``mesh up --tls``)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps({"dir": str(directory)}))
    tmp.replace(run_dir / STATE_FILE)


def forget(run_dir: Path) -> None:
    """The mesh of ``run_dir`` is down: later commands dial it in plaintext (``mesh down``)."""
    (run_dir / STATE_FILE).unlink(missing_ok=True)


def adopt(root: Path | None, environ: MutableMapping[str, str] | None = None) -> None:
    """When the mesh at ``root`` (default: found from the cwd) runs with TLS, make this process
    dial it with TLS as ``client`` (sets MESH_TLS_DIR and MESH_TLS_NAME unless already set).
    Every mesh command starts with this, so ps, sagas, audit, load... follow the running mesh."""
    environ = os.environ if environ is None else environ
    try:
        mesh_root = root or find_root()
    except ConfigError:
        return  # no mesh here (e.g. `mesh dlq` against a broker only)
    directory = recorded(mesh_root / ".mesh" / "run")
    if directory is not None:
        environ.setdefault(TLS_DIR_ENV, str(directory))
        environ.setdefault(TLS_NAME_ENV, CLIENT)


def enable(mesh: Mesh, say: Callable[[str], None]) -> bool:
    """``mesh up --tls``: refuse when the mesh already runs without TLS; else make sure every
    certificate is there and valid, note that the mesh runs with TLS and make this process (and
    so every component it starts) use it. False (the reason printed) when refused or the
    certificates cannot be written."""
    directory = certs_dir(mesh)
    if recorded(mesh.run_dir) is None:
        running = [
            c.name
            for c in mesh.components
            if (r := ProcessRecord.load(mesh.run_dir, c.name)) is not None and is_alive(r)
        ]
        if running:
            print(
                f"mesh up: --tls, but the mesh already runs without TLS ({', '.join(running)}):"
                " `mesh down` first",
                file=sys.stderr,
            )
            return False
    try:
        ensure_certs(directory, names_of(mesh), say=lambda line: say(f"certs: {line}"))
    except OSError as exc:
        print(f"mesh up: cannot write the certificates in {directory}: {exc}", file=sys.stderr)
        return False
    record(mesh.run_dir, directory)
    os.environ[TLS_DIR_ENV] = str(directory)
    os.environ.setdefault(TLS_NAME_ENV, CLIENT)
    return True


def component_env(mesh: Mesh, component: Component, env: Mapping[str, str]) -> dict[str, str]:
    """What TLS adds to ``component``'s environment ``env`` (nothing when MESH_TLS_DIR is not
    in it): its certificate name, and, when it exports spans to the mesh's own trace receiver
    (a kit server, so mTLS too), the OTLP exporter's https endpoint and certificates."""
    directory = env.get(TLS_DIR_ENV)
    if not directory:
        return {}
    files = CertFiles(Path(directory), component.name)
    added = {TLS_NAME_ENV: component.name}
    endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
    ours = {f"http://127.0.0.1:{c.port}" for c in mesh.components}
    if endpoint in ours:
        added["OTEL_EXPORTER_OTLP_ENDPOINT"] = "https://" + endpoint.removeprefix("http://")
        added["OTEL_EXPORTER_OTLP_CERTIFICATE"] = str(files.ca)
        added["OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"] = str(files.cert)
        added["OTEL_EXPORTER_OTLP_CLIENT_KEY"] = str(files.key)
    return added


# --- the command -----------------------------------------------------------------------------


def _days(text: str) -> int:
    try:
        days = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of days: {text!r}") from None
    if not 1 <= days <= CA_DAYS:
        raise argparse.ArgumentTypeError(f"--days must be between 1 and {CA_DAYS}")
    return days


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``certs`` to the ``mesh`` parser."""
    certs = sub.add_parser(
        "certs",
        help="make the local CA and a certificate per component (for mesh up --tls)",
        description="Makes the mesh's local CA and, for every component of mesh.toml and for"
        " 'client' (the mesh CLI, grpcurl), a certificate with the URI SAN"
        " spiffe://meshkit.local/<name>, DNS localhost and IP 127.0.0.1, for server and client"
        " authentication. Keeps valid ones (signed by the CA, more than a third of their"
        " lifetime left); running servers reload changed files without a restart.",
    )
    certs.add_argument(
        "--dir", type=Path, help="where to write them (default: .mesh/certs under the mesh root)"
    )
    certs.add_argument(
        "--days",
        type=_days,
        default=DEFAULT_DAYS,
        help=f"validity of the certificates issued now (default {DEFAULT_DAYS})",
    )
    certs.add_argument(
        "--force",
        action="store_true",
        help="re-issue every certificate, valid or not (the CA stays)",
    )
    certs.add_argument(
        "--new-ca",
        action="store_true",
        help="make a new CA too (a running mesh trusts the old one until restarted)",
    )


def run(args: argparse.Namespace, root: Path | None) -> int:
    """``mesh certs``."""
    mesh = load_mesh(root)
    directory = (args.dir or certs_dir(mesh)).resolve()

    def say(line: str) -> None:
        print(f"==> {line}", file=sys.stderr, flush=True)

    try:
        ensure_certs(
            directory, names_of(mesh), days=args.days, force=args.force, new_ca=args.new_ca, say=say
        )
    except OSError as exc:
        print(f"mesh certs: cannot write in {directory}: {exc}", file=sys.stderr)
        return 1
    if args.new_ca and recorded(mesh.run_dir) is not None:
        say("the running mesh trusts the old CA until restarted: mesh down && mesh up --tls")
    print(
        f"certificates in {directory}\n"
        f"  mesh up --tls   runs the mesh with them (mTLS on every gRPC hop)\n"
        f"  grpcurl -cacert {directory}/ca.pem -cert {directory}/{CLIENT}.pem"
        f" -key {directory}/{CLIENT}-key.pem 127.0.0.1:PORT list"
    )
    return 0
