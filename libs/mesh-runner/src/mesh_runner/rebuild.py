"""``mesh rebuild PROJECTION``: rebuild a service's read model without downtime.

Asks the service that owns the projection (mesh.projections.v1.ProjectionAdminService/Rebuild
over gRPC) to replay its topics into a fresh copy and swap it in once caught up; prints the
progress it streams. The service keeps answering queries from the old copy meanwhile, and the
rebuild goes on if this command is interrupted (run it again to follow it).

    mesh rebuild order_views [--target HOST:PORT] [--timeout SECONDS] [--token T]

The target defaults to 127.0.0.1 and the port mesh.toml gives the component named PROJECTION.
Rebuild needs the permission projections.rebuild, which the policies give admins: the call
carries ``--token``, else ``$MESH_TOKEN``, else an admin token minted by the mesh's identity (what
``mesh token --role admin`` prints).
Exit codes: 0 swapped, 1 the rebuild failed, the service cannot be reached or refused the call,
or no token could be had; 2 usage error.

A replay only rebuilds what the topics still hold: when a partition's log no longer starts at
offset 0 (retention, records deleted by hand), the service refuses with FAILED_PRECONDITION
naming each ``<topic>[<partition>]`` and its first offset, before or during the rebuild, and
keeps the serving copy; this command prints that and exits 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import grpc

from meshkit.client import connect
from meshkit.credentials import StaticCredentials

EXIT_FAILED = 1
EXIT_USAGE = 2
DEFAULT_TIMEOUT_S = 900.0
ROLE = "admin"  # the least role the policies let rebuild a projection (projections.rebuild)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``rebuild`` to the ``mesh`` parser."""
    # Imported here: cli imports this module to build its parser.
    from mesh_runner.cli import token_help

    rebuild = sub.add_parser(
        "rebuild",
        help="rebuild a projection (read model) from its topics and swap it in, no downtime",
        description="Replays the projection's topics from the beginning into a fresh copy, then"
        " swaps it in once it has caught up; queries keep answering from the old copy meanwhile."
        " Exits 0 once the fresh copy serves; 1 (the serving copy kept) when it fails, e.g. when"
        " a topic's log no longer starts at offset 0. Needs an admin's token"
        " (projections.rebuild): --token, else $MESH_TOKEN, else one minted by the mesh's"
        " identity.",
    )
    rebuild.add_argument("projection", help="the projection, e.g. order_views (a component name)")
    rebuild.add_argument(
        "--target",
        metavar="HOST:PORT",
        help="the service that owns it (default: 127.0.0.1 and its port in mesh.toml)",
    )
    rebuild.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help=f"give up following after this many seconds (default {DEFAULT_TIMEOUT_S:.0f})",
    )
    rebuild.add_argument("--token", help=token_help(ROLE))


def rebuild(
    target: str,
    projection: str,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    report: Callable[[str], None] = print,
    token: str = "",
) -> int:
    """Rebuild ``projection`` at ``target``, asked with the access ``token`` (an admin's; none:
    the call is UNAUTHENTICATED), passing each progress line to ``report``; returns the
    generation that serves at the end. Raises grpc.RpcError when the rebuild fails, is refused
    or the service cannot be reached, RuntimeError when the stream ends before the swap."""
    from mesh.projections.v1 import projections_pb2, projections_pb2_grpc

    swapped = projections_pb2.REBUILD_PHASE_SWAPPED
    credentials = StaticCredentials(token) if token else None
    with connect(target, retry=False, credentials=credentials) as channel:
        stream = projections_pb2_grpc.ProjectionAdminServiceStub(channel).Rebuild(
            projections_pb2.RebuildRequest(projection=projection), timeout=timeout
        )
        for progress in stream:
            phase = projections_pb2.RebuildPhase.Name(progress.phase).removeprefix("REBUILD_PHASE_")
            report(
                f"{phase.lower():<11} generation {progress.generation}: {progress.applied} applied,"
                f" {progress.behind} behind - {progress.message}"
            )
            if progress.phase == swapped:
                return int(progress.generation)
    raise RuntimeError("the service ended the stream before the swap")


def say(line: str) -> None:
    """Progress for people, on stderr (as every `mesh` command reports it)."""
    print(f"==> {line}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace, root: Path | None) -> int:
    """Run ``mesh rebuild``."""
    target = args.target
    if target is None:
        from mesh_runner.config import ConfigError, load_mesh

        try:
            component = load_mesh(root).component(args.projection)
        except ConfigError as exc:
            print(f"mesh rebuild: {exc} (or pass --target HOST:PORT)", file=sys.stderr)
            return EXIT_USAGE
        target = f"127.0.0.1:{component.port}"
    from mesh_runner.cli import call_token

    try:
        token = call_token(args.token, root, ROLE)
    except RuntimeError as exc:
        print(f"mesh rebuild: {exc}", file=sys.stderr)
        return EXIT_FAILED
    say(f"rebuilding {args.projection} at {target}")
    try:
        generation = rebuild(target, args.projection, timeout=args.timeout, report=say, token=token)
    except grpc.RpcError as error:
        refused = error.code() in (
            grpc.StatusCode.UNAUTHENTICATED,
            grpc.StatusCode.PERMISSION_DENIED,
        )
        hint = f" (Rebuild needs an {ROLE}'s token: --token or $MESH_TOKEN)" if refused else ""
        print(
            f"mesh rebuild: {target}: {error.code().name}: {error.details()}{hint}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    except RuntimeError as exc:
        print(f"mesh rebuild: {target}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{args.projection}: rebuilt; generation {generation} serves")
    return 0
