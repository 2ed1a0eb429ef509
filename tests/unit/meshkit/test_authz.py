"""meshkit.authz through a real gRPC server: the contract's permission checked before the
handler, identity-shaped tokens verified, the Cedar policy deciding ownership, denials recorded,
and the client side forwarding or acting for a user."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support.tokens import AUDIENCE, ISSUER, TEST_ISSUER, TestIssuer, authorized

from meshkit import authz
from meshkit.credentials import StaticCredentials, outgoing_metadata
from meshkit.server import MeshServer, ServiceBinding, create_server
from meshkit.settings import ServerSettings
from meshkit.tokens import TokenVerifier
from shop.inventory.v1 import inventory_pb2  # noqa: F401 - registers its descriptors
from shop.orders.v1 import orders_pb2 as pb
from shop.orders.v1 import orders_pb2_grpc as pb_grpc

ORDERS_POLICY = """
permit (principal in Role::"customer", action in [Action::"orders.place", Action::"orders.read"],
        resource) when { resource.owner == principal };
permit (principal in Role::"support", action == Action::"orders.read", resource);
"""
OWNERS = {"o-ada": "ada", "o-bob": "bob"}


class Orders(pb_grpc.OrdersServiceServicer):
    """Answers with who the handler saw as the caller."""

    def GetOrder(self, request: pb.GetOrderRequest, context: grpc.ServicerContext) -> Any:
        principal = authz.current_principal()
        assert principal is not None
        return pb.GetOrderResponse(
            order=pb.Order(order_id=request.order_id, customer_id=principal.subject)
        )

    def PlaceOrder(self, request: pb.PlaceOrderRequest, context: grpc.ServicerContext) -> Any:
        return pb.PlaceOrderResponse(order_id="o-new")


denied: list[tuple[str, str, str]] = []


@pytest.fixture(scope="module")
def server() -> Iterator[MeshServer]:
    verifier = TokenVerifier(TEST_ISSUER.jwks_path.as_uri(), issuer=ISSUER, audience=AUDIENCE)
    authorizer = authz.Authorizer(
        "orders",
        verifier,
        authz.Policy(ORDERS_POLICY),
        owners={"order_id": authz.by_id(OWNERS.get)},
        on_denied=lambda principal, rule, resource, why: denied.append(
            (principal.subject if principal else "", rule.permission, resource)
        ),
    )
    undeclared = grpc.method_handlers_generic_handler(
        "test.v1.Undeclared",
        {"Call": grpc.unary_unary_rpc_method_handler(lambda request, context: b"")},
    )
    binding = ServiceBinding(
        Orders(), pb_grpc.add_OrdersServiceServicer_to_server, "shop.orders.v1.OrdersService"
    )
    srv = create_server("orders", ServerSettings(port=0), [binding], authorizer=authorizer)
    srv._grpc.add_generic_rpc_handlers((undeclared,))
    srv.start()
    yield srv
    srv.stop(0)


def _channel(server: MeshServer) -> grpc.Channel:
    return grpc.insecure_channel(f"127.0.0.1:{server.port}")


def _code(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code(), caught.value.details()


def test_no_token_is_unauthenticated_and_says_what_to_send(server: MeshServer) -> None:
    stub = pb_grpc.OrdersServiceStub(_channel(server))
    code, details = _code(lambda: stub.GetOrder(pb.GetOrderRequest(order_id="o-ada"), timeout=5))
    assert code is grpc.StatusCode.UNAUTHENTICATED
    assert "authorization: Bearer" in details and "mesh token" in details


def test_a_forged_or_foreign_token_is_unauthenticated(server: MeshServer) -> None:
    stub = pb_grpc.OrdersServiceStub(_channel(server))
    other = TestIssuer()  # same claims, another key
    for metadata in (
        [("authorization", "Bearer not-a-jwt")],
        other.metadata("support"),
        [("authorization", "Basic YTpi")],
    ):
        code, details = _code(
            lambda m=metadata: stub.GetOrder(
                pb.GetOrderRequest(order_id="o-ada"), metadata=m, timeout=5
            )
        )
        assert code is grpc.StatusCode.UNAUTHENTICATED, details


def test_a_customer_reads_their_own_order_only(server: MeshServer) -> None:
    ada = pb_grpc.OrdersServiceStub(authorized(_channel(server), "customer", "ada"))
    reply = ada.GetOrder(pb.GetOrderRequest(order_id="o-ada"), timeout=5)
    assert reply.order.customer_id == "ada"  # the handler saw the verified caller
    denied.clear()
    code, details = _code(lambda: ada.GetOrder(pb.GetOrderRequest(order_id="o-bob"), timeout=5))
    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert "orders.read" in details and "o-bob" in details
    assert denied == [("ada", "orders.read", "o-bob")]
    # An order nobody knows is no oracle: denied like another customer's.
    code, _ = _code(lambda: ada.GetOrder(pb.GetOrderRequest(order_id="o-none"), timeout=5))
    assert code is grpc.StatusCode.PERMISSION_DENIED


def test_support_reads_any_order_but_places_none(server: MeshServer) -> None:
    support = pb_grpc.OrdersServiceStub(authorized(_channel(server), "support", "sam"))
    assert (
        support.GetOrder(pb.GetOrderRequest(order_id="o-bob"), timeout=5).order.order_id == "o-bob"
    )
    code, details = _code(
        lambda: support.PlaceOrder(pb.PlaceOrderRequest(customer_id="bob"), timeout=5)
    )
    assert code is grpc.StatusCode.PERMISSION_DENIED and "orders.place" in details


def test_a_customer_places_orders_for_themselves_only(server: MeshServer) -> None:
    ada = pb_grpc.OrdersServiceStub(authorized(_channel(server), "customer", "ada"))
    assert ada.PlaceOrder(pb.PlaceOrderRequest(customer_id="ada"), timeout=5).order_id == "o-new"
    code, _ = _code(lambda: ada.PlaceOrder(pb.PlaceOrderRequest(customer_id="bob"), timeout=5))
    assert code is grpc.StatusCode.PERMISSION_DENIED


def test_an_rpc_that_declares_nothing_is_denied_and_health_is_public(server: MeshServer) -> None:
    channel = authorized(_channel(server), "admin")
    call = channel.unary_unary("/test.v1.Undeclared/Call")
    code, details = _code(lambda: call(b"", timeout=5))
    assert code is grpc.StatusCode.PERMISSION_DENIED and "declares no permission" in details
    health = health_pb2_grpc.HealthStub(_channel(server))
    reply = health.Check(health_pb2.HealthCheckRequest(), timeout=5)  # no token at all
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_every_contract_rpc_reads_its_rule() -> None:
    rule = authz.rule_of("/shop.orders.v1.OrdersService/GetOrder")
    assert (rule.permission, rule.resource, rule.resource_type) == (
        "orders.read",
        "order_id",
        "Order",
    )
    assert authz.rule_of("/shop.inventory.v1.InventoryService/GetStock").public
    assert not authz.rule_of("/test.v1.Undeclared/Call").declared


def test_policy_decisions_see_roles_ownership_and_on_behalf_of() -> None:
    policy = authz.Policy(
        ORDERS_POLICY
        + 'permit (principal == Service::"orders", action == Action::"inventory.reserve",'
        ' resource) when { context.on_behalf_of != "" };'
    )
    ada = authz.Principal("ada", ("customer",))
    assert policy.decide(ada, "orders.read", "Order", owned=True).allowed
    assert not policy.decide(ada, "orders.read", "Order", owned=False).allowed
    assert not policy.decide(ada, "orders.search", "Request", owned=True).allowed
    orders_for_ada = authz.Principal("orders", ("service",), service="orders", on_behalf_of="ada")
    assert policy.decide(orders_for_ada, "inventory.reserve", "Reservation", owned=False).allowed
    alone = authz.Principal("orders", ("service",), service="orders")
    assert not policy.decide(alone, "inventory.reserve", "Reservation", owned=False).allowed
    # A user called "orders" is not the service.
    impostor = authz.Principal("orders", ("customer",), on_behalf_of="ada")
    assert not policy.decide(impostor, "inventory.reserve", "Reservation", owned=False).allowed


def test_a_broken_policy_fails_loudly() -> None:
    with pytest.raises(ValueError, match="not a valid Cedar policy"):
        authz.Policy('permit (principal in [Role::"a", Role::"b"], action, resource);')


def test_outgoing_calls_forward_the_caller_or_act_for_a_user() -> None:
    own = StaticCredentials("service-token")
    assert outgoing_metadata([], None) == []
    assert outgoing_metadata([], own) == [("authorization", "Bearer service-token")]
    caller = authz.Principal("ada", ("customer",), token="ada-token")
    with authz.bound(caller, "ipv4:127.0.0.1:1"):
        assert outgoing_metadata([], own) == [("authorization", "Bearer ada-token")]
        with authz.acting_for("bob"):
            assert outgoing_metadata([], own) == [
                ("authorization", "Bearer service-token"),
                ("mesh-on-behalf-of", "bob"),
            ]
    given = [("authorization", "Bearer mine")]
    assert outgoing_metadata(given, own) is given


def test_on_behalf_of_is_honoured_for_services_only(server: MeshServer) -> None:
    verifier = TokenVerifier(TEST_ISSUER.jwks_path.as_uri(), issuer=ISSUER, audience=AUDIENCE)
    checker = authz.Authorizer("inventory", verifier, None)
    service = checker.authenticate(TEST_ISSUER.metadata(service="orders", on_behalf_of="ada"))
    assert service is not None and (service.service, service.on_behalf_of) == ("orders", "ada")
    user = checker.authenticate(TEST_ISSUER.metadata("customer", "eve", on_behalf_of="ada"))
    assert user is not None and (user.service, user.on_behalf_of) == ("", "")


def test_an_audit_entry_refuses_details_that_name_a_secret() -> None:
    from meshkit.audit import AuditEntry

    for key in ("password", "payment_token", "totp_code", "recovery_code", "code", "client-secret"):
        with pytest.raises(ValueError, match="secrets"):
            AuditEntry("x.y", details={key: "v"})
    facts = {"country_code": "FR", "company": "ACME", "recovery_count": "9", "session_id": "s"}
    assert AuditEntry("x.y", details=facts).details == facts
    with pytest.raises(ValueError, match="outcome"):
        AuditEntry("x.y", outcome="MAYBE")
