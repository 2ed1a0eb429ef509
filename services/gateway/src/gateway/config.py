"""The gateway's own settings (GATEWAY_*); the kit's HttpServiceSettings has the rest."""

from __future__ import annotations

import dataclasses

from meshkit.settings import HttpServiceSettings


@dataclasses.dataclass(frozen=True)
class Settings(HttpServiceSettings):
    """Everything the gateway reads from its environment (``python -m gateway --help``)."""

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
        default="",
        metadata={
            "help": "a Jaeger UI the shop page links an order's trace to (compose's); unset, "
            "the page shows `mesh trace ID --open` instead (the Jaeger make tools builds has "
            "no UI)"
        },
    )
