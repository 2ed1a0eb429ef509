"""``mesh flags``: load the mesh's feature flags, list them, and evaluate one as a service would.

    mesh flags set FILE [--if-absent] [--reason R]            store a flagd flag-set file
    mesh flags eval FLAG [--context JSON] [--json] [--file F] evaluate one flag
    mesh flags ls [--json] [--file F]                         the flags: state, variants, default

The flags are the control plane's ``flags`` namespace: one flagd flag set (flagd's JSON format,
https://flagd.dev/reference/flag-definitions/), pushed to every service, which evaluates it in
process through OpenFeature (meshkit.control.flags).

``set`` checks FILE as every service will (``parse_flag_set``: a set they would reject is refused
here, naming the flag and field, before anything is stored), then stores it as the namespace's
next version (``SetConfig``; the control service checks it against the namespace's schema too).

``eval`` evaluates FLAG exactly as a service does: the current flag set (``GetConfig``, or
``--file`` for a local file and no mesh at all), parsed by ``parse_flag_set``, behind a
``MeshFlagProvider``, through the OpenFeature client. ``--context`` is the evaluation context, a
JSON object whose ``"targetingKey"`` is the targeting key; the rest are attributes. It prints
``value  variant  reason`` (the value as JSON; ``-`` for no variant), and the error code when
there is one; ``--json`` prints ``{"value", "variant", "reason"}`` (with ``"error_code"`` when
there is one). The flag's type is its variants' (``--type`` to ask as another, as a service that
calls the wrong getter would); the default is that type's zero value, or ``--default`` (JSON).

The calls carry ``--token``, else ``$MESH_TOKEN``, else one minted by the mesh's identity with the
least role the command needs: support to read, admin to store (control's policy).

Exit codes: 0 done (an evaluation that answered with an error code too: that is the answer a
service gets); 1 refused (the flag and field are named), the service did not answer, no token, or
FLAG is not in the flag set; 2 usage (bad --context, an unreadable file, no control address).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import grpc

from mesh_runner.configcli import ConfigClient, UsageError, read_file, table
from meshkit.addresses import AddressError, address_of
from meshkit.control.config import ConfigRejected

SERVICE = "control"
NAMESPACE = "flags"
READ_ROLE = "support"
WRITE_ROLE = "admin"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
TYPES = ("boolean", "string", "integer", "float", "object")
ZERO: dict[str, Any] = {"boolean": False, "string": "", "integer": 0, "float": 0.0, "object": {}}
EVAL_DOMAIN = "mesh-flags-eval"


class Refused(Exception):
    """The flag set or the flag is not one a service would run (exit 1); the message says why."""


# ----------------------------------------------------------------------------- flag sets


def load_file(path: str) -> Mapping[str, Any]:
    """The flag set in ``path`` (``-``: stdin), parsed as a service parses it: UsageError when
    it is not JSON, Refused (naming flag and field) when a service would reject it."""
    text = read_file(path)
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{path} is not JSON: {exc}") from None
    return checked(document, path)


def checked(document: Any, where: str) -> Mapping[str, Any]:
    """``document`` through ``parse_flag_set``; Refused saying what a service would say."""
    from meshkit.control.flags import parse_flag_set

    if not isinstance(document, dict):
        raise Refused(f"{where}: a flag set is a JSON object")
    try:
        return parse_flag_set(document)
    except ConfigRejected as exc:
        raise Refused(f"{where}: {exc}") from None


def kind_of(flag: Mapping[str, Any]) -> str:
    """The OpenFeature type a flag's variants have (its getter: get_<type>_details)."""
    values = list((flag.get("variants") or {}).values())
    if values and all(isinstance(v, bool) for v in values):
        return "boolean"
    if values and all(isinstance(v, str) for v in values):
        return "string"
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "integer"
    if values and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return "float"
    return "object"


def context_of(text: str | None) -> tuple[str | None, dict[str, Any]]:
    """``--context``'s targeting key and attributes; UsageError when it is not a JSON object
    or its targetingKey is not a string."""
    if not text:
        return None, {}
    try:
        context = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"--context is not JSON: {exc}") from None
    if not isinstance(context, dict):
        raise UsageError('--context must be a JSON object, e.g. {"targetingKey": "u-1"}')
    key = context.pop("targetingKey", None)
    if key is not None and not isinstance(key, str):
        raise UsageError("--context: targetingKey must be a string")
    return key, context


def evaluate(
    flag_set: Mapping[str, Any],
    flag: str,
    context: str | None = None,
    kind: str | None = None,
    default: Any = None,
) -> dict[str, Any]:
    """FLAG evaluated as a service evaluates it (a MeshFlagProvider over ``flag_set``, the
    OpenFeature client): ``{"value", "variant", "reason"}`` and ``"error_code"`` when there is
    one. ``kind`` is the getter's type (default: the flag's own); ``default`` the caller's
    default (default: that type's zero value). Refused when FLAG is not in the set."""
    from openfeature import api
    from openfeature.evaluation_context import EvaluationContext

    from meshkit.control.flags import MeshFlagProvider, static_source

    definition = (flag_set.get("flags") or {}).get(flag)
    if definition is None:
        known = ", ".join(sorted(flag_set.get("flags") or {})) or "none"
        raise Refused(f"no flag {flag!r} in the flag set (flags: {known})")
    kind = kind or kind_of(definition)
    if default is None:
        default = ZERO[kind]
    key, attributes = context_of(context)
    api.set_provider_and_wait(MeshFlagProvider(static_source(flag_set)), EVAL_DOMAIN)
    client = api.get_client(EVAL_DOMAIN)
    details = getattr(client, f"get_{kind}_details")(
        flag, default, EvaluationContext(key, attributes)
    )
    answer: dict[str, Any] = {
        "value": details.value,
        "variant": details.variant,
        "reason": str(details.reason),
    }
    if details.error_code:
        answer["error_code"] = str(details.error_code)
    return answer


def answer_line(answer: Mapping[str, Any]) -> str:
    """``value  variant  reason`` (and the error code): the value as JSON, ``-`` for none."""
    cells = [json.dumps(answer["value"]), answer["variant"] or "-", answer["reason"]]
    if "error_code" in answer:
        cells.append(answer["error_code"])
    return "  ".join(cells)


def flag_rows(flag_set: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each flag: key, state, variants (name to value), default variant, whether it targets."""
    return [
        {
            "flag": key,
            "state": flag.get("state"),
            "variants": flag.get("variants") or {},
            "default": flag.get("defaultVariant"),
            "targeting": bool(flag.get("targeting")),
        }
        for key, flag in sorted((flag_set.get("flags") or {}).items())
    ]


def flags_table(rows: list[dict[str, Any]]) -> str:
    """FLAG, STATE, VARIANTS (name=value), DEFAULT, TARGETING."""
    if not rows:
        return "no flags"
    header = ("FLAG", "STATE", "VARIANTS", "DEFAULT", "TARGETING")
    return table(
        header,
        [
            (
                row["flag"],
                str(row["state"]),
                ", ".join(f"{n}={json.dumps(v)}" for n, v in row["variants"].items()),
                row["default"] or "-",
                "yes" if row["targeting"] else "-",
            )
            for row in rows
        ],
    )


# ------------------------------------------------------------------------------------ run


def _current(client: ConfigClient) -> tuple[int, Mapping[str, Any]]:
    """The namespace's version and flag set, parsed as a service parses it ({"flags": {}} at
    version 0 when nothing was stored yet)."""
    try:
        config = client.get(NAMESPACE)
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.NOT_FOUND:
            raise
        return 0, {"flags": {}}
    return config.version, checked(json.loads(config.document), f"version {config.version}")


def _target(args: argparse.Namespace, root: Path | None) -> str:
    if args.target:
        return str(args.target)
    env = {**os.environ, "MESH_ROOT": str(root)} if root else None
    try:
        return address_of(SERVICE, env)
    except AddressError as exc:
        raise UsageError(f"{exc} (or pass --target HOST:PORT, or --file for eval/ls)") from None


def _client(args: argparse.Namespace, root: Path | None, role: str) -> ConfigClient:
    from mesh_runner.cli import call_token

    target = _target(args, root)
    return ConfigClient(target, call_token(args.token, root, role))


def _set(args: argparse.Namespace, root: Path | None) -> None:
    flag_set = load_file(args.file)  # refused here, before anything is stored
    with _client(args, root, WRITE_ROLE) as client:
        stored = client.replace(
            NAMESPACE, read_file(args.file), args.reason, if_absent=args.if_absent
        )
        if stored is None:
            current = client.get(NAMESPACE)
            print(f"{NAMESPACE}: kept version {current.version} (--if-absent: it has a flag set)")
            return
    count = len(flag_set["flags"])
    print(
        f"{NAMESPACE}: version {stored.version} stored (was {stored.version - 1}):"
        f" {count} flag{'s' if count != 1 else ''}"
    )


def _flag_set(args: argparse.Namespace, root: Path | None) -> Mapping[str, Any]:
    if args.file is not None:
        return load_file(args.file)
    with _client(args, root, READ_ROLE) as client:
        return _current(client)[1]


def _eval(args: argparse.Namespace, root: Path | None) -> None:
    default = None
    if args.default is not None:
        try:
            default = json.loads(args.default)
        except ValueError:
            default = args.default  # a plain string
    context_of(args.context)  # a bad --context is a usage error before any call
    answer = evaluate(_flag_set(args, root), args.flag, args.context, args.type, default)
    print(json.dumps(answer) if args.json else answer_line(answer))


def _ls(args: argparse.Namespace, root: Path | None) -> None:
    rows = flag_rows(_flag_set(args, root))
    print(json.dumps(rows, indent=2) if args.json else flags_table(rows))


def run(args: argparse.Namespace, root: Path | None = None) -> int:
    """Run ``mesh flags ...``."""
    command = args.flags_command
    where = f"mesh flags {command}"
    try:
        {"set": _set, "eval": _eval, "ls": _ls}[command](args, root)
        return EXIT_OK
    except UsageError as exc:
        print(f"{where}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (Refused, RuntimeError) as exc:  # RuntimeError: no token could be had
        print(f"{where}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except grpc.RpcError as error:
        hint = ""
        if error.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            role = WRITE_ROLE if command == "set" else READ_ROLE
            hint = f" (this needs a token with the {role} role: --token or $MESH_TOKEN)"
        elif error.code() == grpc.StatusCode.UNAVAILABLE:
            hint = " (is the mesh up? `mesh ps`; --file evaluates a local file without it)"
        print(f"{where}: {error.code().name}: {error.details()}{hint}", file=sys.stderr)
        return EXIT_FAILED


# ---------------------------------------------------------------------------------- parser


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``flags`` and its commands to the ``mesh`` parser."""
    # Imported here: cli imports this module to build its parser.
    from mesh_runner.cli import token_help

    flags = sub.add_parser(
        "flags",
        help="load, list and evaluate the mesh's feature flags (a flagd flag set)",
        description="The feature flags of the mesh: the control plane's 'flags' namespace, a"
        " flagd flag set every service evaluates in process through OpenFeature. Exit 0 done;"
        " 1 refused (the flag and field are named), no answer, or no such flag; 2 usage.",
    )
    commands = flags.add_subparsers(dest="flags_command", required=True, metavar="COMMAND")

    def command(name: str, help: str, description: str, role: str) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help, description=description)
        parser.add_argument("--token", help=token_help(role))
        parser.add_argument(
            "--target",
            metavar="HOST:PORT",
            help=f"the control service (default: {SERVICE}'s address in mesh.toml)",
        )
        return parser

    put = command(
        "set",
        "store a flagd flag-set file as the mesh's flags (checked first as services check it)",
        "Checks FILE as every service will (a set they would reject is refused, naming the flag"
        " and field), then stores it as the next version of the 'flags' namespace; every"
        " service applies it within a moment. Example: mesh flags set flags.json --reason"
        " 'express shipping to 20 % of DE'",
        WRITE_ROLE,
    )
    put.add_argument("file", metavar="FILE", help="a flagd flag set (JSON; - for stdin)")
    put.add_argument(
        "--if-absent",
        action="store_true",
        help="store it only as the first flag set; one already there is kept (a seed that never"
        " overwrites a live change)",
    )
    put.add_argument("--reason", default="", help="why (kept in the history)")

    ev = command(
        "eval",
        "evaluate one flag as a service would: value, variant, reason",
        "Evaluates FLAG over the current flag set (or --file), through meshkit's OpenFeature"
        " provider, as a service does. Prints 'value  variant  reason' (and the error code"
        """ when there is one). Example: mesh flags eval checkout.express-shipping --context"""
        """ '{"targetingKey": "customer-7", "country": "DE"}'""",
        READ_ROLE,
    )
    ev.add_argument("flag", metavar="FLAG", help="the flag's key")
    ev.add_argument(
        "--context",
        metavar="JSON",
        help='the evaluation context: a JSON object; its "targetingKey" is the targeting key',
    )
    ev.add_argument("--json", action="store_true", help='{"value", "variant", "reason"}')
    ev.add_argument("--file", metavar="F", help="evaluate this flag-set file, not the mesh's")
    ev.add_argument(
        "--type", choices=TYPES, help="the getter's type (default: the flag's variants')"
    )
    ev.add_argument(
        "--default", metavar="VALUE", help="the caller's default (JSON; default: the type's zero)"
    )

    ls = command(
        "ls",
        "the flags: state, variants, default variant, targeting",
        "Lists the flags of the current flag set (or --file).",
        READ_ROLE,
    )
    ls.add_argument("--json", action="store_true", help="a JSON list, one object per flag")
    ls.add_argument("--file", metavar="F", help="list this flag-set file, not the mesh's")
