"""The `schema-registry` command: run the server, or talk to one.

Exit codes: 0 success, 1 incompatible schema or any failure, 2 usage error. Output is for people
unless `--json` is given; then stdout carries exactly one JSON document. `--url` defaults to
`$SCHEMA_REGISTRY_URL`, then http://127.0.0.1:8081; either may list several registries, comma
separated (`RegistryClient` fails over between them). Writes to a registry serving with `--auth`
need `--token TOKEN` ($SCHEMA_REGISTRY_TOKEN) or `--basic-auth CLIENT_ID:SECRET`
($SCHEMA_REGISTRY_BASIC_AUTH); they are sent with POST, PUT and DELETE only.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import ssl
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from meshkit.console import quiet_on_closed_stdout, stdout_closed
from schema_registry.client import NotARegistry, RegistryClient, Response, subject_path
from schema_registry.compatibility import COMPATIBILITY_LEVELS
from schema_registry.storage import DEFAULT_STORAGE_URL
from schema_registry.topics import Contract

DEFAULT_URL = "http://127.0.0.1:8081"
LEVELS = COMPATIBILITY_LEVELS
MODES = ("READWRITE", "READONLY", "READONLY_OVERRIDE", "IMPORT")
#: What `register-all` sets on the event subjects it creates (ARCHITECTURE.md, Events).
EVENT_SUBJECT_LEVEL = "BACKWARD_TRANSITIVE"


class CommandFailed(Exception):
    """Ends a command with exit status 1 after printing the message to stderr."""


class _Out:
    """Human lines to stdout, or one JSON document with --json."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def emit(self, data: Any, human: str | Callable[[], str]) -> None:
        if self.as_json:
            print(json.dumps(data, indent=2, ensure_ascii=False))
        else:
            text = human() if callable(human) else human
            if text:
                print(text)


class _CliClient(RegistryClient):
    """The CLI's registry client: every answer of a registry is JSON, so one that is not came
    from something else (a web page, another service's error page), and raises NotARegistry
    rather than a JSON error deep in a command."""

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw_body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """RegistryClient.request; NotARegistry for an answer whose body is not JSON."""
        response = super().request(method, path, body, raw_body=raw_body, headers=headers)
        if response.body.strip():
            try:
                json.loads(response.body)
            except ValueError:
                kind = response.headers.get("content-type") or "no content type"
                raise NotARegistry(
                    f"it answered HTTP {response.status} ({kind}), not a registry's JSON"
                ) from None
        return response


_NOT_A_REGISTRY_HINT = "is it a gRPC port? the registry listens on 8081 by default"
_NOT_RUNNING_HINT = "is the registry running? it listens on 8081 by default; `mesh up` starts it"


def unreachable(url: str, exc: OSError) -> str:
    """One sentence for an HTTP-level failure to talk to the registry at ``url``: what
    happened, and what to check."""
    what, hint = exc.strerror or str(exc) or type(exc).__name__, _NOT_A_REGISTRY_HINT
    if isinstance(exc, NotARegistry):
        what = str(exc)
    elif isinstance(exc, ssl.SSLError):
        reason = exc.reason or exc.strerror or str(exc)
        what = f"the TLS handshake failed ({reason})"
        hint = "does it serve TLS? an https:// URL needs a registry behind TLS, else use http://"
    elif isinstance(exc, ConnectionRefusedError):
        what, hint = "nothing listens there (connection refused)", _NOT_RUNNING_HINT
    elif isinstance(exc, TimeoutError):
        what = "no answer in time (timed out)"
    elif isinstance(exc, http.client.RemoteDisconnected):
        what = "it closed the connection without an answer"
    elif isinstance(exc, ConnectionResetError):
        what = "the connection was reset"
    elif isinstance(exc, socket.gaierror):
        what, hint = f"its host name does not resolve ({exc.strerror})", "check the URL"
    return f"no schema registry at {url}: {what} ({hint})"


_CREDENTIALS_HINT = (
    "; the registry guards its writes: pass --token TOKEN or --basic-auth CLIENT_ID:SECRET "
    "(or set SCHEMA_REGISTRY_TOKEN / SCHEMA_REGISTRY_BASIC_AUTH) with scope schemas:write"
)


def _explained(response: Response) -> str:
    """The error message, with what to do when the registry wants credentials."""
    hint = _CREDENTIALS_HINT if response.status in (401, 403) else ""
    return response.message + hint


def _fail(response: Response, what: str) -> NoReturn:
    code = response.error_code
    suffix = f" (error_code {code})" if code is not None else f" (HTTP {response.status})"
    raise CommandFailed(f"{what}: {_explained(response)}{suffix}")


def _read_schema(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CommandFailed(f"cannot read {path}: {exc.strerror}") from None


def _checked(response: Response, what: str) -> Any:
    if not response.ok:
        _fail(response, what)
    return response.json()


# ---------------------------------------------------------------------------------- commands
def cmd_subjects(client: RegistryClient, out: _Out, args: argparse.Namespace) -> int:
    query = f"?deleted={str(args.deleted).lower()}"
    if args.prefix:
        query += f"&subjectPrefix={subject_path(args.prefix)}"
    subjects = _checked(client.get(f"/subjects{query}"), "listing subjects failed")
    out.emit(subjects, lambda: "\n".join(subjects))
    return 0


def cmd_versions(client: RegistryClient, out: _Out, args: argparse.Namespace) -> int:
    path = f"/subjects/{subject_path(args.subject)}/versions?deleted={str(args.deleted).lower()}"
    versions = _checked(client.get(path), f"listing versions of {args.subject} failed")
    out.emit(versions, lambda: "\n".join(str(v) for v in versions))
    return 0


def cmd_get(client: RegistryClient, out: _Out, args: argparse.Namespace) -> int:
    path = f"/subjects/{subject_path(args.subject)}/versions/{subject_path(args.version)}"
    found = _checked(client.get(path), f"getting {args.subject} version {args.version} failed")

    def human() -> str:
        try:
            schema = json.dumps(json.loads(found["schema"]), indent=2, ensure_ascii=False)
        except ValueError:
            schema = found["schema"]
        head = f"# subject {found['subject']}  version {found['version']}  id {found['id']}"
        return f"{head}\n{schema}"

    out.emit(found, human)
    return 0


#: schemaType by file name ending, for `register` and `check` without --schema-type.
TYPE_BY_SUFFIX = {".avsc": "AVRO", ".proto": "PROTOBUF", ".json": "JSON"}


def _schema_type(args: argparse.Namespace) -> str:
    """--schema-type, else the file's extension (.avsc AVRO, .proto PROTOBUF, .json JSON), else
    AVRO (the registry's default)."""
    if args.schema_type:
        return str(args.schema_type).upper()
    return TYPE_BY_SUFFIX.get(Path(args.file).suffix.lower(), "AVRO")


def cmd_register(client: RegistryClient, out: _Out, args: argparse.Namespace) -> int:
    body = {"schema": _read_schema(args.file), "schemaType": _schema_type(args)}
    path = f"/subjects/{subject_path(args.subject)}/versions"
    response = client.post(path, body)
    if response.status == 409:
        _print_incompatibilities(client, args.subject, body, out, args.file)
        return 1
    found = _checked(response, f"registering {args.file} under {args.subject} failed")
    out.emit(found, f"{args.subject}: version {found.get('version')} (schema id {found.get('id')})")
    return 0


def _compatibility(client: RegistryClient, subject: str, body: dict[str, Any]) -> dict[str, Any]:
    path = f"/compatibility/subjects/{subject_path(subject)}/versions?verbose=true"
    result: dict[str, Any] = _checked(client.post(path, body), f"checking {subject} failed")
    return result


def _level(client: RegistryClient, subject: str) -> str:
    response = client.get(f"/config/{subject_path(subject)}?defaultToGlobal=true")
    return str(response.json().get("compatibilityLevel", "?")) if response.ok else "?"


def _print_incompatibilities(
    client: RegistryClient, subject: str, body: dict[str, Any], out: _Out, name: str
) -> dict[str, Any]:
    result = _compatibility(client, subject, body)
    level = _level(client, subject)
    result["compatibilityLevel"] = level

    def human() -> str:
        items = result.get("incompatibilities") or []
        lines = [f"INCOMPATIBLE: {name} cannot be registered under {subject} ({level}):"]
        for item in items:
            lines.append(f"  - {item['message']}")
        if not items:
            lines.extend(f"  - {m}" for m in result.get("messages", []))
        return "\n".join(lines)

    out.emit(result, human)
    return result


def cmd_check(client: RegistryClient, out: _Out, args: argparse.Namespace) -> int:
    if args.file is None:
        if not Path(args.subject).is_dir():
            raise CommandFailed(
                f"{args.subject} is not a directory; give a directory, or SUBJECT FILE"
            )
        return cmd_check_all(client, out, Path(args.subject))
    body = {"schema": _read_schema(args.file), "schemaType": _schema_type(args)}
    result = _compatibility(client, args.subject, body)
    if not result.get("is_compatible"):
        _print_incompatibilities(client, args.subject, body, out, args.file)
        return 1
    level = _level(client, args.subject)
    result["compatibilityLevel"] = level
    out.emit(result, f"compatible: {args.file} can be registered under {args.subject} ({level})")
    return 0


def _split_target(
    args: argparse.Namespace, values: Sequence[str], kind: str
) -> tuple[str | None, str | None]:
    """`[SUBJECT] [VALUE]`: a lone argument that is a known VALUE sets the global one."""
    if args.value is not None:
        return args.subject, args.value
    if args.subject is not None and args.subject.upper() in values:
        return None, args.subject
    return args.subject, None


def cmd_config(client: RegistryClient, out: _Out, args: argparse.Namespace) -> int:
    subject, level = _split_target(args, LEVELS, "level")
    path = "/config" if subject is None else f"/config/{subject_path(subject)}"
    scope = "global" if subject is None else subject
    if level is None:
        query = "" if subject is None else "?defaultToGlobal=true"
        found = _checked(client.get(path + query), f"reading the {scope} config failed")
        out.emit(found, f"{scope}: {found.get('compatibilityLevel')}")
        return 0
    if level.upper() not in LEVELS:
        raise CommandFailed(f"unknown compatibility level {level}; use one of {', '.join(LEVELS)}")
    found = _checked(client.put(path, {"compatibility": level.upper()}), "setting config failed")
    out.emit(found, f"{scope}: {found.get('compatibility')}")
    return 0


def cmd_mode(client: RegistryClient, out: _Out, args: argparse.Namespace) -> int:
    subject, mode = _split_target(args, MODES, "mode")
    path = "/mode" if subject is None else f"/mode/{subject_path(subject)}"
    scope = "global" if subject is None else subject
    if mode is None:
        query = "" if subject is None else "?defaultToGlobal=true"
        found = _checked(client.get(path + query), f"reading the {scope} mode failed")
    else:
        if mode.upper() not in MODES:
            raise CommandFailed(f"unknown mode {mode}; use one of {', '.join(MODES)}")
        query = "?force=true" if args.force else ""
        found = _checked(client.put(path + query, {"mode": mode.upper()}), "setting mode failed")
    out.emit(found, f"{scope}: {found.get('mode')}")
    return 0


def cmd_delete(client: RegistryClient, out: _Out, args: argparse.Namespace) -> int:
    path = f"/subjects/{subject_path(args.subject)}"
    if args.version is not None:
        path += f"/versions/{subject_path(args.version)}"
    path += f"?permanent={str(args.permanent).lower()}"
    how = "permanently deleted" if args.permanent else "soft-deleted"
    found = _checked(client.delete(path), f"deleting {args.subject} failed")
    versions = found if isinstance(found, list) else [found]
    out.emit(found, f"{args.subject}: {how} version(s) {', '.join(str(v) for v in versions)}")
    return 0


def _discovered(root: Path) -> tuple[list[Contract], list[tuple[Path, str]]]:
    from schema_registry.topics import discover_contracts

    if not root.is_dir():
        raise CommandFailed(f"{root} is not a directory")
    return discover_contracts(root)


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _say(out: _Out, line: str) -> None:
    if not out.as_json:
        print(line, flush=True)  # progress, one line per file


def _report_line(out: _Out, entry: dict[str, Any]) -> None:
    detail = f"version {entry['version']}, id {entry['id']}" if "id" in entry else ""
    if "id" not in entry and "version" in entry:
        detail = f"against version {entry['version']}"
    _say(
        out,
        f"{entry['status']:<12} {entry['subject']} {entry['schemaType']} ({entry['file']}) "
        f"{detail}".rstrip(),
    )
    for message in entry.get("messages", []):
        _say(out, f"               - {message}")


def _summarize(
    out: _Out, what: str, root: Path, report: list[dict[str, Any]], statuses: Sequence[str]
) -> dict[str, int]:
    counts = {s: sum(1 for e in report if e["status"] == s) for s in statuses}
    if out.as_json:
        out.emit({"results": report, "summary": counts}, "")
    else:
        shown = ", ".join(f"{n} {s}" for s, n in counts.items())
        print(f"{what} {root}: {shown}")
    return counts


def _refused_files(out: _Out, problems: list[tuple[Path, str]]) -> list[dict[str, Any]]:
    report = []
    for path, why in problems:
        entry = {"file": _shown(path), "subject": None, "schemaType": _type_of(path)}
        report.append({**entry, "status": "refused", "messages": [why]})
        _say(out, f"{'refused':<12} {_shown(path)}: {why}")
    return report


def _type_of(path: Path) -> str:
    return {".avsc": "AVRO", ".proto": "PROTOBUF"}.get(path.suffix, "JSON")


def _body(contract: Contract, versions: dict[str, int]) -> dict[str, Any]:
    """The request body: text, schemaType and, for a .proto, its imports as references to the
    versions they have (each import is registered, or looked up, before the files naming it)."""
    body: dict[str, Any] = {"schema": contract.text, "schemaType": contract.schema_type}
    if contract.imports:
        body["references"] = [
            {"name": name, "subject": name, "version": versions[name]} for name in contract.imports
        ]
    return body


def cmd_register_all(client: RegistryClient, out: _Out, args: argparse.Namespace) -> int:
    root = Path(args.dir)
    contracts, problems = _discovered(root)
    if not contracts and not problems and not out.as_json:
        print(f"register-all {root}: no contracts (.avsc, .proto, config/*.schema.json) found")
    report = _refused_files(out, problems)
    versions: dict[str, int] = {}
    for contract in contracts:
        missing = [name for name in contract.imports if name not in versions]
        entry: dict[str, Any]
        if missing:
            why = f"imports {', '.join(missing)}, which was refused"
            entry = {"subject": contract.subject, "status": "refused", "messages": [why]}
        else:
            entry = _register_contract(
                client, contract.subject, _body(contract, versions), args.level
            )
        if "version" in entry:
            versions[contract.subject] = entry["version"]
        entry = {**entry, "schemaType": contract.schema_type, "file": _shown(contract.path)}
        report.append(entry)
        _report_line(out, entry)
    counts = _summarize(out, "register-all", root, report, ("new", "unchanged", "refused"))
    return 1 if counts["refused"] else 0


def _register_contract(
    client: RegistryClient, subject: str, body: dict[str, Any], level: str
) -> dict[str, Any]:
    """Register one schema: unchanged when already there, else a new version."""
    quoted = subject_path(subject)
    lookup = client.post(f"/subjects/{quoted}?deleted=false", body)
    if lookup.ok:
        found = lookup.json()
        return {
            "subject": subject,
            "status": "unchanged",
            "id": found["id"],
            "version": found["version"],
        }
    new_subject = lookup.error_code == 40401
    if lookup.error_code not in (40401, 40403):
        return {"subject": subject, "status": "refused", "messages": [_explained(lookup)]}
    if new_subject:
        # Before the first version, so the subject never exists under a weaker level.
        configured = client.put(f"/config/{quoted}", {"compatibility": level})
        if not configured.ok:
            return {"subject": subject, "status": "refused", "messages": [_explained(configured)]}
    response = client.post(f"/subjects/{quoted}/versions", body)
    if response.ok:
        found = response.json()
        return {"subject": subject, "status": "new", "id": found["id"], "version": found["version"]}
    messages = [_explained(response)]
    if response.status == 409:
        verbose = _compatibility(client, subject, body)
        messages = [i["message"] for i in verbose.get("incompatibilities", [])] or messages
    if new_subject:
        client.delete(f"/config/{quoted}")
    return {"subject": subject, "status": "refused", "messages": messages}


#: `check DIR`'s outcomes; the last three are breaks (exit 1).
CHECK_STATUSES = (
    "unchanged",
    "compatible",
    "new",
    "unchecked",
    "incompatible",
    "invalid",
    "refused",
)
_BREAKS = ("incompatible", "invalid", "refused")


def cmd_check_all(client: RegistryClient, out: _Out, root: Path) -> int:
    """`check DIR`: every file register-all would register, checked, nothing registered."""
    contracts, problems = _discovered(root)
    report = _refused_files(out, problems)
    versions: dict[str, int] = {}
    changed: set[str] = set()  # subjects this run would give a new version (or create)
    for contract in contracts:
        entry = _check_contract(client, contract, versions, changed)
        entry = {**entry, "schemaType": contract.schema_type, "file": _shown(contract.path)}
        report.append(entry)
        _report_line(out, entry)
    counts = _summarize(out, "check", root, report, CHECK_STATUSES)
    return 1 if any(counts[s] for s in _BREAKS) else 0


def _check_contract(
    client: RegistryClient, contract: Contract, versions: dict[str, int], changed: set[str]
) -> dict[str, Any]:
    """One file against its subject: registered as it is, compatible, or why not."""
    subject = contract.subject
    quoted = subject_path(subject)
    unregistered = [name for name in contract.imports if name not in versions]
    if unregistered:
        changed.add(subject)
        why = f"imports {', '.join(unregistered)}, which the registry does not hold yet"
        return {"subject": subject, "status": "unchecked", "messages": [why]}
    body = _body(contract, versions)
    lookup = client.post(f"/subjects/{quoted}?deleted=false", body)
    if lookup.ok:
        found = lookup.json()
        versions[subject] = found["version"]
        return {
            "subject": subject,
            "status": "unchanged",
            "id": found["id"],
            "version": found["version"],
        }
    if lookup.error_code not in (40401, 40403, 42201):
        return {"subject": subject, "status": "refused", "messages": [_explained(lookup)]}
    changed.add(subject)
    latest = client.get(f"/subjects/{quoted}/versions/latest")
    if latest.ok:
        # Dependents are checked against what the registry holds for this file.
        versions[subject] = latest.json()["version"]
    result = client.post(f"/compatibility/subjects/{quoted}/versions?verbose=true", body)
    if result.error_code == 42201 or lookup.error_code == 42201:
        why = result.message if result.error_code == 42201 else lookup.message
        moving = [name for name in contract.imports if name in changed]
        if moving:
            # Its imports change in this run: the registry only knows their older versions.
            why = f"imports {', '.join(moving)}, which change here: register them, then check"
            return {"subject": subject, "status": "unchecked", "messages": [why]}
        return {"subject": subject, "status": "invalid", "messages": [why]}
    if not result.ok:
        return {"subject": subject, "status": "refused", "messages": [_explained(result)]}
    found = result.json()
    status = "new" if lookup.error_code == 40401 else "compatible"
    entry: dict[str, Any] = {"subject": subject, "status": status}
    if latest.ok:
        entry["version"] = versions[subject]
    if not found.get("is_compatible"):
        entry["status"] = "incompatible"
        entry["level"] = _level(client, subject)
        entry["messages"] = [i["message"] for i in found.get("incompatibilities") or []] or list(
            found.get("messages", [])
        )
    return entry


def cmd_serve(args: argparse.Namespace) -> int:
    from meshkit.logs import configure_logging
    from schema_registry.registry import DEFAULT_MAX_SCHEMA_SIZE
    from schema_registry.server import ServeOptions, serve

    # JSON lines on stderr, as every process of the mesh logs (the ready line stays plain text:
    # scripts and tests read the port from it).
    configure_logging("schema-registry")
    if args.workers < 1:
        raise CommandFailed("--workers must be at least 1")
    if args.max_schema_size is not None and args.max_schema_size < 1:
        raise CommandFailed("--max-schema-size must be at least 1")
    for flag in ("idle_timeout", "header_timeout", "body_timeout"):
        if not getattr(args, flag) > 0:
            raise CommandFailed(f"--{flag.replace('_', '-')} must be more than 0 seconds")
    if args.max_header_size < 1024 or args.max_connections < 0:
        raise CommandFailed("--max-header-size must be at least 1024, --max-connections >= 0")
    if not 0.0 <= args.access_log_reads <= 1.0:
        raise CommandFailed("--access-log-reads is a share of reads, from 0 to 1")
    options = ServeOptions(
        args.host,
        args.port,
        args.storage,
        args.workers,
        auth=args.auth,
        auth_issuer=args.auth_issuer,
        auth_audience=args.auth_audience,
        kafka=args.kafka,
        max_schema_size=args.max_schema_size or DEFAULT_MAX_SCHEMA_SIZE,
        idle_timeout=args.idle_timeout,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        max_header_size=args.max_header_size,
        max_connections=args.max_connections,
        access_log_reads=args.access_log_reads,
        advertise_url=args.advertise_url,
    )
    try:
        return serve(options)
    except ValueError as exc:
        raise CommandFailed(str(exc)) from None
    except OSError as exc:
        raise CommandFailed(f"cannot serve on {args.host}:{args.port}: {exc.strerror}") from None


# ---------------------------------------------------------------------------------- parsing
def build_parser() -> argparse.ArgumentParser:
    """The argument parser (every command has --help)."""
    # --url and --json work before or after the command; SUPPRESS keeps a sub-command's
    # unset copy from overwriting a value given before it.
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument(
        "--url", default=argparse.SUPPRESS, help="registry base URL(s), comma separated"
    )
    shared.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="JSON output"
    )
    shared.add_argument("--token", default=argparse.SUPPRESS, help="bearer token for writes")
    shared.add_argument(
        "--basic-auth",
        default=argparse.SUPPRESS,
        metavar="CLIENT_ID:SECRET",
        help="OAuth client credentials for writes",
    )

    parser = argparse.ArgumentParser(
        prog="schema-registry",
        description="meshkit's Confluent-compatible schema registry: serve it, or manage schemas.",
        epilog="Exit status: 0 ok, 1 incompatible or failed, 2 usage error.",
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("SCHEMA_REGISTRY_URL") or DEFAULT_URL,
        help="registry base URL, or several comma separated: a request goes to the first that "
        "answers (moving on from connection errors, and from 5xx for reads), the last that "
        "answered first (default: $SCHEMA_REGISTRY_URL, else %(default)s)",
    )
    parser.add_argument(
        "--json", action="store_true", default=False, help="JSON output for scripts"
    )
    parser.add_argument(
        "--token",
        default=None,
        help="an access token with scope schemas:write, sent with every write to a registry "
        "serving with --auth (default: $SCHEMA_REGISTRY_TOKEN)",
    )
    parser.add_argument(
        "--basic-auth",
        default=None,
        metavar="CLIENT_ID:SECRET",
        help="OAuth client credentials (a client allowed scope schemas:write) sent as HTTP "
        "Basic with every write instead of a token (default: $SCHEMA_REGISTRY_BASIC_AUTH)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[shared], help=help_text, description=help_text)

    p = sub.add_parser(
        "serve", help="run the registry server", description="Run the registry server."
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    p.add_argument(
        "--port", type=int, default=8081, help="port (0 picks a free one; default: %(default)s)"
    )
    p.add_argument(
        "--storage",
        default=DEFAULT_STORAGE_URL,
        help="sqlite:///relative.db, sqlite:////absolute.db, memory, or kafka://HOST:PORT[/TOPIC] "
        "(a compacted topic, default _schemas, in Confluent's format; several instances on one "
        "topic elect a primary and forward writes to it) (default: %(default)s)",
    )
    p.add_argument(
        "--advertise-url",
        default="",
        metavar="URL",
        help="with Kafka storage: the URL the other instances forward writes to when this one "
        "is the primary (default: http://HOST:PORT)",
    )
    p.add_argument(
        "--workers", type=int, default=1, help="worker processes sharing the port (default: 1)"
    )
    p.add_argument(
        "--auth",
        default="",
        metavar="JWKS_URL",
        help="identity's JWKS URL (e.g. http://127.0.0.1:8090/.well-known/jwks.json): POST, "
        "PUT and DELETE then need a token (or client credentials over HTTP Basic) with scope "
        "schemas:write; reads stay open. Without it anyone may write: never in production",
    )
    p.add_argument(
        "--auth-issuer",
        default="",
        metavar="URL",
        help="the tokens' issuer (default: the JWKS URL's scheme://host:port)",
    )
    p.add_argument(
        "--auth-audience",
        default="meshkit",
        help="the tokens' audience (default: %(default)s)",
    )
    p.add_argument(
        "--kafka",
        default=os.environ.get("MESH_KAFKA_BOOTSTRAP", ""),
        metavar="BOOTSTRAP",
        help="Kafka bootstrap servers: publish the audit records of writes to audit.events.v1 "
        "(default: $MESH_KAFKA_BOOTSTRAP; without either they wait in the storage's outbox)",
    )
    _add_limit_options(p)

    p = add("subjects", "List subjects.")
    p.add_argument("--deleted", action="store_true", help="include soft-deleted subjects")
    p.add_argument("--prefix", help="only subjects starting with this")

    p = add("versions", "List the versions of a subject.")
    p.add_argument("subject")
    p.add_argument("--deleted", action="store_true", help="include soft-deleted versions")

    p = add("get", "Show one version of a subject (default: latest).")
    p.add_argument("subject")
    p.add_argument("version", nargs="?", default="latest")

    _add_schema_file_commands(add)

    p = add(
        "config",
        "Show or set a compatibility level: `config` (global), `config SUBJECT`, "
        "`config LEVEL` (set global), `config SUBJECT LEVEL`.",
    )
    p.add_argument("subject", nargs="?")
    p.add_argument("value", nargs="?", metavar="level", help=", ".join(LEVELS))

    p = add(
        "mode",
        "Show or set a mode: `mode` (global), `mode SUBJECT`, `mode MODE` (set global), "
        "`mode SUBJECT MODE`.",
    )
    p.add_argument("subject", nargs="?")
    p.add_argument("value", nargs="?", metavar="mode", help=", ".join(MODES))
    p.add_argument("--force", action="store_true", help="allow IMPORT on a non-empty registry")

    p = add("delete", "Soft-delete a subject or one version; --permanent after a soft delete.")
    p.add_argument("subject")
    p.add_argument("version", nargs="?")
    p.add_argument("--permanent", action="store_true", help="hard delete (after a soft delete)")

    p = add(
        "register-all",
        "Register every contract under DIR, each file once, skipping those registered as they "
        "are. Events (.avsc, AVRO): subject <topic>-<record full name>, the topic from the "
        'nearest topic.json ({"topic": "..."}) in the file\'s directory or above it. gRPC '
        "contracts (.proto, PROTOBUF): subject = the import path (relative to DIR, or to the "
        "module of DIR/buf.yaml holding it, e.g. google/api/http.proto from vendor/), each after "
        "the files it imports, which it references (google/protobuf/* needs none). Config "
        "namespace schemas (config/<namespace>.schema.json, JSON): subject config.<namespace>.",
    )
    p.add_argument("dir")
    p.add_argument(
        "--level",
        default=EVENT_SUBJECT_LEVEL,
        choices=LEVELS,
        help="compatibility set on subjects it creates (default: %(default)s, for every type: "
        "FULL would refuse a .proto a new message, as Confluent's Protobuf rules see it)",
    )
    return parser


COMMANDS: dict[str, Callable[[RegistryClient, _Out, argparse.Namespace], int]] = {
    "subjects": cmd_subjects,
    "versions": cmd_versions,
    "get": cmd_get,
    "register": cmd_register,
    "check": cmd_check,
    "config": cmd_config,
    "mode": cmd_mode,
    "delete": cmd_delete,
    "register-all": cmd_register_all,
}


def _add_schema_file_commands(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """`register SUBJECT FILE` and `check DIR | SUBJECT FILE`."""
    type_help = (
        "AVRO, PROTOBUF or JSON (default: from the file's extension: .avsc AVRO, .proto "
        "PROTOBUF, .json JSON; else AVRO)"
    )
    p = add("register", "Register a schema file under a subject.")
    p.add_argument("subject")
    p.add_argument("file", help="schema file (.avsc, .proto or .json)")
    p.add_argument("--schema-type", default=None, type=str.upper, help=type_help)
    p = add(
        "check",
        "The compatibility gate, registering nothing. `check DIR`: every file `register-all "
        "DIR` would register (.avsc, .proto, config/*.schema.json) against what the registry "
        "holds under its subject; prints each file's status and the path of every break; exit "
        "1 on any break (incompatible, invalid or unmappable). `check SUBJECT FILE`: one file "
        "against one subject; exit 1 and list every incompatibility.",
    )
    p.add_argument("subject", metavar="DIR|SUBJECT")
    p.add_argument("file", nargs="?", help="schema file (.avsc, .proto or .json)")
    p.add_argument("--schema-type", default=None, type=str.upper, help=type_help)


def _add_limit_options(p: argparse.ArgumentParser) -> None:
    """`serve`'s limits: the schema size, the HTTP timeouts and sizes (`HttpLimits`)."""
    p.add_argument(
        "--max-schema-size",
        type=int,
        default=None,
        metavar="BYTES",
        help="refuse to register a schema whose text is longer, in UTF-8 bytes (error 42209) "
        "(default: 1 MiB, Confluent's: its schemas are Kafka records, at most 1 MiB each)",
    )
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="close a keep-alive connection idle this long (default: %(default)g, Confluent's "
        "idle.timeout.ms)",
    )
    p.add_argument(
        "--header-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="a request's line and headers must arrive within this long of their first byte, "
        "else 408 (slow clients hold no connection; default: %(default)g)",
    )
    p.add_argument(
        "--body-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="a request's body may pause this long between two reads, else 408 "
        "(default: %(default)g)",
    )
    p.add_argument(
        "--max-header-size",
        type=int,
        default=8192,
        metavar="BYTES",
        help="bytes of request line and headers: a longer URL is 414, longer headers 431 "
        "(default: %(default)s, Confluent's max.request.header.size)",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=0,
        metavar="N",
        help="connections per worker; when full, the longest idle one is closed for a new one "
        "(default: 0, as many as the open file limit allows, raised to its hard limit)",
    )
    p.add_argument(
        "--access-log-reads",
        type=float,
        default=0.0,
        metavar="RATE",
        help="log this share of reads (0..1) as JSON access lines; writes are always logged "
        "(default: %(default)g: reads are most of the traffic)",
    )


def _credentials(args: argparse.Namespace) -> tuple[str, str]:
    """(token, basic credentials) from the flags, else from the environment (a flag of either
    kind wins over both variables)."""
    token, basic = args.token, args.basic_auth
    if token is None and basic is None:
        token = os.environ.get("SCHEMA_REGISTRY_TOKEN", "")
        basic = "" if token else os.environ.get("SCHEMA_REGISTRY_BASIC_AUTH", "")
    return token or "", basic or ""


@quiet_on_closed_stdout  # `schema-registry subjects | head -1`: no traceback
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `schema-registry` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            return cmd_serve(args)
        try:
            token, basic = _credentials(args)
            client = _CliClient(args.url, bearer_token=token, basic_auth=basic)
        except ValueError as exc:
            parser.error(str(exc))  # exits 2
        with client:
            return COMMANDS[args.command](client, _Out(args.json), args)
    except CommandFailed as exc:
        print(f"schema-registry: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        if isinstance(exc, BrokenPipeError) and stdout_closed():
            raise  # our reader left (`| head`): quiet_on_closed_stdout ends the command
        print(f"schema-registry: {unreachable(args.url, exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
