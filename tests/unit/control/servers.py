"""A real control server for tests, built by the kit: the ConfigService half only
(``control.bootstrap.build_config``), with the kit's permission checks against the test issuer
(tests/support/tokens.py) and control's policy. It needs no Kafka.

Its registry is an empty one in this process: the kit then keeps no audit outbox (it says so
once) and control logs its changes instead of recording them; the audit records, Kafka and the
experiments half run in tests/integration/test_control_service.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from support.tokens import TEST_ISSUER

from control.adapters.sqlite import MIGRATIONS
from control.bootstrap import build_config
from control.config import Settings
from meshkit.server import MeshServer
from meshkit.service import Service
from schema_registry.server import running_server
from schema_registry.storage import MemoryStorage

CONFIG_ONLY = Service[Settings]("control", build_config, settings=Settings, migrations=MIGRATIONS)


def settings(db_path: Path, registry_url: str, *, grace: float = 0.2) -> Settings:
    """Control's settings for a test: port 0, the test issuer, a short grace."""
    return Settings(
        port=0,
        db_path=db_path,
        grace_seconds=grace,
        watch_poll_seconds=0.05,
        schema_registry_url=registry_url,
        auth_jwks_url=TEST_ISSUER.env["MESH_AUTH_JWKS_URL"],
        auth_issuer=TEST_ISSUER.env["MESH_AUTH_ISSUER"],
        auth_audience=TEST_ISSUER.env["MESH_AUTH_AUDIENCE"],
    )


@contextlib.contextmanager
def config_server(db_path: Path, *, grace: float = 0.2) -> Iterator[MeshServer]:
    """A started ConfigService on 127.0.0.1:<port>; stopped when the block ends."""
    storage = MemoryStorage()
    with running_server(storage) as registry_url:
        server = CONFIG_ONLY.create(settings(db_path, registry_url, grace=grace))
        server.start()
        try:
            yield server
        finally:
            server.stop()
    storage.close()
