"""`serve --auth` across two registry instances on one Kafka topic (issue 18).

Two `schema-registry serve --storage kafka://.../<topic> --auth JWKS_URL` processes elect a
primary; writes go to the other one, the follower. It checks the credentials itself and answers
a refusal there (401, 403), writing the DENIED record it cannot publish to its log; what it lets
through goes on to the primary with the caller's Authorization header (as Confluent's forwarding
passes it), where the guard checks it again: before that, every forwarded write was a 401.

Identity is `FakeIdentity` (real ES256 at+jwt tokens), its JWK Set served over HTTP here; the
tokens name its issuer, so the instances get ``--auth-issuer``.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient
from support.kafka import unique_topic
from support.registry import ServeProcess, field, record, serve, wait_until
from unit.schema_registry.fake_identity import ISSUER, JWKS, FakeIdentity

from schema_registry.client import RegistryClient

pytestmark = pytest.mark.kafka

UNPUBLISHED = "audit record not published"


@contextmanager
def jwks_server(identity: FakeIdentity) -> Iterator[str]:
    """Serve ``identity``'s JWK Set on a free 127.0.0.1 port; yields its URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(identity.fetch_json(JWKS, 1.0)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="test-jwks", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def primary_url(bootstrap: str, topic: str) -> str | None:
    """The client.id (advertised URL) of the group member owning the topic's partition."""
    group = f"meshkit-schema-registry.{topic}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    found: Any = admin.describe_consumer_groups([group])[group].result(timeout=10)
    for member in found.members:
        if member.assignment and member.assignment.topic_partitions:
            return str(member.client_id)
    return None


def log_records(server: ServeProcess, message: str) -> list[dict[str, Any]]:
    """The server's JSON log lines whose message starts with ``message``."""
    found = []
    for line in list(server.stderr_lines):
        if line.startswith("{"):
            entry = json.loads(line)
            if str(entry.get("msg", "")).startswith(message):
                found.append(entry)
    return found


def test_a_follower_passes_the_callers_credentials_on_and_refuses_bad_ones_itself(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    identity = FakeIdentity()
    topic = unique_topic("registry-auth")
    with jwks_server(identity) as jwks, ExitStack() as stack:
        storage = f"kafka://{kafka_bootstrap}/{topic}"
        args = ("--storage", storage, "--auth", jwks, "--auth-issuer", ISSUER)
        servers = [stack.enter_context(serve(*args, cwd=tmp_path)) for _ in range(2)]
        urls = [s.url for s in servers]
        wait_until(
            lambda: primary_url(kafka_bootstrap, topic) in urls,
            timeout=20,
            what="a primary among the two",
        )
        primary_at = primary_url(kafka_bootstrap, topic)
        primary = next(s for s in servers if s.url == primary_at)
        follower = next(s for s in servers if s.url != primary_at)
        subject = "registry-auth-value"
        path = f"/subjects/{subject}/versions"
        schema = {"schema": record("Guarded", field("id"))}

        token = identity.token("u-writer")
        with RegistryClient(follower.url, bearer_token=token) as writer:
            reply = writer.post(path, schema)
            assert reply.status == 200, reply.body
            assert writer.get(f"{path}/1").json()["id"] == reply.json()["id"]
        with RegistryClient(primary.url) as reader:
            assert reader.get(f"{path}/1").json()["id"] == reply.json()["id"]
        # The primary checked the forwarded token itself: its access line names the caller.
        wait_until(
            lambda: any(
                e.get("http_status") == 200 and e.get("enduser_id") == "u-writer"
                for e in log_records(primary, f"POST {path} 200")
            ),
            what="the primary's access line of the forwarded write",
        )

        with RegistryClient(follower.url) as anonymous:
            reply = anonymous.post(path, {"schema": record("Anon", field("id"))})
        assert reply.status == 401, reply.body
        assert reply.error_code == 401
        assert 'realm="schema-registry"' in reply.headers.get("www-authenticate", "")

        reader_token = identity.token("u-reader", scope="orders")
        with RegistryClient(follower.url, bearer_token=reader_token) as reader:
            reply = reader.post(path, {"schema": record("Reader", field("id"))})
        assert reply.status == 403, reply.body
        assert reply.error_code == 40301

        # Both refusals answered by the follower, their records in its log (it cannot
        # publish them); the primary saw neither.
        wait_until(
            lambda: len(log_records(follower, UNPUBLISHED)) >= 2,
            what="the follower's DENIED records in its log",
        )
        denied = log_records(follower, UNPUBLISHED)
        assert [(e["audit_outcome"], e["audit_details"]["status"]) for e in denied] == [
            ("DENIED", 401),
            ("DENIED", 403),
        ]
        assert denied[1]["enduser_id"] == "u-reader"
        assert not log_records(primary, f"POST {path} 40")
        assert len(log_records(primary, f"POST {path}")) == 1
        # The Authorization header is passed on, never logged.
        logged = "".join(primary.stderr_lines + follower.stderr_lines)
        assert token not in logged and reader_token not in logged
