"""``mesh sagas``: the sagas a service orchestrates, with their step, state and age, and which are
stuck. Asks the service (mesh.sagas.v1.SagaAdminService/ListSagas over gRPC); it never reads
another process's database.

    mesh sagas [--all] [--json] [--target HOST:PORT] [--limit N] [--token T]

ListSagas needs the permission sagas.inspect, which orders' policy gives admins: the call carries
``--token``, else ``$MESH_TOKEN``, else an admin token minted by the mesh's identity (what
``mesh token --role admin`` prints).

Exit codes: 0 answered (stuck sagas included: see the STUCK column or ``"stuck"``), 1 the service
cannot be reached, refused the call, or no token could be had; 2 no address for the service.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import grpc

from meshkit.addresses import AddressError, address_of
from meshkit.client import DEFAULT_TIMEOUT, connect
from meshkit.credentials import StaticCredentials

ORCHESTRATOR = "orders"  # the saga orchestrator of the reference shop, by name in mesh.toml
ROLE = "admin"  # the least role orders' policy lets inspect sagas (sagas.inspect)
EXIT_UNREACHABLE = 1


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``sagas`` to the ``mesh`` parser."""
    # Imported here: cli imports this module to build its parser.
    from mesh_runner.cli import token_help

    sagas = sub.add_parser(
        "sagas",
        help="list sagas in flight with their step, state and age; flag the stuck ones",
        description="Lists the sagas a service orchestrates (orders by default), oldest first."
        " A saga is stuck when it is still in flight after the service's threshold. Needs an"
        f" {ROLE}'s token (sagas.inspect): --token, else $MESH_TOKEN, else one minted by the"
        " mesh's identity.",
    )
    sagas.add_argument("--all", action="store_true", help="also list finished sagas")
    sagas.add_argument("--json", action="store_true", help="a JSON list, one object per saga")
    sagas.add_argument(
        "--target",
        metavar="HOST:PORT",
        help=f"the orchestrating service (default: {ORCHESTRATOR}'s address in mesh.toml)",
    )
    sagas.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    sagas.add_argument("--token", help=token_help(ROLE))


def list_sagas(
    target: str, *, include_finished: bool = False, limit: int = 100, token: str = ""
) -> list[dict[str, Any]]:
    """The sagas ``target`` reports, as JSON-ready dicts, asked with the access ``token`` (an
    admin's; none: the call is UNAUTHENTICATED); grpc.RpcError when it does not answer them."""
    from google.protobuf import json_format

    from mesh.sagas.v1 import sagas_pb2, sagas_pb2_grpc

    with connect(target, credentials=StaticCredentials(token) if token else None) as channel:
        response = sagas_pb2_grpc.SagaAdminServiceStub(channel).ListSagas(
            sagas_pb2.ListSagasRequest(include_finished=include_finished, limit=limit),
            timeout=DEFAULT_TIMEOUT,
        )
    rows = []
    for saga in response.sagas:
        row = json_format.MessageToDict(
            saga, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        row["state"] = sagas_pb2.SagaState.Name(saga.state).removeprefix("SAGA_STATE_")
        row["age_s"] = round(saga.age.ToNanoseconds() / 1e9, 3)
        row.pop("age", None)
        rows.append(row)
    return rows


def run(args: argparse.Namespace, root: Path | None = None) -> int:
    """Run ``mesh sagas`` (against ``--target``, else the orchestrator in ``root``'s mesh.toml)."""
    target = args.target
    if target is None:
        env = {**os.environ, "MESH_ROOT": str(root)} if root else None
        try:
            target = address_of(ORCHESTRATOR, env)
        except AddressError as exc:
            print(f"mesh sagas: {exc} (or pass --target HOST:PORT)", file=sys.stderr)
            return 2
    from mesh_runner.cli import call_token

    try:
        token = call_token(args.token, root, ROLE)
    except RuntimeError as exc:
        print(f"mesh sagas: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    try:
        rows = list_sagas(target, include_finished=args.all, limit=args.limit, token=token)
    except grpc.RpcError as error:
        print(
            f"mesh sagas: {target}: {error.code().name}: {error.details()}{_hint(error)}",
            file=sys.stderr,
        )
        return EXIT_UNREACHABLE
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(_table(rows))
    return 0


def _hint(error: grpc.RpcError) -> str:
    if error.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return f" (ListSagas needs an {ROLE}'s token: --token or $MESH_TOKEN)"
    return " (is the mesh up? `mesh ps`)"


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no sagas in flight"
    lines = [f"{'SAGA':<38}{'STATE':<14}{'STEP':<19}{'ATTEMPT':>8}{'AGE':>10}  STUCK  LAST ERROR"]
    for row in rows:
        lines.append(
            f"{row['saga_id']:<38}{row['state']:<14}{row['step'] or '-':<19}"
            f"{row['attempt']:>8}{_age(row['age_s']):>10}  {'yes' if row['stuck'] else 'no':<5}"
            f"  {row['last_error'] or row['reason'] or ''}"
        )
    return "\n".join(lines)


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"
