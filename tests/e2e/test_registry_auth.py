"""End to end: `schema-registry serve --auth` in front of a real identity.

Identity runs with the test clients file: `schema-registrar` is the confidential client allowed
scope schemas:write, `shop-backend` one without it. The registry under test is a `serve`
subprocess with `--auth <identity's JWKS URL>`. Tokens come from identity's token endpoint
(client_credentials); confluent-kafka's SchemaRegistryClient sends `basic.auth.user.info`, which
the registry exchanges at that endpoint itself.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from support.identity import TEST_CLIENTS, Identity, running_identity
from support.registry import ServeProcess, field, record, run_cli, serve

from schema_registry.client import RegistryClient
from schema_registry.storage import SqliteStorage

pytestmark = pytest.mark.kafka

REGISTRAR_SECRET = "e2e-schema-registrar-secret"
BACKEND_SECRET = "dev-shop-backend-secret"
_REGISTRAR = """
[[client]]
client_id = "schema-registrar"
type = "confidential"
grant_types = ["client_credentials"]
scopes = ["schemas:write"]
roles = ["service"]
secret_env = "SCHEMA_REGISTRAR_CLIENT_SECRET"
secret_default = "dev-schema-registrar-secret"
"""
# The test clients, with schema-registrar (identity's shipped file has it too).
CLIENTS = TEST_CLIENTS if '"schema-registrar"' in TEST_CLIENTS else TEST_CLIENTS + _REGISTRAR
V1 = record("Parcel", field("parcel_id"), namespace="shop.e2e.v1")
V2 = record(
    "Parcel", field("parcel_id"), field("kg", "double", default=0.0), namespace="shop.e2e.v1"
)


@dataclass(frozen=True)
class Setup:
    """The running identity and the guarded registry in front of it."""

    identity: Identity
    registry: ServeProcess
    db: Path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("registry-auth")
    clients = root / "clients.toml"
    clients.write_text(CLIENTS)
    overrides: dict[str, str | None] = {
        "IDENTITY_CLIENTS_FILE": str(clients),
        "SCHEMA_REGISTRAR_CLIENT_SECRET": REGISTRAR_SECRET,
        "SHOP_BACKEND_CLIENT_SECRET": BACKEND_SECRET,
        "OTEL_EXPORTER_OTLP_ENDPOINT": None,
    }
    with running_identity(root, kafka_bootstrap, os.environ, overrides=overrides) as identity:
        jwks = f"{identity.issuer}/.well-known/jwks.json"
        db = root / "guarded" / "registry.db"
        with serve("--auth", jwks, "--storage", f"sqlite:///{db}", cwd=root) as registry:
            yield Setup(identity, registry, db)


def client_token(identity: Identity, client_id: str, secret: str) -> str:
    """An access token from identity's token endpoint (client_credentials)."""
    reply = requests.post(
        f"{identity.issuer}/token",
        data={"grant_type": "client_credentials"},
        auth=(client_id, secret),
        timeout=10,
    )
    assert reply.status_code == 200, reply.text
    return str(reply.json()["access_token"])


def test_anonymous_writes_are_401_in_confluents_json_and_reads_stay_open(setup: Setup) -> None:
    url = setup.registry.url
    refused = requests.post(
        f"{url}/subjects/parcels-value/versions",
        json={"schema": V1},
        headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
        timeout=10,
    )
    assert refused.status_code == 401
    assert refused.headers["Content-Type"] == "application/vnd.schemaregistry.v1+json"
    assert refused.json()["error_code"] == 401
    assert refused.json()["message"].startswith("Unauthorized")
    assert 'Bearer realm="schema-registry"' in refused.headers["WWW-Authenticate"]
    assert requests.get(f"{url}/subjects", timeout=10).status_code == 200
    assert requests.get(f"{url}/config", timeout=10).json()["compatibilityLevel"] == "BACKWARD"


def test_a_token_without_schemas_write_is_403_and_with_it_200(setup: Setup) -> None:
    without = client_token(setup.identity, "shop-backend", BACKEND_SECRET)
    with RegistryClient(setup.registry.url, bearer_token=without) as client:
        refused = client.post("/subjects/parcels-value/versions", {"schema": V1})
    assert refused.status == 403
    assert refused.json()["error_code"] == 40301
    assert "schemas:write" in refused.json()["message"]
    with_scope = client_token(setup.identity, "schema-registrar", REGISTRAR_SECRET)
    with RegistryClient(setup.registry.url, bearer_token=with_scope) as client:
        registered = client.post("/subjects/parcels-value/versions", {"schema": V1})
        assert registered.status == 200, registered.body
        assert client.put("/config/parcels-value", {"compatibility": "FULL"}).status == 200


def test_confluent_kafkas_client_registers_with_basic_auth_user_info(setup: Setup) -> None:
    client = SchemaRegistryClient(
        {
            "url": setup.registry.url,
            "basic.auth.user.info": f"schema-registrar:{REGISTRAR_SECRET}",
        }
    )
    try:
        schema_id = client.register_schema("ckp-parcels-value", Schema(V2, "AVRO"))
        assert client.get_latest_version("ckp-parcels-value").schema_id == schema_id
        assert client.register_schema("ckp-parcels-value", Schema(V2, "AVRO")) == schema_id
    finally:
        client.close()


def test_confluent_kafkas_client_fetches_its_own_tokens(setup: Setup) -> None:
    """The README's OAUTHBEARER configuration: ckp asks identity for tokens and sends them."""
    client = SchemaRegistryClient(
        {
            "url": setup.registry.url,
            "bearer.auth.credentials.source": "OAUTHBEARER",
            "bearer.auth.issuer.endpoint.url": f"{setup.identity.issuer}/token",
            "bearer.auth.client.id": "schema-registrar",
            "bearer.auth.client.secret": REGISTRAR_SECRET,
            "bearer.auth.scope": "schemas:write",
            "bearer.auth.logical.cluster": "local",
        }
    )
    try:
        schema_id = client.register_schema("oauth-parcels-value", Schema(V1, "AVRO"))
        assert client.get_latest_version("oauth-parcels-value").schema_id == schema_id
    finally:
        client.close()


def test_a_wrong_basic_password_is_401(setup: Setup) -> None:
    client = SchemaRegistryClient(
        {"url": setup.registry.url, "basic.auth.user.info": "schema-registrar:not-the-secret"}
    )
    try:
        with pytest.raises(SchemaRegistryError) as refused:
            client.register_schema("wrong-parcels-value", Schema(V1, "AVRO"))
        assert refused.value.http_status_code == 401
        assert refused.value.error_code == 401
        # Reads need nothing, whatever credentials come along.
        assert "ckp-parcels-value" in client.get_subjects()
    finally:
        client.close()


def test_the_cli_writes_with_basic_auth_and_says_what_is_missing(
    setup: Setup, tmp_path: Path
) -> None:
    contracts = tmp_path / "contracts"
    contracts.mkdir()
    (contracts / "topic.json").write_text('{"topic": "cli.parcels.v1"}')
    (contracts / "parcel.avsc").write_text(V1)
    anonymous = run_cli("register-all", str(contracts), url=setup.registry.url)
    assert anonymous.returncode == 1
    assert "--basic-auth" in anonymous.stdout, anonymous.stdout
    allowed = run_cli(
        "register-all",
        str(contracts),
        url=setup.registry.url,
        env={"SCHEMA_REGISTRY_BASIC_AUTH": f"schema-registrar:{REGISTRAR_SECRET}"},
    )
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "1 new" in allowed.stdout
    token = client_token(setup.identity, "schema-registrar", REGISTRAR_SECRET)
    shown = run_cli(
        "--token", token, "config", "cli.parcels.v1-shop.e2e.v1.Parcel", url=setup.registry.url
    )
    assert shown.returncode == 0 and "BACKWARD_TRANSITIVE" in shown.stdout


def test_refusals_are_audited_and_no_record_holds_a_credential(setup: Setup) -> None:
    token = client_token(setup.identity, "shop-backend", BACKEND_SECRET)
    with RegistryClient(setup.registry.url, bearer_token=token) as client:
        assert client.delete("/subjects/parcels-value").status == 403
    storage = SqliteStorage(setup.db)
    try:
        rows = storage.pending_outbox()
    finally:
        storage.close()
    everything = b"".join(row.value + repr(row.headers).encode() for row in rows)
    assert b"schemas.write" in everything, "the denials are there"
    assert b"schemas.register" in everything
    for secret in (token, REGISTRAR_SECRET, BACKEND_SECRET, "not-the-secret"):
        assert secret.encode() not in everything
