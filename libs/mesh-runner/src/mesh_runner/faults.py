"""``mesh faults``: set, clear and list the fault injection of the mesh's services.

    mesh faults set SERVICE [--method M] (--abort CODE:PCT | --delay MS:PCT | --drop PCT)
    mesh faults clear [SERVICE]
    mesh faults ls [--json]

Every service on the kit reads ``<mesh root>/.mesh/faults/<service>.json`` (meshkit.faults) and
re-reads it within half a second of a change: this command only edits those files, so a fault
takes effect on the running service, on every replica of it, without a restart. The format is
Istio-like (docs/fault-injection.md)::

    {"faults": [
      {"method": "shop.payments.v1.PaymentsService/*",
       "abort": {"code": "UNAVAILABLE", "percent": 20}},
      {"method": "*", "delay": {"ms": 500, "percent": 100}}
    ]}

``method`` is ``package.Service/Method``, ``package.Service/*`` or ``*``; each kind (abort, delay,
drop) has its ``percent`` (0-100). A file is valid when the kit's own parser
(meshkit.faults.parse_faults) says so. ``set`` replaces that kind in the entry of the same method,
or adds an entry; ``clear`` removes a service's file (or every one). A file is written whole
to a temporary name and renamed over the old one, so a service never reads half of it.

Exit codes: 0 done, 1 a fault file could not be read or written, 2 usage error (unknown service,
malformed fault).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mesh_runner.config import ConfigError, Mesh, load_mesh
from meshkit import faults as kit_faults
from meshkit.faults import parse_faults

EXIT_FAILED = 1
EXIT_USAGE = 2

FAULTS_DIR = Path(".mesh") / "faults"
KINDS = ("delay", "abort", "drop")  # the kit's order: delays first, then aborts and drops


class FaultError(ValueError):
    """A fault or a fault file is malformed; the message names the field and what is wrong."""


# -- the format: the kit's own parser decides what is valid ----------------------------------------


def check_method(method: str) -> str:
    """``method`` when it is ``*``, ``package.Service/*`` or ``package.Service/Method``."""
    try:
        check_fault({"method": method, "drop": {"percent": 0}})
    except FaultError:
        raise FaultError(
            f"--method {method!r}: give '*', 'package.Service/*' or 'package.Service/Method'"
            " (e.g. shop.payments.v1.PaymentsService/AuthorizePayment)"
        ) from None
    return method


def check_document(data: Any) -> list[dict[str, Any]]:
    """The entries of a whole fault file (``{"faults": [...]}``) when the kit accepts it
    (meshkit.faults.parse_faults, what every service reads it with); FaultError naming the field
    when not. Whole percents are written as integers."""
    try:
        parse_faults(json.dumps(data))
    except kit_faults.FaultError as exc:
        raise FaultError(str(exc)) from None
    return [_normalised(entry) for entry in data["faults"]]


def check_fault(entry: Any, where: str = "fault") -> dict[str, Any]:
    """One entry of a fault file, checked as the kit checks it, and normalised."""
    try:
        return check_document({"faults": [entry]})[0]
    except FaultError as exc:
        raise FaultError(str(exc).replace("faults[0]", where, 1)) from None


def _normalised(entry: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"method": entry["method"]}
    for kind in KINDS:
        if kind in entry:
            spec = dict(entry[kind])
            percent = spec["percent"]
            spec["percent"] = int(percent) if float(percent).is_integer() else percent
            out[kind] = spec
    return out


def kinds_of(fault: Mapping[str, Any]) -> list[str]:
    """The kinds (``abort``, ``delay``, ``drop``) a checked entry has."""
    return [kind for kind in KINDS if kind in fault]


def describe(fault: Mapping[str, Any]) -> str:
    """One checked entry for people: ``abort UNAVAILABLE 20% on shop.p.v1.P/*``."""
    parts = []
    for kind in kinds_of(fault):
        spec = fault[kind]
        what = {
            "abort": f"abort {spec.get('code')}",
            "delay": f"delay {spec.get('ms')} ms",
            "drop": "drop",
        }[kind]
        parts.append(f"{what} {spec['percent']:g}%")
    return f"{' + '.join(parts)} on {fault['method']}"


def parse_abort(text: str) -> dict[str, Any]:
    """``CODE:PCT`` (e.g. ``UNAVAILABLE:20``) as an abort spec."""
    code, colon, percent = text.partition(":")
    if not colon:
        raise FaultError(f"--abort {text!r}: give CODE:PERCENT, e.g. UNAVAILABLE:20")
    return _spec("--abort", text, "abort", {"code": code.upper(), "percent": _num(percent)})


def parse_delay(text: str) -> dict[str, Any]:
    """``MS:PCT`` (e.g. ``500:100``) as a delay spec."""
    ms, colon, percent = text.partition(":")
    if not colon or not ms.strip().isdigit():
        raise FaultError(f"--delay {text!r}: give MILLISECONDS:PERCENT, e.g. 500:100")
    return _spec("--delay", text, "delay", {"ms": int(ms), "percent": _num(percent)})


def parse_drop(text: str) -> dict[str, Any]:
    """``PCT`` (e.g. ``5``) as a drop spec."""
    return _spec("--drop", text, "drop", {"percent": _num(text)})


def _spec(flag: str, text: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    try:
        checked: dict[str, Any] = check_fault({"method": "*", kind: spec})[kind]
    except FaultError as exc:
        raise FaultError(f"{flag} {text!r}: {exc}") from None
    return checked


def _num(text: str) -> Any:
    try:
        return float(text) if "." in text else int(text)
    except ValueError:
        return text  # check_fault names it


def with_fault(
    faults: Sequence[Mapping[str, Any]], fault: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """``faults`` with ``fault`` (one kind) in: it replaces that kind in the entry of the same
    method that has it, else it is added at the end."""
    (kind,) = kinds_of(fault)
    out = [dict(old) for old in faults]
    for old in out:
        if old["method"] == fault["method"] and kind in old:
            old[kind] = dict(fault[kind])
            return out
    out.append(dict(fault))
    return out


# -- the files -------------------------------------------------------------------------------------


def fault_file(root: Path, service: str) -> Path:
    """Where the kit reads ``service``'s faults in the mesh rooted at ``root``."""
    return root / FAULTS_DIR / f"{service}.json"


def read_faults(path: Path) -> list[dict[str, Any]]:
    """The checked faults in ``path`` ([] when there is no file); FaultError when malformed,
    OSError when unreadable."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise FaultError(f"{path}: not JSON ({exc})") from None
    try:
        return check_document(data)
    except FaultError as exc:
        raise FaultError(f"{path}: {exc}") from None


def write_faults(path: Path, faults: Sequence[Mapping[str, Any]]) -> None:
    """Replace ``path`` with ``faults`` at once (a temporary file renamed over it); no faults
    removes the file. Each fault is checked first (FaultError, and the file is left as it was)."""
    checked = check_document({"faults": list(faults)})
    if not checked:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            json.dump({"faults": checked}, out, indent=2)
            out.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def all_faults(root: Path) -> dict[str, list[dict[str, Any]]]:
    """Every service's faults in the mesh at ``root``, by service name (files with faults only).
    A malformed file raises FaultError naming it."""
    found: dict[str, list[dict[str, Any]]] = {}
    for path in sorted((root / FAULTS_DIR).glob("*.json")):
        if faults := read_faults(path):
            found[path.stem] = faults
    return found


# -- the command -----------------------------------------------------------------------------------

DESCRIPTION = """\
Edits the fault files the mesh's services read (<mesh root>/.mesh/faults/<service>.json); a
running service picks a change up within half a second, and says so in its log (WARNING).
Faults are for testing how the mesh copes: a fraction of calls aborted with a status, delayed, or
dropped (the connection's stream reset without an answer). Health checks and reflection are
never faulted. Exit 0 done, 1 a file could not be read or written, 2 usage error."""

EXAMPLES = """\
examples:
  mesh faults set payments --abort UNAVAILABLE:20
      20 % of every payments call fails with UNAVAILABLE
  mesh faults set shipping --method shop.shipping.v1.ShippingService/CreateShipment --delay 500:100
      every CreateShipment waits 500 ms first
  mesh faults set inventory --drop 5
      5 % of inventory's calls get no answer (the stream is reset)
  mesh faults ls            what is set, per service
  mesh faults clear payments    payments runs clean again; `mesh faults clear` clears them all
"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``faults`` (set, clear, ls) to the ``mesh`` parser."""
    faults = sub.add_parser(
        "faults",
        help="inject faults into a service: abort, delay or drop a share of its calls",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = faults.add_subparsers(dest="faults_command", required=True, metavar="ACTION")
    put = actions.add_parser(
        "set",
        help="add or replace one fault of a service",
        description="Add a fault to SERVICE's file, replacing the one of the same method and kind.",
    )
    put.add_argument("service", metavar="SERVICE", help="a component of mesh.toml, e.g. payments")
    put.add_argument(
        "--method",
        default="*",
        help="'package.Service/Method', 'package.Service/*' or '*' (default: every method)",
    )
    kind = put.add_mutually_exclusive_group(required=True)
    kind.add_argument(
        "--abort", metavar="CODE:PCT", help="fail PCT %% of calls with status CODE (UNAVAILABLE:20)"
    )
    kind.add_argument(
        "--delay", metavar="MS:PCT", help="hold PCT %% of calls MS milliseconds first (500:100)"
    )
    kind.add_argument(
        "--drop", metavar="PCT", help="reset PCT %% of calls' streams without an answer (5)"
    )
    clear = actions.add_parser(
        "clear", help="remove a service's faults (all services' without SERVICE)"
    )
    clear.add_argument("service", nargs="?", metavar="SERVICE")
    ls = actions.add_parser("ls", help="list the faults set, per service")
    ls.add_argument("--json", action="store_true", help="a JSON object: service -> faults")


def run(args: argparse.Namespace, root: Path | None = None) -> int:
    """Run ``mesh faults ACTION`` on the mesh of ``root`` (else the one found from the cwd)."""
    try:
        mesh = load_mesh(root)
        if args.faults_command == "set":
            return _set(mesh, args)
        if args.faults_command == "clear":
            return _clear(mesh, args.service)
        return _ls(mesh, args.json)
    except (ConfigError, FaultError) as exc:
        print(f"mesh faults: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"mesh faults: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _set(mesh: Mesh, args: argparse.Namespace) -> int:
    mesh.component(args.service)  # ConfigError naming the known ones
    check_method(args.method)
    if args.abort is not None:
        fault = {"method": args.method, "abort": parse_abort(args.abort)}
    elif args.delay is not None:
        fault = {"method": args.method, "delay": parse_delay(args.delay)}
    else:
        fault = {"method": args.method, "drop": parse_drop(args.drop)}
    fault = check_fault(fault)
    path = fault_file(mesh.root, args.service)
    faults = with_fault(read_faults(path), fault)
    write_faults(path, faults)
    print(f"{args.service}: {describe(fault)}")
    _say_file(args.service, path, faults)
    return 0


def _clear(mesh: Mesh, service: str | None) -> int:
    if service is not None:
        mesh.component(service)
        path = fault_file(mesh.root, service)
        had = path.exists()
        path.unlink(missing_ok=True)
        print(f"{service}: faults cleared" if had else f"{service}: had no faults")
        return 0
    paths = sorted((mesh.root / FAULTS_DIR).glob("*.json"))
    for path in paths:
        path.unlink(missing_ok=True)
        print(f"{path.stem}: faults cleared")
    if not paths:
        print("no faults were set")
    return 0


def _ls(mesh: Mesh, as_json: bool) -> int:
    found = all_faults(mesh.root)
    if as_json:
        print(json.dumps(found, indent=2))
        return 0
    if not found:
        print("no faults set")
        return 0
    for service, faults in found.items():
        for fault in faults:
            print(f"{service:<16}{describe(fault)}")
    return 0


def _say_file(service: str, path: Path, faults: Sequence[Mapping[str, Any]]) -> None:
    print(
        f"  {len(faults)} fault(s) in {path}; {service} applies them within 0.5 s"
        " (`mesh logs " + service + "` shows a WARNING), `mesh faults clear " + service + "` ends"
        " them",
        file=sys.stderr,
    )
