"""The gateway's own settings (GATEWAY_*); the kit's ServiceSettings has the rest."""

from __future__ import annotations

import dataclasses

from meshkit.settings import ServiceSettings


@dataclasses.dataclass(frozen=True)
class Settings(ServiceSettings):
    """Everything the gateway reads from its environment (``python -m gateway --help``)."""

    http_port: int = dataclasses.field(
        default=8080,
        metadata={"help": "the HTTP port (default: http_port in mesh.toml); 0 = any free"},
    )
    http_threads: int = dataclasses.field(
        default=8,
        metadata={"help": "HTTP worker threads (requests handled at once)", "min": 1, "max": 256},
    )
    identity_url: str = dataclasses.field(
        default="",
        metadata={"help": "identity's HTTP base URL (default: from mesh.toml, MESH_URL_IDENTITY)"},
    )
    issuer: str = dataclasses.field(
        default="", metadata={"help": "the tokens' expected iss (default: identity_url)"}
    )
    audience: str = dataclasses.field(
        default="meshkit", metadata={"help": "the tokens' expected aud"}
    )
    clock_skew: float = dataclasses.field(
        default=30.0, metadata={"help": "seconds of clock skew allowed on exp/iat", "min": 0}
    )
    deadline: float = dataclasses.field(
        default=5.0, metadata={"help": "seconds a backend call may take (then 504)", "min": 0.01}
    )
    max_body_bytes: int = dataclasses.field(
        default=1024 * 1024, metadata={"help": "largest request body (then 413)", "min": 1}
    )
    cors_origins: str = dataclasses.field(
        default="http://127.0.0.1:8080,http://localhost:8080",
        metadata={"help": "comma-separated origins allowed to call the API from a browser"},
    )
    rate_limits_file: str = dataclasses.field(
        default="", metadata={"help": "rate limit policies, TOML (default: the shipped ones)"}
    )
    rate_limit_store: str = dataclasses.field(
        default="memory",
        metadata={
            "help": "memory (per replica) or sqlite:///PATH (shared by replicas on one host)"
        },
    )
    jaeger_url: str = dataclasses.field(
        default="http://127.0.0.1:16686",
        metadata={"help": "where the shop page links an order's trace"},
    )

    @property
    def origins(self) -> tuple[str, ...]:
        """cors_origins as a tuple."""
        return tuple(o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip())
