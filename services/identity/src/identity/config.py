"""Identity's own settings (IDENTITY_*); the kit's HttpServiceSettings has the rest (its HTTP
port, and the browser origins allowed to call /token and /revoke)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from meshkit.settings import HttpServiceSettings


@dataclasses.dataclass(frozen=True)
class Settings(HttpServiceSettings):
    """Everything identity reads from its environment (``python -m identity --help``)."""

    issuer: str = dataclasses.field(
        default="",
        metadata={"help": "the issuer URL (default http://127.0.0.1:<http_port>)"},
    )
    audience: str = dataclasses.field(
        default="meshkit",
        metadata={"help": "the aud of every access token: the mesh's APIs"},
    )
    totp_issuer: str = dataclasses.field(
        default="meshkit shop",
        metadata={"help": "the name authenticator apps show beside the account (otpauth issuer)"},
    )
    clients_file: str = dataclasses.field(
        default="",
        metadata={"help": "the OAuth clients file (default: the one shipped, clients.toml)"},
    )
    access_token_ttl: float = dataclasses.field(
        default=600.0, metadata={"help": "access token lifetime, seconds", "min": 1}
    )
    refresh_token_ttl: float = dataclasses.field(
        default=30 * 86400.0,
        metadata={"help": "refresh token absolute lifetime from the login, seconds", "min": 1},
    )
    session_idle: float = dataclasses.field(
        default=7 * 86400.0,
        metadata={"help": "a session unused this long (seconds) has ended", "min": 1},
    )
    session_lifetime: float = dataclasses.field(
        default=30 * 86400.0,
        metadata={"help": "a session older than this (seconds) has ended", "min": 1},
    )
    clock_skew: float = dataclasses.field(
        default=30.0,
        metadata={"help": "seconds of clock skew allowed when checking exp/iat/nbf", "min": 0},
    )
    device_code_ttl: float = dataclasses.field(
        default=600.0,
        metadata={"help": "device and user code lifetime, seconds (RFC 8628 expires_in)", "min": 1},
    )
    device_interval: float = dataclasses.field(
        default=5.0, metadata={"help": "device grant polling interval, seconds", "min": 0}
    )
    key_rotation: float = dataclasses.field(
        default=86400.0, metadata={"help": "signing key rotation period, seconds", "min": 1}
    )
    fast_hashing: bool = dataclasses.field(
        default=False,
        metadata={"help": "argon2's cheapest parameters: for tests only, never in production"},
    )

    def issuer_for(self, port: int) -> str:
        """The issuer: IDENTITY_ISSUER, or this server's own URL."""
        return self.issuer.rstrip("/") or f"http://127.0.0.1:{port}"

    @property
    def clients_path(self) -> Path | None:
        """IDENTITY_CLIENTS_FILE, or None for the shipped file."""
        return Path(self.clients_file) if self.clients_file else None
