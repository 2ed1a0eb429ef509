"""Three registry instances on one Kafka topic, one primary, failover (issue 18, Done-when).

Three `schema-registry serve --storage kafka://.../<topic>` processes elect a primary through
Kafka's group coordinator; 8 client threads register 1,000 schemas spread over all three while
the primary is killed -9 twice (and restarted each time). Afterwards every acknowledged
registration is on all three with the same id and version, no id names two schemas, and every
subject's versions run 1..n without a gap. A registration that failed (its instance died, or no
primary answered in time) is retried by its client, as a serializer's caller would: counted.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient
from support.kafka import unique_topic
from support.registry import ServeProcess, field, record, wait_until

from schema_registry.client import RegistryClient

pytestmark = pytest.mark.kafka

INSTANCES = 3
CLIENTS = 8
REGISTRATIONS = 1000
SUBJECTS = 40
# Acknowledged registrations after which the primary is killed (twice).
KILL_AT = (200, 550)
DEADLINE_S = 120.0


def _schema(n: int) -> str:
    text: str = record(f"R{n}", field("id"))
    return text


def primary_url(bootstrap: str, topic: str) -> str | None:
    """The URL of the member of the registry group that owns `_schemas`' partition, as the
    group coordinator describes it (`schema_registry.election`)."""
    group = f"meshkit-schema-registry.{topic}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    found: Any = admin.describe_consumer_groups([group])[group].result(timeout=10)
    for member in found.members:
        if member.assignment and any(
            tp.topic == topic and tp.partition == 0 for tp in member.assignment.topic_partitions
        ):
            return str(member.client_id)
    return None


class Cluster:
    """The three serve processes; a killed one is replaced by a fresh one (new port)."""

    def __init__(self, storage: str, cwd: Path) -> None:
        self.storage = storage
        self.cwd = cwd
        self.servers: list[ServeProcess] = []
        self.lock = threading.Lock()

    def start(self) -> None:
        for _ in range(INSTANCES):
            self.servers.append(ServeProcess("--storage", self.storage, cwd=self.cwd).start())

    def urls(self) -> list[str]:
        with self.lock:
            return [s.url for s in self.servers]

    def kill(self, url: str) -> int:
        """kill -9 the instance at ``url``; its index."""
        with self.lock:
            index = next(i for i, s in enumerate(self.servers) if s.url == url)
            os.kill(self.servers[index].pid, signal.SIGKILL)
            self.servers[index].stop()  # reaps it
        return index

    def restart(self, index: int) -> None:
        fresh = ServeProcess("--storage", self.storage, cwd=self.cwd).start()
        with self.lock:
            self.servers[index] = fresh

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


class Load:
    """8 threads registering 1,000 schemas, each on the instances in turn, retrying another
    instance when one fails (connection refused or reset, or a 5xx)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.acked: dict[int, tuple[str, int, int]] = {}  # n -> (subject, id, version)
        self.ack_times: list[tuple[float, float]] = []  # (sent, answered)
        self.retries = 0
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)

    def run(self, worker: int) -> None:
        clients: dict[str, RegistryClient] = {}
        turn = worker
        deadline = time.monotonic() + DEADLINE_S
        for n in range(worker, REGISTRATIONS, CLIENTS):
            subject = f"subject-{n % SUBJECTS}"
            body = {"schema": _schema(n)}
            while True:
                if time.monotonic() > deadline:
                    self.errors.append(f"registration {n} never acknowledged")
                    return
                urls = self.cluster.urls()
                url = urls[turn % len(urls)]
                turn += 1
                client = clients.get(url) or clients.setdefault(url, RegistryClient(url))
                sent = time.monotonic()
                try:
                    reply = client.post(f"/subjects/{subject}/versions", body)
                except OSError:
                    client.close()
                    clients.pop(url, None)
                    reply = None
                if reply is not None and reply.ok:
                    break
                if reply is not None and reply.status < 500:
                    self.errors.append(f"registration {n}: {reply.status} {reply.message}")
                    return
                with self.lock:
                    self.retries += 1
            answer = reply.json()
            # Read-your-writes on the instance that answered (forwarded or not).
            try:
                again = client.get(f"/subjects/{subject}/versions/{answer['version']}")
                if again.status != 200 or again.json()["id"] != answer["id"]:
                    self.errors.append(f"{url} did not read its own write {n}: {again.body!r}")
            except OSError:
                pass  # killed right after answering
            with self.changed:
                self.acked[n] = (subject, answer["id"], answer["version"])
                # A write sent after a kill and accepted: the failover's end.
                self.ack_times.append((sent, time.monotonic()))
                self.changed.notify_all()
        for client in clients.values():
            client.close()

    def wait_acked(self, count: int) -> None:
        with self.changed:
            ok = self.changed.wait_for(
                lambda: len(self.acked) >= count or bool(self.errors), timeout=DEADLINE_S
            )
        assert ok and not self.errors, self.errors

    def first_ack_after(self, moment: float, timeout: float = 30.0) -> float:
        with self.changed:
            self.changed.wait_for(
                lambda: any(s > moment for s, _ in self.ack_times) or bool(self.errors),
                timeout=timeout,
            )
            later = [t for s, t in self.ack_times if s > moment]
        assert later, f"no write accepted within {timeout}s of the kill: {self.errors}"
        return min(later)


def _everything(url: str) -> list[dict[str, Any]]:
    with RegistryClient(url) as client:
        reply = client.get("/schemas?deleted=true")
        assert reply.status == 200, reply.body
        found: list[dict[str, Any]] = reply.json()
        return found


def test_three_instances_survive_two_kills_of_the_primary(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = unique_topic("registry.replicas")
    storage = f"kafka://{kafka_bootstrap}/{topic}"
    cluster = Cluster(storage, tmp_path)
    with ExitStack() as stack:
        stack.callback(cluster.stop)
        started = time.monotonic()
        cluster.start()
        print(f"3 instances up in {time.monotonic() - started:.1f}s: {cluster.urls()}")
        with RegistryClient(cluster.urls()[1]) as client:  # a follower forwards it
            reply = client.put("/config", {"compatibility": "NONE"})
            assert reply.status == 200, reply.body
        load = Load(cluster)
        threads = [
            threading.Thread(target=load.run, args=(w,), daemon=True) for w in range(CLIENTS)
        ]
        began = time.monotonic()
        for thread in threads:
            thread.start()
        failovers: list[float] = []
        for at in KILL_AT:
            load.wait_acked(at)
            primary = primary_url(kafka_bootstrap, topic)
            assert primary in cluster.urls(), (primary, cluster.urls())
            killed_at = time.monotonic()
            index = cluster.kill(primary)
            failovers.append(load.first_ack_after(killed_at) - killed_at)
            cluster.restart(index)
        for thread in threads:
            thread.join(timeout=DEADLINE_S)
        elapsed = time.monotonic() - began
        assert not load.errors, load.errors[:5]
        assert len(load.acked) == REGISTRATIONS

        # Every instance converges on the same state (followers may still be reading).
        urls = cluster.urls()
        wait_until(
            lambda: len({json.dumps(_everything(u), sort_keys=True) for u in urls}) == 1,
            timeout=20,
            what="all three instances to agree",
        )
        state = _everything(urls[0])
    print(
        f"{REGISTRATIONS} registrations from {CLIENTS} clients in {elapsed:.1f}s "
        f"({REGISTRATIONS / elapsed:.0f}/s) with 2 kill -9 of the primary; "
        f"failover (kill to first accepted write): {', '.join(f'{f:.1f}s' for f in failovers)}; "
        f"client retries: {load.retries}"
    )
    by_version = {(row["subject"], row["version"]): row for row in state}
    for n, (subject, schema_id, version) in load.acked.items():
        row = by_version.get((subject, version))
        assert row is not None, f"acknowledged registration {n} is gone"
        assert row["id"] == schema_id, (n, row)
        assert json.loads(row["schema"])["name"] == f"R{n}", (n, row)
    ids: dict[int, str] = {}
    for row in state:
        name = json.loads(row["schema"])["name"]
        assert ids.setdefault(row["id"], name) == name, f"id {row['id']} given twice"
    versions: dict[str, list[int]] = {}
    for row in state:
        versions.setdefault(row["subject"], []).append(row["version"])
    for subject, numbers in versions.items():
        assert sorted(numbers) == list(range(1, len(numbers) + 1)), (subject, sorted(numbers))
    # Every registration of a schema not yet there made one version: retries made none twice.
    ours = [row for row in state if row["subject"].startswith("subject-")]
    assert len(ours) == REGISTRATIONS
