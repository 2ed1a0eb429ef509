"""End to end: `mesh up -d` with the real registry and payments, the real grpcurl, kill -9.

The scratch root gets its own mesh.toml, derived from the repository's: only the components
payments needs (the schema registry, identity, whose tokens it checks, and payments itself,
exactly as declared there), moved to free ports. So this test neither needs nor disturbs
8081/5005x, which a developer's own mesh or a parallel test run may hold, and does not depend on
services it does not talk to.

Each call is made as orders' saga makes it: with orders' own token from identity, on behalf of
the order's customer (payments' policy lets no one else authorize, capture, void or refund);
support reads payments, a customer may not call payments at all.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.mesh import Grpcurl, Metadata, mesh_tokens, write_moved_mesh_toml

REPO = Path(__file__).resolve().parents[2]
MESH = str(Path(sys.executable).parent / "mesh")
SERVICE = "shop.payments.v1.PaymentsService"
EUR_12_30 = {"currency_code": "EUR", "units": "12", "nanos": 300000000}


def mesh(
    root: Path, *args: str, env: dict[str, str], timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MESH, "--root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


@dataclass(frozen=True)
class PaymentsMesh:
    """The running mesh: its root, payments' address, the environment it was started in."""

    root: Path
    address: str
    env: dict[str, str]

    @property
    def saga(self) -> Metadata:
        """What orders' saga sends payments: its own token, acting for the order's customer."""
        return mesh_tokens(self.root).acting_for("cust-pay")


@pytest.fixture(scope="module")
def payments_mesh(
    tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str
) -> Iterator[PaymentsMesh]:
    """A running registry, identity and payments in a scratch root."""
    root = tmp_path_factory.mktemp("payments-mesh")
    for name in ("proto", "scripts"):
        (root / name).symlink_to(REPO / name)
    ports = write_moved_mesh_toml(root, ("schema-registry", "identity", "payments"))
    env = {**os.environ, "SCHEMA_REGISTRY_URL": f"http://127.0.0.1:{ports['schema-registry']}"}
    env.pop("MESH_KAFKA_BOOTSTRAP", None)
    up = mesh(root, "up", "-d", "--kafka", kafka_bootstrap, env=env)
    try:
        assert up.returncode == 0, up.stderr
        yield PaymentsMesh(root, f"127.0.0.1:{ports['payments']}", env)
    finally:
        down = mesh(root, "down", env=env)
        assert down.returncode == 0, down.stderr


def call(grpcurl: Grpcurl, payments: PaymentsMesh, method: str, data: object) -> dict[str, Any]:
    reply = grpcurl.call(payments.address, f"{SERVICE}/{method}", data, payments.saga)
    payment = reply["payment"]
    assert isinstance(payment, dict)
    return payment


def authorize(key: str, order_id: str, token: str = "tok_visa") -> dict[str, object]:
    return {
        "idempotency_key": key,
        "order_id": order_id,
        "amount": EUR_12_30,
        "payment_token": token,
    }


def test_authorize_replay_decline_capture_refund(
    payments_mesh: PaymentsMesh, grpcurl: Grpcurl
) -> None:
    address = payments_mesh.address
    listed = grpcurl.run(address, "list")
    assert SERVICE in listed.stdout.split(), listed.stderr

    first = call(grpcurl, payments_mesh, "AuthorizePayment", authorize("e2e-auth-1", "order-1"))
    assert first["status"] == "PAYMENT_STATUS_AUTHORIZED"
    assert first["amount"] == {"currency_code": "EUR", "units": "12", "nanos": 300000000}
    assert str(first["payment_id"]).startswith("pay_")

    replay = call(grpcurl, payments_mesh, "AuthorizePayment", authorize("e2e-auth-1", "order-1"))
    assert replay == first

    declined = call(
        grpcurl,
        payments_mesh,
        "AuthorizePayment",
        authorize("e2e-auth-2", "order-2", "tok_chargeDeclined"),
    )
    assert declined["status"] == "PAYMENT_STATUS_DECLINED"
    assert declined["decline_reason"] == "generic_decline"

    payment_id = first["payment_id"]
    captured = call(
        grpcurl,
        payments_mesh,
        "CapturePayment",
        {"idempotency_key": "e2e-cap-1", "payment_id": payment_id},
    )
    assert captured["status"] == "PAYMENT_STATUS_CAPTURED"
    refunded = call(
        grpcurl,
        payments_mesh,
        "RefundPayment",
        {"idempotency_key": "e2e-ref-1", "payment_id": payment_id},
    )
    assert refunded["status"] == "PAYMENT_STATUS_REFUNDED"
    got = call(grpcurl, payments_mesh, "GetPayment", {"payment_id": payment_id})
    assert got == refunded
    # Support reads any payment; a customer never calls payments directly, not even for its own.
    tokens = mesh_tokens(payments_mesh.root)
    which = {"payment_id": payment_id}
    read = grpcurl.call(
        address, f"{SERVICE}/GetPayment", which, tokens.metadata("support", "clerk-1")
    )
    assert read["payment"] == refunded
    mine = tokens.metadata("customer", "cust-pay")
    refused = grpcurl.run(address, f"{SERVICE}/GetPayment", data=which, metadata=mine)
    assert "Code: PermissionDenied" in refused.stderr, refused.stderr
    assert "payments.read" in refused.stderr
    refused = grpcurl.run(
        address,
        f"{SERVICE}/RefundPayment",
        data={"idempotency_key": "e2e-ref-2", "payment_id": payment_id},
        metadata=tokens.metadata("admin"),
    )
    assert "Code: PermissionDenied" in refused.stderr, "only orders' saga moves money"


def test_errors_carry_the_right_codes_and_name_the_fields(
    payments_mesh: PaymentsMesh, grpcurl: Grpcurl
) -> None:
    address, saga = payments_mesh.address, payments_mesh.saga
    bad = grpcurl.run(
        address,
        f"{SERVICE}/AuthorizePayment",
        data={
            "order_id": "order-3",
            "amount": {"currency_code": "eur", "units": "1", "nanos": 2000000000},
            "payment_token": "4242424242424242",
        },
        metadata=saga,
    )
    assert "Code: InvalidArgument" in bad.stderr
    for field in ("idempotency_key", "amount.currency_code", "amount.nanos", "payment_token"):
        assert f'"field": "{field}"' in bad.stderr, bad.stderr

    unknown = grpcurl.run(
        address,
        f"{SERVICE}/VoidPayment",
        data={"idempotency_key": "v", "payment_id": "pay_x"},
        metadata=saga,
    )
    assert "Code: NotFound" in unknown.stderr

    payment = call(grpcurl, payments_mesh, "AuthorizePayment", authorize("e2e-auth-4", "order-4"))
    reused = grpcurl.run(
        address,
        f"{SERVICE}/AuthorizePayment",
        data=authorize("e2e-auth-4", "order-5"),
        metadata=saga,
    )
    assert "Code: AlreadyExists" in reused.stderr
    assert "IDEMPOTENCY_KEY_REUSED" in reused.stderr

    grpcurl.call(
        address,
        f"{SERVICE}/CapturePayment",
        {"idempotency_key": "e2e-cap-4", "payment_id": payment["payment_id"]},
        saga,
    )
    illegal = grpcurl.run(
        address,
        f"{SERVICE}/VoidPayment",
        data={"idempotency_key": "e2e-void-4", "payment_id": payment["payment_id"]},
        metadata=saga,
    )
    assert "Code: FailedPrecondition" in illegal.stderr
    assert "refund it instead" in illegal.stderr
    assert "PAYMENT_CAPTURED" in illegal.stderr


def _state(root: Path, env: dict[str, str]) -> dict[str, Any]:
    result = mesh(root, "ps", "--json", env=env)
    assert result.returncode == 0, result.stderr
    rows: dict[str, Any] = {row["name"]: row for row in json.loads(result.stdout)}
    return rows["payments"]


def test_replay_after_kill_9_returns_the_first_result(
    payments_mesh: PaymentsMesh, grpcurl: Grpcurl
) -> None:
    root, env = payments_mesh.root, payments_mesh.env
    first = call(grpcurl, payments_mesh, "AuthorizePayment", authorize("e2e-crash-1", "order-6"))
    captured = call(
        grpcurl,
        payments_mesh,
        "CapturePayment",
        {"idempotency_key": "e2e-crash-cap", "payment_id": first["payment_id"]},
    )
    before = _state(root, env)
    os.kill(int(before["pid"]), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _state(root, env)["state"] != "stopped":
        assert time.monotonic() < deadline, "mesh ps still reports the killed payments"
        time.sleep(0.05)
    again = mesh(root, "up", "-d", env=env)
    assert again.returncode == 0, again.stderr
    assert "payments: healthy" in again.stderr
    assert _state(root, env)["pid"] != before["pid"]

    again_first = call(
        grpcurl, payments_mesh, "AuthorizePayment", authorize("e2e-crash-1", "order-6")
    )
    assert again_first == first
    replayed = call(
        grpcurl,
        payments_mesh,
        "CapturePayment",
        {"idempotency_key": "e2e-crash-cap", "payment_id": first["payment_id"]},
    )
    assert replayed == captured
    got = call(grpcurl, payments_mesh, "GetPayment", {"payment_id": first["payment_id"]})
    assert got["status"] == "PAYMENT_STATUS_CAPTURED"
