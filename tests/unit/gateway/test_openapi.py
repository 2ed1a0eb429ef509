"""The gateway's OpenAPI document and /docs page: valid OpenAPI 3.1 (openapi-spec-validator), one
operation per route of the shop's contracts with the parameters and bodies the transcoder reads,
protojson's schema rules (int64 as strings, enums by name, maps, oneofs, well-known types) on a
contract made for the test, the token's subject kept out of client inputs, public routes marked,
and a docs page that names every operation and loads nothing from elsewhere."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from google.api import annotations_pb2, http_pb2
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    struct_pb2,
    wrappers_pb2,
)
from openapi_spec_validator import validate

from gateway.openapi import GatewayOperation, docs_page, openapi_document
from gateway.routing import RouteTable, installed_services, routes_of
from mesh.api.v1 import access_pb2

ISSUER = "http://127.0.0.1:8090"
SERVER = "http://127.0.0.1:8080"


@pytest.fixture(scope="module")
def table() -> RouteTable:
    return RouteTable.from_contracts()


@pytest.fixture(scope="module")
def doc(table: RouteTable) -> dict[str, Any]:
    return openapi_document(table, server_url=SERVER, issuer=ISSUER + "/")


def schema(doc: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    """The component a ``$ref`` points at."""
    prefix = "#/components/schemas/"
    assert ref["$ref"].startswith(prefix), ref
    found: dict[str, Any] = doc["components"]["schemas"][ref["$ref"].removeprefix(prefix)]
    return found


def params(operation: dict[str, Any], where: str) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in operation.get("parameters", []) if p["in"] == where}


# --- the shop's contracts ----------------------------------------------------------------------


def test_the_document_is_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    validate(doc)  # raises OpenAPIValidationError naming the place
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["title"] == "meshkit shop API"
    assert doc["info"]["version"]
    assert doc["servers"] == [{"url": SERVER}]
    json.dumps(doc)  # served as it is


def test_every_route_is_an_operation_named_after_its_rpc(
    doc: dict[str, Any], table: RouteTable
) -> None:
    expected = {
        ("get", "/v1/stock/{sku}"): "GetStock",
        ("put", "/v1/stock/{sku}"): "SetStock",
        ("post", "/v1/orders"): "PlaceOrder",
        ("get", "/v1/orders"): "ListOrders",
        ("get", "/v1/orders:search"): "SearchOrders",
        ("get", "/v1/orders/{order_id}"): "GetOrder",
        ("get", "/v1/orders/{order_id}/events"): "ListOrderEvents",
    }
    found = {
        (method, path): op["operationId"]
        for path, item in doc["paths"].items()
        for method, op in item.items()
    }
    assert found.items() >= expected.items()
    assert len(found) == len(table.routes)
    for route in table.routes:
        op = doc["paths"][route.template][route.http_method.lower()]
        assert op["operationId"] == route.method.name
        assert op["tags"] == [route.method.containing_service.name]
        assert op["x-grpc-method"] == route.rpc_path
    assert {t["name"] for t in doc["tags"]} == {
        r.method.containing_service.name for r in table.routes
    }


def test_get_order_has_its_path_variable_and_the_other_fields_as_query_parameters(
    doc: dict[str, Any],
) -> None:
    op = doc["paths"]["/v1/orders/{order_id}"]["get"]
    assert params(op, "path") == {
        "order_id": {
            "name": "order_id",
            "in": "path",
            "required": True,
            "schema": {"type": "string"},
        }
    }
    query = params(op, "query")
    assert set(query) == {"asOf"}
    assert query["asOf"]["schema"] == {"type": "string", "format": "date-time"}
    assert "requestBody" not in op
    ok = op["responses"]["200"]["content"]["application/json"]["schema"]
    order = schema(doc, schema(doc, ok)["properties"]["order"])
    assert order["properties"]["createdAt"] == {"type": "string", "format": "date-time"}
    assert order["properties"]["lines"]["type"] == "array"
    assert "security" not in op  # the document's default: a bearer token


def test_search_orders_takes_q_as_its_json_name_says(doc: dict[str, Any]) -> None:
    op = doc["paths"]["/v1/orders:search"]["get"]
    assert set(params(op, "query")) == {"q", "pageSize", "pageToken", "consistencyToken"}
    assert params(op, "query")["pageSize"]["schema"] == {"type": "integer", "format": "int32"}


def test_int64_is_a_string_as_protojson_writes_it(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    for field in (
        schemas["Order"]["properties"]["version"],
        schemas["Money"]["properties"]["units"],
    ):
        assert field["type"] == "string"
        assert field["format"] == "int64"
    assert schemas["Money"]["properties"]["nanos"] == {"type": "integer", "format": "int32"}
    assert schemas["OrderEvent"]["properties"]["data"]["type"] == "object"  # a Struct


def test_enums_are_their_value_names(doc: dict[str, Any]) -> None:
    status = doc["components"]["schemas"]["OrderStatus"]
    assert status["type"] == "string"
    assert status["enum"] == [
        "ORDER_STATUS_UNSPECIFIED",
        "ORDER_STATUS_PENDING",
        "ORDER_STATUS_CONFIRMED",
        "ORDER_STATUS_CANCELLED",
    ]
    assert doc["components"]["schemas"]["Order"]["properties"]["status"] == {
        "$ref": "#/components/schemas/OrderStatus"
    }
    listing = doc["paths"]["/v1/orders"]["get"]
    assert params(listing, "query")["status"]["schema"] == {
        "$ref": "#/components/schemas/OrderStatus"
    }


def test_the_callers_subject_is_no_client_input(doc: dict[str, Any]) -> None:
    place = doc["paths"]["/v1/orders"]["post"]
    body = schema(doc, place["requestBody"]["content"]["application/json"]["schema"])
    assert "customerId" not in body["properties"]
    assert {"requestId", "lines", "paymentToken", "shippingAddress"} <= set(body["properties"])
    assert "customerId" in place["description"]
    assert "parameters" not in place  # body "*": every field is in the body
    listing = doc["paths"]["/v1/orders"]["get"]
    assert "customerId" not in params(listing, "query")
    assert "customer_id" not in params(listing, "query")
    assert "customerId" in listing["description"]
    # Replies still carry it: only inputs lose it.
    assert "customerId" in doc["components"]["schemas"]["Order"]["properties"]


def test_a_body_star_route_leaves_its_path_variables_out_of_the_body(doc: dict[str, Any]) -> None:
    op = doc["paths"]["/v1/stock/{sku}"]["put"]
    body = schema(doc, op["requestBody"]["content"]["application/json"]["schema"])
    assert set(body["properties"]) == {"quantity"}
    assert set(params(op, "path")) == {"sku"}
    assert op["x-roles"] == ["admin"]
    assert "admin" in op["description"]


def test_public_routes_need_no_token_and_the_others_a_bearer_one(doc: dict[str, Any]) -> None:
    get_stock = doc["paths"]["/v1/stock/{sku}"]["get"]
    assert get_stock["security"] == []
    assert "401" not in get_stock["responses"]
    assert doc["security"] == [{"bearerAuth": []}]
    assert "security" not in doc["paths"]["/v1/stock/{sku}"]["put"]
    assert "401" in doc["paths"]["/v1/stock/{sku}"]["put"]["responses"]
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": schemes["bearerAuth"]["description"],
    }
    code = schemes["oauth2"]["flows"]["authorizationCode"]
    assert code["authorizationUrl"] == f"{ISSUER}/authorize"
    assert code["tokenUrl"] == f"{ISSUER}/token"


def test_errors_are_problems(doc: dict[str, Any]) -> None:
    op = doc["paths"]["/v1/orders/{order_id}"]["get"]
    expected = {"200", "400", "401", "403", "404", "429", "503", "504", "default"}
    assert set(op["responses"]) == expected
    responses = doc["components"]["responses"]
    for status in expected - {"200"}:
        ref = op["responses"][status]["$ref"]
        response = responses[ref.rsplit("/", 1)[-1]]
        assert response["content"] == {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        }
    problem = doc["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "detail", "instance", "code", "requestId", "traceId"} <= set(
        problem["properties"]
    )
    assert "Retry-After" in responses["TooManyRequests"]["headers"]
    assert "RateLimit" in op["responses"]["200"]["headers"]


def test_the_docs_page_names_every_operation_and_loads_nothing(doc: dict[str, Any]) -> None:
    page = docs_page(doc)
    assert page.startswith("<!doctype html>")
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert f'id="op-{op["operationId"]}"' in page
            assert f'{method.upper()}</span> <span class="path">{path}</span>' in page
    for name in doc["components"]["schemas"]:
        assert f'id="schema-{name}"' in page
    assert "customerId" in page
    assert "bearerAuth" in page and f"{ISSUER}/authorize" in page
    # Offline-safe: no script, no stylesheet, image or font from anywhere.
    assert not re.search(r"<script|<link|<img|<iframe|src=|@import|url\(", page, re.IGNORECASE)
    links = re.findall(r'href="([^"]*)"', page)
    assert all(link.startswith("#") or link == "openapi.json" for link in links), links


def test_the_docs_page_escapes_what_the_document_says() -> None:
    page = docs_page(
        {
            "openapi": "3.1.0",
            "info": {"title": "<script>alert(1)</script>", "version": "1"},
            "paths": {},
        }
    )
    assert "<script>" not in page
    assert "&lt;script&gt;" in page


# --- a contract made for the test: the corners the shop's protos do not reach ------------------


def _contract() -> RouteTable:
    """Services over two packages with every kind of field, added once to the default pool."""
    pool = descriptor_pool.Default()
    for dependency in (duration_pb2, struct_pb2, wrappers_pb2):  # in the pool once imported
        assert dependency.DESCRIPTOR.pool is pool
    try:
        pool.FindFileByName("gatewaytest/openapi/a.proto")
    except KeyError:
        for proto in (_file_b(), _file_a()):
            pool.AddSerializedFile(proto.SerializeToString())
    services = [
        pool.FindServiceByName("gatewaytest.a.v1.Things"),
        pool.FindServiceByName("gatewaytest.b.v1.Things"),
    ]
    return RouteTable(routes_of(services))


_T = descriptor_pb2.FieldDescriptorProto


def _field(
    name: str,
    number: int,
    kind: descriptor_pb2.FieldDescriptorProto.Type.ValueType,
    *,
    type_name: str = "",
    repeated: bool = False,
    oneof: int | None = None,
    json_name: str = "",
) -> descriptor_pb2.FieldDescriptorProto:
    field = _T(
        name=name,
        number=number,
        type=kind,
        label=_T.LABEL_REPEATED if repeated else _T.LABEL_OPTIONAL,
    )
    if type_name:
        field.type_name = type_name
    if oneof is not None:
        field.oneof_index = oneof
    if json_name:
        field.json_name = json_name
    return field


def _method(
    name: str, request: str, reply: str, rule: http_pb2.HttpRule, access: access_pb2.Access
) -> descriptor_pb2.MethodDescriptorProto:
    method = descriptor_pb2.MethodDescriptorProto(name=name, input_type=request, output_type=reply)
    method.options.Extensions[annotations_pb2.http].CopyFrom(rule)
    method.options.Extensions[access_pb2.access].CopyFrom(access)
    return method


def _file_b() -> descriptor_pb2.FileDescriptorProto:
    """gatewaytest.b.v1: a message named like one of package a, and a service named alike."""
    b = descriptor_pb2.FileDescriptorProto(
        name="gatewaytest/openapi/b.proto",
        package="gatewaytest.b.v1",
        syntax="proto3",
        dependency=["google/api/annotations.proto", "mesh/api/v1/access.proto"],
    )
    b.message_type.add(name="Thing").field.append(_field("label", 1, _T.TYPE_STRING))
    b.service.add(name="Things").method.append(
        _method(
            "GetThing",  # the same RPC name as package a's: the operationId must differ
            ".gatewaytest.b.v1.Thing",
            ".gatewaytest.b.v1.Thing",
            http_pb2.HttpRule(get="/v1/b/things/{label}"),
            access_pb2.Access(public=True),
        )
    )
    return b


def _file_a() -> descriptor_pb2.FileDescriptorProto:
    a = descriptor_pb2.FileDescriptorProto(
        name="gatewaytest/openapi/a.proto",
        package="gatewaytest.a.v1",
        syntax="proto3",
        dependency=[
            "google/api/annotations.proto",
            "google/protobuf/duration.proto",
            "google/protobuf/struct.proto",
            "google/protobuf/wrappers.proto",
            "mesh/api/v1/access.proto",
            "gatewaytest/openapi/b.proto",
        ],
    )
    color = a.enum_type.add(name="Color")
    color.value.add(name="COLOR_UNSPECIFIED", number=0)
    color.value.add(name="COLOR_RED", number=1)

    thing = a.message_type.add(name="Thing")
    entry = thing.nested_type.add(name="TagsEntry")
    entry.options.map_entry = True
    entry.field.extend([_field("key", 1, _T.TYPE_STRING), _field("value", 2, _T.TYPE_INT64)])
    thing.nested_type.add(name="Part").field.append(_field("weight", 1, _T.TYPE_DOUBLE))
    thing.oneof_decl.add(name="owner")
    thing.field.extend(
        [
            _field("name", 1, _T.TYPE_STRING),
            _field("count", 2, _T.TYPE_UINT64),
            _field("size", 3, _T.TYPE_UINT32),
            _field("blob", 4, _T.TYPE_BYTES),
            _field("color", 5, _T.TYPE_ENUM, type_name=".gatewaytest.a.v1.Color"),
            _field(
                "tags", 6, _T.TYPE_MESSAGE, type_name=".gatewaytest.a.v1.Thing.TagsEntry",
                repeated=True,
            ),
            _field("parts", 7, _T.TYPE_MESSAGE, type_name=".gatewaytest.a.v1.Thing.Part",
                   repeated=True),
            _field("person", 8, _T.TYPE_STRING, oneof=0),
            _field("team", 9, _T.TYPE_STRING, oneof=0),
            _field("ttl", 10, _T.TYPE_MESSAGE, type_name=".google.protobuf.Duration"),
            _field("extra", 11, _T.TYPE_MESSAGE, type_name=".google.protobuf.Value"),
            _field("limit", 12, _T.TYPE_MESSAGE, type_name=".google.protobuf.Int64Value"),
            _field("other", 13, _T.TYPE_MESSAGE, type_name=".gatewaytest.b.v1.Thing"),
            _field("parent", 14, _T.TYPE_MESSAGE, type_name=".gatewaytest.a.v1.Thing"),
            _field("ratio", 15, _T.TYPE_FLOAT, json_name="r"),
            _field("flags", 16, _T.TYPE_BOOL, repeated=True),
        ]
    )  # fmt: skip

    update = a.message_type.add(name="UpdateThingRequest")
    update.field.extend(
        [
            _field("name", 1, _T.TYPE_STRING),
            _field("thing", 2, _T.TYPE_MESSAGE, type_name=".gatewaytest.a.v1.Thing"),
            _field("owner", 3, _T.TYPE_STRING),
            _field("dry_run", 4, _T.TYPE_BOOL),
        ]
    )
    get = a.message_type.add(name="GetThingRequest")
    get.field.extend(
        [
            _field("name", 1, _T.TYPE_STRING),
            _field("filter", 2, _T.TYPE_MESSAGE, type_name=".gatewaytest.a.v1.Thing"),
            _field("colors", 3, _T.TYPE_ENUM, type_name=".gatewaytest.a.v1.Color", repeated=True),
        ]
    )
    rule = http_pb2.HttpRule(get="/v1/{name=shelves/*/things/*}")
    rule.additional_bindings.add(get="/v1/things/{name}")
    a.service.add(name="Things").method.extend(
        [
            _method(
                "UpdateThing",
                ".gatewaytest.a.v1.UpdateThingRequest",
                ".gatewaytest.a.v1.Thing",
                http_pb2.HttpRule(patch="/v1/things/{name}", body="thing"),
                access_pb2.Access(subject_field="owner"),
            ),
            _method(
                "GetThing",
                ".gatewaytest.a.v1.GetThingRequest",
                ".gatewaytest.a.v1.Thing",
                rule,
                access_pb2.Access(),
            ),
        ]
    )
    return a


@pytest.fixture(scope="module")
def made() -> dict[str, Any]:
    return openapi_document(_contract(), server_url="/", issuer=ISSUER)


def test_the_made_contract_is_valid_openapi_too(made: dict[str, Any]) -> None:
    validate(made)
    docs_page(made)


def test_protojson_scalars_maps_and_well_known_types(made: dict[str, Any]) -> None:
    schemas = made["components"]["schemas"]
    # Two packages' Thing: both get their full names.
    assert {"gatewaytest.a.v1.Thing", "gatewaytest.b.v1.Thing", "Color"} <= set(schemas)
    thing = schemas["gatewaytest.a.v1.Thing"]["properties"]
    assert thing["count"]["type"] == "string" and thing["count"]["format"] == "uint64"
    assert thing["size"] == {"type": "integer", "minimum": 0, "maximum": 4294967295}
    assert thing["blob"] == {"type": "string", "contentEncoding": "base64"}
    assert thing["color"] == {"$ref": "#/components/schemas/Color"}
    assert thing["tags"]["type"] == "object"
    assert thing["tags"]["additionalProperties"]["type"] == "string"  # map<string, int64>
    assert thing["tags"]["additionalProperties"]["format"] == "int64"
    assert thing["parts"] == {"type": "array", "items": {"$ref": "#/components/schemas/Thing.Part"}}
    assert schemas["Thing.Part"]["properties"]["weight"] == {"type": "number", "format": "double"}
    assert thing["ttl"]["type"] == "string" and thing["ttl"]["pattern"].endswith("s$")
    assert thing["extra"] == {}  # Value: any JSON
    assert thing["limit"]["type"] == "string"  # Int64Value: its scalar, as a string
    assert thing["other"] == {"$ref": "#/components/schemas/gatewaytest.b.v1.Thing"}
    assert thing["parent"] == {"$ref": "#/components/schemas/gatewaytest.a.v1.Thing"}
    assert thing["r"] == {"type": "number", "format": "float"}  # json_name wins
    assert thing["flags"] == {"type": "array", "items": {"type": "boolean"}}
    assert not any("TagsEntry" in name for name in schemas)


def test_a_oneof_lists_its_fields_and_says_only_one_is_set(made: dict[str, Any]) -> None:
    thing = made["components"]["schemas"]["gatewaytest.a.v1.Thing"]
    assert "person" in thing["properties"] and "team" in thing["properties"]
    assert "oneof `owner`" in thing["properties"]["person"]["description"]
    assert "At most one of person, team" in thing["description"]


def test_a_body_field_route(made: dict[str, Any]) -> None:
    op = made["paths"]["/v1/things/{name}"]["patch"]
    assert op["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/gatewaytest.a.v1.Thing"
    }
    assert set(params(op, "path")) == {"name"}
    # Not the body field, not the path variable, not the subject field: only dryRun is left.
    assert set(params(op, "query")) == {"dryRun"}
    assert params(op, "query")["dryRun"]["schema"] == {"type": "boolean"}


def test_nested_and_repeated_query_parameters(made: dict[str, Any]) -> None:
    op = made["paths"]["/v1/{name}"]["get"]
    query = params(op, "query")
    assert query["colors"]["schema"] == {
        "type": "array",
        "items": {"$ref": "#/components/schemas/Color"},
    }
    assert query["filter.count"]["schema"]["type"] == "string"
    assert query["filter.ttl"]["schema"]["type"] == "string"
    assert query["filter.other.label"]["schema"] == {"type": "string"}
    # A message already on the way ends the recursion (Thing.parent is a Thing).
    for absent in (
        "filter.parent.name",
        "filter.tags",
        "filter.parts",
        "filter.extra",
        "filter.parts.weight",
    ):
        assert absent not in query
    assert "slashes" in params(op, "path")["name"]["description"]


def test_operation_ids_stay_unique(made: dict[str, Any]) -> None:
    ids = [op["operationId"] for item in made["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids)) == 4
    assert "GetThing" in ids and "UpdateThing" in ids
    public = made["paths"]["/v1/b/things/{label}"]["get"]
    assert public["security"] == []
    assert public["tags"] == ["gatewaytest.b.v1.Things"]  # two services named Things


def test_installed_contracts_are_what_the_table_serves() -> None:
    # The document covers exactly the installed contracts' routes (nothing hand-listed).
    routes = routes_of(installed_services())
    doc = openapi_document(RouteTable(routes), server_url=SERVER, issuer=ISSUER)
    assert sum(len(item) for item in doc["paths"].values()) == len(routes)


# --- the gateway's own routes --------------------------------------------------------------------


def details_operation() -> GatewayOperation:
    """GET /v1/orders/{order_id}/details as gateway.aggregate answers it."""
    from shop.order_views.v1 import order_views_pb2
    from shop.orders.v1 import orders_pb2
    from shop.payments.v1 import payments_pb2

    return GatewayOperation(
        "GET",
        "/v1/orders/{order_id}/details",
        "GetOrderDetails",
        "OrdersService",
        "The order, its events, its view and its payment, asked at once.",
        {
            "orderId": {"type": "string"},
            "order": orders_pb2.Order.DESCRIPTOR,
            "events": orders_pb2.ListOrderEventsResponse.DESCRIPTOR.fields_by_name["events"],
            "view": order_views_pb2.OrderView.DESCRIPTOR,
            "payment": payments_pb2.Payment.DESCRIPTOR,
            "missing": {"type": "array", "items": {"type": "object"}},
        },
    )


def test_the_gateways_own_routes_are_documented_too(table: RouteTable) -> None:
    doc = openapi_document(table, server_url=SERVER, issuer=ISSUER, own=[details_operation()])
    validate(doc)
    op = doc["paths"]["/v1/orders/{order_id}/details"]["get"]
    assert op["operationId"] == "GetOrderDetails"
    assert op["tags"] == ["OrdersService"]
    assert set(params(op, "path")) == {"order_id"}
    assert "security" not in op and "401" in op["responses"]
    reply = schema(doc, op["responses"]["200"]["content"]["application/json"]["schema"])
    assert reply["properties"]["order"] == {"$ref": "#/components/schemas/Order"}
    assert reply["properties"]["events"] == {
        "type": "array",
        "items": {"$ref": "#/components/schemas/OrderEvent"},
    }
    assert reply["properties"]["orderId"] == {"type": "string"}
    assert "Payment" in doc["components"]["schemas"]  # reachable only from this route
    assert 'id="op-GetOrderDetails"' in docs_page(doc)
