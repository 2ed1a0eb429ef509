"""``mesh config``: read and change the configuration the control service pushes to the mesh.

    mesh config ls [--json]                                   namespaces: version, schema
    mesh config get NAMESPACE [--version N] [--json]          the document (as stored)
    mesh config set NAMESPACE KEY=VALUE... [--unset KEY]...   change some fields (a merge)
    mesh config set NAMESPACE --file FILE                     replace the whole document
    mesh config history NAMESPACE [--limit N] [--json]        versions: when, who, why
    mesh config rollback NAMESPACE VERSION                    that version's document again
    mesh config status NAMESPACE [--json]                     each client's ACK/NACK, version
    mesh config schema NAMESPACE [--set FILE]                 the namespace's JSON Schema

``set`` with KEY=VALUE reads the current document, changes those fields and stores the result
only if nobody stored another version meanwhile (``expected_version``); when somebody did, it
reads again and retries (ABORTED, up to SET_ATTEMPTS times), so concurrent sets never undo each
other. A VALUE is JSON when it parses as JSON (``10``, ``true``, ``"10"``, ``[1, 2]``,
``{"a": 1}``), else the text itself; a dotted KEY nests (``limits.orders=5`` sets
``{"limits": {"orders": 5}}``, creating the objects on the way). ``--file -`` reads stdin.
Changes take ``--reason``, kept in the history.

The calls carry ``--token``, else ``$MESH_TOKEN``, else one minted by the mesh's identity with
the least role the command needs: support to read, admin to change (control's policy).

Exit codes: 0 done; 1 the change was refused (the status and the field are printed), the
service did not answer, or no token could be had; 2 usage (a bad KEY=VALUE, an unreadable
file, no address for the control service).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc

from meshkit.addresses import AddressError, address_of
from meshkit.client import DEFAULT_TIMEOUT, connect
from meshkit.credentials import StaticCredentials

SERVICE = "control"  # the control plane, by name in mesh.toml
READ_ROLE = "support"  # the least role control's policy lets read configuration
WRITE_ROLE = "admin"  # the only role it lets change configuration
SET_ATTEMPTS = 5
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_HISTORY = 20
WRITES = ("set", "rollback")


class UsageError(Exception):
    """The command line cannot be carried out as given (exit 2); the message says why."""


# ----------------------------------------------------------------------------- documents


def parse_value(text: str) -> Any:
    """A VALUE of KEY=VALUE: JSON when it parses as JSON, else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _path(key: str) -> list[str]:
    parts = key.split(".")
    if not key or any(not part for part in parts):
        raise UsageError(f"{key!r} is not a KEY: names separated by single dots, e.g. a.b")
    return parts


def merge(
    document: dict[str, Any], assignments: Sequence[str], unset: Sequence[str] = ()
) -> dict[str, Any]:
    """``document`` with each KEY=VALUE of ``assignments`` set and each KEY of ``unset``
    removed (dotted keys nest; objects on the way are created). UsageError for a malformed
    assignment or a key under a field that is not an object."""
    merged: dict[str, Any] = json.loads(json.dumps(document))  # a deep copy
    for assignment in assignments:
        key, equals, value = assignment.partition("=")
        if not equals:
            raise UsageError(f"{assignment!r} is not KEY=VALUE")
        *parents, last = _path(key.strip())
        target = _descend(merged, parents, key, create=True)
        assert target is not None  # created on the way
        target[last] = parse_value(value)
    for key in unset:
        *parents, last = _path(key.strip())
        target = _descend(merged, parents, key, create=False)
        if target is not None:
            target.pop(last, None)
    return merged


def _descend(
    document: dict[str, Any], parents: Sequence[str], key: str, *, create: bool
) -> dict[str, Any] | None:
    node = document
    for depth, name in enumerate(parents):
        child = node.get(name)
        if child is None:
            if not create:
                return None
            child = node[name] = {}
        if not isinstance(child, dict):
            where = ".".join(parents[: depth + 1])
            raise UsageError(
                f"cannot set {key}: {where} is {json.dumps(child)[:40]}, not an object"
            )
        node = child
    return node


def read_file(path: str) -> str:
    """The text of ``path`` (``-``: stdin); UsageError when it cannot be read."""
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None


# ------------------------------------------------------------------------------- the calls


class ConfigClient:
    """The control service's ConfigService, called with one token. Every method raises
    grpc.RpcError when the service refuses or does not answer."""

    def __init__(self, target: str, token: str = "") -> None:
        from mesh.control.v1 import control_pb2, control_pb2_grpc

        self.pb = control_pb2
        self._channel = connect(target, credentials=StaticCredentials(token) if token else None)
        self.stub = control_pb2_grpc.ConfigServiceStub(self._channel)

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> ConfigClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, namespace: str, version: int = 0) -> Any:
        """The ConfigVersion asked for."""
        request = self.pb.GetConfigRequest(namespace=namespace, version=version)
        return self.stub.GetConfig(request, timeout=DEFAULT_TIMEOUT).config

    def replace(
        self, namespace: str, document: str, reason: str = "", *, if_absent: bool = False
    ) -> Any:
        """Store ``document`` as the next version; the ConfigVersion stored. ``if_absent``: only
        as the namespace's first version; when it has one, nothing is stored and None returned."""
        request = self.pb.SetConfigRequest(namespace=namespace, document=document, reason=reason)
        if if_absent:
            request.expected_version = 0
        try:
            return self.stub.SetConfig(request, timeout=DEFAULT_TIMEOUT).config
        except grpc.RpcError as exc:
            if if_absent and exc.code() == grpc.StatusCode.ABORTED:
                return None
            raise

    def update(
        self,
        namespace: str,
        change: Callable[[dict[str, Any]], dict[str, Any]],
        reason: str = "",
        attempts: int = SET_ATTEMPTS,
    ) -> tuple[Any, int]:
        """Read the current document ({} when there is none), ``change`` it and store the
        result if nobody stored another version meanwhile; else read again and retry, up to
        ``attempts`` times. The ConfigVersion stored and the version it replaced."""
        for attempt in range(1, attempts + 1):
            try:
                current = self.get(namespace)
                document, version = json.loads(current.document), current.version
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                document, version = {}, 0
            request = self.pb.SetConfigRequest(
                namespace=namespace,
                document=json.dumps(change(document), indent=2, ensure_ascii=False),
                reason=reason,
                expected_version=version,
            )
            try:
                return self.stub.SetConfig(request, timeout=DEFAULT_TIMEOUT).config, version
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.ABORTED or attempt == attempts:
                    raise
        raise AssertionError("unreachable")  # the last attempt returned or raised

    def history(self, namespace: str, limit: int) -> list[Any]:
        """Up to ``limit`` versions, newest first (paging as needed)."""
        found: list[Any] = []
        before = 0
        while len(found) < limit:
            request = self.pb.ListHistoryRequest(
                namespace=namespace, page_size=min(limit - len(found), 1000), before_version=before
            )
            page = list(self.stub.ListHistory(request, timeout=DEFAULT_TIMEOUT).versions)
            found += page
            if not page or page[-1].version <= 1:
                break
            before = page[-1].version
        return found[:limit]

    def rollback(self, namespace: str, to_version: int, reason: str = "") -> Any:
        """Store ``to_version``'s document again; the ConfigVersion stored."""
        request = self.pb.RollbackRequest(namespace=namespace, to_version=to_version, reason=reason)
        return self.stub.Rollback(request, timeout=DEFAULT_TIMEOUT).config

    def namespaces(self) -> list[Any]:
        """The NamespaceSummary of every namespace."""
        request = self.pb.ListNamespacesRequest()
        return list(self.stub.ListNamespaces(request, timeout=DEFAULT_TIMEOUT).namespaces)

    def status(self, namespace: str) -> list[Any]:
        """Each client's latest ClientStatus on the namespace."""
        request = self.pb.ListClientStatusRequest(namespace=namespace)
        return list(self.stub.ListClientStatus(request, timeout=DEFAULT_TIMEOUT).clients)

    def schema(self, namespace: str) -> Any:
        """The NamespaceSchema."""
        request = self.pb.GetSchemaRequest(namespace=namespace)
        return self.stub.GetSchema(request, timeout=DEFAULT_TIMEOUT).schema

    def set_schema(self, namespace: str, schema: str) -> Any:
        """Register ``schema``; the NamespaceSchema now registered."""
        request = self.pb.SetSchemaRequest(namespace=namespace, schema=schema)
        return self.stub.SetSchema(request, timeout=DEFAULT_TIMEOUT).schema


# ---------------------------------------------------------------------------------- output


def _when(stamp: Any) -> str:
    if not stamp.seconds and not stamp.nanos:
        return "-"
    instant: datetime.datetime = stamp.ToDatetime(tzinfo=datetime.UTC)
    return instant.strftime("%Y-%m-%d %H:%M:%S")


def _iso(stamp: Any) -> str | None:
    if not stamp.seconds and not stamp.nanos:
        return None
    return str(stamp.ToDatetime(tzinfo=datetime.UTC).isoformat().replace("+00:00", "Z"))


def version_json(config: Any) -> dict[str, Any]:
    """A ConfigVersion as ``--json`` prints it (the document parsed)."""
    return {
        "namespace": config.namespace,
        "version": config.version,
        "document": json.loads(config.document) if config.document else {},
        "author": config.author,
        "reason": config.reason,
        "create_time": _iso(config.create_time),
        "rollback_of": config.rollback_of,
    }


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns, two spaces apart."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    )


def summary_json(summary: Any) -> dict[str, Any]:
    """A NamespaceSummary as ``--json`` prints it."""
    return {
        "namespace": summary.namespace,
        "version": summary.version,
        "has_schema": summary.has_schema,
        "update_time": _iso(summary.update_time),
    }


def namespaces_table(summaries: Sequence[Any]) -> str:
    """NAMESPACE, VERSION, SCHEMA, UPDATED (UTC)."""
    rows = [
        (s.namespace, str(s.version), "yes" if s.has_schema else "no", _when(s.update_time))
        for s in summaries
    ]
    return table(("NAMESPACE", "VERSION", "SCHEMA", "UPDATED (UTC)"), rows)


def history_table(versions: Sequence[Any]) -> str:
    """VERSION, WHEN (UTC), AUTHOR, REASON (with "rollback of N")."""
    rows = []
    for v in versions:
        reason = v.reason or "-"
        if v.rollback_of:
            reason = f"{v.reason} (rollback of {v.rollback_of})".strip()
        rows.append((str(v.version), _when(v.create_time), v.author or "-", reason))
    return table(("VERSION", "WHEN (UTC)", "AUTHOR", "REASON"), rows)


def status_table(clients: Sequence[Any]) -> str:
    """CLIENT, RUNS, LAST VERDICT, REPORTED (UTC), ERROR."""
    rows = [
        (
            c.client,
            str(c.running_version),
            f"{'ACK' if c.accepted else 'NACK'} {c.version}",
            _when(c.report_time),
            c.error or "",
        )
        for c in clients
    ]
    return table(("CLIENT", "RUNS", "VERDICT", "REPORTED (UTC)", "ERROR"), rows)


def status_json(client: Any) -> dict[str, Any]:
    """A ClientStatus as ``--json`` prints it."""
    return {
        "client": client.client,
        "version": client.version,
        "accepted": client.accepted,
        "error": client.error,
        "running_version": client.running_version,
        "report_time": _iso(client.report_time),
    }


# ------------------------------------------------------------------------------------ run


def _hint(error: grpc.RpcError, command: str) -> str:
    code = error.code()
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        role = WRITE_ROLE if command in WRITES else READ_ROLE
        return f" (this needs a token with the {role} role: --token or $MESH_TOKEN)"
    if code == grpc.StatusCode.UNAVAILABLE:
        return " (is the mesh up? `mesh ps`)"
    if code == grpc.StatusCode.ABORTED:
        return f" (changed by someone else {SET_ATTEMPTS} times in a row; try again)"
    return ""


def _show(
    items: Sequence[Any],
    *,
    as_json: bool,
    to_json: Callable[[Any], dict[str, Any]],
    empty: str,
    render: Callable[[Sequence[Any]], str],
) -> None:
    """A listing: a JSON list, the ``empty`` sentence, or the table ``render`` makes."""
    if as_json:
        print(json.dumps([to_json(item) for item in items], indent=2))
    else:
        print(render(items) if items else empty)


def _ls(args: argparse.Namespace, client: ConfigClient) -> None:
    _show(
        client.namespaces(),
        as_json=args.json,
        to_json=summary_json,
        empty="no namespaces yet",
        render=namespaces_table,
    )


def _get(args: argparse.Namespace, client: ConfigClient) -> None:
    config = client.get(args.namespace, args.version)
    print(json.dumps(version_json(config), indent=2) if args.json else config.document)


def _set(args: argparse.Namespace, client: ConfigClient) -> None:
    namespace = args.namespace
    if args.file is not None:
        if args.assignments or args.unset:
            raise UsageError("give KEY=VALUE/--unset or --file, not both")
        stored = client.replace(
            namespace, read_file(args.file), args.reason, if_absent=args.if_absent
        )
        if stored is None:
            current = client.get(namespace)
            print(f"{namespace}: kept version {current.version} (--if-absent: it has a document)")
            return
        was = stored.version - 1
    else:
        if not args.assignments and not args.unset:
            raise UsageError("nothing to set: give KEY=VALUE..., --unset KEY or --file FILE")
        merge({}, args.assignments, ())  # a malformed one is a usage error before any call
        stored, was = client.update(
            namespace,
            lambda document: merge(document, args.assignments, args.unset),
            args.reason,
        )
    print(f"{namespace}: version {stored.version} stored (was {was})")


def _history(args: argparse.Namespace, client: ConfigClient) -> None:
    _show(
        client.history(args.namespace, args.limit),
        as_json=args.json,
        to_json=version_json,
        empty=f"{args.namespace}: no versions yet",
        render=history_table,
    )


def _rollback(args: argparse.Namespace, client: ConfigClient) -> None:
    stored = client.rollback(args.namespace, args.version, args.reason)
    print(
        f"{args.namespace}: version {stored.version} stored, with the document of version"
        f" {stored.rollback_of}"
    )


def _status(args: argparse.Namespace, client: ConfigClient) -> None:
    _show(
        client.status(args.namespace),
        as_json=args.json,
        to_json=status_json,
        empty=f"{args.namespace}: no client has reported yet",
        render=status_table,
    )


def _schema(args: argparse.Namespace, client: ConfigClient) -> None:
    if args.set is not None:
        registered = client.set_schema(args.namespace, read_file(args.set))
        print(f"{args.namespace}: schema registered (by {registered.author or '-'})")
    else:
        print(client.schema(args.namespace).schema)


_COMMANDS: dict[str, Callable[[argparse.Namespace, ConfigClient], None]] = {
    "ls": _ls,
    "get": _get,
    "set": _set,
    "history": _history,
    "rollback": _rollback,
    "status": _status,
    "schema": _schema,
}


def run(args: argparse.Namespace, root: Path | None = None) -> int:
    """Run ``mesh config ...``."""
    command = args.config_command
    where = f"mesh config {command}"
    target = args.target
    if target is None:
        env = {**os.environ, "MESH_ROOT": str(root)} if root else None
        try:
            target = address_of(SERVICE, env)
        except AddressError as exc:
            print(f"{where}: {exc} (or pass --target HOST:PORT)", file=sys.stderr)
            return EXIT_USAGE
    from mesh_runner.cli import call_token

    writes = command in WRITES or (command == "schema" and args.set is not None)
    try:
        token = call_token(args.token, root, WRITE_ROLE if writes else READ_ROLE)
    except RuntimeError as exc:
        print(f"{where}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    try:
        with ConfigClient(target, token) as client:
            _COMMANDS[command](args, client)
            return EXIT_OK
    except UsageError as exc:
        print(f"{where}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except grpc.RpcError as error:
        subject = getattr(args, "namespace", "") or target
        print(
            f"{where}: {subject}: {error.code().name}: {error.details()}{_hint(error, command)}",
            file=sys.stderr,
        )
        return EXIT_FAILED


# ---------------------------------------------------------------------------------- parser


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``config`` and its commands to the ``mesh`` parser."""
    # Imported here: cli imports this module to build its parser.
    from mesh_runner.cli import token_help

    config = sub.add_parser(
        "config",
        help="read and change the configuration the control service pushes to the mesh",
        description="Configuration documents, one per namespace, versioned and checked against"
        " the namespace's JSON Schema by the control service, which pushes every change to the"
        " services that watch it. Exit 0 done; 1 refused (the field is named) or no answer;"
        " 2 usage.",
    )
    commands = config.add_subparsers(dest="config_command", required=True, metavar="COMMAND")

    def command(name: str, help: str, description: str, *, writes: bool = False) -> Any:
        parser = commands.add_parser(name, help=help, description=description)
        if name != "ls":
            parser.add_argument("namespace", metavar="NAMESPACE", help="e.g. orders, flags")
        parser.add_argument("--token", help=token_help(WRITE_ROLE if writes else READ_ROLE))
        parser.add_argument(
            "--target",
            metavar="HOST:PORT",
            help=f"the control service (default: {SERVICE}'s address in mesh.toml)",
        )
        return parser

    ls = command("ls", "the namespaces: current version, schema", "Lists every namespace.")
    ls.add_argument("--json", action="store_true", help="a JSON list, one object per namespace")
    get = command(
        "get",
        "print a namespace's document",
        "Prints the current document as stored (or the one at --version); --json adds its"
        " version, author, reason and time.",
    )
    get.add_argument("--version", type=int, default=0, help="an earlier version (default: now)")
    get.add_argument("--json", action="store_true", help="the version as a JSON object")
    put = command(
        "set",
        "change some fields (KEY=VALUE...) or replace the document (--file)",
        "KEY=VALUE... changes those fields of the current document and stores it as the next"
        " version, retrying if someone else changed it meanwhile; VALUE is JSON when it parses"
        " as JSON, else text; a dotted KEY nests (a.b=1). --file replaces the whole document."
        " The control service refuses a document its schema does not allow, naming the field."
        " Examples: mesh config set orders max_lines_per_order=20 --reason 'bulk buyers';"
        " mesh config set flags --file flags.json",
        writes=True,
    )
    put.add_argument("assignments", nargs="*", metavar="KEY=VALUE", help="fields to set")
    put.add_argument(
        "--unset", action="append", default=[], metavar="KEY", help="remove a field (repeatable)"
    )
    put.add_argument("--file", metavar="FILE", help="the whole new document (JSON; - for stdin)")
    put.add_argument(
        "--if-absent",
        action="store_true",
        help="with --file: store it only as the namespace's first version; a namespace that has"
        " a document keeps it (a seed that never overwrites a live change)",
    )
    put.add_argument("--reason", default="", help="why (kept in the history)")
    history = command(
        "history",
        "the versions: when, who, why",
        "Lists the namespace's versions, newest first.",
    )
    history.add_argument(
        "--limit", type=int, default=DEFAULT_HISTORY, help=f"at most N (default {DEFAULT_HISTORY})"
    )
    history.add_argument("--json", action="store_true", help="a JSON list, one object per version")
    rollback = command(
        "rollback",
        "make an earlier version's document current again (as a new version)",
        "Stores the document of VERSION again, as the next version: history is never"
        " rewritten. Refused when that document fails the namespace's current schema.",
        writes=True,
    )
    rollback.add_argument("version", type=int, metavar="VERSION", help="the version to restore")
    rollback.add_argument("--reason", default="", help="why (kept in the history)")
    status = command(
        "status",
        "which version each watching client runs, and its ACK or NACK",
        "Lists each client's latest report on the namespace: the version it runs, its verdict"
        " on the last version it received (NACK: its own validation refused it, and why).",
    )
    status.add_argument("--json", action="store_true", help="a JSON list, one object per client")
    schema = command(
        "schema",
        "print (or with --set, register) the namespace's JSON Schema",
        "Prints the JSON Schema every document of the namespace must satisfy; --set FILE"
        " registers one (refused when the current document does not satisfy it).",
    )
    schema.add_argument("--set", metavar="FILE", help="register this schema (admin)")
