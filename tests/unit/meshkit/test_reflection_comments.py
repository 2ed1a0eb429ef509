"""`grpcurl describe` against a meshkit server prints the contract's comments.

The real grpcurl asks the server's reflection service; the comments come from the contract
package's source_info.binpb (written by `make gen`), since the generated modules carry none.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.mesh import Grpcurl

from meshkit import ServerSettings, ServiceBinding, create_server
from meshkit.reflection import SourceInfo
from shop.inventory.v1 import inventory_pb2_grpc

SERVICE = "shop.inventory.v1.InventoryService"


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    # The stock servicer (every RPC UNIMPLEMENTED): reflection is what is asked.
    servicer = inventory_pb2_grpc.InventoryServiceServicer()  # type: ignore[abstract]
    server = create_server(
        "inventory",
        ServerSettings(port=0),
        [
            ServiceBinding(
                servicer, inventory_pb2_grpc.add_InventoryServiceServicer_to_server, SERVICE
            )
        ],
    )
    port = server.start()
    yield f"127.0.0.1:{port}"
    server.stop(0)


def test_describe_prints_the_service_and_rpc_comments(grpcurl: Grpcurl, address: str) -> None:
    result = grpcurl.run(address, "describe", SERVICE)
    assert result.returncode == 0, result.stderr
    # the service's comment and an RPC's, as written in proto/shop/inventory/v1/inventory.proto
    assert "// Keeps stock per SKU and reserves it for orders" in result.stdout
    assert "// Reads the stock of a SKU. NOT_FOUND for an unknown SKU." in result.stdout
    assert "rpc GetStock ( .shop.inventory.v1.GetStockRequest )" in result.stdout


def test_describe_prints_a_message_fields_comments(grpcurl: Grpcurl, address: str) -> None:
    result = grpcurl.run(address, "describe", "shop.inventory.v1.ReserveStockRequest")
    assert result.returncode == 0, result.stderr
    assert "//" in result.stdout  # the message's own comment lines
    assert "reservation_id" in result.stdout


def test_a_file_without_source_info_is_served_unchanged() -> None:
    from google.protobuf import descriptor_pb2

    proto = descriptor_pb2.FileDescriptorProto(name="nowhere/v1/x.proto", package="nowhere.v1")
    raw = proto.SerializeToString()
    assert SourceInfo().annotate(raw) == raw
