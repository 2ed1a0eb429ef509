"""Settings from the environment: typed, prefixed, failing fast with the bad key named.

A service declares a frozen dataclass of its settings; ``load_settings(Settings, "INVENTORY")``
reads ``INVENTORY_<FIELD>`` for every field, converts by the field's type, applies field
``metadata`` bounds, and raises SettingsError naming the key for anything missing, malformed or
unknown (a misspelt ``INVENTORY_PROT`` is an error, not a silent default).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class SettingsError(ValueError):
    """A setting is missing, malformed, out of range or unknown; the message names the key."""


def _convert(key: str, raw: str, kind: Any) -> Any:
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise SettingsError(f"{key}={raw!r}: expected a boolean (true/false)")
    if kind is int:
        try:
            return int(raw)
        except ValueError:
            raise SettingsError(f"{key}={raw!r}: expected an integer") from None
    if kind is float:
        try:
            return float(raw)
        except ValueError:
            raise SettingsError(f"{key}={raw!r}: expected a number") from None
    if kind is Path:
        if not raw:
            raise SettingsError(f"{key}: expected a path, got an empty value")
        return Path(raw)
    if typing.get_origin(kind) is typing.Literal:
        choices = typing.get_args(kind)
        value = raw.strip()
        if value not in choices:
            raise SettingsError(f"{key}={raw!r}: expected one of {', '.join(map(str, choices))}")
        return value
    return raw


def setting_keys(cls: type[Any], prefix: str) -> dict[str, dataclasses.Field[Any]]:
    """The environment key of every field of ``cls``: ``PREFIX_FIELD``, or the field's
    ``metadata["env"]`` for mesh-wide settings every service shares (e.g. SCHEMA_REGISTRY_URL)."""
    return {f.metadata.get("env", f"{prefix}_{f.name.upper()}"): f for f in dataclasses.fields(cls)}


def load_settings(
    cls: type[T],
    prefix: str,
    env: Mapping[str, str],
    defaults: Mapping[str, Any] | None = None,
) -> T:
    """Build ``cls`` from ``env``. Fields without a default are required.

    Field metadata understood: ``min`` and ``max`` (inclusive bounds for numbers) and ``help``.
    ``defaults`` (field name -> value) overrides the dataclass defaults, for values only known at
    run time (a service's port from mesh.toml, its database file named after it).
    """
    defaults = defaults or {}
    hints = typing.get_type_hints(cls)
    keys = setting_keys(cls, prefix)
    own = {k for k in keys if k.startswith(prefix + "_")}
    unknown = sorted(k for k in env if k.startswith(prefix + "_") and k not in own)
    if unknown:
        raise SettingsError(
            f"unknown setting {', '.join(unknown)}; known {prefix}_* settings: {', '.join(own)}"
        )
    values: dict[str, Any] = {}
    for key, f in keys.items():
        if key not in env:
            if f.name in defaults:
                values[f.name] = defaults[f.name]
                continue
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise SettingsError(f"{key} is required: {f.metadata.get('help', f.name)}")
            continue
        value = _convert(key, env[key], hints[f.name])
        low, high = f.metadata.get("min"), f.metadata.get("max")
        if low is not None and value < low:
            raise SettingsError(f"{key}={env[key]!r}: must be at least {low}")
        if high is not None and value > high:
            raise SettingsError(f"{key}={env[key]!r}: must be at most {high}")
        values[f.name] = value
    return cls(**values)


def describe_settings(
    cls: type[Any],
    prefix: str,
    defaults: Mapping[str, Any] | None = None,
    unused: Collection[str] = (),
) -> str:
    """Human help text listing every key, its default and what it does; fields named in
    ``unused`` (settings the service has but never reads, e.g. a database path for a service
    without one) are left out."""
    defaults = defaults or {}
    lines = []
    for key, f in setting_keys(cls, prefix).items():
        if f.name in unused:
            continue
        default = (
            defaults[f.name]
            if f.name in defaults
            else f.default
            if f.default is not dataclasses.MISSING
            else (f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        )
        shown = "(required)" if default is None else f"(default: {default})"
        lines.append(f"  {key:<28} {f.metadata.get('help', '')} {shown}".rstrip())
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class ServerSettings:
    """What every gRPC service of the mesh reads from its environment (subclass to add more)."""

    host: str = dataclasses.field(
        default="127.0.0.1", metadata={"help": "address to listen on (loopback by default)"}
    )
    port: int = dataclasses.field(
        default=0,
        metadata={"help": "port to listen on; 0 picks a free one", "min": 0, "max": 65535},
    )
    max_workers: int = dataclasses.field(
        default=16, metadata={"help": "RPC worker threads", "min": 1, "max": 1024}
    )
    max_concurrent_rpcs: int = dataclasses.field(
        default=0,
        metadata={
            "help": "in-flight RPC cap (running plus queued for a worker); beyond it an RPC is"
            " answered RESOURCE_EXHAUSTED at once instead of queueing. 0: 4 x max_workers, a"
            " queue of about three handler times per worker: it absorbs a burst, while a"
            " longer queue only adds latency the caller's deadline may not have. Every open"
            " stream counts (health Watch does not: it holds no worker)",
            "min": 0,
            "max": 100_000,
        },
    )
    grace_seconds: float = dataclasses.field(
        default=5.0,
        metadata={"help": "on SIGTERM, how long in-flight RPCs may finish", "min": 0.0},
    )
    log_level: typing.Literal["DEBUG", "INFO", "WARNING", "ERROR"] = dataclasses.field(
        default="INFO", metadata={"help": "DEBUG, INFO, WARNING or ERROR"}
    )

    @property
    def rpc_cap(self) -> int:
        """The in-flight RPC cap in force: ``max_concurrent_rpcs``, or 4 x ``max_workers``."""
        return self.max_concurrent_rpcs or 4 * self.max_workers


@dataclasses.dataclass(frozen=True)
class EventSettings:
    """Where a service that publishes or consumes events finds Kafka and the schema registry.

    Mesh-wide: the same variables for every service (`mesh up` and docker-compose set them),
    so they are not prefixed with the service's name.
    """

    kafka_bootstrap: str = dataclasses.field(
        default="127.0.0.1:9092",
        metadata={"env": "MESH_KAFKA_BOOTSTRAP", "help": "Kafka bootstrap servers (host:port)"},
    )
    schema_registry_url: str = dataclasses.field(
        default="http://127.0.0.1:8081",
        metadata={
            "env": "SCHEMA_REGISTRY_URL",
            "help": "the schema registry's base URL, or several comma separated (the one that"
            " last answered is asked first, the next on a connection error or 5xx)",
        },
    )
    kafka_create_topics: bool = dataclasses.field(
        default=True,
        metadata={
            "env": "MESH_KAFKA_CREATE_TOPICS",
            "help": "create the service's missing topics (broker defaults) before publishing;"
            " false leaves them to the broker's auto-create",
        },
    )


@dataclasses.dataclass(frozen=True)
class AuthSettings:
    """How a service checks its callers' tokens and proves its own identity (meshkit.authz).

    The token issuer's settings are mesh-wide (every service trusts the same identity); the
    client secret is the service's own.
    """

    auth_jwks_url: str = dataclasses.field(
        default="",
        metadata={
            "env": "MESH_AUTH_JWKS_URL",
            "help": "where the token issuer's keys are (default: identity's"
            " /.well-known/jwks.json, from mesh.toml)",
        },
    )
    auth_issuer: str = dataclasses.field(
        default="",
        metadata={
            "env": "MESH_AUTH_ISSUER",
            "help": "tokens' expected iss (default: identity's URL)",
        },
    )
    auth_audience: str = dataclasses.field(
        default="meshkit",
        metadata={"env": "MESH_AUTH_AUDIENCE", "help": "tokens' expected aud"},
    )
    client_secret: str = dataclasses.field(
        default="",
        metadata={
            "help": "this service's OAuth client secret, for the calls it makes as itself"
            " (default: the development secret dev-<name>-secret, with a warning)"
        },
    )


@dataclasses.dataclass(frozen=True)
class ServiceSettings(ServerSettings, EventSettings, AuthSettings):
    """What every service built with the kit (``meshkit.service``) reads: where it listens, its
    SQLite file, Kafka and the registry. Subclass it (a frozen dataclass) to add a service's own.

    The defaults of ``port`` and ``db_path`` are the service's: its port in mesh.toml and
    ``.mesh/data/<name>.db``; ``Service.load_settings`` fills them in.
    """

    db_path: Path = dataclasses.field(
        default=Path(".mesh/data/service.db"), metadata={"help": "SQLite database file"}
    )


@dataclasses.dataclass(frozen=True)
class HttpServiceSettings(ServiceSettings):
    """A service with an HTTP side too (``ctx.serve_http``): its port, and the browser origins
    allowed to call it (CORS). ``http_port``'s default is the component's ``http_port`` in
    mesh.toml (``Service.load_settings`` fills it in)."""

    http_port: int = dataclasses.field(
        default=0,
        metadata={
            "help": "the HTTP port (default: http_port in mesh.toml); 0 picks a free one",
            "min": 0,
            "max": 65535,
        },
    )
    cors_origins: str = dataclasses.field(
        default="http://127.0.0.1:8080,http://localhost:8080",
        metadata={
            "help": "comma-separated origins of browser pages allowed to call it (the shop page)"
        },
    )

    @property
    def origins(self) -> tuple[str, ...]:
        """``cors_origins`` as a tuple, without trailing slashes."""
        return tuple(o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip())
