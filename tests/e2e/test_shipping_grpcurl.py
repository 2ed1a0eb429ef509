"""End to end: shipping under `mesh up -d`, driven by the real grpcurl, including a kill -9.

What the orders saga relies on is checked on the wire: replays return the first result, a refused
destination says why (FailedPrecondition, reason DESTINATION_NOT_SERVED), bad addresses name every
field, and an idempotency key still answers with its first result after the process was killed.
Each call is made as the saga makes it: with orders' own token, on behalf of the order's
customer (shipping's policy lets no one else book or cancel); staff read shipments, customers
may not call shipping at all.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

from support.mesh import Grpcurl, Metadata, mesh_cli, mesh_ps, mesh_tokens

SHIPPING = "127.0.0.1:50054"
SERVICE = "shop.shipping.v1.ShippingService"

BERLIN = {
    "name": "Ada Lovelace",
    "line1": "Unter den Linden 1",
    "city": "Berlin",
    "postal_code": "10117",
    "country_code": "DE",
}


def create_request(key: str, order_id: str = "order-1", **changes: Any) -> dict[str, Any]:
    request = {
        "idempotency_key": key,
        "order_id": order_id,
        "address": BERLIN,
        "items": [{"sku": "mug", "quantity": 2}, {"sku": "cap", "quantity": 1}],
    }
    return {**request, **changes}


def saga(root: Path) -> Metadata:
    """What orders' saga sends shipping: its own token, acting for the order's customer."""
    return mesh_tokens(root).acting_for("cust-ship")


def shipment_of(response: dict[str, object]) -> dict[str, Any]:
    shipment = response["shipment"]
    assert isinstance(shipment, dict)
    return shipment


def test_create_replay_cancel_and_get(running_mesh: Path, grpcurl: Grpcurl) -> None:
    health = grpcurl.call(SHIPPING, "grpc.health.v1.Health/Check", {"service": SERVICE})
    assert health == {"status": "SERVING"}
    as_saga = saga(running_mesh)
    key = f"create-{uuid.uuid4().hex[:8]}"
    created = shipment_of(
        grpcurl.call(SHIPPING, f"{SERVICE}/CreateShipment", create_request(key), as_saga)
    )
    assert created["status"] == "SHIPMENT_STATUS_BOOKED"
    assert created["order_id"] == "order-1"
    assert created["address"] == BERLIN
    tracking = str(created["tracking_number"])
    assert tracking.startswith("MK") and len(tracking) == 12 and tracking[2:].isdigit()

    replay = shipment_of(
        grpcurl.call(SHIPPING, f"{SERVICE}/CreateShipment", create_request(key), as_saga)
    )
    assert replay == created, "a replay returns the first result"

    reused = grpcurl.run(
        SHIPPING,
        f"{SERVICE}/CreateShipment",
        data=create_request(key, order_id="order-2"),
        metadata=as_saga,
    )
    assert reused.returncode != 0
    assert "Code: AlreadyExists" in reused.stderr
    assert "IDEMPOTENCY_KEY_REUSED" in reused.stderr

    cancel = {"idempotency_key": f"cancel-{key}", "shipment_id": created["shipment_id"]}
    cancelled = shipment_of(grpcurl.call(SHIPPING, f"{SERVICE}/CancelShipment", cancel, as_saga))
    assert cancelled["status"] == "SHIPMENT_STATUS_CANCELLED"
    assert cancelled["tracking_number"] == tracking
    again = shipment_of(grpcurl.call(SHIPPING, f"{SERVICE}/CancelShipment", cancel, as_saga))
    assert again == cancelled
    # Support reads any shipment; a customer never calls shipping directly.
    tokens = mesh_tokens(running_mesh)
    which = {"shipment_id": created["shipment_id"]}
    got = grpcurl.call(SHIPPING, f"{SERVICE}/GetShipment", which, tokens.metadata("support"))
    assert shipment_of(got) == cancelled
    mine = tokens.metadata("customer", "cust-ship")
    refused = grpcurl.run(SHIPPING, f"{SERVICE}/GetShipment", data=which, metadata=mine)
    assert "Code: PermissionDenied" in refused.stderr, refused.stderr
    assert "shipping.read" in refused.stderr


def test_refusals_say_why_on_the_wire(running_mesh: Path, grpcurl: Grpcurl) -> None:
    south_pole = {**BERLIN, "city": "South Pole", "postal_code": "9999", "country_code": "AQ"}
    as_saga = saga(running_mesh)
    refused = grpcurl.run(
        SHIPPING,
        f"{SERVICE}/CreateShipment",
        data=create_request("aq-1", address=south_pole),
        metadata=as_saga,
    )
    assert refused.returncode != 0
    assert "Code: FailedPrecondition" in refused.stderr
    assert "Message: we do not ship to Antarctica (AQ)" in refused.stderr
    # google.rpc.ErrorInfo and PreconditionFailure, resolved through reflection.
    assert '"reason": "DESTINATION_NOT_SERVED"' in refused.stderr
    assert '"subject": "AQ"' in refused.stderr

    missing = grpcurl.run(
        SHIPPING,
        f"{SERVICE}/CreateShipment",
        data=create_request(
            "bad-1",
            address={"line1": "Somewhere 1", "country_code": "ZZ"},
            items=[{"sku": "mug", "quantity": 0}],
        ),
        metadata=as_saga,
    )
    assert missing.returncode != 0
    assert "Code: InvalidArgument" in missing.stderr
    for field in (
        "address.name",
        "address.city",
        "address.postal_code",
        "address.country_code",
        "items[0].quantity",
    ):
        assert f'"field": "{field}"' in missing.stderr, field
    assert "address.line1" not in missing.stderr

    unknown = grpcurl.run(
        SHIPPING,
        f"{SERVICE}/CancelShipment",
        data={"idempotency_key": "c-unknown", "shipment_id": "nope"},
        metadata=as_saga,
    )
    assert "Code: NotFound" in unknown.stderr
    assert "SHIPMENT_NOT_FOUND" in unknown.stderr


def test_a_replay_after_kill_9_returns_the_first_result(
    running_mesh: Path, grpcurl: Grpcurl
) -> None:
    key = f"crash-{uuid.uuid4().hex[:8]}"
    as_saga = saga(running_mesh)
    created = shipment_of(
        grpcurl.call(SHIPPING, f"{SERVICE}/CreateShipment", create_request(key), as_saga)
    )

    before = mesh_ps(running_mesh)["shipping"]
    assert before["state"] == "running"
    os.kill(int(str(before["pid"])), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while mesh_ps(running_mesh)["shipping"]["state"] != "stopped":
        assert time.monotonic() < deadline, "mesh ps still reports the killed process"
        time.sleep(0.05)
    unreachable = grpcurl.run(
        SHIPPING, f"{SERVICE}/CreateShipment", data=create_request(key), metadata=as_saga
    )
    assert unreachable.returncode != 0  # the saga sees UNAVAILABLE here and retries later

    again = mesh_cli(running_mesh, "up", "-d")
    assert again.returncode == 0, again.stderr
    assert "shipping: healthy" in again.stderr
    after = mesh_ps(running_mesh)["shipping"]
    assert after["state"] == "running" and after["pid"] != before["pid"]

    replay = shipment_of(
        grpcurl.call(SHIPPING, f"{SERVICE}/CreateShipment", create_request(key), as_saga)
    )
    assert replay == created, "the key survived the crash with its first result"
    reused = grpcurl.run(
        SHIPPING,
        f"{SERVICE}/CreateShipment",
        data=create_request(key, order_id="other"),
        metadata=as_saga,
    )
    assert "Code: AlreadyExists" in reused.stderr
