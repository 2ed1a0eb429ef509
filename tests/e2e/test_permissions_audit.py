"""Issue 14's "done when", on the whole shop (`mesh up`, identity's real tokens):

- a customer reading another customer's order is PERMISSION_DENIED over gRPC and 403 through the
  gateway; the denial is in the audit trail, and the trail verifies;
- kill -9 of the audit service during a burst of 500 orders: after a restart the trail holds
  exactly 500 orders.place records for them, and it verifies;
- no audit record, anywhere along the way, holds a password, token or payment token.
"""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
from google.protobuf import timestamp_pb2
from support.gateway import PASSWORD, Shop
from support.mesh import mesh_cli, mesh_ps

from mesh.audit.v1 import audit_pb2, audit_pb2_grpc
from mesh_runner.token import mint
from shop.common.v1 import common_pb2
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.orders.v1 import orders_pb2, orders_pb2_grpc

pytestmark = pytest.mark.kafka

MESH = str(Path(sys.executable).parent / "mesh")


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """Poll ``predicate`` until it returns something truthy (never a bare sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.2)  # poll interval within the deadline loop


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def place_request(customer: str, sku: str) -> orders_pb2.PlaceOrderRequest:
    return orders_pb2.PlaceOrderRequest(
        request_id=uuid.uuid4().hex,
        customer_id=customer,
        lines=[
            orders_pb2.OrderLine(
                sku=sku, quantity=1, unit_price=common_pb2.Money(currency_code="EUR", units=3)
            )
        ],
        payment_token="tok_visa",
        shipping_address=common_pb2.Address(
            name="Ada",
            line1="1 Rue de Rivoli",
            city="Paris",
            postal_code="75001",
            country_code="FR",
        ),
    )


def subject_of(token: str) -> str:
    import jwt

    return str(jwt.decode(token, options={"verify_signature": False})["sub"])


def query(shop: Shop, token: str, **filters: Any) -> list[audit_pb2.AuditEntry]:
    """Every entry QueryAudit returns for ``filters``, all pages."""
    entries: list[audit_pb2.AuditEntry] = []
    with grpc.insecure_channel(f"127.0.0.1:{shop.ports['audit']}") as channel:
        stub = audit_pb2_grpc.AuditServiceStub(channel)
        page = ""
        while True:
            reply = stub.QueryAudit(
                audit_pb2.QueryAuditRequest(page_size=1000, page_token=page, **filters),
                metadata=bearer(token),
                timeout=10,
            )
            entries += reply.entries
            page = reply.next_page_token
            if not page:
                return entries


def verify(shop: Shop) -> subprocess.CompletedProcess[str]:
    return mesh_cli(shop.root, "audit", "verify", env=shop.env)


@pytest.fixture(scope="module")
def tokens(shop_mesh: Shop) -> Iterator[dict[str, str]]:
    yield {role: mint(shop_mesh.root, role) for role in ("admin", "auditor", "support")}


def test_reading_another_customers_order_is_denied_audited_and_verifiable(
    shop_mesh: Shop, tokens: dict[str, str]
) -> None:
    shop = shop_mesh
    sku = f"perm-{uuid.uuid4().hex[:8]}"
    with grpc.insecure_channel(f"127.0.0.1:{shop.ports['inventory']}") as channel:
        inventory_pb2_grpc.InventoryServiceStub(channel).SetStock(
            inventory_pb2.SetStockRequest(sku=sku, quantity=5),
            metadata=bearer(tokens["admin"]),
            timeout=10,
        )
    _, _, ada = shop.customer()
    _, _, eve = shop.customer()
    placed = requests.post(
        f"{shop.gateway}/v1/orders",
        json={
            "requestId": uuid.uuid4().hex,
            "paymentToken": "tok_visa",
            "lines": [
                {"sku": sku, "quantity": 1, "unitPrice": {"currencyCode": "EUR", "units": "3"}}
            ],
            "shippingAddress": {
                "name": "Ada",
                "line1": "1 Rue de Rivoli",
                "city": "Paris",
                "postalCode": "75001",
                "countryCode": "FR",
            },
        },
        headers={"Authorization": f"Bearer {ada}"},
        timeout=10,
    )
    assert placed.status_code == 200, placed.text
    order_id = placed.json()["orderId"]

    with grpc.insecure_channel(f"127.0.0.1:{shop.ports['orders']}") as channel:
        orders = orders_pb2_grpc.OrdersServiceStub(channel)
        mine = orders.GetOrder(
            orders_pb2.GetOrderRequest(order_id=order_id), metadata=bearer(ada), timeout=10
        )
        assert mine.order.order_id == order_id
        with pytest.raises(grpc.RpcError) as denied:
            orders.GetOrder(
                orders_pb2.GetOrderRequest(order_id=order_id), metadata=bearer(eve), timeout=10
            )
        assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "orders.read" in denied.value.details()
        with pytest.raises(grpc.RpcError) as anonymous:
            orders.GetOrder(orders_pb2.GetOrderRequest(order_id=order_id), timeout=10)
        assert anonymous.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert "authorization" in anonymous.value.details()
        # Support reads any order.
        seen = orders.GetOrder(
            orders_pb2.GetOrderRequest(order_id=order_id),
            metadata=bearer(tokens["support"]),
            timeout=10,
        )
        assert seen.order.order_id == order_id

    for path in (f"/v1/orders/{order_id}", f"/v1/orders/{order_id}/details"):
        answer = requests.get(
            f"{shop.gateway}{path}", headers={"Authorization": f"Bearer {eve}"}, timeout=10
        )
        assert answer.status_code == 403, (path, answer.text)
        assert "orders.read" in answer.text
        own = requests.get(
            f"{shop.gateway}{path}", headers={"Authorization": f"Bearer {ada}"}, timeout=10
        )
        assert own.status_code == 200, (path, own.text)

    eve_sub = subject_of(eve)

    def denial() -> list[audit_pb2.AuditEntry]:
        return [
            e
            for e in query(shop, tokens["auditor"], actor=eve_sub, resource_id=order_id)
            if e.record.outcome == "DENIED"
        ]

    # The details page asks orders and order_views at once, and both deny: orders' record is
    # the one asserted (order_views' is there too).
    def orders_denial() -> list[audit_pb2.AuditEntry]:
        return [e for e in denial() if e.record.service == "orders"]

    record = wait_until(orders_denial, "orders' denial in the audit trail")[0].record
    assert (record.action, record.resource_type) == ("orders.read", "Order")
    assert record.actor.subject == eve_sub and "customer" in record.actor.roles
    assert record.source_address and len(record.trace_id) == 32
    # The placement is there too, as Ada's.
    placements = wait_until(
        lambda: query(shop, tokens["auditor"], action="orders.place", resource_id=order_id),
        "the placement in the audit trail",
    )
    assert placements[0].record.actor.subject == subject_of(ada)
    # Only auditors read the trail (not even admins).
    with pytest.raises(grpc.RpcError) as refused:
        query(shop, tokens["admin"], resource_id=order_id)
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    # Reading the trail is itself in the trail (NIST SP 800-92), as the auditor's.
    auditor = subject_of(tokens["auditor"])
    reads = wait_until(
        lambda: query(shop, tokens["auditor"], actor=auditor, action="audit.read"),
        "the auditor's reads in the audit trail",
    )
    assert reads[0].record.service == "audit" and "auditor" in reads[0].record.actor.roles
    checked = verify(shop)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_kill_9_of_the_audit_service_during_500_orders_loses_and_doubles_nothing(
    shop_mesh: Shop, tokens: dict[str, str]
) -> None:
    shop = shop_mesh
    sku = f"burst-{uuid.uuid4().hex[:8]}"
    admin = tokens["admin"]
    since = timestamp_pb2.Timestamp()
    since.FromDatetime(datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=5))
    with grpc.insecure_channel(f"127.0.0.1:{shop.ports['inventory']}") as channel:
        inventory_pb2_grpc.InventoryServiceStub(channel).SetStock(
            inventory_pb2.SetStockRequest(sku=sku, quantity=1000),
            metadata=bearer(admin),
            timeout=10,
        )
    audit_pid = int(mesh_ps(shop.root)["audit"]["pid"])  # type: ignore[call-overload]
    placed: list[str] = []
    killed = False
    with (
        grpc.insecure_channel(f"127.0.0.1:{shop.ports['orders']}") as channel,
        ThreadPoolExecutor(8) as pool,
    ):
        stub = orders_pb2_grpc.OrdersServiceStub(channel)

        def place(n: int) -> str:
            request = place_request(f"burst-customer-{n % 7}", sku)
            reply = stub.PlaceOrder(request, metadata=bearer(admin), timeout=30)
            return str(reply.order_id)

        futures = [pool.submit(place, n) for n in range(500)]
        for n, future in enumerate(futures):
            placed.append(future.result())
            if n == 150 and not killed:
                os.kill(audit_pid, signal.SIGKILL)  # mid-burst, mid-whatever it was doing
                killed = True
    assert killed and len(set(placed)) == 500
    wait_until(
        lambda: mesh_ps(shop.root)["audit"].get("state") != "running", "audit to be seen dead"
    )
    restarted = mesh_cli(shop.root, "up", "-d", env=shop.env)
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    ours = set(placed)

    def all_recorded() -> list[audit_pb2.AuditEntry] | None:
        entries = [
            e
            for e in query(shop, tokens["auditor"], action="orders.place", since=since)
            if e.record.resource_id in ours
        ]
        return entries if len({e.record.resource_id for e in entries}) == 500 else None

    entries = wait_until(all_recorded, "500 placements in the audit trail", timeout=120)
    assert len(entries) == 500, f"{len(entries) - 500} duplicates"
    assert {e.record.resource_id for e in entries} == ours
    checked = verify(shop)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_no_audit_record_holds_a_secret(shop_mesh: Shop, tokens: dict[str, str]) -> None:
    """After the flows above (logins, orders placed with payment tokens, denials): the whole
    trail, scanned for what must never be in it."""
    shop = shop_mesh
    everything = query(shop, tokens["auditor"])
    assert everything, "the trail is empty: nothing was scanned"
    # A payment token, a bearer token (JWTs start eyJ), the customers' password.
    forbidden = ["tok_visa", "Bearer ", "eyJ", PASSWORD]
    for entry in everything:
        text = entry.canonical.decode()
        leaked = [word for word in forbidden if word in text]
        assert not leaked, f"seq {entry.seq} holds {leaked}: {text[:300]}"
