"""OAuth clients from a TOML file (the shipped identity/clients.toml unless configured).

A confidential client's secret never sits in the file: it names the variable that holds it
(``secret_env``), with a development default that is logged as such when used.
"""

from __future__ import annotations

import importlib.resources
import logging
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from identity.domain.model import DEVICE_CODE_GRANT, Client

log = logging.getLogger(__name__)

GRANTS = {
    "authorization_code",
    "refresh_token",
    "client_credentials",
    DEVICE_CODE_GRANT,
    "password",
}


class ClientsError(ValueError):
    """The clients file is malformed; the message says where."""


def load_clients(
    path: Path | None = None, env: Mapping[str, str] | None = None
) -> dict[str, Client]:
    """The clients by id, from ``path`` (default: the shipped file)."""
    env = os.environ if env is None else env
    if path is None:
        text = importlib.resources.files("identity").joinpath("clients.toml").read_text()
        where = "identity/clients.toml"
    else:
        try:
            text = path.read_text()
        except OSError as exc:
            raise ClientsError(f"{path}: {exc}") from None
        where = str(path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ClientsError(f"{where}: {exc}") from None
    clients: dict[str, Client] = {}
    for index, entry in enumerate(raw.get("client", [])):
        client = _client(f"{where}: client #{index + 1}", entry, env)
        if client.client_id in clients:
            raise ClientsError(f"{where}: client_id {client.client_id!r} appears twice")
        clients[client.client_id] = client
    return clients


def _client(where: str, entry: dict[str, Any], env: Mapping[str, str]) -> Client:
    try:
        client_id = str(entry["client_id"])
        kind = str(entry["type"])
    except KeyError as exc:
        raise ClientsError(f"{where}: missing {exc.args[0]!r}") from None
    if kind not in ("public", "confidential"):
        raise ClientsError(f"{where}: type must be public or confidential, not {kind!r}")
    grants = tuple(str(g) for g in entry.get("grant_types", []))
    unknown = [g for g in grants if g not in GRANTS]
    if unknown:
        raise ClientsError(f"{where}: unknown grant_types {unknown}")
    responses = tuple(str(r) for r in entry.get("response_types", []))
    if any(r not in ("code", "token") for r in responses):
        raise ClientsError(f"{where}: response_types may hold only code and token")
    if "code" in responses and "authorization_code" not in grants:
        raise ClientsError(f"{where}: response_types code needs the authorization_code grant")
    if not bool(entry.get("first_party", True)):
        # A third-party client must ask the user's consent before it gets a token; there is no
        # consent page yet, so such a client is refused rather than silently treated as ours.
        raise ClientsError(
            f"{where}: first_party = false needs a consent page, which identity lacks"
        )
    redirects = tuple(str(u) for u in entry.get("redirect_uris", []))
    if responses and not redirects:
        raise ClientsError(f"{where}: a client with response_types needs redirect_uris")
    secret = None
    if kind == "confidential":
        variable = str(entry.get("secret_env", ""))
        secret = env.get(variable, "") if variable else ""
        if not secret:
            secret = str(entry.get("secret_default", ""))
            if not secret:
                raise ClientsError(f"{where}: a confidential client needs secret_env ({variable})")
            log.warning(
                "client %s uses its development secret: set %s in production", client_id, variable
            )
    elif "client_credentials" in grants:
        raise ClientsError(f"{where}: client_credentials needs a confidential client")
    return Client(
        client_id=client_id,
        public=kind == "public",
        grant_types=grants,
        redirect_uris=redirects,
        scopes=tuple(str(s) for s in entry.get("scopes", [])),
        first_party=bool(entry.get("first_party", True)),
        secret=secret,
        roles=tuple(str(r) for r in entry.get("roles", [])),
        response_types=responses,
    )
