"""End to end: shipping under `mesh up -d`, driven by the real grpcurl, including a kill -9.

What the orders saga relies on is checked on the wire: replays return the first result, a refused
destination says why (FailedPrecondition, reason DESTINATION_NOT_SERVED), bad addresses name every
field, and an idempotency key still answers with its first result after the process was killed.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

from support.mesh import Grpcurl, mesh_cli, mesh_ps

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


def shipment_of(response: dict[str, object]) -> dict[str, Any]:
    shipment = response["shipment"]
    assert isinstance(shipment, dict)
    return shipment


def test_create_replay_cancel_and_get(running_mesh: Path, grpcurl: Grpcurl) -> None:
    health = grpcurl.call(SHIPPING, "grpc.health.v1.Health/Check", {"service": SERVICE})
    assert health == {"status": "SERVING"}
    key = f"create-{uuid.uuid4().hex[:8]}"
    created = shipment_of(grpcurl.call(SHIPPING, f"{SERVICE}/CreateShipment", create_request(key)))
    assert created["status"] == "SHIPMENT_STATUS_BOOKED"
    assert created["order_id"] == "order-1"
    assert created["address"] == BERLIN
    tracking = str(created["tracking_number"])
    assert tracking.startswith("MK") and len(tracking) == 12 and tracking[2:].isdigit()

    replay = shipment_of(grpcurl.call(SHIPPING, f"{SERVICE}/CreateShipment", create_request(key)))
    assert replay == created, "a replay returns the first result"

    reused = grpcurl.run(
        SHIPPING, f"{SERVICE}/CreateShipment", data=create_request(key, order_id="order-2")
    )
    assert reused.returncode != 0
    assert "Code: AlreadyExists" in reused.stderr
    assert "IDEMPOTENCY_KEY_REUSED" in reused.stderr

    cancel = {"idempotency_key": f"cancel-{key}", "shipment_id": created["shipment_id"]}
    cancelled = shipment_of(grpcurl.call(SHIPPING, f"{SERVICE}/CancelShipment", cancel))
    assert cancelled["status"] == "SHIPMENT_STATUS_CANCELLED"
    assert cancelled["tracking_number"] == tracking
    again = shipment_of(grpcurl.call(SHIPPING, f"{SERVICE}/CancelShipment", cancel))
    assert again == cancelled
    got = grpcurl.call(SHIPPING, f"{SERVICE}/GetShipment", {"shipment_id": created["shipment_id"]})
    assert shipment_of(got) == cancelled


def test_refusals_say_why_on_the_wire(running_mesh: Path, grpcurl: Grpcurl) -> None:
    south_pole = {**BERLIN, "city": "South Pole", "postal_code": "9999", "country_code": "AQ"}
    refused = grpcurl.run(
        SHIPPING, f"{SERVICE}/CreateShipment", data=create_request("aq-1", address=south_pole)
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
    )
    assert "Code: NotFound" in unknown.stderr
    assert "SHIPMENT_NOT_FOUND" in unknown.stderr


def test_a_replay_after_kill_9_returns_the_first_result(
    running_mesh: Path, grpcurl: Grpcurl
) -> None:
    key = f"crash-{uuid.uuid4().hex[:8]}"
    created = shipment_of(grpcurl.call(SHIPPING, f"{SERVICE}/CreateShipment", create_request(key)))

    before = mesh_ps(running_mesh)["shipping"]
    assert before["state"] == "running"
    os.kill(int(str(before["pid"])), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while mesh_ps(running_mesh)["shipping"]["state"] != "stopped":
        assert time.monotonic() < deadline, "mesh ps still reports the killed process"
        time.sleep(0.05)
    unreachable = grpcurl.run(SHIPPING, f"{SERVICE}/CreateShipment", data=create_request(key))
    assert unreachable.returncode != 0  # the saga sees UNAVAILABLE here and retries later

    again = mesh_cli(running_mesh, "up", "-d")
    assert again.returncode == 0, again.stderr
    assert "shipping: healthy" in again.stderr
    after = mesh_ps(running_mesh)["shipping"]
    assert after["state"] == "running" and after["pid"] != before["pid"]

    replay = shipment_of(grpcurl.call(SHIPPING, f"{SERVICE}/CreateShipment", create_request(key)))
    assert replay == created, "the key survived the crash with its first result"
    reused = grpcurl.run(
        SHIPPING, f"{SERVICE}/CreateShipment", data=create_request(key, order_id="other")
    )
    assert "Code: AlreadyExists" in reused.stderr
