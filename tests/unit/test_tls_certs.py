"""`mesh certs` and mesh_runner.certs: the local CA and the per-component certificates are what
mTLS between the mesh's services needs (SPIFFE URI SAN, localhost and 127.0.0.1, serverAuth and
clientAuth), verify as a chain with cryptography's own X.509 path validation, keep their keys
private, and are kept, renewed or re-issued as the docstring of mesh_runner.certs says."""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID

from mesh_runner import certs
from mesh_runner.cli import main
from meshkit import tls

NAMES = ["inventory", "order_views", "client"]


def _cert(directory: Path, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((directory / f"{name}.pem").read_bytes())


def _serials(directory: Path) -> dict[str, int]:
    return {name: _cert(directory, name).serial_number for name in ["ca", *NAMES]}


@pytest.fixture
def issued(tmp_path: Path) -> Path:
    directory = tmp_path / "certs"
    certs.ensure_certs(directory, NAMES)
    return directory


def test_each_certificate_names_its_spiffe_id_localhost_and_loopback(issued: Path) -> None:
    for name in NAMES:
        cert = _cert(issued, name)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [
            f"spiffe://meshkit.local/{name}"
        ]
        assert sans.get_values_for_type(x509.DNSName) == ["localhost", tls.server_name(name)]
        assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.IPv4Address("127.0.0.1")]
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert tls.server_name("order_views") == "order-views.meshkit.local"


def test_the_chain_verifies_for_servers_and_clients(issued: Path) -> None:
    ca = _cert(issued, "ca")
    store = verification.Store([ca])
    now = dt.datetime.now(dt.UTC)
    for name in NAMES:
        leaf = _cert(issued, name)
        leaf.verify_directly_issued_by(ca)
        for server in (
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ):
            verifier = verification.PolicyBuilder().store(store).time(now)
            chain = verifier.build_server_verifier(server).verify(leaf, [])
            assert chain[-1] == ca
        client = verification.PolicyBuilder().store(store).time(now).build_client_verifier()
        assert client.verify(leaf, []).subjects == [
            x509.UniformResourceIdentifier(f"spiffe://meshkit.local/{name}"),
            x509.DNSName("localhost"),
            x509.DNSName(tls.server_name(name)),
            x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
        ]


def test_another_cas_certificates_do_not_verify(issued: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    certs.ensure_certs(other, ["client"])
    store = verification.Store([_cert(issued, "ca")])
    verifier = verification.PolicyBuilder().store(store).build_client_verifier()
    with pytest.raises(verification.VerificationError):
        verifier.verify(_cert(other, "client"), [])


def test_keys_are_private_and_match_their_certificates(issued: Path) -> None:
    assert stat.S_IMODE(issued.stat().st_mode) == 0o700
    for name in ["ca", *NAMES]:
        key_path = issued / f"{name}-key.pem"
        assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        public = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        assert key.public_key().public_bytes(*public) == (
            _cert(issued, name).public_key().public_bytes(*public)
        )
    assert not list(issued.glob(".*.tmp"))


def test_running_again_keeps_valid_certificates(issued: Path) -> None:
    before = _serials(issued)
    outcomes = certs.ensure_certs(issued, NAMES)
    assert [o.action for o in outcomes] == ["kept"] * len(NAMES)
    assert _serials(issued) == before


def test_force_reissues_every_certificate_but_keeps_the_ca(issued: Path) -> None:
    before = _serials(issued)
    outcomes = certs.ensure_certs(issued, NAMES, force=True)
    assert {o.action for o in outcomes} == {"renewed"}
    after = _serials(issued)
    assert after["ca"] == before["ca"]
    assert all(after[name] != before[name] for name in NAMES)


def test_a_new_ca_reissues_everything(issued: Path) -> None:
    before = _serials(issued)
    outcomes = certs.ensure_certs(issued, NAMES, new_ca=True)
    assert {o.reason for o in outcomes} == {"not signed by the current CA"}
    after = _serials(issued)
    assert all(after[name] != before[name] for name in ["ca", *NAMES])


def test_a_missing_new_component_is_issued_and_the_others_kept(issued: Path) -> None:
    outcomes = certs.ensure_certs(issued, [*NAMES, "audit"])
    assert [o.action for o in outcomes] == ["kept"] * len(NAMES) + ["issued"]


def test_a_certificate_near_its_end_is_renewed(issued: Path) -> None:
    """Less than a third of its lifetime left: renewed (mesh up --tls runs this at every start)."""
    ca_key = serialization.load_pem_private_key((issued / "ca-key.pem").read_bytes(), password=None)
    old = _cert(issued, "inventory")
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(old.subject)
        .issuer_name(old.issuer)
        .public_key(old.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=80))
        .not_valid_after(now + dt.timedelta(days=10))
    )
    for extension in old.extensions:
        builder = builder.add_extension(extension.value, extension.critical)
    aged = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    (issued / "inventory.pem").write_bytes(aged.public_bytes(serialization.Encoding.PEM))
    outcomes = {o.name: o for o in certs.ensure_certs(issued, NAMES)}
    assert outcomes["inventory"].action == "renewed"
    assert outcomes["inventory"].reason.startswith("expires on")
    assert outcomes["client"].action == "kept"


def test_a_key_that_is_not_the_certificates_is_reissued(issued: Path, tmp_path: Path) -> None:
    certs.ensure_certs(tmp_path / "other", ["inventory"])
    (issued / "inventory-key.pem").write_bytes((tmp_path / "other/inventory-key.pem").read_bytes())
    outcomes = {o.name: o for o in certs.ensure_certs(issued, NAMES)}
    assert outcomes["inventory"].reason == "inventory-key.pem is not its key"
    assert outcomes["inventory"].action == "renewed"
    again = {o.name: o.action for o in certs.ensure_certs(issued, NAMES)}
    assert again["inventory"] == "kept"  # a matching pair again


def test_missing_files_are_named_with_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(tls.TlsError, match=r"payments\.pem.*run `mesh certs`"):
        tls.channel_credentials("payments", tmp_path)
    with pytest.raises(tls.TlsError, match="MESH_TLS_DIR is not set"):
        tls.server_credentials("payments")


def test_names_and_directory_come_from_the_environment() -> None:
    assert tls.tls_dir({}) is None
    assert tls.tls_dir({"MESH_TLS_DIR": " "}) is None
    assert tls.tls_dir({"MESH_TLS_DIR": "/x/certs"}) == Path("/x/certs")
    assert tls.tls_name("orders", {}) == "orders"
    assert tls.tls_name("orders", {"MESH_TLS_NAME": "orders-canary"}) == "orders-canary"
    assert tls.spiffe_id("orders") == "spiffe://meshkit.local/orders"


MESH_TOML = """
[[component]]
name = "trace-receiver"
command = ["python", "-m", "mesh_runner.receiver"]
port = 4317
health = "grpc"
traced = false

[[component]]
name = "inventory"
command = ["python", "-m", "inventory"]
port = 50052
health = "grpc"
"""


def test_mesh_certs_issues_for_every_component_and_client(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "mesh.toml").write_text(MESH_TOML)
    assert main(["--root", str(tmp_path), "certs", "--days", "30"]) == 0
    directory = tmp_path / ".mesh" / "certs"
    out, err = capsys.readouterr()
    assert f"-cacert {directory}/ca.pem -cert {directory}/client.pem" in out
    for name in ("trace-receiver", "inventory", "client"):
        assert f"{name}: issued: spiffe://meshkit.local/{name}" in err
        cert = _cert(directory, name)
        lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
        assert dt.timedelta(days=30) <= lifetime <= dt.timedelta(days=30, minutes=6)
    assert main(["--root", str(tmp_path), "certs"]) == 0
    assert "inventory: kept" in capsys.readouterr().err


@pytest.mark.parametrize("days", ["0", "many", "99999"])
def test_bad_days_are_usage_errors(
    tmp_path: Path, days: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "mesh.toml").write_text(MESH_TOML)
    with pytest.raises(SystemExit) as exited:
        main(["--root", str(tmp_path), "certs", "--days", days])
    assert exited.value.code == 2
    assert "--days" in capsys.readouterr().err
