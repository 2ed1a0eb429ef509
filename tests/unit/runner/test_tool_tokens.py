"""The `mesh` commands that call services (sagas, rebuild, audit ls, load) send an access token:
``--token``, else ``$MESH_TOKEN``; with neither, one minted by the mesh's identity with the least
role the command needs, and when none can be minted a clear error naming what to pass. A double
of each admin service records the authorization it was called with (minting itself is tested in
test_token.py, and end to end in tests/e2e, where these commands run without ``--token``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2_grpc
from support.mesh import free_port

from mesh.audit.v1 import audit_pb2, audit_pb2_grpc
from mesh.projections.v1 import projections_pb2, projections_pb2_grpc
from mesh.sagas.v1 import sagas_pb2, sagas_pb2_grpc
from mesh_runner import cli, load
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.orders.v1 import orders_pb2, orders_pb2_grpc


class Calls:
    """The authorization metadata of every call the doubles answered, by method name."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def note(self, method: str, context: grpc.ServicerContext) -> None:
        metadata = dict(context.invocation_metadata())
        self.seen.append((method, str(metadata.get("authorization", ""))))


class _Sagas(sagas_pb2_grpc.SagaAdminServiceServicer):
    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    def ListSagas(self, request: Any, context: Any) -> Any:
        self.calls.note("ListSagas", context)
        return sagas_pb2.ListSagasResponse()


class _Projections(projections_pb2_grpc.ProjectionAdminServiceServicer):
    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    def Rebuild(self, request: Any, context: Any) -> Any:
        self.calls.note("Rebuild", context)
        yield projections_pb2.RebuildResponse(
            phase=projections_pb2.REBUILD_PHASE_SWAPPED, generation=2, message="swapped"
        )


class _Audit(audit_pb2_grpc.AuditServiceServicer):
    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    def QueryAudit(self, request: Any, context: Any) -> Any:
        self.calls.note("QueryAudit", context)
        return audit_pb2.QueryAuditResponse()


class _Orders(orders_pb2_grpc.OrdersServiceServicer):
    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    def PlaceOrder(self, request: Any, context: Any) -> Any:
        self.calls.note("PlaceOrder", context)
        return orders_pb2.PlaceOrderResponse(order_id=request.request_id)

    def GetOrder(self, request: Any, context: Any) -> Any:
        self.calls.note("GetOrder", context)
        order = orders_pb2.Order(
            order_id=request.order_id, status=orders_pb2.ORDER_STATUS_CONFIRMED
        )
        order.created_at.FromSeconds(100)
        order.updated_at.FromSeconds(101)
        return orders_pb2.GetOrderResponse(order=order)


class _Inventory(inventory_pb2_grpc.InventoryServiceServicer):
    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    def GetStock(self, request: Any, context: Any) -> Any:
        self.calls.note("GetStock", context)
        context.abort(grpc.StatusCode.NOT_FOUND, f"no sku {request.sku}")

    def SetStock(self, request: Any, context: Any) -> Any:
        self.calls.note("SetStock", context)
        return inventory_pb2.SetStockResponse(sku=request.sku, available=request.quantity)


@pytest.fixture
def double() -> Iterator[tuple[str, Calls]]:
    """Every admin service and the shop's orders and inventory on one port: (address, calls)."""
    calls = Calls()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    sagas_pb2_grpc.add_SagaAdminServiceServicer_to_server(_Sagas(calls), server)
    projections_pb2_grpc.add_ProjectionAdminServiceServicer_to_server(_Projections(calls), server)
    audit_pb2_grpc.add_AuditServiceServicer_to_server(_Audit(calls), server)
    orders_pb2_grpc.add_OrdersServiceServicer_to_server(_Orders(calls), server)
    inventory_pb2_grpc.add_InventoryServiceServicer_to_server(_Inventory(calls), server)
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", calls
    server.stop(grace=None)


@pytest.fixture
def no_identity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A checkout whose mesh has no identity (nothing can mint), and no $MESH_TOKEN."""
    monkeypatch.delenv("MESH_TOKEN", raising=False)
    (tmp_path / "mesh.toml").write_text(
        '[[component]]\nname = "orders"\nport = 50051\ncommand = ["x"]\n'
    )
    return tmp_path


COMMANDS = {
    "ListSagas": ["sagas"],
    "Rebuild": ["rebuild", "order_views"],
    "QueryAudit": ["audit", "ls"],
}


@pytest.mark.parametrize("method", COMMANDS)
def test_the_token_given_is_sent(
    method: str, double: tuple[str, Calls], no_identity: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target, calls = double
    argv = ["--root", str(no_identity), *COMMANDS[method], "--target", target]
    assert cli.main([*argv, "--token", "given"]) == 0
    monkeypatch.setenv("MESH_TOKEN", "from-env")
    assert cli.main(argv) == 0
    assert cli.main([*argv, "--token", "given"]) == 0  # the flag wins over the variable
    assert calls.seen == [
        (method, "Bearer given"),
        (method, "Bearer from-env"),
        (method, "Bearer given"),
    ]


@pytest.mark.parametrize(
    ("method", "role"), [("ListSagas", "admin"), ("Rebuild", "admin"), ("QueryAudit", "auditor")]
)
def test_without_a_token_or_an_identity_to_mint_one_the_command_says_what_to_pass(
    method: str,
    role: str,
    double: tuple[str, Calls],
    no_identity: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    target, calls = double
    argv = ["--root", str(no_identity), *COMMANDS[method], "--target", target]
    assert cli.main(argv) == 1
    said = capsys.readouterr().err
    assert f"none could be minted with role {role}" in said, said
    assert "--token" in said and "MESH_TOKEN" in said and f"mesh token --role {role}" in said
    assert calls.seen == [], "nothing is called without a token"


@pytest.mark.parametrize(
    ("command", "role"),
    [
        (["sagas"], "admin"),
        (["rebuild"], "admin"),
        (["audit", "ls"], "auditor"),
        (["load"], "admin"),
    ],
)
def test_help_says_which_token_is_sent(
    command: list[str], role: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        cli.main([*command, "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps the lines
    assert "--token" in out and "$MESH_TOKEN" in out
    assert f"minted by the mesh's identity with role {role}" in out, out


def test_mesh_load_sends_the_token_on_every_call(double: tuple[str, Calls]) -> None:
    target, calls = double
    asked: list[str] = []

    def token() -> str:
        asked.append("once")
        return "admin-token"

    summary = asyncio.run(
        load.drive(
            load.Plan(rate=20, duration=0.1),
            load.Targets(target, target, "test", "test"),
            report=lambda text, notice: None,
            token=token,
        )
    )
    assert summary["placed"] == summary["confirmed"] == 2
    assert asked == ["once"]
    assert {method for method, _ in calls.seen} == {
        "GetStock",
        "SetStock",
        "PlaceOrder",
        "GetOrder",
    }
    assert {auth for _, auth in calls.seen} == {"Bearer admin-token"}


def test_mesh_load_asks_for_no_token_when_the_mesh_is_not_up(no_identity: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"
    asked: list[str] = []

    def token() -> str:
        asked.append("called")
        return "t"

    with pytest.raises(load.MeshNotUp):
        asyncio.run(
            load.drive(
                load.Plan(rate=1, duration=1),
                load.Targets(dead, dead, "test", "test"),
                report=lambda text, notice: None,
                token=token,
            )
        )
    assert asked == []


def test_mesh_load_without_a_token_or_an_identity_says_what_to_pass(
    double: tuple[str, Calls],
    no_identity: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    target, calls = double
    monkeypatch.setenv("MESH_ADDRESS_ORDERS", target)
    monkeypatch.setenv("MESH_ADDRESS_INVENTORY", target)
    argv = ["--root", str(no_identity), "load", "--rate", "1", "--duration", "1"]
    assert cli.main(argv) == load.EXIT_NOT_UP
    said = capsys.readouterr().err
    assert "none could be minted with role admin" in said and "--token" in said, said
    assert calls.seen == []
