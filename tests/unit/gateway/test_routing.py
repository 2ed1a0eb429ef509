"""Routes from the contracts: path templates, matching, transcoding and the access option."""

from __future__ import annotations

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool

from gateway.routing import RouteError, RouteTable, compile_template, routes_of
from gateway.transcoding import BadRequest, build_request, to_json
from shop.orders.v1 import orders_pb2


@pytest.fixture(scope="module")
def table() -> RouteTable:
    return RouteTable.from_contracts()


def test_the_contracts_annotated_routes_are_all_served(table: RouteTable) -> None:
    assert {r.name for r in table.routes} == {
        "POST /v1/orders",
        "GET /v1/orders/{order_id}",
        "GET /v1/orders/{order_id}/events",
        "GET /v1/orders",
        "GET /v1/orders:search",
        "GET /v1/stock/{sku}",
        "PUT /v1/stock/{sku}",
    }
    by_name = {r.name: r for r in table.routes}
    assert by_name["GET /v1/stock/{sku}"].public
    assert not by_name["GET /v1/orders"].public  # private unless declared
    assert by_name["PUT /v1/stock/{sku}"].roles == ("admin",)
    assert by_name["POST /v1/orders"].subject_field == "customer_id"
    assert by_name["GET /v1/orders"].rpc_path == "/shop.order_views.v1.OrderViewsService/ListOrders"


def test_matching_prefers_the_custom_verb_and_reports_allowed_methods(table: RouteTable) -> None:
    route, values = table.match("GET", "/v1/orders:search")  # type: ignore[misc]
    assert route.method.name == "SearchOrders" and values == {}
    route, values = table.match("GET", "/v1/orders/o-1/events")  # type: ignore[misc]
    assert route.method.name == "ListOrderEvents" and values == {"order_id": "o-1"}
    assert table.match("DELETE", "/v1/stock/x") == ["GET", "PUT"]
    assert table.match("GET", "/v1/nothing") == []


@pytest.mark.parametrize(
    ("template", "path", "expected"),
    [
        ("/v1/{name=shelves/*}/books", "/v1/shelves/s1/books", {"name": "shelves/s1"}),
        ("/v1/{name=**}", "/v1/a/b/c", {"name": "a/b/c"}),
        ("/v1/{a.b}/x:run", "/v1/7/x:run", {"a.b": "7"}),
        ("/v1/*/fixed", "/v1/anything/fixed", {}),
    ],
)
def test_path_templates_follow_google_api_http(
    template: str, path: str, expected: dict[str, str]
) -> None:
    pattern, variables = compile_template(template)
    found = pattern.fullmatch(path)
    assert found is not None
    assert {v: found.group(f"v{i}") for i, v in enumerate(variables)} == expected


def test_an_annotation_naming_no_field_is_refused_at_start() -> None:
    file = descriptor_pb2.FileDescriptorProto(
        name="bad_route.proto",
        package="test.bad.v1",
        dependency=["google/api/annotations.proto"],
    )
    file.message_type.add(name="Req").field.add(
        name="id", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING
    )
    method = file.service.add(name="BadService").method.add(
        name="Get", input_type=".test.bad.v1.Req", output_type=".test.bad.v1.Req"
    )
    from google.api import annotations_pb2, http_pb2

    method.options.Extensions[annotations_pb2.http].CopyFrom(
        http_pb2.HttpRule(get="/v1/things/{thing_id}")
    )
    pool = descriptor_pool.DescriptorPool()
    for dependency in (
        "google/protobuf/descriptor.proto",
        "google/api/http.proto",
        "google/api/annotations.proto",
    ):
        source = descriptor_pool.Default().FindFileByName(dependency)
        proto = descriptor_pb2.FileDescriptorProto()
        source.CopyToProto(proto)
        pool.Add(proto)
    pool.Add(file)
    built = pool.FindFileByName("bad_route.proto")
    with pytest.raises(RouteError, match="path variable 'thing_id' is not a field"):
        routes_of([built.services_by_name["BadService"]])


def route(table: RouteTable, name: str):  # type: ignore[no-untyped-def]
    return next(r for r in table.routes if r.name == name)


def test_the_body_query_and_path_make_the_request(table: RouteTable) -> None:
    place = route(table, "POST /v1/orders")
    request = build_request(
        place,
        {},
        {},
        b'{"requestId": "r1", "customer_id": "mallory", "paymentToken": "tok_visa",'
        b' "lines": [{"sku": "A", "quantity": 2, "unitPrice": {"currencyCode": "EUR",'
        b' "units": "3"}}]}',
        subject="u-123",
    )
    assert isinstance(request, orders_pb2.PlaceOrderRequest)
    assert request.customer_id == "u-123"  # the token's subject, never the body's
    assert (request.request_id, request.lines[0].unit_price.units) == ("r1", 3)
    listing = route(table, "GET /v1/orders")
    shaped = build_request(
        listing, {}, {"status": ["ORDER_STATUS_CONFIRMED"], "pageSize": ["5"]}, b"", subject="u"
    )
    assert to_json(shaped) == {
        "customerId": "u",
        "status": "ORDER_STATUS_CONFIRMED",
        "pageSize": 5,
    }
    search = build_request(route(table, "GET /v1/orders:search"), {}, {"q": ["ada"]}, b"")
    assert search.query == "ada"  # type: ignore[attr-defined]
    get = build_request(
        route(table, "GET /v1/orders/{order_id}"),
        {"order_id": "o-1"},
        {"asOf": ["2026-01-02T03:04:05Z"]},
        b"",
    )
    assert get.order_id == "o-1" and get.as_of.seconds == 1767323045  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("name", "path", "query", "body", "message"),
    [
        ("POST /v1/orders", {}, {}, b"{not json", "the body is not JSON"),
        ("POST /v1/orders", {}, {}, b"[1, 2]", "must be a JSON object"),
        ("POST /v1/orders", {}, {}, b'{"nonsense": 1}', "nonsense"),
        ("POST /v1/orders", {}, {"paymentToken": ["x"]}, b'{"paymentToken": "y"}', "set by"),
        ("GET /v1/orders", {}, {"pageSize": ["many"]}, b"", "pageSize"),
        ("GET /v1/orders", {}, {"nope": ["1"]}, b"", "nope: is not a field"),
        ("GET /v1/orders", {}, {"pageSize": ["1", "2"]}, b"", "more than once"),
        ("GET /v1/stock/{sku}", {"sku": "A"}, {}, b'{"x": 1}', "takes no body"),
    ],
)
def test_bad_requests_name_what_is_wrong(
    table: RouteTable,
    name: str,
    path: dict[str, str],
    query: dict[str, list[str]],
    body: bytes,
    message: str,
) -> None:
    with pytest.raises(BadRequest, match=message):
        build_request(route(table, name), path, query, body, subject="u")
