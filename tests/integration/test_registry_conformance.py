"""Conformance: the real confluent-kafka SchemaRegistryClient and Avro serdes against a live
`schema-registry serve` (SQLite, two workers), plus persistence, concurrency and cross-worker
read-your-writes.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from confluent_kafka.schema_registry import (
    Schema,
    SchemaReference,
    SchemaRegistryClient,
    topic_record_subject_name_strategy,
)
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext
from support.registry import ServeProcess, field, record, serve

from schema_registry.client import RegistryClient

ORDER_V1 = record(
    "OrderPlaced", field("order_id"), field("total_cents", "long"), namespace="shop.orders.v1"
)
ORDER_V2 = record(
    "OrderPlaced",
    field("order_id"),
    field("total_cents", "long"),
    field("currency", "string", default="EUR"),
    namespace="shop.orders.v1",
)
ORDER_BAD = record(
    "OrderPlaced", field("order_id"), field("total_cents", "string"), namespace="shop.orders.v1"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    workdir = tmp_path_factory.mktemp("registry")
    with serve("--workers", "2", "--storage", "sqlite:///data/registry.db", cwd=workdir) as proc:
        yield proc


@pytest.fixture
def client(server: ServeProcess) -> Iterator[SchemaRegistryClient]:
    sr = SchemaRegistryClient({"url": server.url})
    yield sr
    sr.close()


def ctx(topic: str) -> SerializationContext:
    return SerializationContext(topic, MessageField.VALUE)


def test_relative_sqlite_urls_resolve_against_the_working_directory(server: ServeProcess) -> None:
    assert (server.cwd / "data" / "registry.db").is_file()


def test_serializer_auto_registers_and_deserializer_reads(client: SchemaRegistryClient) -> None:
    serializer = AvroSerializer(client, ORDER_V1)
    order = {"order_id": "o-1", "total_cents": 1250}
    payload = serializer(order, ctx("auto.orders"))
    assert payload is not None
    magic, schema_id = struct.unpack(">bI", payload[:5])
    assert magic == 0
    assert client.get_subjects().count("auto.orders-value") == 1
    assert client.get_latest_version("auto.orders-value").schema_id == schema_id
    assert AvroDeserializer(client)(payload, ctx("auto.orders")) == order


def test_serializer_without_auto_register_looks_the_schema_up(
    client: SchemaRegistryClient,
) -> None:
    serializer = AvroSerializer(client, ORDER_V1, conf={"auto.register.schemas": False})
    order = {"order_id": "o-2", "total_cents": 1}
    with pytest.raises(Exception, match=r"40401|not found"):
        serializer(order, ctx("lookup.orders"))
    registered = client.register_schema("lookup.orders-value", Schema(ORDER_V1, "AVRO"))
    fresh = AvroSerializer(client, ORDER_V1, conf={"auto.register.schemas": False})
    payload = fresh(order, ctx("lookup.orders"))
    assert payload is not None
    assert struct.unpack(">bI", payload[:5])[1] == registered


def test_use_latest_version(client: SchemaRegistryClient) -> None:
    client.register_schema("latest.orders-value", Schema(ORDER_V1, "AVRO"))
    latest = client.register_schema("latest.orders-value", Schema(ORDER_V2, "AVRO"))
    serializer = AvroSerializer(
        client, None, conf={"auto.register.schemas": False, "use.latest.version": True}
    )
    payload = serializer(
        {"order_id": "o", "total_cents": 2, "currency": "USD"}, ctx("latest.orders")
    )
    assert payload is not None
    assert struct.unpack(">bI", payload[:5])[1] == latest


def test_reader_schema_evolution_both_ways(client: SchemaRegistryClient) -> None:
    old_payload = AvroSerializer(client, ORDER_V1)(
        {"order_id": "o-3", "total_cents": 5}, ctx("evolve.orders")
    )
    new_payload = AvroSerializer(client, ORDER_V2)(
        {"order_id": "o-4", "total_cents": 6, "currency": "USD"}, ctx("evolve.orders")
    )
    assert client.get_versions("evolve.orders-value") == [1, 2]
    # A new consumer reads old data: the default fills the new field.
    new_reader = AvroDeserializer(client, ORDER_V2)
    assert new_reader(old_payload, ctx("evolve.orders")) == {
        "order_id": "o-3",
        "total_cents": 5,
        "currency": "EUR",
    }
    # An old consumer reads new data: the field it doesn't know is skipped.
    old_reader = AvroDeserializer(client, ORDER_V1)
    assert old_reader(new_payload, ctx("evolve.orders")) == {"order_id": "o-4", "total_cents": 6}


def test_incompatible_changes_are_refused_with_the_reason(client: SchemaRegistryClient) -> None:
    client.register_schema("refuse.orders-value", Schema(ORDER_V1, "AVRO"))
    assert client.test_compatibility("refuse.orders-value", Schema(ORDER_V2, "AVRO"))
    assert not client.test_compatibility("refuse.orders-value", Schema(ORDER_BAD, "AVRO"))
    assert not client.test_compatibility_all_versions(
        "refuse.orders-value", Schema(ORDER_BAD, "AVRO")
    )
    with pytest.raises(SchemaRegistryError) as refused:
        AvroSerializer(client, ORDER_BAD)(
            {"order_id": "x", "total_cents": "y"}, ctx("refuse.orders")
        )
    assert refused.value.http_status_code == 409
    assert "total_cents" in refused.value.error_message


def test_topic_record_name_strategy_subjects(client: SchemaRegistryClient) -> None:
    serializer = AvroSerializer(
        client, ORDER_V1, conf={"subject.name.strategy": topic_record_subject_name_strategy}
    )
    serializer({"order_id": "o", "total_cents": 1}, ctx("orders.events.v1"))
    assert "orders.events.v1-shop.orders.v1.OrderPlaced" in client.get_subjects()


def test_management_api_round_trip(client: SchemaRegistryClient) -> None:
    subject = "mgmt/with-slash-value"
    first = client.register_schema(subject, Schema(ORDER_V1, "AVRO"))
    again = client.register_schema_full_response(subject, Schema(ORDER_V1, "AVRO"))
    assert again.schema_id == first
    second = client.register_schema(subject, Schema(ORDER_V2, "AVRO"))
    assert json.loads(client.get_schema(first, subject_name="unrelated").schema_str) == json.loads(
        ORDER_V1
    )
    assert "AVRO" in client.get_schema_types()
    assert client.get_subjects_by_schema_id(first).count(subject) == 1
    assert any(v.subject == subject and v.version == 1 for v in client.get_schema_versions(first))
    assert client.lookup_schema(subject, Schema(ORDER_V2, "AVRO")).version == 2
    assert client.get_version(subject, 1).schema_id == first
    assert client.get_latest_version(subject).schema_id == second
    assert client.get_versions(subject) == [1, 2]
    assert client.get_subjects(subject_prefix="mgmt/") == [subject]

    assert client.set_compatibility(subject, "FULL") is not None
    assert client.get_compatibility(subject) == "FULL"
    with pytest.raises(SchemaRegistryError) as unset:
        client.get_compatibility("mgmt-unset-value")
    assert unset.value.error_code == 40408
    config = client.get_config(subject)
    assert config.compatibility_level is not None
    assert config.compatibility_level.value == "FULL"
    client.delete_config(subject)

    assert client.update_mode(subject, "READONLY") == "READONLY"
    assert client.get_mode(subject) == "READONLY"
    with pytest.raises(SchemaRegistryError) as readonly:
        client.register_schema(subject, Schema(record("Other", field("x")), "AVRO"))
    assert readonly.value.error_code == 42205
    assert client.delete_mode(subject) == "READONLY"
    assert client.get_global_mode() == "READWRITE"
    assert client.get_contexts() == ["."]

    assert client.delete_version(subject, 2) == 2
    assert client.get_versions(subject) == [1]
    assert client.get_versions(subject, deleted=True) == [1, 2]
    assert client.delete_subject(subject) == [1]
    assert subject not in client.get_subjects()
    assert subject in client.get_subjects(deleted=True)
    assert client.delete_subject(subject, permanent=True) == [1, 2]
    with pytest.raises(SchemaRegistryError) as gone:
        client.get_versions(subject, deleted=True)
    assert gone.value.error_code == 40401


def test_references_and_metadata_through_the_client(client: SchemaRegistryClient) -> None:
    money = record("Money", field("cents", "long"), field("currency"), namespace="shop.common.v1")
    client.register_schema("shop.common.v1.Money", Schema(money, "AVRO"))
    paid = json.dumps(
        {
            "type": "record",
            "name": "PaymentCaptured",
            "namespace": "shop.pay.v1",
            "fields": [{"name": "amount", "type": "shop.common.v1.Money"}],
        }
    )
    refs = [SchemaReference("shop.common.v1.Money", "shop.common.v1.Money", 1)]
    schema_id = client.register_schema("payments-value", Schema(paid, "AVRO", refs))
    assert client.get_referenced_by("shop.common.v1.Money", 1) == [schema_id]
    serializer = AvroSerializer(
        client, Schema(paid, "AVRO", refs), conf={"auto.register.schemas": False}
    )
    event = {"amount": {"cents": 500, "currency": "EUR"}}
    payload = serializer(event, ctx("payments"))
    assert AvroDeserializer(client)(payload, ctx("payments")) == event
    with pytest.raises(SchemaRegistryError) as referenced:
        client.delete_subject("shop.common.v1.Money")
    assert referenced.value.error_code == 42206

    from confluent_kafka.schema_registry import Metadata, MetadataProperties, MetadataTags

    metadata = Metadata(MetadataTags({}), MetadataProperties({"owner": "orders"}), [])
    client.register_schema("meta-value", Schema(ORDER_V1, "AVRO", [], metadata))
    found = client.get_latest_with_metadata("meta-value", {"owner": "orders"})
    assert found.version == 1


def test_concurrent_registers_from_threads_get_one_id(server: ServeProcess) -> None:
    schema = record("Concurrent", field("a"), namespace="shop.race")

    def one(i: int) -> tuple[int, int]:
        sr = SchemaRegistryClient({"url": server.url})
        try:
            found = sr.register_schema_full_response("race-threads-value", Schema(schema, "AVRO"))
            other = sr.register_schema(f"race-threads-{i % 4}", Schema(schema, "AVRO"))
            return found.schema_id, other
        finally:
            sr.close()

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(one, range(32)))
    assert {id_ for pair in results for id_ in pair} == {results[0][0]}
    with RegistryClient(server.url) as http:
        assert http.get("/subjects/race-threads-value/versions").json() == [1]


_PROCESS_SCRIPT = """
import sys
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
url, schema = sys.argv[1], sys.argv[2]
ids = set()
for i in range(10):
    sr = SchemaRegistryClient({"url": url})
    ids.add(sr.register_schema("race-procs-value", Schema(schema, "AVRO")))
    sr.close()
print(",".join(str(i) for i in sorted(ids)))
"""


def test_concurrent_registers_from_processes_get_one_id(server: ServeProcess) -> None:
    schema = record("ProcessRace", field("a"), namespace="shop.race")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _PROCESS_SCRIPT, server.url, schema],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    outputs = []
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        outputs.append(out.strip())
    assert len(set(outputs)) == 1
    assert "," not in outputs[0]
    with RegistryClient(server.url) as http:
        assert http.get("/subjects/race-procs-value/versions").json() == [1]


def _worker_of(server: ServeProcess, client_port: int) -> int:
    """The worker process holding the server side of the connection from `client_port`."""
    server_port = int(server.url.rsplit(":", 1)[1])
    inode = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            parts = line.split()
            local_port = int(parts[1].rsplit(":", 1)[1], 16)
            remote_port = int(parts[2].rsplit(":", 1)[1], 16)
            if local_port == server_port and remote_port == client_port:
                inode = parts[9]
    assert inode is not None, "connection not found in /proc/net/tcp"
    children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
    for pid in children:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) == f"socket:[{inode}]":
                    return int(pid)
            except OSError:
                continue
    raise AssertionError("no worker holds the connection")


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")
def test_a_write_on_one_worker_is_read_at_once_on_another(server: ServeProcess) -> None:
    clients: dict[int, RegistryClient] = {}
    spare: list[RegistryClient] = []
    for _ in range(64):
        http = RegistryClient(server.url)
        assert http.get("/subjects/ryw-value/versions").error_code == 40401  # caches the miss
        assert http._conn is not None and http._conn.sock is not None
        worker = _worker_of(server, http._conn.sock.getsockname()[1])
        if worker in clients:
            spare.append(http)
        else:
            clients[worker] = http
        if len(clients) == 2:
            break
    try:
        assert len(clients) == 2, "the kernel never spread 64 connections over both workers"
        writer, reader = clients.values()
        for round_ in range(1, 21):
            schema = record(
                "Ryw",
                *[field(f"f{i}", "int", default=0) for i in range(round_)],
                namespace="shop.ryw",
            )
            found = writer.post("/subjects/ryw-value/versions", {"schema": schema}).json()
            # Immediately, on the other worker: the subject, the version and the id.
            assert reader.get("/subjects/ryw-value/versions").json() == list(range(1, round_ + 1))
            assert reader.get(f"/schemas/ids/{found['id']}").status == 200
            writer, reader = reader, writer
    finally:
        for http in [*clients.values(), *spare]:
            http.close()


def test_registrations_survive_a_restart(tmp_path: Path) -> None:
    url_arg = ("--storage", f"sqlite:///{tmp_path / 'persist.db'}")
    with serve(*url_arg, cwd=tmp_path) as first:
        sr = SchemaRegistryClient({"url": first.url})
        schema_id = sr.register_schema("persist-value", Schema(ORDER_V1, "AVRO"))
        sr.set_compatibility("persist-value", "FULL_TRANSITIVE")
        sr.delete_version("persist-value", 1)
        sr.close()
    with serve(*url_arg, "--workers", "2", cwd=tmp_path) as second:
        sr = SchemaRegistryClient({"url": second.url})
        try:
            assert json.loads(sr.get_schema(schema_id).schema_str) == json.loads(ORDER_V1)
            assert sr.get_versions("persist-value", deleted=True) == [1]
            assert sr.get_compatibility("persist-value") == "FULL_TRANSITIVE"
            assert sr.register_schema("persist-value", Schema(ORDER_V2, "AVRO")) == schema_id + 1
            assert sr.get_versions("persist-value") == [2]
        finally:
            sr.close()


def test_memory_storage_refuses_several_workers(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "schema-registry"),
            "serve",
            "--port",
            "0",
            "--storage",
            "memory",
            "--workers",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 2
    assert "--workers 1" in result.stderr


def test_sigterm_stops_every_worker(tmp_path: Path) -> None:
    proc = ServeProcess("--workers", "2", "--storage", "sqlite:///r.db", cwd=tmp_path).start()
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    assert len(children) == 2
    assert proc.stop() == 0
    for pid in children:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
