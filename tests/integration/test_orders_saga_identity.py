"""Orders' saga calls inventory, payments and shipping as ``Service::"orders"``, on behalf of the
customer who placed the order (issue 14: "the saga keeps the identity").

All four services run in this process on their real composition roots, policies and token checks
(trusting the test issuer), against a real registry and Kafka. Orders gets its own token the way
it does in a mesh, with the client_credentials grant (meshkit.credentials.ServiceCredentials),
from a test token endpoint standing in for identity's. Each participant's servicer notes who its
handler was told the caller is (``meshkit.authz.current_principal()``), then runs as usual.

The participants' policies permit orders only with an on-behalf-of, and never the customer
directly: the test checks both refusals too, so an order confirmed proves the saga sent both.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import grpc
import pytest
from support.events import register_all
from support.registry import wait_until
from support.tokens import TEST_ISSUER, TokenEndpoint, authorized, token_endpoint

from inventory.bootstrap import SERVICE as INVENTORY
from meshkit import authz
from meshkit.server import ServiceBinding
from meshkit.service import Service, ServiceContext
from orders.bootstrap import SERVICE as ORDERS
from payments.bootstrap import SERVICE as PAYMENTS
from shipping.bootstrap import SERVICE as SHIPPING
from shop.common.v1 import common_pb2
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.orders.v1 import orders_pb2, orders_pb2_grpc
from shop.payments.v1 import payments_pb2, payments_pb2_grpc
from shop.shipping.v1 import shipping_pb2, shipping_pb2_grpc

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
CONTRACTS = [
    REPO / "proto" / "shop" / name / "v1" / "avro"
    for name in ("orders", "inventory", "payments", "shipping")
] + [REPO / "proto" / "mesh" / "audit" / "v1" / "avro"]
# The participant RPCs a confirmed order's saga makes (its five forward steps).
FORWARD_CALLS = {
    "inventory": {"ReserveStock", "CommitReservation"},
    "payments": {"AuthorizePayment", "CapturePayment"},
    "shipping": {"CreateShipment"},
}

Seen = list[tuple[str, authz.Principal | None]]  # (RPC, the caller its handler saw)


class _Noting:
    """A servicer that notes each RPC and the caller its handler sees, then hands the call to
    the real servicer (the kit checked the caller's permission before either)."""

    def __init__(self, servicer: object, seen: Seen) -> None:
        self._servicer = servicer
        self._seen = seen

    def __getattr__(self, name: str) -> Any:
        handler = getattr(self._servicer, name)
        if not name[:1].isupper() or not callable(handler):
            return handler

        def noted(request: Any, context: grpc.ServicerContext) -> Any:
            self._seen.append((name, authz.current_principal()))
            return handler(request, context)

        return noted


def noting(service: Service[Any], seen: Seen) -> Service[Any]:
    """``service`` as it is (name, so policy; settings, migrations, events), its servicers
    noting their callers in ``seen``."""

    def build(ctx: ServiceContext[Any]) -> Sequence[ServiceBinding]:
        return [
            dataclasses.replace(b, servicer=_Noting(b.servicer, seen)) for b in service.build(ctx)
        ]

    return dataclasses.replace(service, build=build)


@dataclasses.dataclass
class Shop:
    """The four services, running; who called the participants; the token endpoint."""

    identity: TokenEndpoint
    channels: dict[str, grpc.Channel]
    seen: dict[str, Seen]

    def as_(self, name: str, **who: Any) -> grpc.Channel:
        """A channel to ``name`` whose calls carry a token (see ``support.tokens.authorized``)."""
        return authorized(self.channels[name], **who)


@pytest.fixture
def shop(
    tmp_path: Path,
    kafka_bootstrap: str,
    registry_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Shop]:
    for contracts in CONTRACTS:
        register_all(registry_url, contracts)
    seen: dict[str, Seen] = {"inventory": [], "payments": [], "shipping": []}
    channels: dict[str, grpc.Channel] = {}
    with token_endpoint() as identity, ExitStack() as stack:
        # Orders asks this endpoint for its own token, as it asks identity's in a mesh.
        monkeypatch.setenv("MESH_URL_IDENTITY", identity.url)

        def run(service: Service[Any]) -> None:
            prefix = service.prefix
            env = {
                f"{prefix}_PORT": "0",
                f"{prefix}_DB_PATH": str(tmp_path / f"{service.name}.db"),
                "SCHEMA_REGISTRY_URL": registry_url,
                "MESH_KAFKA_BOOTSTRAP": kafka_bootstrap,
            } | TEST_ISSUER.env
            server = service.create(service.load_settings(env))
            port = server.start()
            stack.callback(server.stop, 0)
            # Orders finds its participants by name (meshkit.addresses): these, not a mesh's.
            monkeypatch.setenv(f"MESH_ADDRESS_{prefix}", f"127.0.0.1:{port}")
            channels[service.name] = stack.enter_context(grpc.insecure_channel(f"127.0.0.1:{port}"))

        for participant in (INVENTORY, PAYMENTS, SHIPPING):
            run(noting(participant, seen[participant.name]))
        run(ORDERS)
        yield Shop(identity, channels, seen)


def place(shop: Shop, customer: str, sku: str) -> str:
    """An order of two ``sku`` placed by ``customer``; its id."""
    stub = orders_pb2_grpc.OrdersServiceStub(shop.as_("orders", role="customer", subject=customer))
    request = orders_pb2.PlaceOrderRequest(
        request_id=f"req-{uuid.uuid4().hex}",
        customer_id=customer,
        lines=[
            orders_pb2.OrderLine(
                sku=sku, quantity=2, unit_price=common_pb2.Money(currency_code="EUR", units=9)
            )
        ],
        payment_token="tok_visa",
        shipping_address=common_pb2.Address(
            name="Ada",
            line1="Unter den Linden 1",
            city="Berlin",
            postal_code="10117",
            country_code="DE",
        ),
    )
    return str(stub.PlaceOrder(request, timeout=10).order_id)


def status_of(shop: Shop, customer: str, order_id: str) -> orders_pb2.Order:
    stub = orders_pb2_grpc.OrdersServiceStub(shop.as_("orders", role="customer", subject=customer))
    return stub.GetOrder(orders_pb2.GetOrderRequest(order_id=order_id), timeout=10).order


def test_the_saga_calls_each_participant_as_orders_on_behalf_of_the_customer(shop: Shop) -> None:
    customer = f"c-{uuid.uuid4().hex[:8]}"
    sku = f"saga-{uuid.uuid4().hex[:8]}"
    # Stock is an admin's to set (inventory's policy.cedar).
    inventory_pb2_grpc.InventoryServiceStub(shop.as_("inventory", role="admin")).SetStock(
        inventory_pb2.SetStockRequest(sku=sku, quantity=5), timeout=10
    )
    [(name, admin)] = shop.seen["inventory"]
    assert name == "SetStock" and admin is not None, shop.seen
    assert (admin.service, admin.roles) == ("", ("admin",)), "a user, not a service"
    shop.seen["inventory"].clear()  # from here on, the participants see the saga's calls
    order_id = place(shop, customer, sku)
    pending = orders_pb2.ORDER_STATUS_PENDING
    wait_until(
        lambda: status_of(shop, customer, order_id).status != pending,
        timeout=30,
        what=f"the saga of {order_id} to finish",
    )
    order = status_of(shop, customer, order_id)
    assert order.status == orders_pb2.ORDER_STATUS_CONFIRMED, order.cancellation_reason

    for participant, calls in FORWARD_CALLS.items():
        seen = shop.seen[participant]
        assert {name for name, _ in seen} == calls, participant
        for name, caller in seen:
            assert caller is not None, f"{participant} {name}: no caller"
            assert (caller.service, caller.subject, caller.on_behalf_of) == (
                "orders",
                "orders",
                customer,
            ), f"{participant} {name} was called by {caller}"
            assert caller.roles == ("service",)
    # Orders' token came from the client_credentials grant, once: it is kept between calls.
    # (Shipping asks for its own, once, to watch its flags on the control plane.)
    assert shop.identity.issued.count("orders") == 1, shop.identity.issued
    assert set(shop.identity.issued) <= {"orders", "shipping"}, shop.identity.issued
    assert shop.identity.refused == []


# One call of each participant's saga steps, and the permission it needs.
DirectCall = Callable[[grpc.Channel], object]
DIRECT_CALLS: dict[str, tuple[str, DirectCall]] = {
    "inventory": (
        "inventory.reserve",
        lambda channel: inventory_pb2_grpc.InventoryServiceStub(channel).ReserveStock(
            inventory_pb2.ReserveStockRequest(
                reservation_id="r-direct",
                lines=[inventory_pb2.ReservationLine(sku="mug", quantity=1)],
            ),
            timeout=10,
        ),
    ),
    "payments": (
        "payments.authorize",
        lambda channel: payments_pb2_grpc.PaymentsServiceStub(channel).AuthorizePayment(
            payments_pb2.AuthorizePaymentRequest(
                idempotency_key="k-direct",
                order_id="o-direct",
                amount=common_pb2.Money(currency_code="EUR", units=1),
                payment_token="tok_visa",
            ),
            timeout=10,
        ),
    ),
    "shipping": (
        "shipping.create",
        lambda channel: shipping_pb2_grpc.ShippingServiceStub(channel).CreateShipment(
            shipping_pb2.CreateShipmentRequest(idempotency_key="k-direct", order_id="o-direct"),
            timeout=10,
        ),
    ),
}


@pytest.mark.parametrize(
    "who",
    [
        pytest.param({"service": "orders"}, id="orders-for-nobody"),
        pytest.param({"role": "customer", "subject": "c-1"}, id="the-customer-directly"),
        pytest.param({"role": "support"}, id="support"),
    ],
)
def test_participants_deny_their_saga_steps_to_anyone_else(shop: Shop, who: dict[str, str]) -> None:
    for participant, (permission, call) in DIRECT_CALLS.items():
        with pytest.raises(grpc.RpcError) as denied:
            call(shop.as_(participant, **who))
        assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED, participant
        assert permission in str(denied.value.details()), denied.value.details()
        assert shop.seen[participant] == [], f"{participant}'s handler ran"
