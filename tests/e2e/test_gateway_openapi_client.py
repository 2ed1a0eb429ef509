"""End to end: a Python client generated from the running gateway's ``/openapi.json`` works.

The document is fetched from the gateway of the whole shop (``shop_mesh``), validated with
openapi-spec-validator, turned into a package by openapi-python-client (``--fail-on-warning``: a
schema it cannot read fails the test), imported from a scratch directory, and used as an app
would: the public stock route without a token, then with a customer's bearer token PlaceOrder,
GetOrder, ListOrderEvents and ListOrders, SearchOrders with support's (a customer's search is a
403), and the problems of a missing token, of a refusal and of an unknown order parsed into the
generated Problem model. ``/docs`` names every operation. Support's and the admin's tokens (stock
is set over gRPC) are minted by the mesh's identity, as `mesh token` does.
"""

from __future__ import annotations

import base64
import importlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest
import requests
from openapi_spec_validator import validate
from support.gateway import Shop
from support.mesh import mesh_tokens

from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc

GENERATOR = str(Path(sys.executable).parent / "openapi-python-client")
PACKAGE = "meshkit_shop_client"  # unlike any installed module, so the import is the generated one
OPERATIONS = {
    "inventory_service": ("get_stock",),
    "orders_service": ("place_order", "get_order", "list_order_events"),
    "order_views_service": ("list_orders", "search_orders"),
}


@dataclass(frozen=True)
class Generated:
    """The generated package: its clients, its models and one module per operation."""

    package: ModuleType
    models: ModuleType
    api: dict[str, ModuleType]

    def client(self, shop: Shop, token: str = "") -> Any:
        """A generated client for the shop's gateway; authenticated when a token is given."""
        options: dict[str, Any] = {"base_url": shop.gateway, "raise_on_unexpected_status": True}
        if token:
            return self.package.AuthenticatedClient(token=token, **options)
        return self.package.Client(**options)


@pytest.fixture(scope="module")
def document(shop_mesh: Shop) -> dict[str, Any]:
    response = requests.get(f"{shop_mesh.gateway}/openapi.json", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    served: dict[str, Any] = response.json()
    return served


@pytest.fixture(scope="module")
def generated(
    document: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Generated]:
    """The client package generated from the served document, imported from a scratch dir."""
    work = tmp_path_factory.mktemp("openapi-client")
    (work / "openapi.json").write_text(json.dumps(document))
    # No post hooks: the default ones run ruff over the output, which is no part of the check.
    (work / "config.json").write_text(
        json.dumps({"package_name_override": PACKAGE, "post_hooks": []})
    )
    made = subprocess.run(
        [
            GENERATOR,
            "generate",
            "--path",
            str(work / "openapi.json"),
            "--output-path",
            str(work / PACKAGE),
            "--meta",
            "none",
            "--config",
            str(work / "config.json"),
            "--fail-on-warning",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=work,
        check=False,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    sys.path.insert(0, str(work))
    try:
        yield Generated(
            importlib.import_module(PACKAGE),
            importlib.import_module(f"{PACKAGE}.models"),
            {
                name: importlib.import_module(f"{PACKAGE}.api.{tag}.{name}")
                for tag, names in OPERATIONS.items()
                for name in names
            },
        )
    finally:
        sys.path.remove(str(work))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


def set_stock(shop: Shop, sku: str, quantity: int) -> None:
    """SetStock over gRPC, as an admin (the only role inventory's policy lets set stock)."""
    with grpc.insecure_channel(f"127.0.0.1:{shop.ports['inventory']}") as channel:
        inventory_pb2_grpc.InventoryServiceStub(channel).SetStock(
            inventory_pb2.SetStockRequest(sku=sku, quantity=quantity),
            timeout=10,
            metadata=mesh_tokens(shop.root).metadata("admin"),
        )


def subject_of(token: str) -> str:
    """The token's ``sub``, read without verifying: the gateway verified it already."""
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return str(claims["sub"])


def test_the_served_document_is_valid_and_docs_name_every_operation(
    shop_mesh: Shop, document: dict[str, Any]
) -> None:
    validate(document)
    assert document["openapi"] == "3.1.0"
    docs = requests.get(f"{shop_mesh.gateway}/docs", timeout=10)
    assert docs.status_code == 200
    assert docs.headers["Content-Type"].startswith("text/html")
    for item in document["paths"].values():
        for operation in item.values():
            assert f'id="op-{operation["operationId"]}"' in docs.text


def test_every_route_works_with_the_generated_client(shop_mesh: Shop, generated: Generated) -> None:
    models, api = generated.models, generated.api
    sku = f"SKU-{uuid.uuid4().hex[:8]}"
    set_stock(shop_mesh, sku, 5)
    _, _, token = shop_mesh.customer()
    anonymous = generated.client(shop_mesh)
    customer = generated.client(shop_mesh, token)

    # GET /v1/stock/{sku}: public.
    stock = api["get_stock"].sync_detailed(sku, client=anonymous)
    assert stock.status_code == 200, stock.content
    assert isinstance(stock.parsed, models.GetStockResponse)
    assert (stock.parsed.sku, stock.parsed.available) == (sku, 5)

    # POST /v1/orders: the customer comes from the token, not from the body.
    body = models.PlaceOrderBody(
        request_id=uuid.uuid4().hex,
        lines=[
            models.OrderLine(
                sku=sku,
                quantity=1,
                unit_price=models.Money(currency_code="EUR", units="12", nanos=0),
            )
        ],
        payment_token="tok_visa",
        shipping_address=models.Address(
            name="Ada Lovelace",
            line1="1 Rue de Rivoli",
            city="Paris",
            postal_code="75001",
            country_code="FR",
        ),
    )
    placed = api["place_order"].sync_detailed(client=customer, body=body)
    assert placed.status_code == 200, placed.content
    assert isinstance(placed.parsed, models.PlaceOrderResponse)
    order_id = placed.parsed.order_id
    consistency = placed.parsed.consistency_token
    assert order_id and consistency
    assert placed.parsed.status == models.OrderStatus.ORDER_STATUS_PENDING

    # GET /v1/orders/{order_id}
    got = api["get_order"].sync_detailed(order_id, client=customer)
    assert got.status_code == 200, got.content
    order = got.parsed.order
    assert order.order_id == order_id
    assert order.customer_id == subject_of(token)
    assert [(line.sku, line.quantity) for line in order.lines] == [(sku, 1)]
    assert order.total.units == "12" and order.total.currency_code == "EUR"
    assert isinstance(order.version, str) and int(order.version) >= 1  # int64 as a string
    assert order.created_at.tzinfo is not None  # a date-time the client parsed

    # GET /v1/orders/{order_id}/events
    events = api["list_order_events"].sync_detailed(order_id, client=customer)
    assert events.status_code == 200, events.content
    assert events.parsed.events[0].type_ == "shop.orders.v1.OrderPlaced"
    assert events.parsed.events[0].version == "1"

    # GET /v1/orders: this customer's orders only, read after the write.
    listed = api["list_orders"].sync_detailed(client=customer, consistency_token=consistency)
    assert listed.status_code == 200, listed.content
    assert order_id in [o.order_id for o in listed.parsed.orders]
    assert {o.customer_id for o in listed.parsed.orders} == {subject_of(token)}

    # GET /v1/orders:search?q=: support's (order_views' policy); a customer's search is a 403.
    refused = api["search_orders"].sync_detailed(
        client=customer, q=order_id, consistency_token=consistency
    )
    assert refused.status_code == 403, refused.content
    assert refused.parsed.code == models.ProblemCode.PERMISSION_DENIED
    support = generated.client(shop_mesh, mesh_tokens(shop_mesh.root).token("support"))
    found = api["search_orders"].sync_detailed(
        client=support, q=order_id, consistency_token=consistency
    )
    assert found.status_code == 200, found.content
    assert order_id in [o.order_id for o in found.parsed.orders]


def test_problems_parse_into_the_generated_model(shop_mesh: Shop, generated: Generated) -> None:
    models, get_order = generated.models, generated.api["get_order"]
    _, _, token = shop_mesh.customer()

    refused = get_order.sync_detailed("no-such-order", client=generated.client(shop_mesh))
    assert refused.status_code == 401
    assert isinstance(refused.parsed, models.Problem)
    assert refused.parsed.code == models.ProblemCode.UNAUTHENTICATED
    assert refused.parsed.request_id == refused.headers["X-Request-Id"]

    # A customer may read its own orders only, and one that does not exist is not its own.
    unknown = f"no-such-order-{uuid.uuid4().hex[:6]}"
    denied = get_order.sync_detailed(unknown, client=generated.client(shop_mesh, token))
    assert denied.status_code == 403
    assert isinstance(denied.parsed, models.Problem)
    assert denied.parsed.code == models.ProblemCode.PERMISSION_DENIED
    assert "orders.read" in denied.parsed.detail

    support = mesh_tokens(shop_mesh.root).token("support")
    missing = get_order.sync_detailed(unknown, client=generated.client(shop_mesh, support))
    assert missing.status_code == 404
    assert isinstance(missing.parsed, models.Problem)
    assert missing.parsed.code == models.ProblemCode.NOT_FOUND
    assert missing.parsed.status == 404
