"""Bad input at order_views' gRPC edge (issue 20), through the real servicers on a real server:
no INTERNAL, every refusal an INVALID_ARGUMENT naming its field with a bounded message, and a
consistency wait that ends before the caller's deadline."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from unit.order_views.grpc_server import serving
from unit.order_views.shop_events import Projection, order_life

from mesh.projections.v1 import projections_pb2, projections_pb2_grpc
from meshkit.service import binding
from order_views.adapters.copies import SqliteCopies
from order_views.app.paging import encode_token
from order_views.app.progress import Progress
from order_views.app.rebuild import Rebuilder
from order_views.entrypoints.admin import ProjectionAdminServicer
from shop.order_views.v1 import order_views_pb2 as pb
from shop.order_views.v1 import order_views_pb2_grpc as pb_grpc

Served = tuple[Projection, pb_grpc.OrderViewsServiceStub]
LONG = "x" * 20_000  # past grpcio's 16 KiB metadata limit if a message repeated it


def refusal(call: object, request: object, timeout: float = 5.0) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=timeout)  # type: ignore[operator]
    return caught.value


def violated_fields(error: grpc.RpcError) -> list[str]:
    """The fields a google.rpc.BadRequest detail of ``error`` names."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, f"{error.code()}: {error.details()}"
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    return [v.field for v in bad_request.field_violations]


def assert_invalid(error: grpc.RpcError, field: str) -> None:
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, f"{error.code()}: {error.details()}"
    assert violated_fields(error) == [field]
    assert len(str(error.details())) < 300, str(error.details())[:400]


@pytest.fixture
def orders(served: Served) -> Served:
    copy, stub = served
    for n in range(3):
        for _, _, fact in order_life(f"o-{n}", customer="c-1", sku="mug-blue", at=n):
            copy.apply(fact)
    return copy, stub


# A valid fingerprint (the listing's own scope) around a cursor the read model cannot use.
FORGED_LIST = [["x"], [1, 2, 3], [10**30, "o-1"], ["when", "o-1"], [1.5, ["o-1"]], [None, None]]
FORGED_SEARCH = [["x", 1], [1, 2, 3], [-1.0, 10**30], [-1.0, "x"], [float("inf"), 1], [[], 1]]


@pytest.mark.parametrize("cursor", FORGED_LIST, ids=[repr(c)[:20] for c in FORGED_LIST])
def test_a_forged_list_cursor_is_invalid_argument(orders: Served, cursor: list[object]) -> None:
    _, stub = orders
    token = encode_token(("list", "c-1", ""), cursor)
    error = refusal(stub.ListOrders, pb.ListOrdersRequest(customer_id="c-1", page_token=token))
    assert_invalid(error, "page_token")


@pytest.mark.parametrize("cursor", FORGED_SEARCH, ids=[repr(c)[:20] for c in FORGED_SEARCH])
def test_a_forged_search_cursor_is_invalid_argument(orders: Served, cursor: list[object]) -> None:
    _, stub = orders
    token = encode_token(("search", "mug"), cursor)
    error = refusal(stub.SearchOrders, pb.SearchOrdersRequest(query="mug", page_token=token))
    assert_invalid(error, "page_token")


@pytest.mark.parametrize("query", ["mug\x00blue", "\x00", "mug\x00", '"\x00"', "mug\x07\x1f"])
def test_control_characters_in_a_query_separate_words(orders: Served, query: str) -> None:
    _, stub = orders
    found = stub.SearchOrders(pb.SearchOrdersRequest(query=query), timeout=5).orders
    expected = [] if query in ("\x00", '"\x00"') else ["o-0", "o-1", "o-2"]
    assert sorted(o.order_id for o in found) == expected


def test_an_unknown_status_is_refused_not_dropped(orders: Served) -> None:
    _, stub = orders
    error = refusal(stub.ListOrders, pb.ListOrdersRequest(customer_id="c-1", status=99))
    assert_invalid(error, "status")


def test_a_consistency_wait_ends_before_a_deadline_of_ten_seconds(orders: Served) -> None:
    # grpc-timeout keeps 3 significant figures, rounded up: a 10.01 s deadline reaches the
    # server as 10.1 s. The wait must still end, with FAILED_PRECONDITION, before the caller's.
    _, stub = orders
    request = pb.GetOrderViewRequest(order_id="o-1", consistency_token="o-1@99")
    started = time.monotonic()
    error = refusal(stub.GetOrderView, request, timeout=10.01)
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION, (
        f"{error.code()} after {time.monotonic() - started:.2f}s: {error.details()}"
    )


def test_a_failed_consistency_wait_quotes_a_bounded_order_id(orders: Served) -> None:
    _, stub = orders
    token = "o" * 290 + "@5"
    error = refusal(
        stub.GetOrderView, pb.GetOrderViewRequest(order_id="o-1", consistency_token=token), 0.5
    )
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "o" * 100 not in str(error.details()), str(error.details())[:400]


# Every string field of order_views' requests, past its documented limit.
TOO_LONG = [
    ("ListOrders", pb.ListOrdersRequest(customer_id=LONG), "customer_id"),
    ("ListOrders", pb.ListOrdersRequest(page_token=LONG), "page_token"),
    ("ListOrders", pb.ListOrdersRequest(consistency_token=LONG), "consistency_token"),
    ("SearchOrders", pb.SearchOrdersRequest(query=LONG), "query"),
    ("SearchOrders", pb.SearchOrdersRequest(query="mug", page_token=LONG), "page_token"),
    (
        "SearchOrders",
        pb.SearchOrdersRequest(query="mug", consistency_token=LONG),
        "consistency_token",
    ),
    ("GetOrderView", pb.GetOrderViewRequest(order_id=LONG), "order_id"),
    (
        "GetOrderView",
        pb.GetOrderViewRequest(order_id="o-1", consistency_token=LONG),
        "consistency_token",
    ),
]


@pytest.mark.parametrize(
    ("method", "request_", "field"), TOO_LONG, ids=[f"{m}.{f}" for m, _, f in TOO_LONG]
)
def test_every_string_field_is_capped(
    orders: Served, method: str, request_: object, field: str
) -> None:
    _, stub = orders
    assert_invalid(refusal(getattr(stub, method), request_), field)


@pytest.fixture
def admin(tmp_path: Path) -> Iterator[projections_pb2_grpc.ProjectionAdminServiceStub]:
    """The ProjectionAdminService over copies whose consumers never see an event."""

    class Idle:
        def run_once(self, timeout: float = 1.0) -> int:
            time.sleep(min(timeout, 0.01))
            return 0

        def close(self) -> None:
            pass

    class WholeHistory:
        def starts(self) -> dict[tuple[str, int], int]:
            return {}

    progress = Progress()
    copies = SqliteCopies(tmp_path / "views.db", lambda db, group, replay=False: Idle(), progress)
    rebuilder = Rebuilder(copies, progress, WholeHistory())
    servicer = ProjectionAdminServicer(rebuilder)
    add = projections_pb2_grpc.add_ProjectionAdminServiceServicer_to_server
    try:
        with serving(binding(servicer, add)) as channel:
            yield projections_pb2_grpc.ProjectionAdminServiceStub(channel)
    finally:
        rebuilder.close()
        copies.close()


def first_answer(stub: projections_pb2_grpc.ProjectionAdminServiceStub, name: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        next(iter(stub.Rebuild(projections_pb2.RebuildRequest(projection=name), timeout=5)))
    return caught.value


def test_a_long_projection_name_is_invalid_argument(
    admin: projections_pb2_grpc.ProjectionAdminServiceStub,
) -> None:
    assert_invalid(first_answer(admin, LONG), "projection")


def test_an_unknown_projection_is_quoted_not_repeated(
    admin: projections_pb2_grpc.ProjectionAdminServiceStub,
) -> None:
    error = first_answer(admin, "p" * 60)
    assert error.code() is grpc.StatusCode.NOT_FOUND, f"{error.code()}: {error.details()}"
    assert "p" * 60 not in str(error.details()), error.details()
