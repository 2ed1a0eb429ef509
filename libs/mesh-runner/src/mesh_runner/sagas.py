"""``mesh sagas``: the sagas a service orchestrates, with their step, state and age, and which are
stuck. Asks the service (mesh.sagas.v1.SagaAdminService/ListSagas over gRPC); it never reads
another process's database.

    mesh sagas [--all] [--json] [--target HOST:PORT] [--limit N]

Exit codes: 0 answered (stuck sagas included: see the STUCK column or ``"stuck"``), 1 the service
cannot be reached.
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

ORCHESTRATOR = "orders"  # the saga orchestrator of the reference shop, by name in mesh.toml
EXIT_UNREACHABLE = 1


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``sagas`` to the ``mesh`` parser."""
    sagas = sub.add_parser(
        "sagas",
        help="list sagas in flight with their step, state and age; flag the stuck ones",
        description="Lists the sagas a service orchestrates (orders by default), oldest first."
        " A saga is stuck when it is still in flight after the service's threshold.",
    )
    sagas.add_argument("--all", action="store_true", help="also list finished sagas")
    sagas.add_argument("--json", action="store_true", help="a JSON list, one object per saga")
    sagas.add_argument(
        "--target",
        metavar="HOST:PORT",
        help=f"the orchestrating service (default: {ORCHESTRATOR}'s address in mesh.toml)",
    )
    sagas.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")


def list_sagas(
    target: str, *, include_finished: bool = False, limit: int = 100
) -> list[dict[str, Any]]:
    """The sagas ``target`` reports, as JSON-ready dicts; grpc.RpcError when it cannot answer."""
    from google.protobuf import json_format

    from mesh.sagas.v1 import sagas_pb2, sagas_pb2_grpc

    with connect(target) as channel:
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
    try:
        rows = list_sagas(target, include_finished=args.all, limit=args.limit)
    except grpc.RpcError as error:
        print(
            f"mesh sagas: {target}: {error.code().name}: {error.details()}"
            " (is the mesh up? `mesh ps`)",
            file=sys.stderr,
        )
        return EXIT_UNREACHABLE
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(_table(rows))
    return 0


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
