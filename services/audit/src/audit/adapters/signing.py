"""The checkpoint signing key (Ed25519, ``cryptography``) and its published public keys.

The private key comes from AUDIT_SIGNING_KEY: a PEM (PKCS#8) private key, or the path of a file
holding one. Without it, a development key is made once and kept beside the database
(``<db>.signing-key.pem``, mode 0600) with a warning: then anyone who can write the database can
also sign, so production sets the variable from its secret store.

The public keys are published in ``<db>.pub.pem`` (PEM SubjectPublicKeyInfo blocks, one per key
ever used, oldest first; a rotated key stays, since older checkpoints name it) and served by
``GetPublicKeys``. They are kept outside the store on purpose: whoever rewrites the store must
not also be able to replace the key it is checked with in the same file. A verifier who trusts
neither file nor service passes the key it got out of band (``mesh audit verify --public-key``).
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from audit.app.ports import PublicKeyInfo
from audit.domain.chain import key_id

log = logging.getLogger(__name__)

_PEM_BLOCK = re.compile(r"-----BEGIN PUBLIC KEY-----.*?-----END PUBLIC KEY-----", re.S)


class SigningKeyError(ValueError):
    """AUDIT_SIGNING_KEY is not an Ed25519 private key (PEM, or a path to one)."""


def public_key_file(db_path: Path) -> Path:
    """Where the public keys of the store at ``db_path`` are published: ``<db>.pub.pem``."""
    return db_path.with_name(db_path.name + ".pub.pem")


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


class Ed25519Signer:
    """Signs checkpoint statements with one Ed25519 private key. Thread safety: safe to share
    (``cryptography``'s keys are immutable)."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        public = private_key.public_key()
        self._key_id = key_id(_raw(public))
        self.public_key_pem = _pem(public)

    @property
    def key_id(self) -> str:
        """The id of its public key (hex of the first 8 bytes of SHA-256 of the raw key)."""
        return self._key_id

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message``."""
        return self._key.sign(message)

    @classmethod
    def from_setting(cls, value: str) -> Ed25519Signer:
        """From AUDIT_SIGNING_KEY's value: PEM text, or the path of a PEM file."""
        text = value.strip()
        if not text.startswith("-----BEGIN"):
            try:
                text = Path(text).read_text()
            except OSError as exc:
                raise SigningKeyError(
                    f"AUDIT_SIGNING_KEY is neither a PEM key nor a readable file: {exc}"
                ) from None
        try:
            key = serialization.load_pem_private_key(text.encode(), password=None)
        except (ValueError, TypeError) as exc:
            raise SigningKeyError(f"AUDIT_SIGNING_KEY is not a PEM private key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningKeyError(
                f"AUDIT_SIGNING_KEY must be an Ed25519 key, not {type(key).__name__}"
            )
        return cls(key)

    @classmethod
    def beside(cls, db_path: Path) -> Ed25519Signer:
        """The development key kept beside the database (made on first use, mode 0600)."""
        path = db_path.with_name(db_path.name + ".signing-key.pem")
        if path.exists():
            return cls.from_setting(str(path))
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        # Written whole under another name, then linked into place: a crash never leaves a
        # half-written key, and of two processes starting at once the first link wins.
        if not _create_whole(path, pem, 0o600):
            return cls.from_setting(str(path))
        log.warning(
            "audit checkpoints are signed with a key made in %s: set AUDIT_SIGNING_KEY from a"
            " secret store in production",
            path,
        )
        return cls(key)


def _create_whole(path: Path, content: bytes, mode: int) -> bool:
    """Create ``path`` holding ``content`` (synced) atomically; False when it exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(partial, path)
        except FileExistsError:
            return False
        return True
    finally:
        partial.unlink(missing_ok=True)


def load_signer(setting: str, db_path: Path) -> Ed25519Signer:
    """The signer AUDIT_SIGNING_KEY names, else the development key beside ``db_path``."""
    if setting.strip():
        return Ed25519Signer.from_setting(setting)
    return Ed25519Signer.beside(db_path)


def read_public_keys(text: str) -> dict[str, str]:
    """Every Ed25519 public key in PEM ``text``, by key id, in file order; ValueError for a
    block that is not one."""
    keys: dict[str, str] = {}
    for block in _PEM_BLOCK.findall(text):
        key = serialization.load_pem_public_key(block.encode())
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(f"not an Ed25519 public key: {type(key).__name__}")
        keys[key_id(_raw(key))] = block + "\n"
    return keys


def publish(db_path: Path, signer: Ed25519Signer) -> list[PublicKeyInfo]:
    """Add ``signer``'s public key to ``<db>.pub.pem`` when it is not there yet (atomically:
    a reader sees the old file or the new one), and return every key published, current first."""
    path = public_key_file(db_path)
    keys = read_public_keys(path.read_text()) if path.exists() else {}
    if signer.key_id not in keys:
        keys[signer.key_id] = signer.public_key_pem
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{secrets.token_hex(8)}.tmp")
        partial.write_text("".join(keys.values()))
        partial.chmod(0o644)
        os.replace(partial, path)
        log.info("audit: public key %s published in %s", signer.key_id, path)
    infos = [PublicKeyInfo(kid, pem, kid == signer.key_id) for kid, pem in keys.items()]
    return sorted(infos, key=lambda k: not k.current)
