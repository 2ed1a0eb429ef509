"""End to end: the gateway in front of the whole shop, as curl and apps use it.

Every route through the real curl; each edge answer (401, 403, 404, 413, 429, 503, 504) produced
for real with its headers and RFC 9457 problem body; the customer taken from the token; request
ids, CORS, and one trace with the gateway's span on top. 503 and 504 come from a second, small
mesh whose gateway points at a dead port and at a server that never answers.

The services behind it check every call (issue 14): a customer's token reads that customer's
orders only (403 for anyone else's, and the denial lands in the audit trail), searching is
support's, the details page reads payments and shipping as the gateway itself on behalf of the
caller (a customer may not call either directly). Admin and support tokens are minted by the
mesh's identity, as `mesh token` does; customers sign in for real.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
from support.gateway import Shop
from support.identity import TEST_CLIENTS, Identity, login, register
from support.mesh import free_port, mesh_cli, mesh_tokens, mesh_up, write_moved_mesh_toml

from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.payments.v1 import payments_pb2, payments_pb2_grpc

MESH = str(Path(sys.executable).parent / "mesh")
PROBLEM = "application/problem+json"


def order_body(sku: str, *, customer: str = "someone-else", country: str = "FR") -> dict[str, Any]:
    return {
        "requestId": uuid.uuid4().hex,
        "customerId": customer,  # ignored: the gateway takes the customer from the token
        "paymentToken": "tok_visa",
        "lines": [{"sku": sku, "quantity": 1, "unitPrice": {"currencyCode": "EUR", "units": "12"}}],
        "shippingAddress": {
            "name": "Ada Lovelace",
            "line1": "1 Rue de Rivoli",
            "city": "Paris",
            "postalCode": "75001",
            "countryCode": country,
        },
    }


def set_stock(shop: Shop, sku: str, quantity: int) -> None:
    """SetStock over gRPC, as an admin (the only role inventory's policy lets set stock)."""
    with grpc.insecure_channel(f"127.0.0.1:{shop.ports['inventory']}") as channel:
        inventory_pb2_grpc.InventoryServiceStub(channel).SetStock(
            inventory_pb2.SetStockRequest(sku=sku, quantity=quantity),
            timeout=10,
            metadata=mesh_tokens(shop.root).metadata("admin"),
        )


def curl(*args: str) -> tuple[int, dict[str, str], Any]:
    """The real curl: (status, headers lower-cased, JSON body)."""
    result = subprocess.run(
        ["curl", "-s", "-i", "--max-time", "20", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    head, _, body = result.stdout.replace("\r\n", "\n").partition("\n\n")
    lines = head.split("\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    return status, headers, json.loads(body) if body.strip() else None


def wait_for_status(shop: Shop, token: str, order_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        order = requests.get(
            f"{shop.gateway}/v1/orders/{order_id}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        ).json()["order"]
        if order["status"] != "ORDER_STATUS_PENDING" or time.monotonic() > deadline:
            return dict(order)
        time.sleep(0.1)  # polling the saga's outcome within the deadline


def subject_of(token: str) -> str:
    """The token's ``sub``, read without verifying (the services verified it already)."""
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return str(claims["sub"])


def assert_problem(
    response: requests.Response, status: int, code: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith(PROBLEM)
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status and problem["title"] and problem["detail"]
    assert problem["requestId"] == response.headers["X-Request-Id"]
    assert "Traceback" not in response.text
    if code is not None:
        assert problem["code"] == code
    return problem


# --- routes, through curl -----------------------------------------------------------------------


def test_every_route_works_with_curl(shop_mesh: Shop) -> None:
    sku = f"SKU-{uuid.uuid4().hex[:8]}"
    set_stock(shop_mesh, sku, 5)
    _, _, token = shop_mesh.customer()
    bearer = f"Authorization: Bearer {token}"
    g = shop_mesh.gateway

    status, headers, stock = curl(f"{g}/v1/stock/{sku}")  # public: no token
    assert (status, stock) == (200, {"sku": sku, "available": 5})
    assert headers["ratelimit-policy"].startswith('"default";q=')

    body = json.dumps(order_body(sku))
    status, headers, placed = curl(
        "-X",
        "POST",
        f"{g}/v1/orders",
        "-H",
        bearer,
        "-H",
        "Content-Type: application/json",
        "-d",
        body,
    )
    assert status == 200 and placed["status"] == "ORDER_STATUS_PENDING", placed
    order_id = placed["orderId"]
    order = wait_for_status(shop_mesh, token, order_id)
    assert order["status"] == "ORDER_STATUS_CONFIRMED"
    me = requests.post(
        f"{shop_mesh.identity.issuer}/introspect",
        data={"token": token},
        auth=("shop-backend", "dev-shop-backend-secret"),
        timeout=10,
    ).json()["sub"]
    assert order["customerId"] == me  # from the token, not the body's "someone-else"

    status, _, got = curl(f"{g}/v1/orders/{order_id}", "-H", bearer)
    assert status == 200 and got["order"]["orderId"] == order_id
    status, _, events = curl(f"{g}/v1/orders/{order_id}/events", "-H", bearer)
    assert status == 200
    assert events["events"][0]["type"] == "shop.orders.v1.OrderPlaced"
    status, _, mine = curl(
        f"{g}/v1/orders?consistencyToken={placed['consistencyToken']}", "-H", bearer
    )
    assert status == 200 and [o["orderId"] for o in mine["orders"]] == [order_id]
    # Searching every order is support's (order_views' policy); a customer's search is 403.
    search = f"{g}/v1/orders:search?q={order_id}&consistencyToken={placed['consistencyToken']}"
    status, _, refused = curl(search, "-H", bearer)
    assert status == 403 and "orders.search" in refused["detail"], refused
    support = mesh_tokens(shop_mesh.root).token("support")
    status, _, found = curl(search, "-H", f"Authorization: Bearer {support}")
    assert status == 200 and order_id in [o["orderId"] for o in found["orders"]]
    status, _, details = curl(f"{g}/v1/orders/{order_id}/details", "-H", bearer)
    assert status == 200 and details["missing"] == []
    assert details["order"]["status"] == "ORDER_STATUS_CONFIRMED"
    assert details["payment"]["status"] and details["shipment"]["shipmentId"]

    admin_token = mesh_tokens(shop_mesh.root).token("admin", f"admin-{uuid.uuid4().hex[:8]}")
    status, _, updated = curl(
        "-X",
        "PUT",
        f"{g}/v1/stock/{sku}",
        "-H",
        f"Authorization: Bearer {admin_token}",
        "-H",
        "Content-Type: application/json",
        "-d",
        '{"quantity": 40}',
    )
    assert status == 200, updated
    assert curl(f"{g}/v1/stock/{sku}")[2]["available"] == 40


def test_one_trace_per_request_with_the_gateway_span_on_top(shop_mesh: Shop) -> None:
    sku = f"SKU-{uuid.uuid4().hex[:8]}"
    set_stock(shop_mesh, sku, 5)
    _, _, token = shop_mesh.customer()
    placed = requests.post(
        f"{shop_mesh.gateway}/v1/orders",
        json=order_body(sku),
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert placed.status_code == 200
    trace_id = placed.headers["X-Trace-Id"]
    assert len(trace_id) == 32
    deadline = time.monotonic() + 30
    while True:
        shown = subprocess.run(
            [MESH, "--root", str(shop_mesh.root), "trace", trace_id],
            capture_output=True,
            text=True,
            timeout=60,
            env=shop_mesh.env,
            check=False,
        )
        if (
            "orders: shop.orders.v1.OrdersService/PlaceOrder" in shown.stdout
            and "gateway: POST /v1/orders" in shown.stdout
        ):
            break
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)  # spans are exported in batches; poll the store within the deadline
    lines = [line for line in shown.stdout.splitlines() if line.strip()]
    assert lines, shown.stderr
    assert "gateway: POST /v1/orders [SERVER]" in lines[1], shown.stdout  # the root span
    assert any("PlaceOrder" in line for line in lines), shown.stdout


# --- whose orders: the services' permission checks through the gateway -------------------------


def place_and_confirm(shop: Shop, token: str) -> str:
    """A confirmed order of the token's customer, placed through the gateway, and seen by the
    read model (read-your-writes: its consistency token); its id."""
    sku = f"SKU-{uuid.uuid4().hex[:8]}"
    set_stock(shop, sku, 5)
    placed = requests.post(
        f"{shop.gateway}/v1/orders",
        json=order_body(sku),
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert placed.status_code == 200, placed.text
    order_id = str(placed.json()["orderId"])
    assert wait_for_status(shop, token, order_id)["status"] == "ORDER_STATUS_CONFIRMED"
    seen = requests.get(
        f"{shop.gateway}/v1/orders",
        params={"consistencyToken": placed.json()["consistencyToken"]},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert seen.status_code == 200, seen.text
    return order_id


def test_a_customer_reads_only_its_own_orders_and_a_denial_is_audited(shop_mesh: Shop) -> None:
    _, _, ada = shop_mesh.customer()
    _, _, eve = shop_mesh.customer()
    order_id = place_and_confirm(shop_mesh, ada)
    as_eve = {"Authorization": f"Bearer {eve}"}
    g = shop_mesh.gateway
    for path in (f"/v1/orders/{order_id}", f"/v1/orders/{order_id}/events"):
        problem = assert_problem(requests.get(g + path, headers=as_eve, timeout=10), 403)
        assert problem["code"] == "PERMISSION_DENIED"
        assert f"permission orders.read denied on Order {order_id}" in problem["detail"]
    # The details page: orders' refusal decides the whole page, nothing of the payment leaks.
    details = requests.get(f"{g}/v1/orders/{order_id}/details", headers=as_eve, timeout=10)
    assert "payment" not in assert_problem(details, 403, "PERMISSION_DENIED")
    # Eve's list is Eve's: the gateway asks for the token's subject, whatever the query says.
    listed = requests.get(
        f"{g}/v1/orders", params={"customerId": subject_of(ada)}, headers=as_eve, timeout=10
    )
    assert listed.status_code == 200, listed.text
    assert order_id not in [o["orderId"] for o in listed.json().get("orders", [])]

    # Issue 14: the denial is in the audit trail (`mesh audit ls` mints an auditor's token).
    eve_id = subject_of(eve)
    deadline = time.monotonic() + 60
    while True:
        found = mesh_cli(
            shop_mesh.root,
            "audit",
            "ls",
            "--actor",
            eve_id,
            "--resource",
            f"Order:{order_id}",
            "--json",
            env=shop_mesh.env,
        )
        assert found.returncode == 0, found.stderr
        records = [row["record"] for row in json.loads(found.stdout)]
        if any(r["action"] == "orders.read" for r in records):
            break
        assert time.monotonic() < deadline, f"no denial of {eve_id} in the trail: {records}"
        time.sleep(0.5)  # poll interval: orders' outbox -> Kafka -> the audit service
    assert all(r["outcome"] == "DENIED" for r in records), records
    verified = mesh_cli(shop_mesh.root, "audit", "verify", env=shop_mesh.env)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_the_details_page_reads_payments_as_the_gateway_for_the_customer(shop_mesh: Shop) -> None:
    _, _, token = shop_mesh.customer()
    order_id = place_and_confirm(shop_mesh, token)
    details = requests.get(
        f"{shop_mesh.gateway}/v1/orders/{order_id}/details",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert details.status_code == 200, details.text
    page = details.json()
    assert page["missing"] == [], page["missing"]
    assert page["payment"]["status"] == "PAYMENT_STATUS_CAPTURED"
    assert page["shipment"]["status"] == "SHIPMENT_STATUS_BOOKED"
    # Not with the customer's own token: payments lets no customer in, only the gateway acting
    # for one (and orders' saga).
    payments = f"127.0.0.1:{shop_mesh.ports['payments']}"
    with grpc.insecure_channel(payments) as channel, pytest.raises(grpc.RpcError) as refused:
        payments_pb2_grpc.PaymentsServiceStub(channel).GetPayment(
            payments_pb2.GetPaymentRequest(payment_id=page["payment"]["paymentId"]),
            metadata=[("authorization", f"Bearer {token}")],
            timeout=10,
        )
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "payments.read" in (refused.value.details() or "")


# --- each edge answer ---------------------------------------------------------------------------


def test_401_for_no_token_and_for_a_bad_one(shop_mesh: Shop) -> None:
    missing = requests.get(f"{shop_mesh.gateway}/v1/orders", timeout=10)
    assert_problem(missing, 401, "UNAUTHENTICATED")
    # RFC 6750 §3.1: no error code when the request carried no credentials.
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="meshkit"'
    bad = requests.get(
        f"{shop_mesh.gateway}/v1/orders",
        headers={"Authorization": "Bearer not.a.token"},
        timeout=10,
    )
    assert_problem(bad, 401, "UNAUTHENTICATED")
    challenge = bad.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="meshkit", error="invalid_token"')
    assert "error_description=" in challenge


def test_403_for_a_customer_setting_stock(shop_mesh: Shop) -> None:
    _, _, token = shop_mesh.customer()
    refused = requests.put(
        f"{shop_mesh.gateway}/v1/stock/SKU-X",
        json={"quantity": 1},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    problem = assert_problem(refused, 403, "PERMISSION_DENIED")
    assert "admin" in problem["detail"]


def test_404_for_no_route_and_for_an_unknown_order(shop_mesh: Shop) -> None:
    _, _, token = shop_mesh.customer()
    assert_problem(requests.get(f"{shop_mesh.gateway}/v2/nothing", timeout=10), 404)
    # Support may read any order, so learns that this one does not exist.
    support = mesh_tokens(shop_mesh.root).token("support")
    unknown = requests.get(
        f"{shop_mesh.gateway}/v1/orders/no-such-order",
        headers={"Authorization": f"Bearer {support}"},
        timeout=10,
    )
    problem = assert_problem(unknown, 404, "NOT_FOUND")
    assert problem["details"][0]["reason"] == "ORDER_NOT_FOUND"
    # A customer may read only its own orders: one that does not exist is not its own, and
    # the answer is the same 403 as for someone else's (whether an id exists is not told).
    hidden = requests.get(
        f"{shop_mesh.gateway}/v1/orders/no-such-order",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert_problem(hidden, 403, "PERMISSION_DENIED")
    wrong_method = requests.delete(f"{shop_mesh.gateway}/v1/stock/SKU-X", timeout=10)
    assert_problem(wrong_method, 405)
    assert set(wrong_method.headers["Allow"].split(", ")) == {"GET", "PUT"}


def test_400_names_the_bad_fields(shop_mesh: Shop) -> None:
    _, _, token = shop_mesh.customer()
    bad = requests.post(
        f"{shop_mesh.gateway}/v1/orders",
        json={"lines": []},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    problem = assert_problem(bad, 400, "INVALID_ARGUMENT")
    violations = problem["details"][0]["fieldViolations"]
    assert {v["field"] for v in violations} >= {"request_id", "lines", "payment_token"}
    unknown_field = requests.post(
        f"{shop_mesh.gateway}/v1/orders",
        json={"nonsense": 1},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert "nonsense" in assert_problem(unknown_field, 400, "INVALID_ARGUMENT")["detail"]


def test_413_for_a_body_over_the_limit(shop_mesh: Shop) -> None:
    _, _, token = shop_mesh.customer()
    huge = requests.post(
        f"{shop_mesh.gateway}/v1/orders",
        data=b'{"paymentToken": "' + b"x" * (1024 * 1024 + 1) + b'"}',
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        timeout=10,
    )
    assert "larger than 1048576 bytes" in assert_problem(huge, 413)["detail"]


def test_429_with_retry_after_and_the_ratelimit_headers(shop_mesh: Shop) -> None:
    token = mesh_tokens(shop_mesh.root).token("admin", f"admin-{uuid.uuid4().hex[:8]}")
    # stock-write allows 3 a minute per client and per user (the tests' limits); the client's
    # bucket (mesh-cli: `mesh token`'s) is shared with the other tests, so count down to the
    # refusal.
    answers: list[requests.Response] = []
    while len(answers) < 4 and (not answers or answers[-1].status_code == 200):
        answers.append(
            requests.put(
                f"{shop_mesh.gateway}/v1/stock/SKU-LIMIT",
                json={"quantity": len(answers)},
                headers={"Authorization": f"Bearer {token}"},
                timeout=10,
            )
        )
    *admitted, limited = answers
    assert admitted and all(a.status_code == 200 for a in admitted)
    left = [a.headers["RateLimit"] for a in admitted]
    assert left[-1].startswith('"stock-write";r=0;t='), left  # the last token went
    assert '"stock-write";q=3;w=60' in admitted[0].headers["RateLimit-Policy"]
    assert_problem(limited, 429, "RESOURCE_EXHAUSTED")
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.headers["RateLimit"].startswith('"stock-write";r=0;t=')
    assert '"stock-write";q=3;w=60' in limited.headers["RateLimit-Policy"]


# --- request ids and CORS -----------------------------------------------------------------------


def test_request_ids_are_echoed_or_made(shop_mesh: Shop) -> None:
    echoed = requests.get(
        f"{shop_mesh.gateway}/v1/stock/SKU-X", headers={"X-Request-Id": "req-42"}, timeout=10
    )
    assert echoed.headers["X-Request-Id"] == "req-42"
    made = requests.get(
        f"{shop_mesh.gateway}/v1/stock/SKU-X", headers={"X-Request-Id": "bad id\t!"}, timeout=10
    )
    assert len(made.headers["X-Request-Id"]) == 32


def test_cors_for_the_configured_origin_only(shop_mesh: Shop) -> None:
    origin = shop_mesh.gateway
    preflight = requests.options(
        f"{shop_mesh.gateway}/v1/orders",
        headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
        timeout=10,
    )
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == origin
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    answer = requests.get(
        f"{shop_mesh.gateway}/v1/stock/SKU-X", headers={"Origin": origin}, timeout=10
    )
    assert answer.headers["Access-Control-Allow-Origin"] == origin
    assert "X-Trace-Id" in answer.headers["Access-Control-Expose-Headers"]
    stranger = requests.options(
        f"{shop_mesh.gateway}/v1/orders",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        timeout=10,
    )
    assert_problem(stranger, 403)
    assert "Access-Control-Allow-Origin" not in stranger.headers


# --- 503 and 504 from a degraded mesh -----------------------------------------------------------


class BlackHole:
    """A TCP server that accepts connections and never says a word: a backend past its deadline."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture(scope="module")
def degraded(
    tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str
) -> Iterator[tuple[str, Identity]]:
    """Registry, identity and a gateway whose inventory is a dead port and whose orders never
    answers; its deadline is half a second. Yields (gateway URL, identity)."""
    root = tmp_path_factory.mktemp("degraded-mesh")
    clients = root / "clients.toml"
    clients.write_text(TEST_CLIENTS)
    ports = write_moved_mesh_toml(
        root, ("trace-receiver", "schema-registry", "identity", "gateway")
    )
    hole = BlackHole()
    dead = free_port()
    env = {
        **os.environ,
        "SCHEMA_REGISTRY_URL": f"http://127.0.0.1:{ports['schema-registry']}",
        "IDENTITY_CLIENTS_FILE": str(clients),
        "GATEWAY_DEADLINE": "0.5",
        "MESH_ADDRESS_INVENTORY": f"127.0.0.1:{dead}",
        "MESH_ADDRESS_ORDERS": f"127.0.0.1:{hole.port}",
        "MESH_ADDRESS_ORDER_VIEWS": f"127.0.0.1:{hole.port}",
        "MESH_ADDRESS_PAYMENTS": f"127.0.0.1:{dead}",
        "MESH_ADDRESS_SHIPPING": f"127.0.0.1:{dead}",
    }
    for key in ("MESH_KAFKA_BOOTSTRAP", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        env.pop(key, None)
    try:
        with mesh_up(root, kafka_bootstrap, env):
            yield f"http://127.0.0.1:{ports['gateway:http']}", Identity.at(root, ports, env)
    finally:
        hole.close()


def test_503_when_a_backend_is_down(degraded: tuple[str, Identity]) -> None:
    gateway, _ = degraded
    down = requests.get(f"{gateway}/v1/stock/SKU-X", timeout=30)
    problem = assert_problem(down, 503, "UNAVAILABLE")
    assert down.headers["Retry-After"] == "1"
    assert "InventoryService is unavailable" in problem["detail"]


def test_504_when_a_backend_does_not_answer_in_time(degraded: tuple[str, Identity]) -> None:
    gateway, identity = degraded
    email = f"slow-{uuid.uuid4().hex[:8]}@example.com"
    register(identity, email, "correct horse battery staple 42")
    token = login(identity, email, "correct horse battery staple 42")["access_token"]
    began = time.monotonic()
    late = requests.get(
        f"{gateway}/v1/orders/any-order",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    problem = assert_problem(late, 504, "DEADLINE_EXCEEDED")
    assert "did not answer in time" in problem["detail"]
    assert time.monotonic() - began < 10  # bounded by the gateway's deadline, not the client's
    details = requests.get(
        f"{gateway}/v1/orders/any-order/details",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    problem = assert_problem(details, 503, "UNAVAILABLE")
    assert "neither orders nor order views" in problem["detail"]


def test_the_pages_are_served_with_a_strict_policy(shop_mesh: Shop) -> None:
    page = requests.get(f"{shop_mesh.gateway}/", timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    policy = page.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in policy
    assert f"connect-src 'self' {shop_mesh.identity.issuer}" in policy
    config = requests.get(f"{shop_mesh.gateway}/config.json", timeout=10).json()
    assert config["issuer"] == shop_mesh.identity.issuer and config["client_id"] == "shop-web"
    docs = requests.get(f"{shop_mesh.gateway}/docs", timeout=10)
    assert "default-src 'none'" in docs.headers["Content-Security-Policy"]
    assert requests.get(f"{shop_mesh.gateway}/healthz", timeout=10).text == "ok\n"
