"""Where the mesh's services are: one source of addresses, so no port is written in code.

A service names its peers (``connect("inventory")``); the address is resolved, in this order:

1. ``MESH_ADDRESS_<NAME>`` in the environment (``MESH_ADDRESS_INVENTORY=inventory:7000``): what
   docker-compose or any deployment sets. It may list several replicas of the service,
   comma-separated (``127.0.0.1:50052,127.0.0.1:51052``, as ``mesh up --replicas`` sets it):
   ``address_of`` still returns one string, the list as given (blanks dropped), which
   ``meshkit.client.connect`` balances over; ``addresses_of`` splits it;
2. the component called ``<name>`` in the mesh's configuration, mesh.toml, as ``127.0.0.1:<port>``
   (the local mesh listens on loopback only). mesh.toml is ``$MESH_CONFIG`` when set, else
   ``$MESH_ROOT/mesh.toml``, else the nearest mesh.toml at or above the working directory.

A service's own port comes from the same table (``port_of``), unless ``<PREFIX>_PORT`` is set.

A component that also speaks HTTP (identity's OAuth endpoints) declares ``http_port`` beside
``port``; ``http_url_of(name)`` is ``http://127.0.0.1:<http_port>``, or ``MESH_URL_<NAME>``.
Stdlib only, and read at call time (start-up), never at import.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path

CONFIG_FILE = "mesh.toml"
ENV_PREFIX = "MESH_ADDRESS_"
URL_PREFIX = "MESH_URL_"
LOCAL_HOST = "127.0.0.1"


class AddressError(LookupError):
    """A peer's address is not configured anywhere; the message says where it was looked for."""


def env_key(name: str) -> str:
    """The variable that overrides ``name``'s address: ``MESH_ADDRESS_ORDER_VIEWS`` for
    ``order_views`` (upper case, ``-`` as ``_``)."""
    return ENV_PREFIX + name.upper().replace("-", "_")


def find_config(env: Mapping[str, str] | None = None, start: Path | None = None) -> Path | None:
    """The mesh's mesh.toml (see the module doc), or None when there is none."""
    env = os.environ if env is None else env
    if env.get("MESH_CONFIG"):
        return Path(env["MESH_CONFIG"])
    if env.get("MESH_ROOT"):
        return Path(env["MESH_ROOT"]) / CONFIG_FILE
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / CONFIG_FILE).is_file():
            return candidate / CONFIG_FILE
    return None


def ports(env: Mapping[str, str] | None = None, *, key: str = "port") -> dict[str, int]:
    """Every component of mesh.toml with its port (or its ``key``, e.g. ``http_port``), by name
    (empty without a mesh.toml)."""
    path = find_config(env)
    if path is None:
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise AddressError(f"{path}: {exc}") from None
    table: dict[str, int] = {}
    for raw in data.get("component", []):
        if isinstance(raw, dict) and "name" in raw and key in raw:
            table[str(raw["name"])] = int(raw[key])
    return table


def port_of(name: str, env: Mapping[str, str] | None = None) -> int:
    """``name``'s port in mesh.toml; AddressError when mesh.toml has no such component."""
    table = ports(env)
    if name not in table:
        where = find_config(env) or f"no {CONFIG_FILE} found from {Path.cwd()}"
        raise AddressError(
            f"no port for {name!r}: not a component of {where}"
            f" (known: {', '.join(sorted(table)) or 'none'})"
        )
    return table[name]


def address_of(name: str, env: Mapping[str, str] | None = None) -> str:
    """``host:port`` of the mesh service ``name`` (see the module doc for the order); for a
    replicated service, its replicas' ``host:port,host:port`` in one string."""
    env = os.environ if env is None else env
    override = ",".join(split_addresses(env.get(env_key(name), "")))
    if override:
        return override
    try:
        return f"{LOCAL_HOST}:{port_of(name, env)}"
    except AddressError as exc:
        raise AddressError(f"{exc}; or set {env_key(name)}=HOST:PORT") from None


def addresses_of(name: str, env: Mapping[str, str] | None = None) -> list[str]:
    """Every ``host:port`` of the mesh service ``name``: its replicas, in the order configured
    (one item unless ``MESH_ADDRESS_<NAME>`` lists several)."""
    return split_addresses(address_of(name, env))


def split_addresses(value: str) -> list[str]:
    """``"a:1, b:2,"`` -> ``["a:1", "b:2"]``: the items of a comma-separated address list."""
    return [item.strip() for item in value.split(",") if item.strip()]


def http_port_of(name: str, env: Mapping[str, str] | None = None) -> int:
    """``name``'s ``http_port`` in mesh.toml; AddressError when it declares none."""
    table = ports(env, key="http_port")
    if name not in table:
        where = find_config(env) or f"no {CONFIG_FILE} found from {Path.cwd()}"
        raise AddressError(f"no http_port for {name!r} in {where}")
    return table[name]


def http_url_of(name: str, env: Mapping[str, str] | None = None) -> str:
    """The base URL of ``name``'s HTTP side: ``MESH_URL_<NAME>``, else
    ``http://127.0.0.1:<http_port>`` from mesh.toml."""
    env = os.environ if env is None else env
    key = URL_PREFIX + name.upper().replace("-", "_")
    override = env.get(key, "").strip()
    if override:
        return override.rstrip("/")
    try:
        return f"http://{LOCAL_HOST}:{http_port_of(name, env)}"
    except AddressError as exc:
        raise AddressError(f"{exc}; or set {key}=http://HOST:PORT") from None
